r"""Exact Christoffel symbols, Riemann and Ricci tensors and scalar curvature of a metric.

Same index and sign conventions as :mod:`geometry._src.tensors` (stated there once):

* ``g[i][j]`` :math:`= g_{ij}`;
* ``gamma[k][i][j]`` :math:`= \Gamma^k_{ij} = \tfrac12 g^{kl}(\partial_i g_{jl} + \partial_j g_{il} - \partial_l g_{ij})`;
* ``riemann[r][s][m][n]`` :math:`= R^\rho{}_{\sigma\mu\nu} = \partial_\mu\Gamma^\rho_{\nu\sigma}
  - \partial_\nu\Gamma^\rho_{\mu\sigma} + \Gamma^\rho_{\mu\lambda}\Gamma^\lambda_{\nu\sigma}
  - \Gamma^\rho_{\nu\lambda}\Gamma^\lambda_{\mu\sigma}`;
* ``ricci[s][n]`` :math:`= R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}`, scalar :math:`R = g^{\sigma\nu}R_{\sigma\nu}`.

With these the round sphere of radius :math:`r` in dimension :math:`d` has
:math:`R = d(d-1)/r^2 > 0` and the Poincaré half-plane :math:`R = -2`
(Carroll, *Spacetime and Geometry*, eqs. 3.67, 3.91; tested in
``tests/test_derivations_tensors.py``).

Everything is computed in an :class:`~derivations._src.algebra.Algebra`, so the
same code gives exact rational functions (softmax families, Gaussian) or sympy
expressions (sphere in angles).
"""

from __future__ import annotations

import dataclasses
import itertools

from .algebra import Algebra

__all__ = ["Curvature", "inverse", "christoffel", "riemann", "ricci", "scalar", "curvature", "hessian_scalar"]


def _sum(alg: Algebra, terms):
    out = alg.zero
    for t in terms:
        out = out + t
    return out


def inverse(alg: Algebra, g):
    """:math:`g^{ij}` by Gauss-Jordan elimination in the algebra (exact; pivots tested with ``is_zero``)."""
    m = len(g)
    a = [[alg.norm(x) for x in row] + [alg.one if i == j else alg.zero for j in range(m)] for i, row in enumerate(g)]
    for c in range(m):
        piv = next((r for r in range(c, m) if not alg.is_zero(a[r][c])), None)
        if piv is None:
            raise ZeroDivisionError(f"metric is singular: no non-zero pivot in column {c}")
        a[c], a[piv] = a[piv], a[c]
        pv = a[c][c]
        a[c] = [alg.norm(x / pv) for x in a[c]]
        for r in range(m):
            if r != c and not alg.is_zero(a[r][c]):
                f = a[r][c]
                a[r] = [alg.norm(x - f * y) for x, y in zip(a[r], a[c])]
    return [row[m:] for row in a]


def christoffel(alg: Algebra, g, ginv=None):
    r"""``gamma[k][i][j]`` :math:`=\Gamma^k_{ij}`."""
    d = len(g)
    ginv = inverse(alg, g) if ginv is None else ginv
    dg = [[[alg.norm(alg.d(g[i][j], k)) for k in range(d)] for j in range(d)] for i in range(d)]
    half = alg.const(1) / 2
    first = [[[(dg[j][l][i] + dg[i][l][j] - dg[i][j][l]) * half for j in range(d)] for i in range(d)] for l in range(d)]
    return [
        [[alg.norm(_sum(alg, (ginv[k][l] * first[l][i][j] for l in range(d)))) for j in range(d)] for i in range(d)]
        for k in range(d)
    ]


def _dgamma(alg, gam):
    d = len(gam)
    return {(r, n, s, m): alg.norm(alg.d(gam[r][n][s], m)) for r, n, s, m in itertools.product(range(d), repeat=4)}


def riemann(alg: Algebra, gam):
    r"""``riemann[r][s][m][n]`` :math:`= R^\rho{}_{\sigma\mu\nu}` (all :math:`d^4` components)."""
    d = len(gam)
    dg = _dgamma(alg, gam)
    out = [[[[None] * d for _ in range(d)] for _ in range(d)] for _ in range(d)]
    for r, s, m, n in itertools.product(range(d), repeat=4):
        quad = _sum(alg, (gam[r][m][l] * gam[l][n][s] - gam[r][n][l] * gam[l][m][s] for l in range(d)))
        out[r][s][m][n] = alg.norm(dg[r, n, s, m] - dg[r, m, s, n] + quad)
    return out


def ricci(alg: Algebra, gam):
    r"""``ricci[s][n]`` :math:`= R^\rho{}_{\sigma\rho\nu}` (contracted directly, without the full Riemann tensor)."""
    d = len(gam)
    dg = _dgamma(alg, gam)
    out = [[None] * d for _ in range(d)]
    for s, n in itertools.product(range(d), repeat=2):
        terms = []
        for r in range(d):
            terms.append(dg[r, n, s, r] - dg[r, r, s, n])
            terms.extend(gam[r][r][l] * gam[l][n][s] - gam[r][n][l] * gam[l][r][s] for l in range(d))
        out[s][n] = alg.norm(_sum(alg, terms))
    return out


def scalar(alg: Algebra, ginv, ric):
    r""":math:`R = g^{\sigma\nu} R_{\sigma\nu}`."""
    d = len(ginv)
    return alg.norm(_sum(alg, (ginv[s][n] * ric[s][n] for s in range(d) for n in range(d))))


@dataclasses.dataclass
class Curvature:
    """Exact metric, inverse, Christoffel symbols, Ricci tensor and scalar curvature (algebra elements)."""

    g: list
    ginv: list
    gamma: list
    ricci: list
    R: object


def curvature(alg: Algebra, g) -> Curvature:
    """Levi-Civita route: metric -> inverse -> Christoffel -> Ricci -> scalar, all exact."""
    d = len(g)
    if any(len(row) != d for row in g):
        raise ValueError(f"metric must be a square d x d nested list, got row lengths {[len(r) for r in g]}")
    g = [[alg.norm(alg.convert(x)) for x in row] for row in g]
    if d == 1:  # every 1-manifold is flat
        return Curvature(g, inverse(alg, g), christoffel(alg, g), [[alg.zero]], alg.zero)
    ginv = inverse(alg, g)
    gam = christoffel(alg, g, ginv)
    ric = ricci(alg, gam)
    return Curvature(g, ginv, gam, ric, scalar(alg, ginv, ric))


def hessian_scalar(alg: Algebra, g, t, ginv=None):
    r"""Hessian-metric formula :math:`R = \tfrac14(|T|^2_g - |\tau|^2_g)` for ``g = hess psi``, ``t = grad^3 psi``.

    :math:`|T|^2_g = g^{ia}g^{jb}g^{kc}T_{ijk}T_{abc}`, :math:`\tau_k = g^{ij}T_{ijk}`,
    :math:`|\tau|^2_g = g^{kc}\tau_k\tau_c` (Totaro 2004, Int. J. Math. 15, eq. 1;
    the same formula as the ``hessian`` route of :mod:`geometry._src.routes`).
    """
    d = len(g)
    ginv = inverse(alg, g) if ginv is None else ginv
    rng = range(d)
    tup = {
        (i, j, k): _sum(alg, (ginv[i][a] * ginv[j][b] * ginv[k][c] * t[a][b][c] for a in rng for b in rng for c in rng))
        for i in rng for j in rng for k in rng
    }
    t2 = _sum(alg, (tup[i, j, k] * t[i][j][k] for i in rng for j in rng for k in rng))
    tau = [_sum(alg, (ginv[i][j] * t[i][j][k] for i in rng for j in rng)) for k in rng]
    tau2 = _sum(alg, (ginv[k][c] * tau[k] * tau[c] for k in rng for c in rng))
    return alg.norm((t2 - tau2) / 4)
