r"""Arbitrary-precision (mpmath) evaluation of the Fisher metric and scalar curvature at a point.

This is the fallback of the precision-controlled :func:`geometry.scalar_curvature`
and the oracle of the tests.  It works from the family's single definition:

* softmax-linear families: the cumulant formula of :mod:`geometry._src.routes`
  evaluated with every intermediate in ``dps`` decimal digits, starting from the
  exact binary values of the keys, scale and coordinates;
* exponential families: :math:`\psi` lowered to sympy, differentiated exactly
  (:math:`\nabla^2\psi`, :math:`\nabla^3\psi`), evaluated with mpmath, Hessian formula;
* discrete families: the exact score-sum metric, lowered to sympy, its first and
  second derivatives evaluated with mpmath and fed to the Levi-Civita formula.

Every result comes with the same diagnostics as the float64 routes
(cancellation factor and condition number) computed *in* high precision, and
:func:`curvature` raises the working precision until the estimated error is
below the requested tolerance.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time

import gmpy2
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import sympy

from . import quadrature
from .families import Family
from .mathns import JAX, MPMATH, SYMPY
from .tiers import BUDGET, HIGH_PRECISION, UNDEFINED, Outcome

MAX_DPS = 4000
#: Hard cap on the precision rounds of one point (each round at least doubles the digits).
MAX_ROUNDS = 16
#: A computed ``|R|`` within an absolute error bound below float64's smallest normal number is
#: reported as ``R = 0``: whatever the true value, 0.0 is then its float64 value up to the subnormal
#: range.  A true zero (two independent coins) has no relative error, so without this absolute
#: decision raising the precision would never end.
ZERO_ATOL = 2.0**-1022
LOG10_ZERO_ATOL = float(np.log10(ZERO_ATOL))
#: The time budget is enforced *within* a point: before a precision round the tier predicts its
#: cost from the last round and refuses a round predicted to outlast the time left (one
#: evaluation cannot be interrupted).  Cost model: ``t(d) ~ (1 + d / ROUND_COST_DIGITS) **
#: ROUND_COST_EXPONENT`` -- a fixed Python overhead below a few hundred digits, then
#: mpmath/gmpy2 multiplication (~d^1.6, Karatsuba).  Measured on attention heads n = 32, m = 6
#: and n = 128, m = 32 between 40 and 4000 digits, it predicts each round within 30 %.
ROUND_COST_DIGITS = 300.0
ROUND_COST_EXPONENT = 1.7


def predicted_round_seconds(last_seconds: float, last_dps: int, dps: int) -> float:
    """Predicted time of a round at ``dps`` digits from the last one (see :data:`ROUND_COST_EXPONENT`)."""
    return last_seconds * ((1 + dps / ROUND_COST_DIGITS) / (1 + last_dps / ROUND_COST_DIGITS)) ** ROUND_COST_EXPONENT

#: mpmath's working precision is one process-wide setting: every evaluation in this tier (and
#: the oracle) holds this lock, so two threads cannot change each other's precision mid-way.
LOCK = threading.RLock()


def _per_family(fn):
    """Cache ``fn(family)`` (a symbolic lowering) by the family's structure and leaf *values*: families
    are pytrees whose array leaves (keys, a temperature) cannot be hashed, and two families of one
    structure with different leaves lower to different expressions."""
    cache: dict = {}

    @functools.wraps(fn)
    def cached(family):
        leaves, treedef = jax.tree_util.tree_flatten(family)
        key = (treedef, tuple((np.shape(v), np.asarray(v, np.float64).tobytes()) for v in leaves))
        if key not in cache:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))
            cache[key] = fn(family)
        return cache[key]

    return cached


class BudgetExhausted(ArithmeticError):
    """The high-precision time budget ran out while a point was being computed."""


class SingularMetric(ArithmeticError):
    """The metric is singular (not positive definite) even in high precision."""


class PrecisionExhausted(ArithmeticError):
    """The cancellation at this point needs more than ``MAX_DPS`` digits."""


def _mpf(x):
    return mpmath.mpf(float(x))  # exact: every float64 is a binary rational


def _cholesky(g):
    """Lower Cholesky factor in the working precision (mpmath's own uses an absolute tolerance of eps,
    which rejects the perfectly definite but tiny metrics of low-entropy points)."""
    m = g.rows
    chol = mpmath.matrix(m, m)
    for j in range(m):
        s = g[j, j] - mpmath.fsum(chol[j, k] ** 2 for k in range(j))
        if not s > 0:
            raise SingularMetric(
                f"metric is not positive definite at {mpmath.mp.dps} digits (pivot {j} = {mpmath.nstr(s, 5)})"
            )
        chol[j, j] = mpmath.sqrt(s)
        for i in range(j + 1, m):
            chol[i, j] = (g[i, j] - mpmath.fsum(chol[i, k] * chol[j, k] for k in range(j))) / chol[j, j]
    return chol


def _inverse_lower(chol):
    """Inverse of a lower-triangular matrix by forward substitution (no absolute pivot tolerance)."""
    m = chol.rows
    inv = mpmath.matrix(m, m)
    for j in range(m):
        inv[j, j] = 1 / chol[j, j]
        for i in range(j + 1, m):
            inv[i, j] = -mpmath.fsum(chol[i, k] * inv[k, j] for k in range(j, i)) / chol[i, i]
    return inv


def _kappa(g, ginv):
    return mpmath.mnorm(g, "f") * mpmath.mnorm(ginv, "f")


def softmax_atoms(family: Family, x):
    ws, us = [], []
    for h in family.softmax_heads():
        keys = [[_mpf(v) for v in row] for row in np.asarray(h.keys)]
        s = _mpf(h.scale)
        z = [s * mpmath.fsum(k * xi for k, xi in zip(row, x)) for row in keys]
        if h.offset is not None:  # exact: an offset is a float64, an mpf holds it exactly
            z = [zi + _mpf(b) for zi, b in zip(z, np.asarray(h.offset))]
        logp = MPMATH.log_softmax(z)
        p = [mpmath.exp(t) for t in logp]
        m = len(x)
        # centre at the dominant key first, as in fisher.softmax_atoms: k_i - k_a is exact in
        # binary, sum_j p_j (k_j - k_a) is a sum of small terms, so no digits are lost to
        # k_a - mean when p is nearly one-hot (that loss grows without bound as H -> 0)
        a = max(range(len(p)), key=lambda i: p[i])
        d = [[keys[i][j] - keys[a][j] for j in range(m)] for i in range(len(p))]
        mean = [mpmath.fsum(p[i] * d[i][j] for i in range(len(p))) for j in range(m)]
        for i in range(len(p)):
            ws.append(p[i])
            us.append([s * (d[i][j] - mean[j]) for j in range(m)])
    return ws, us


def _to_mpfr(v):
    sign, man, exp, _ = v._mpf_  # exact: an mpf is (-1)**sign * man * 2**exp (``man_exp`` drops the sign)
    y = gmpy2.mul_2exp(gmpy2.mpfr(man), exp)
    return -y if sign else y


def _to_mpf(y):
    man, exp = y.as_mantissa_exp()
    return mpmath.mpf((int(man), int(exp)))


def _gmpy2_context():
    """gmpy2 context at the current mpmath precision (+16 guard bits for the plain, non-fsum sums)."""
    ctx = gmpy2.get_context().copy()
    ctx.precision = mpmath.mp.prec + 16
    ctx.emax, ctx.emin = gmpy2.get_emax_max(), gmpy2.get_emin_min()
    return ctx


def _in_gmpy2_range(values) -> bool:
    limit = gmpy2.get_emax_max() // 2
    return all(v == 0 or abs(v._mpf_[2] + v._mpf_[3]) < limit for v in values)


def _cumulant(family: Family, x):
    w, u = softmax_atoms(family, x)
    n, m = len(w), len(x)
    # The O(n^2 m) and O(n m^2) contractions dominate for real heads (n = 128, m = 32); they run on
    # numpy object arrays of gmpy2 mpfr (C arithmetic, ~7x faster than mpmath), the O(m^3)
    # factorisation stays in mpmath.  gmpy2 exponents are bounded, so astronomically small
    # probabilities keep the pure mpmath path.
    fast = _in_gmpy2_range(w)
    if fast:
        with gmpy2.context(_gmpy2_context()):
            wa = np.array([_to_mpfr(v) for v in w], dtype=object)
            ua = np.array([[_to_mpfr(v) for v in row] for row in u], dtype=object)
            ga = (ua.T * wa) @ ua
            g = mpmath.matrix([[_to_mpf(ga[i, j]) for j in range(m)] for i in range(m)])
    else:
        g = mpmath.matrix(m, m)
        for i in range(m):
            for j in range(i, m):
                g[i, j] = g[j, i] = mpmath.fsum(w[a] * u[a][i] * u[a][j] for a in range(n))
    chol = _cholesky(g)
    linv = _inverse_lower(chol)
    ginv = linv.T * linv
    if fast and n <= m * m:
        with gmpy2.context(_gmpy2_context()):
            la = np.array([[_to_mpfr(linv[i, j]) for j in range(m)] for i in range(m)], dtype=object)
            wt = ua @ la.T  # whitened atoms W_a = L^{-1} u_a
            gram = wt @ wt.T
            norms = np.array([gram[a, a] for a in range(n)], dtype=object)
            cube = gram * gram * gram
            t2 = _to_mpf(wa @ cube @ wa)
            wn = wa * norms
            tau2 = _to_mpf(wn @ gram @ wn)
            absn = np.vectorize(abs, otypes=[object])
            mag = _to_mpf(wa @ absn(cube) @ wa + absn(wn) @ absn(gram) @ absn(wn))
        return t2, tau2, _kappa(g, ginv) * mag / (abs(t2) + abs(tau2))  # see curvature.cumulant_contractions
    wt = [[mpmath.fsum(linv[i, j] * u[a][j] for j in range(i + 1)) for i in range(m)] for a in range(n)]
    norms = [mpmath.fsum(c * c for c in row) for row in wt]
    if n <= m * m:
        gram = [[mpmath.fsum(wt[a][i] * wt[b][i] for i in range(m)) for b in range(n)] for a in range(n)]
        t2 = mpmath.fsum(w[a] * w[b] * gram[a][b] ** 3 for a in range(n) for b in range(n))
        tau2 = mpmath.fsum(w[a] * w[b] * norms[a] * norms[b] * gram[a][b] for a in range(n) for b in range(n))
        mag = mpmath.fsum(abs(w[a] * w[b] * gram[a][b] ** 3) + abs(w[a] * w[b] * norms[a] * norms[b] * gram[a][b])
                          for a in range(n) for b in range(n))
        return t2, tau2, _kappa(g, ginv) * mag / (abs(t2) + abs(tau2))  # see curvature.cumulant_contractions
    else:
        tt = {}
        for i, j, k in itertools.combinations_with_replacement(range(m), 3):
            tt[i, j, k] = mpmath.fsum(w[a] * wt[a][i] * wt[a][j] * wt[a][k] for a in range(n))
        t2 = mpmath.fsum(tt[tuple(sorted(idx))] ** 2 for idx in itertools.product(range(m), repeat=3))
        tau = [mpmath.fsum(w[a] * norms[a] * wt[a][i] for a in range(n)) for i in range(m)]
        tau2 = mpmath.fsum(t * t for t in tau)
    return t2, tau2, _kappa(g, ginv)


def _hessian_contractions(g, t):
    m = g.rows
    chol = _cholesky(g)
    linv = _inverse_lower(chol)
    ginv = linv.T * linv
    # whiten: tw_abc = Linv_ai Linv_bj Linv_ck T_ijk
    tw = np.empty((m, m, m), dtype=object)
    for a, b, c in itertools.product(range(m), repeat=3):
        tw[a, b, c] = mpmath.fsum(
            linv[a, i] * linv[b, j] * linv[c, k] * t[i][j][k]
            for i in range(a + 1)
            for j in range(b + 1)
            for k in range(c + 1)
        )
    t2 = mpmath.fsum(v * v for v in tw.flat)
    tau = [mpmath.fsum(tw[a, a, c] for a in range(m)) for c in range(m)]
    tau2 = mpmath.fsum(v * v for v in tau)
    return t2, tau2, _kappa(g, ginv)


@_per_family
def _psi_jets(family: Family):
    """Exact ``hess psi`` and ``grad^3 psi`` in natural coordinates, lambdified for mpmath."""
    eta = sympy.symbols(f"eta0:{family.dim}", real=True)
    psi = family.potential()[0](list(eta), SYMPY)
    hess = [[sympy.diff(psi, eta[i], eta[j]) for j in range(family.dim)] for i in range(family.dim)]
    third = [[[sympy.diff(hess[i][j], eta[k]) for k in range(family.dim)] for j in range(family.dim)] for i in range(family.dim)]
    return sympy.lambdify(eta, hess, modules="mpmath"), sympy.lambdify(eta, third, modules="mpmath")


def _hessian(family: Family, theta):
    hess_fn, third_fn = _psi_jets(family)
    chart = family.potential()[1]
    eta = theta if chart is None else chart(theta, MPMATH)
    g = mpmath.matrix(hess_fn(*eta))
    return _hessian_contractions(g, third_fn(*eta))


@_per_family
def _metric_jets(family: Family):
    """The family's lowered metric (:meth:`geometry.Family.lower_metric`) and its first two derivatives, for mpmath."""
    th = sympy.symbols(f"theta0:{family.dim}", real=True)
    d = family.dim
    g = family.lower_metric(list(th), SYMPY)
    dg = [[[sympy.diff(g[i][j], th[k]) for k in range(d)] for j in range(d)] for i in range(d)]
    ddg = [[[[sympy.diff(dg[i][j][k], th[l]) for l in range(d)] for k in range(d)] for j in range(d)] for i in range(d)]
    return tuple(sympy.lambdify(th, e, modules="mpmath") for e in (g, dg, ddg))


def _jets_at(family: Family, x, order: int):
    """``(g, dg, ddg)[:order + 1]`` at the mpf point ``x`` as nested lists (index order: ``g[i][j]``, then the
    derivative indices), from the exact lowering or, for a density family, by ``mpmath.quad``."""
    if family.density() is not None:
        return _density_jets(family, x, order)
    return tuple(fn(*x) for fn in _metric_jets(family)[: order + 1])


@_per_family
def _density_integrands(family: Family):
    r"""The log-density's derivatives in ``theta`` up to third order, lambdified as one vector function of
    ``(theta..., x)``: ``[l, l_i, l_ij (i <= j), l_ijk (i <= j <= k)]``.  The integrands of ``g`` and its
    derivatives are assembled from them (:func:`_density_jets`); the support does not depend on
    ``theta``, so the derivatives commute with the integral."""
    log_density, _ = family.density()
    d = family.dim
    th = sympy.symbols(f"theta0:{d}", real=True)
    xs = sympy.Symbol("x", real=True)
    ell = log_density(list(th), xs, SYMPY)
    keys, exprs = [()], [ell]
    for order in (1, 2, 3):
        for idx in itertools.combinations_with_replacement(range(d), order):
            keys.append(idx)
            exprs.append(sympy.diff(ell, *[th[i] for i in idx]))
    fn = sympy.lambdify(list(th) + [xs], exprs, modules="mpmath", cse=True)
    return fn, {key: n for n, key in enumerate(keys)}


@_per_family
def _rule_centre_fn(family: Family):
    log_density, support = family.density()
    return jax.jit(lambda t: quadrature.adapted_points(lambda x: log_density(t, x, JAX), support))


def _phi_mp(y, support):
    """:func:`geometry._src.quadrature._phi` in mpmath: ``(x, dx/dy)``."""
    lo, hi = support
    if np.isinf(lo) and np.isinf(hi):
        return y, mpmath.mpf(1)
    if np.isinf(hi):
        e = mpmath.exp(y)
        return _mpf(lo) + e, e
    if np.isinf(lo):
        e = mpmath.exp(-y)
        return _mpf(hi) - e, e
    w = _mpf(hi) - _mpf(lo)
    sig = 1 / (1 + mpmath.exp(-y))
    return (_mpf(lo) + w * sig if y < 0 else _mpf(hi) - w / (1 + mpmath.exp(y))), w * sig * (1 - sig)


#: The trapezoid rule of :func:`_density_jets` halves its step until two levels agree to the working
#: precision less QUADRATURE_GUARD_DIGITS, at most MAX_HALVINGS times from ``h = 1/8``.
MAX_HALVINGS = 8
QUADRATURE_GUARD_DIGITS = 8


def _density_jets(family: Family, x, order: int):
    r"""``(g, dg, ddg)[:order + 1]`` of a density family in the working precision.

    The float64 rule of :mod:`geometry._src.quadrature`, in mpmath: the same substitution
    :math:`x = \phi(c + s\sinh(\tfrac{\pi}{2}\sinh t))` with the float64 centre and scale, and the
    trapezoid rule in ``t`` (the double-exponential rule), its step halved until two levels agree to
    :math:`10^{8-d}` for ``d`` working digits.  The sum over ``t`` runs outwards from 0 until the
    integrands fall below :math:`10^{-2d}` of the largest (they decay doubly exponentially).  Why not
    ``mpmath.quad`` on the original interval: its tanh-sinh rule re-transforms the already transformed
    integrand and needed ~4,000 nodes for a normal density at 40 digits (12 s a point here), where
    this rule needs a few hundred.  Integrands of ``g_ij`` and its derivatives, with
    :math:`p = e^{l}` and subscripts derivatives of :math:`l` in ``theta``:
    :math:`p\,l_il_j`, :math:`\partial_k: p(l_kl_il_j + l_{ik}l_j + l_il_{jk})`, and
    :math:`\partial_m\partial_k` by the product rule once more.
    """
    fn, index = _density_integrands(family)
    _, support = family.density()
    d = family.dim
    c, s = (mpmath.mpf(float(v)) for v in _rule_centre_fn(family)(jnp.asarray([float(v) for v in x])))
    half_pi = mpmath.pi / 2
    tiny = mpmath.mpf(10) ** (-2 * mpmath.mp.dps)
    lo, hi = support
    rng = range(d)

    def lv(*idx):
        return index[tuple(sorted(idx))]

    def node(t):  # all integrands at t, times the substitution's Jacobian (None outside the support)
        u = half_pi * mpmath.sinh(t)
        y = c + s * mpmath.sinh(u)
        xv, dxdy = _phi_mp(y, support)
        if not (lo < xv < hi):
            return None
        v = fn(*x, xv)
        p = mpmath.exp(v[0]) * dxdy * s * mpmath.cosh(u) * half_pi * mpmath.cosh(t)
        l1 = [v[lv(i)] for i in rng]
        out = {}
        for i in rng:
            for j in range(i, d):
                out[i, j] = p * l1[i] * l1[j]
                if order >= 1:
                    for k in rng:
                        a = l1[k] * l1[i] * l1[j] + v[lv(i, k)] * l1[j] + l1[i] * v[lv(j, k)]
                        out[i, j, k] = p * a
                        if order >= 2:
                            for m in range(k, d):
                                da = (v[lv(k, m)] * l1[i] * l1[j] + l1[k] * v[lv(i, m)] * l1[j] + l1[k] * l1[i] * v[lv(j, m)]
                                      + v[lv(i, k, m)] * l1[j] + v[lv(i, k)] * v[lv(j, m)]
                                      + v[lv(i, m)] * v[lv(j, k)] + l1[i] * v[lv(j, k, m)])
                                out[i, j, k, m] = p * (l1[m] * a + da)
        return out

    def add(a, b):
        return b if a is None else a if b is None else {key: a[key] + b[key] for key in a}

    def side_sum(start, step):  # sum over t = start + k * step (step < 0: leftwards) until negligible
        total, top = None, {}
        for k in itertools.count():
            t = start + k * step
            if abs(t) > 8:  # sinh(pi/2 sinh 8) ~ 10^1017 scales: nothing of any density is left
                return total
            vals = node(t)
            total = add(total, vals)
            if vals is not None:
                top = {key: max(top.get(key, 0), abs(v)) for key, v in vals.items()}
            # every integrand (they decay at different rates: a scale score does not decay at all)
            if k > 4 and (vals is None or all(abs(v) <= tiny * top[key] for key, v in vals.items())):
                return total

    h = mpmath.mpf(1) / 8
    sums = add(side_sum(mpmath.mpf(0), h), side_sum(-h, -h))
    if sums is None:
        raise PrecisionExhausted("the quadrature found no node inside the support")
    estimate = {key: v * h for key, v in sums.items()}
    for _ in range(MAX_HALVINGS):
        h /= 2
        sums = add(sums, add(side_sum(h, 2 * h), side_sum(-h, -2 * h)))  # the nodes between the previous ones
        refined = {key: v * h for key, v in sums.items()}
        scale = max(abs(v) for v in refined.values())
        # rounding of a few hundred terms stalls the difference a few digits above 10^-dps
        done = all(abs(refined[key] - estimate[key]) <= 10 ** (QUADRATURE_GUARD_DIGITS - mpmath.mp.dps) * scale for key in refined)
        estimate = refined
        if done:
            break
    else:
        raise PrecisionExhausted(f"the quadrature of the Fisher metric did not converge to {mpmath.mp.dps} digits")
    sym = lambda i, j: (min(i, j), max(i, j))  # noqa: E731
    out = [[[estimate[sym(i, j)] for j in rng] for i in rng]]
    if order >= 1:
        out.append([[[estimate[sym(i, j) + (k,)] for k in rng] for j in rng] for i in rng])
    if order >= 2:
        out.append([[[[estimate[sym(i, j) + sym(k, m)] for m in rng] for k in rng] for j in rng] for i in rng])
    return tuple(out)


def levi_civita_from_jets(g, dg, ddg):
    """Scalar curvature and diagnostics (mpmath) from ``g``, ``dg[i][j][k]``, ``ddg[i][j][k][l]``.

    Uses the coordinate formula (conventions of :mod:`geometry._src.tensors`)
    :math:`\\partial_m\\Gamma^k_{ij} = g^{kl}\\partial_m\\Gamma_{lij} - g^{ka}\\partial_m g_{ab}\\Gamma^b_{ij}`.
    """
    d = g.rows
    linv = _inverse_lower(_cholesky(g))
    ginv = linv.T * linv
    rng = range(d)
    first = {(l, i, j): (dg[j][l][i] + dg[i][l][j] - dg[i][j][l]) / 2 for l in rng for i in rng for j in rng}
    dfirst = {
        (l, i, j, m): (ddg[j][l][i][m] + ddg[i][l][j][m] - ddg[i][j][l][m]) / 2
        for l in rng for i in rng for j in rng for m in rng
    }
    gam = {(k, i, j): mpmath.fsum(ginv[k, l] * first[l, i, j] for l in rng) for k in rng for i in rng for j in rng}
    dgam = {}
    for k, i, j, m in itertools.product(rng, repeat=4):
        dgam[k, i, j, m] = mpmath.fsum(ginv[k, l] * dfirst[l, i, j, m] for l in rng) - mpmath.fsum(
            ginv[k, a] * dg[a][b][m] * gam[b, i, j] for a in rng for b in rng
        )
    total, mag = [], []
    for s, n in itertools.product(rng, repeat=2):
        for r in rng:  # Ricci_{sn} = R^r_{s r n}, mu = r
            terms = [dgam[r, n, s, r], -dgam[r, r, s, n]]
            terms += [gam[r, r, l] * gam[l, n, s] for l in rng]
            terms += [-gam[r, n, l] * gam[l, r, s] for l in rng]
            total.append(ginv[s, n] * mpmath.fsum(terms))
            mag.append(abs(ginv[s, n]) * mpmath.fsum(abs(t) for t in terms))
    r = mpmath.fsum(total)
    return r, mpmath.fsum(mag), _kappa(g, ginv)


@_per_family
def _chart_metric(family: Family):
    """Exact ``J`` and ``(hess psi)(eta(theta))`` of an exponential family, lambdified for mpmath
    (the product ``J^T H J`` is formed numerically, so that its cancellation can be measured)."""
    th = sympy.symbols(f"theta0:{family.dim}", real=True)
    log_partition, chart = family.potential()
    eta = list(th) if chart is None else list(chart(list(th), SYMPY))
    es = sympy.symbols(f"eta0:{len(eta)}", real=True)
    psi = log_partition(list(es), SYMPY)
    hess = sympy.Matrix(len(es), len(es), lambda i, j: sympy.diff(psi, es[i], es[j])).subs(dict(zip(es, eta)))
    jac = sympy.Matrix(len(eta), family.dim, lambda i, j: sympy.diff(eta[i], th[j]))
    return sympy.lambdify(th, jac.tolist(), modules="mpmath"), sympy.lambdify(th, hess.tolist(), modules="mpmath")


def _chart_product(family, x):
    """``(g = J^T H J, digits lost)``: the loss is ``log10(max(|J|^T |H| |J|) / max|g|)`` (all, if ``g = 0``)."""
    jac_fn, hess_fn = _chart_metric(family)
    jac, hess = mpmath.matrix(jac_fn(*x)), mpmath.matrix(hess_fn(*x))
    g = jac.T * hess * jac
    mag = jac.apply(abs).T * hess.apply(abs) * jac.apply(abs)
    top = max(abs(v) for v in g)
    lost = float(mpmath.log10(max(abs(v) for v in mag) / top)) if top != 0 else float(mpmath.mp.dps)
    return g, lost


def metric_at(family: Family, theta, dps: int):
    """The Fisher metric at one point as an ``mpmath.matrix`` computed at ``dps`` digits."""
    if not family.lowerable:
        raise NotImplementedError(f"{family.name} is defined by a plain JAX function and cannot be lowered to mpmath")
    with LOCK, mpmath.workdps(dps):
        x = [_mpf(t) for t in theta]
        if family.softmax_heads() is not None:
            w, u = softmax_atoms(family, x)
            m = len(x)
            return mpmath.matrix([[mpmath.fsum(w[a] * u[a][i] * u[a][j] for a in range(len(w))) for j in range(m)] for i in range(m)])
        if family.potential() is not None:
            return _chart_product(family, x)[0]
        return mpmath.matrix(_jets_at(family, x, 0)[0])


def metric(family: Family, theta, rtol: float = 1e-12, dps: int = 40):
    """Fisher metric to relative tolerance ``rtol`` (max-norm), by doubling ``dps`` until two agree."""
    with LOCK:
        return _metric(family, theta, rtol, dps)


def _metric(family, theta, rtol, dps):
    potential = family.potential()
    if family.softmax_heads() is None and potential is not None and potential[1] is not None:
        # through a chart, J^T H J can cancel to the same wrong value at every precision (a Gaussian
        # at mu = 1e160 loses 320 digits to exactly 0): size the precision from the measured loss
        while dps <= MAX_DPS:
            with mpmath.workdps(dps):
                g, lost = _chart_product(family, [_mpf(t) for t in theta])
            need = lost - np.log10(rtol) + 10
            if dps >= need:
                return g
            dps = int(max(2 * dps, need + 5))
        raise PrecisionExhausted(f"the metric through the chart loses more than {MAX_DPS} digits")
    prev = metric_at(family, theta, dps)
    while dps < MAX_DPS:
        dps *= 2
        cur = metric_at(family, theta, dps)
        with mpmath.workdps(dps):
            diff = mpmath.mnorm(cur - prev, 1)
            size = mpmath.mnorm(cur, 1)
        if diff <= rtol * size:
            return cur
        prev = cur
    raise PrecisionExhausted(f"the metric did not converge to rtol={rtol:g} below {MAX_DPS} digits")


def defining_values(family: Family, theta, dps: int = 40):
    """:meth:`geometry.Family.defining_values` in mpmath at ``dps`` digits (``None`` if the family has none)."""
    with LOCK, mpmath.workdps(dps):
        return family.defining_values([_mpf(t) for t in theta], MPMATH)


def is_positive_definite(g) -> tuple[bool, float]:
    """``(definite?, smallest eigenvalue)`` of an mpmath matrix, in its working precision."""
    with LOCK, mpmath.workdps(max(30, mpmath.mp.dps)):
        lam = min(mpmath.eigsy(g, eigvals_only=True))
    return bool(lam > 0), float(lam)


def _levi_civita(family: Family, theta):
    g, dg, ddg = _jets_at(family, theta, 2)
    r, mag, kappa = levi_civita_from_jets(mpmath.matrix(g), dg, ddg)
    return r, mag, kappa


def _lower(family: Family):
    """Build (and cache) the symbolic lowering :func:`evaluate` uses, so that the timing of a precision
    round, from which the next round's cost is predicted, measures arithmetic only."""
    if family.dim > 1 and family.softmax_heads() is None:
        if family.potential() is not None:
            _psi_jets(family)
        elif family.density() is not None:
            _density_integrands(family)
        else:
            _metric_jets(family)


def evaluate(family: Family, theta, dps: int):
    """One evaluation at ``dps`` digits: ``(R, scale, kappa)`` with ``scale`` the cancellation magnitude."""
    with LOCK, mpmath.workdps(dps):
        x = [_mpf(t) for t in theta]
        if family.dim == 1:
            return mpmath.mpf(0), mpmath.mpf(0), mpmath.mpf(1)
        if family.softmax_heads() is not None:
            t2, tau2, kappa = _cumulant(family, x)
        elif family.potential() is not None:
            t2, tau2, kappa = _hessian(family, x)
        else:
            return _levi_civita(family, x)
        return (t2 - tau2) / 4, (abs(t2) + abs(tau2)) / 4, kappa


def curvature(family: Family, theta, rtol: float = 1e-8, dps: int = 40, clock=None):
    """Scalar curvature in arbitrary precision, to relative tolerance ``rtol``.

    Returns ``(R as mpf, estimated relative error, dps used)``.  At ``dps`` digits the
    absolute error of ``R = (|T|^2 - |tau|^2)/4`` is bounded (first order, with a
    safety factor 100) by ``err = 10**-dps * kappa(g) * (|T|^2 + |tau|^2)/4``.  The
    result is accepted only when ``err <= rtol * |R|``.  While ``err`` is comparable
    to the computed ``|R|``, that ``|R|`` is itself noise and cannot be used to size
    the precision, so the digits are raised assuming ``|R| >= 1e-3 * min(1, scale)``
    and the loop repeats.  When that precision still does not resolve ``|R|``, the digits are
    raised until the absolute error bound is below :data:`ZERO_ATOL`, and ``R = 0`` is returned
    (estimated relative error 0: 0.0 is the float64 value of any ``|R| < ZERO_ATOL``).
    Families other than softmax ones (their metric is built from a lowered user definition,
    which may cancel in ways the estimate cannot see) are accepted only when a second
    evaluation at 1.5 times the digits agrees to ``rtol / 10``.  At most :data:`MAX_ROUNDS` rounds and :data:`MAX_DPS` digits.
    Raises :class:`SingularMetric` for a singular metric, :class:`PrecisionExhausted`
    when more digits would be needed, and :class:`BudgetExhausted` when ``clock`` expires or
    the next round is predicted to outlast it (:data:`ROUND_COST_EXPONENT`).  Holds :data:`LOCK` (mpmath's precision is process-wide).
    """
    if not family.lowerable:
        raise NotImplementedError(f"{family.name} is defined by a plain JAX function and cannot be lowered to mpmath")
    with LOCK:
        return _curvature(family, theta, rtol, dps, clock)


def _curvature(family, theta, rtol, dps, clock):
    target = -np.log10(rtol)
    singular_retries = 0
    verified = None  # (R, terms) last accepted by the estimate, at a lower precision
    last = None  # (seconds, digits) of the last round: predicts the next one's cost
    _lower(family)
    for _ in range(MAX_ROUNDS):
        if clock is not None:
            if clock.expired():
                raise BudgetExhausted(f"high-precision time budget of {clock.budget:g} s exhausted at {dps} digits")
            predicted = 0.0 if last is None else predicted_round_seconds(last[0], last[1], dps)
            if predicted > clock.remaining():
                raise BudgetExhausted(
                    f"the next precision round ({dps} digits) would take about {predicted:.2g} s, more than the "
                    f"{clock.remaining():.2g} s left of the high-precision time budget of {clock.budget:g} s"
                )
        started = time.perf_counter()
        try:
            r, scale, kappa = evaluate(family, theta, dps)
            last = (time.perf_counter() - started, dps)
        except SingularMetric:
            # a definite but badly conditioned metric can look singular at low precision
            singular_retries += 1
            if singular_retries > 3 or dps >= MAX_DPS:
                if family.definite_by_construction:
                    raise PrecisionExhausted(
                        f"the metric is definite, but resolving its smallest eigenvalue needs more than {dps} "
                        f"digits (condition number > 10^{dps}); probabilities far below the float64 range"
                    ) from None
                raise
            dps = min(MAX_DPS, dps * 4)
            continue
        if r == 0 and scale == 0:
            return r, 0.0, dps
        with mpmath.workdps(30):
            log_scale = float(mpmath.log10(scale * kappa * 100))  # log10 of err * 10**dps
            log_r = float(mpmath.log10(abs(r))) if r != 0 else -float("inf")
        if not np.isfinite(log_scale):
            raise PrecisionExhausted("the cancellation magnitude is not representable")
        lost = log_scale - log_r  # digits lost relative to |R|
        noise = log_r <= log_scale - dps
        if log_scale - dps < log_r - 1 and dps >= lost + target:  # error well below |R| and below rtol
            candidate = (r, float(10.0 ** (lost - dps)))
        elif noise and log_scale - dps <= LOG10_ZERO_ATOL:  # |R| below an absolute bound under float64's range
            candidate = (mpmath.mpf(0), 0.0)
        else:
            candidate = None
        if candidate is not None:
            value, err = candidate
            if family.softmax_heads() is not None:  # centred cumulant formula: the estimate sees every loss
                return value, err, dps
            # a lowered user definition may cancel while building the metric (an uncentred symbolic
            # Hessian of logsumexp), which the estimate cannot see: accept only when a second,
            # higher precision agrees
            if _agrees(verified, value, scale, rtol, dps):
                with mpmath.workdps(dps):
                    diff = float(abs(value - verified[0]) / abs(value)) if value != 0 else 0.0
                return value, max(err, diff), dps
            verified = (value, scale)
            dps = int(min(MAX_DPS, dps * 3 // 2 + 10))
            continue
        if log_scale - dps < log_r - 1:  # |R| is resolved: size the precision from it
            need = lost + target + 5
        else:  # |R| is noise: assume it is not much smaller than the terms' natural scale
            need = log_scale - min(0.0, log_scale / 2) + target + 8
            if noise and dps >= need:  # that assumption failed already: decide zero by the absolute bound
                need = log_scale - LOG10_ZERO_ATOL + 1
        if need > MAX_DPS:
            raise PrecisionExhausted(
                f"needs about {need:.3g} significant digits (the metric's condition number and the cancellation "
                f"in R = (|T|^2 - |tau|^2)/4 lose about {max(lost, log_scale):.3g} digits), more than the cap "
                f"of {MAX_DPS}; such points have probabilities far below the float64 range"
            )
        dps = int(min(MAX_DPS, max(need + 5, dps * 2)))
    raise PrecisionExhausted(f"no stable value after {MAX_ROUNDS} precision rounds (last {dps} digits)")


def _agrees(verified, r, scale, rtol, dps) -> bool:
    """Whether ``(r, scale)`` agrees with the ``verified`` pair of a lower precision: ``R`` to ``rtol / 10``
    (exactly, for a zero) and the magnitude of the terms to ``rtol / 10`` -- garbage from a cancellation
    the estimate cannot see changes with the precision, a converged evaluation does not."""
    if verified is None:
        return False
    r0, scale0 = verified
    with mpmath.workdps(dps):
        same_r = r == r0 if r == 0 or r0 == 0 else abs(r - r0) <= rtol / 10 * abs(r)
        return bool(same_r and abs(scale - scale0) <= rtol / 10 * abs(scale))


class Mpmath:
    """The mpmath tier (contract in :mod:`geometry._src.tiers`): every family that lowers to mpmath.

    Each point is computed to ``rtol / 10`` by :func:`curvature`; a value beyond the float64
    range is settled as undefined with its reason (it cannot be returned as a float64).
    """

    name = "mpmath"
    status = HIGH_PRECISION
    eps = 0.0

    def supports(self, family) -> bool:
        return family.lowerable

    def evaluate(self, family, rows, rtol, clock, mapper=None) -> Outcome:
        out = Outcome.empty(rows.shape[0])
        for j in range(rows.shape[0]):
            if clock.expired():
                out.settled[j] = (BUDGET, f"not computed: high-precision time budget of {clock.budget:g} s exhausted")
                continue
            try:
                val, err, used = curvature(family, np.asarray(rows[j], np.float64), rtol=rtol / 10, clock=clock)
            except BudgetExhausted as exc:
                out.settled[j] = (BUDGET, f"not computed: {exc}")
                continue
            except SingularMetric as exc:
                out.settled[j] = (UNDEFINED, f"undefined: {exc}")
                continue
            except PrecisionExhausted as exc:
                out.settled[j] = (UNDEFINED, f"not computable to rtol={rtol:g}: {exc}")
                continue
            value = float(val)
            if not np.isfinite(value):
                out.settled[j] = (UNDEFINED, f"overflow: R = {mpmath.nstr(val, 3)} is outside the float64 range")
                continue
            out.value[j], out.rel_error[j], out.dps[j] = value, err, used
        return out


TIER = Mpmath()
