r"""Curvature of Fisher metrics: Christoffel symbols, Riemann, Ricci and scalar curvature.

Conventions (stated once, used everywhere in the package)
---------------------------------------------------------
* ``g[i, j] = g_{ij}``; derivative indices last: ``dg[i, j, k] = \partial_k g_{ij}``.
* ``christoffel[k, i, j] = \Gamma^k_{ij} = \tfrac12 g^{kl}(\partial_i g_{jl} + \partial_j g_{il} - \partial_l g_{ij})``.
* ``riemann[r, s, m, n] = R^\rho{}_{\sigma\mu\nu}
  = \partial_\mu\Gamma^\rho_{\nu\sigma} - \partial_\nu\Gamma^\rho_{\mu\sigma}
  + \Gamma^\rho_{\mu\lambda}\Gamma^\lambda_{\nu\sigma} - \Gamma^\rho_{\nu\lambda}\Gamma^\lambda_{\mu\sigma}``.
* ``ricci[s, n] = R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}``; scalar ``R = g^{\sigma\nu}R_{\sigma\nu}``.
* With these, the round sphere of radius ``r`` in dimension ``d`` has ``R = d(d-1)/r^2 > 0``
  (Carroll, *Spacetime and Geometry*, eqs. 3.67, 3.91).

Routes to the scalar curvature (each returns ``(R, cancellation, condition)``)
------------------------------------------------------------------------------
``levi-civita``
    automatic differentiation of the metric function (any family).
``hessian``
    for a Hessian metric :math:`g = \nabla^2\psi` with :math:`T = \nabla^3\psi`.
    Then :math:`\Gamma_{kij} = \tfrac12 T_{ijk}` and, because :math:`T` is totally
    symmetric, the Riemann tensor reduces to
    :math:`R_{ijkl} = \tfrac14 g^{pq}(T_{ilp}T_{jkq} - T_{ikp}T_{jlq})` (Totaro 2004,
    "The curvature of a Hessian metric", Int. J. Math. 15, eq. 1; Amari & Nagaoka 2000,
    sec. 3.2).  Contracting twice,

    .. math:: R = \tfrac14\left(|T|_g^2 - |\tau|_g^2\right),\qquad
              |T|^2_g = g^{ia}g^{jb}g^{kc}T_{ijk}T_{abc},\quad
              \tau_k = g^{ij}T_{ijk},\quad |\tau|^2_g = g^{kc}\tau_k\tau_c .

    (Check: categorical ``n = 3`` gives ``+1/2``, the sphere of radius 2.)
    Scalar curvature is a coordinate invariant, so families given through a chart
    ``eta(theta)`` (the Gaussian) are evaluated in natural coordinates.
``cumulant``
    softmax-linear families: :math:`g` and :math:`T` are the 2nd and 3rd central
    moments of the scaled keys under ``p`` (no autodiff).  With
    :math:`W_a = L^{-1}u_a` (:math:`g = LL^\top`) the contractions become sums over
    keys: :math:`|T|^2 = \sum_{ab} w_a w_b M_{ab}^3`,
    :math:`|\tau|^2 = \sum_{ab} w_a w_b M_{aa}M_{bb}M_{ab}` with :math:`M = WW^\top`.

Where precision is lost
-----------------------
:math:`|T|^2` and :math:`|\tau|^2` grow like :math:`1/p_{\min}` at low entropy while
:math:`R` stays bounded (for the simplex it is constant), so :math:`R` is a
difference of two huge numbers.  Each route therefore reports the cancellation
factor :math:`(|T|^2 + |\tau|^2)/|R|` (Levi-Civita: the sum of absolute values of
the terms over :math:`|R|`) and the condition number of ``g`` after Jacobi scaling
(:func:`scaled_condition`); :func:`geometry._src.api.error_estimate` turns them
into a per-point error estimate.  Every route inverts ``g`` by Cholesky (no
pivoting) and contracts indices, so its floating-point result is exactly the same
after rescaling any coordinate by a power of two; that is what lets the estimate
use the scaled condition number.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from . import fisher
from .families import Family
from .mathns import JAX


# --------------------------------------------------------------------------- tensors


def metric_fn(family: Family):
    """The metric as a function of coordinates, in its most accurate float64 construction."""
    return lambda theta: fisher.metric(family, theta)


def christoffel_from_jets(g, dg):
    """``Gamma[k, i, j]`` from ``g`` and ``dg[i, j, l] = d_l g_ij`` (``g`` solved by Cholesky: NaN if not definite)."""
    first = 0.5 * (jnp.einsum("jli->lij", dg) + jnp.einsum("ilj->lij", dg) - dg.transpose(2, 0, 1))
    linv = cholesky_inverse(g)
    return (linv.T @ (linv @ first.reshape(g.shape[0], -1))).reshape(first.shape)


def christoffel(family: Family, theta):
    r""":math:`\Gamma^k_{ij}` as ``gamma[k, i, j]`` (Levi-Civita connection of the Fisher metric)."""
    gf = metric_fn(family)
    return christoffel_from_jets(gf(theta), jax.jacfwd(gf)(theta))


def _riemann_terms(family: Family, theta):
    gam = christoffel(family, theta)
    dgam = jax.jacfwd(lambda t: christoffel(family, t))(theta)  # dgam[r, n, s, m] = d_m Gamma^r_ns
    a = jnp.einsum("rnsm->rsmn", dgam)  # d_mu Gamma^rho_{nu sigma}
    b = jnp.einsum("rmsn->rsmn", dgam)  # d_nu Gamma^rho_{mu sigma}
    c = jnp.einsum("rml,lns->rsmn", gam, gam)
    d = jnp.einsum("rnl,lms->rsmn", gam, gam)
    return a, b, c, d


def riemann(family: Family, theta):
    r""":math:`R^\rho{}_{\sigma\mu\nu}` as ``riemann[rho, sigma, mu, nu]`` (conventions in the module doc)."""
    a, b, c, d = _riemann_terms(family, theta)
    return a - b + c - d


def ricci(family: Family, theta):
    r""":math:`R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}` as ``ricci[sigma, nu]``."""
    return jnp.einsum("rsrn->sn", riemann(family, theta))


def scaled_condition(g, linv):
    r"""Condition number of the metric after Jacobi scaling: the amplification factor of the error model.

    .. math:: \kappa = \|H\|_\infty\,\|H^{-1}\|_\infty \;\ge\; \kappa_2(H),
              \qquad H = D^{-1/2} g D^{-1/2},\quad D = \mathrm{diag}(g),\quad
              H^{-1} = (L^{-1}D^{1/2})^\top (L^{-1}D^{1/2}),\quad g = LL^\top

    (:math:`\|A\|_2 \le \|A\|_\infty` for symmetric ``A``; measured 3-4 times
    :math:`\kappa_2(H)` for attention heads, where :math:`\|H\|_F\|H^{-1}\|_F` is 8-20 times).
    Why the *scaled* metric: every route factors ``g`` by Cholesky without pivoting and
    otherwise contracts indices, so rescaling a coordinate by a power of two rescales every
    intermediate exactly and leaves the computed ``R`` bit for bit unchanged
    (``tests/test_error_model.py``).  The rounding error of ``R`` is therefore that of the
    coordinates in which ``diag(g)`` is within a factor 2 of 1, whose condition number is
    within a factor 4 of :math:`\kappa_2(H)`; Jacobi scaling is within a factor ``m`` of the
    best diagonal scaling (van der Sluis 1969) and is what governs Cholesky's accuracy
    (Demmel 1989; Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
    Thm 7.5 and sec. 10.1).  The unscaled :math:`\kappa(g)` grows with the ratio of
    coordinate scales (shape against rate of a Gamma family) without any loss of accuracy.
    No eigensolver: a batched ``eigvalsh`` (m = 32) hung a pipelined sweep on XLA's CPU
    client here (cf. jax-ml/jax#25861).
    """
    d = jnp.sqrt(jnp.diagonal(g))
    h = g / (d[:, None] * d[None, :])
    ls = linv * d[None, :]
    return jnp.max(jnp.sum(jnp.abs(h), axis=1)) * jnp.max(jnp.sum(jnp.abs(ls.T @ ls), axis=1))


def scaled_condition_unrolled(g, linv, m):
    """:func:`scaled_condition` from dicts ``{(i, j): entry}`` of the lower triangles of ``g`` and
    ``L^{-1}`` (entries may be arrays: the unrolled batch-major kernels); same value up to rounding."""
    d = [jnp.sqrt(g[i, i]) for i in range(m)]
    sym = lambda a, i, j: a[max(i, j), min(i, j)]  # noqa: E731
    h_rows = [sum(jnp.abs(sym(g, i, j)) / (d[i] * d[j]) for j in range(m)) for i in range(m)]
    hinv = {(i, j): d[i] * d[j] * sum(linv[k, i] * linv[k, j] for k in range(i, m)) for i in range(m) for j in range(i + 1)}
    hinv_rows = [sum(jnp.abs(sym(hinv, i, j)) for j in range(m)) for i in range(m)]
    return functools.reduce(jnp.maximum, h_rows) * functools.reduce(jnp.maximum, hinv_rows)


#: Largest dimension whose Cholesky factor and its inverse are written out in closed form
#: (fused elementwise code; larger metrics call LAPACK, one call per matrix under ``vmap``).
MAX_UNROLLED_DIM = 4


def unrolled_cholesky_inverse(g, m):
    r"""Lower triangles of :math:`L` and :math:`L^{-1}` (:math:`g = LL^\top`) in closed form, as dicts
    ``{(i, j): entry}``, from the dict ``g`` of the lower triangle of a symmetric ``m x m`` matrix:

    .. math:: L_{jj} = \sqrt{g_{jj} - \textstyle\sum_{k<j} L_{jk}^2},\qquad
              L_{ij} = (g_{ij} - \textstyle\sum_{k<j} L_{ik}L_{jk})/L_{jj}\quad(i>j),\qquad
              L^{-1}_{ij} = -\textstyle\sum_{j\le k<i} L_{ik}L^{-1}_{kj}/L_{ii}.

    Entries may be scalars or arrays of any common shape (batch-major kernels pass ``(B,)``
    vectors).  NaN where ``g`` is not numerically positive definite.
    """
    chol = {}
    for j in range(m):
        chol[j, j] = jnp.sqrt(g[j, j] - sum((chol[j, k] ** 2 for k in range(j)), start=0.0))
        for i in range(j + 1, m):
            chol[i, j] = (g[i, j] - sum((chol[i, k] * chol[j, k] for k in range(j)), start=0.0)) / chol[j, j]
    linv = {}
    for i in range(m):
        linv[i, i] = 1.0 / chol[i, i]
        for j in range(i):
            linv[i, j] = -sum(chol[i, k] * linv[k, j] for k in range(j, i)) / chol[i, i]
    return chol, linv


def cholesky_inverse(g):
    """:math:`L^{-1}` for :math:`g = LL^\top` (closed form up to ``MAX_UNROLLED_DIM``, LAPACK beyond)."""
    m = g.shape[0]
    if m > MAX_UNROLLED_DIM:
        return jsl.solve_triangular(jnp.linalg.cholesky(g), jnp.eye(m, dtype=g.dtype), lower=True)
    _, linv = unrolled_cholesky_inverse({(i, j): g[i, j] for i in range(m) for j in range(i + 1)}, m)
    zero = jnp.zeros((), g.dtype)
    return jnp.stack([jnp.stack([linv.get((i, j), zero) for j in range(m)]) for i in range(m)])


def _inverse(g):
    """``(g^{-1}, kappa)`` by Cholesky (NaN for a metric that is not numerically definite)."""
    linv = cholesky_inverse(g)
    return linv.T @ linv, scaled_condition(g, linv)


def scalar_levi_civita(family: Family, theta):
    """Route ``levi-civita``: ``g^{sn} R^r_{srn}`` by nested autodiff of the metric."""
    a, b, c, d = _riemann_terms(family, theta)
    g = fisher.metric(family, theta)
    ginv, kappa = _inverse(g)
    ric = jnp.einsum("rsrn->sn", a - b + c - d)
    r = jnp.sum(ginv * ric)
    mag = jnp.einsum("rsrn->sn", jnp.abs(a) + jnp.abs(b) + jnp.abs(c) + jnp.abs(d))
    scale = jnp.sum(jnp.abs(ginv) * mag)
    return r, scale / jnp.abs(r), kappa


def _hessian_contractions(g, t):
    """``(|T|^2_g, |tau|^2_g, kappa)`` for a totally symmetric ``t[i, j, k]``."""
    ginv, kappa = _inverse(g)
    tup = jnp.einsum("ia,jb,kc,abc->ijk", ginv, ginv, ginv, t)
    t2 = jnp.sum(tup * t)
    tau = jnp.einsum("ij,ijk->k", ginv, t)
    tau2 = tau @ ginv @ tau
    return t2, tau2, kappa


def hessian_jets(family: Family, theta):
    """``g = hess psi`` and ``T = grad^3 psi`` at ``eta(theta)`` in natural coordinates."""
    psi = lambda eta: family.log_partition(eta, JAX)  # noqa: E731
    eta = fisher.natural_chart(family, theta)
    return jax.hessian(psi)(eta), jax.jacfwd(jax.hessian(psi))(eta)


def scalar_hessian(family: Family, theta):
    r"""Route ``hessian``: :math:`R = \tfrac14(|T|^2_g - |\tau|^2_g)` with autodiff :math:`T=\nabla^3\psi`."""
    if not family.is_hessian_metric:
        raise ValueError(f"method='hessian' needs an exponential family; {family.name} is {family.kind}")
    g, t = hessian_jets(family, theta)
    t2, tau2, kappa = _hessian_contractions(g, t)
    r = 0.25 * (t2 - tau2)
    return r, (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r), kappa


def gram_form(n: int, m: int) -> bool:
    """Whether the cumulant contractions over ``n`` atoms in dimension ``m`` take the Gram form
    (``O(n^2 m)``, pairs of atoms) rather than the tensor form (``O(n m^3)``): ``n <= m^2``."""
    return n <= m * m


def cumulant_contractions(w, u):
    """``(|T|^2_g, |tau|^2_g, kappa)`` from atoms ``g = sum w u u^T``, ``T = sum w u^(x)3``."""
    n, m = u.shape
    g = jnp.einsum("a,ai,aj->ij", w, u, u)
    linv = cholesky_inverse(g)
    kappa = scaled_condition(g, linv)
    wt = u @ linv.T  # whitened atoms W_a = L^{-1} u_a
    norms = jnp.sum(wt**2, axis=1)
    if gram_form(n, m):  # O(n^2 m)
        gram = wt @ wt.T
        t2 = w @ (gram**3) @ w
        tau2 = (w * norms) @ gram @ (w * norms)
        # The Gram sums have terms of both signs: their rounding error scales with the sum of
        # |terms|, not with |T|^2 + |tau|^2.  Fold that ratio into the returned amplification so
        # that kappa * (|T|^2 + |tau|^2) is the true error scale of R.
        mag = w @ jnp.abs(gram**3) @ w + jnp.abs(w * norms) @ jnp.abs(gram) @ jnp.abs(w * norms)
        kappa = kappa * mag / (jnp.abs(t2) + jnp.abs(tau2))
    else:  # tensor form, O(n m^3)
        tt = jnp.einsum("a,ai,aj,ak->ijk", w, wt, wt, wt)
        t2 = jnp.sum(tt**2)
        tau = (w * norms) @ wt
        tau2 = tau @ tau
    return t2, tau2, kappa


def scalar_cumulant(family: Family, theta):
    """Route ``cumulant``: closed form from the moments of the keys under ``p`` (softmax-linear only).

    Per point this is :func:`cumulant_contractions` of the atoms; under ``jax.vmap``
    with query dimension ``<= 4`` a ``custom_vmap`` rule runs the batch-major kernel
    :func:`geometry._src.sweep.cumulant_batch_major` instead (same formulas and
    diagnostics, closed-form small Cholesky instead of batched LAPACK calls).
    """
    if family.kind != "softmax-linear":
        raise ValueError(f"method='cumulant' needs a softmax-linear family (categorical/attention); {family.name} is {family.kind}")
    from . import sweep  # noqa: PLC0415  (sweep imports api, which imports this module)

    if sweep.unrolled_ok(family) and jnp.ndim(theta) == 1:
        return sweep.batched_cumulant_fn(family)(theta)
    return sweep.cumulant_point(family, theta)


ROUTES = {"levi-civita": scalar_levi_civita, "hessian": scalar_hessian, "cumulant": scalar_cumulant}


def default_route(family: Family) -> str:
    """Fastest accurate float64 route.  Exponential families given through a chart (the Gaussian in
    ``(mu, sigma)``) use Levi-Civita in their own coordinates: the natural coordinates of a narrow
    Gaussian are badly scaled (``eta_2 = -1/(2 sigma^2)``), which would cost digits for nothing."""
    if family.kind == "softmax-linear":
        return "cumulant"
    if family.kind == "exponential" and family.natural is None:
        return "hessian"
    return "levi-civita"
