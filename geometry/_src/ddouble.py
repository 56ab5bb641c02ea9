r"""Double-double arithmetic in JAX, and the ``cumulant`` route evaluated with it.

The middle tier of the precision-controlled :func:`geometry.scalar_curvature` for
softmax-linear families: between the float64 kernel (about 16 digits) and mpmath
(any number of digits, but milliseconds per point in pure Python), a vectorised,
jit-compiled evaluation of the *same* formula with every intermediate carried as
an unevaluated sum ``hi + lo`` of two float64 numbers, about 32 significant digits
(Dekker 1971, "A floating-point technique for extending the available precision",
Numer. Math. 18; Hida, Li & Bailey 2001, "Algorithms for quad-double precision
floating point arithmetic", the QD library; Shewchuk 1997 for ``two_sum``).  A
flagged point costs tens of microseconds here instead of milliseconds.

Representation: a double-double number is a pair ``(hi, lo)`` of float64 arrays
with ``|lo| <= ulp(hi)/2``.  The error-free transformations (``two_sum``,
``two_prod`` by splitting into exact partial products) rely on IEEE
round-to-nearest and on the compiler not re-associating floating-point
expressions.  XLA re-associates only around literal constants, which :func:`const`
hides behind an optimisation barrier; LLVM contracts products into fused
multiply-adds on the CPU backend, which ``two_prod`` is written to be immune to.
``tests/test_ddouble.py`` checks both against exact rational arithmetic on every
run.  Range: magnitudes about 1e-290 .. 1e150 (below, ``lo`` loses digits; above,
products overflow).

Error model: every operation here has relative error below :data:`EPS_DD`
(:math:`2^{-103}`, a bound for accurate addition and our multiplication; Hida et al.
sec. 4).  The kernel returns the same diagnostics as the float64 routes
(cancellation :math:`(|T|^2+|\tau|^2)/|R|` and the scaled condition number :math:`\kappa`),
so the caller's estimate is the float64 one with ``EPS`` replaced by ``EPS_DD``.
"""

from __future__ import annotations

import fractions
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .families import Family, Head, equilibration
from .linalg import error_estimate, scaled_condition, scaled_condition_unrolled
from .mapping import pad_rows
from .tiers import HIGH_PRECISION, Outcome

#: Relative error bound of one double-double operation (2^-103; products measure up to 1.01 * 2^-104).
EPS_DD = 2.0**-103
#: Largest query dimension for the unrolled program (Cholesky in closed form, tensor form of
#: T); larger ``m`` use loops over columns and the Gram form (``O(n^2 m)`` per point).
MAX_UNROLLED_DIM = 4
#: Double-double elements per chunk of the Gram program (``chunk * max(n^2, n m^2)``): bounds memory.
GRAM_CHUNK_ELEMENTS = 1 << 20
#: Points whose smallest probability is below ``exp(MIN_LOG_P)`` are left to mpmath:
#: under ~1e-290 the low word of a double-double underflows.
MIN_LOG_P = -650.0
#: Same for the Gram form, whose products of two probabilities must stay above float64's smallest
#: normal number (XLA on the CPU flushes subnormals to zero): ``2 * MIN_LOG_P_GRAM > ln(2^-1022)``.
MIN_LOG_P_GRAM = -354.0



# --------------------------------------------------------------------------- error-free transformations


def two_sum(a, b):
    """``s + e = a + b`` exactly, ``s = fl(a + b)`` (Knuth; no ordering assumption)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def quick_two_sum(a, b):
    """``s + e = a + b`` exactly, assuming ``|a| >= |b|`` (Dekker)."""
    s = a + b
    return s, b - (s - a)


_HIGH_BITS = np.int64(-(1 << 27))  # sign, exponent and the top 26 bits of the significand


def _split(a):
    """``a = hi + lo`` with ``hi`` the top 26 significand bits (bit mask) and ``lo`` the other 27."""
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(a, jnp.int64) & _HIGH_BITS, jnp.float64)
    return hi, a - hi


def two_prod(a, b):
    r"""``p + e = a * b`` to within :math:`3 \cdot 2^{-106}|ab|`, as a normalised pair.

    Dekker's product, written so that every multiplication is *exact* (halves of at most
    27 significand bits; only ``al * bl`` may round, at the :math:`2^{-106}` level): a
    compiler that contracts a product and a sum into a fused multiply-add (LLVM does, in
    XLA's CPU backend) then cannot change any result, and the split is a bit mask rather
    than Veltkamp's ``(2^27+1) a``, whose rounding contraction would also break.
    """
    ah, al = _split(a)
    bh, bl = _split(b)
    s, e1 = two_sum(ah * bh, ah * bl)
    s, e2 = two_sum(s, al * bh)
    return quick_two_sum(s, (e1 + e2) + al * bl)


# --------------------------------------------------------------------------- double-double operations


def dd(x):
    """A float64 array as a double-double (exact)."""
    x = jnp.asarray(x, jnp.float64)
    return x, jnp.zeros_like(x)


def const(value, like):
    """The double-double constant ``value`` (a float or a ``(hi, lo)`` pair), shaped like ``like``.

    Hidden from XLA's algebraic simplifier by an optimisation barrier: with a literal constant
    ``c`` it rewrites ``(c + s) - c`` to ``s`` (re-association of constants), which would erase
    the rounding error ``two_sum`` exists to capture.
    """
    hi, lo = value if isinstance(value, tuple) else (value, 0.0)
    return jax.lax.optimization_barrier((jnp.full_like(like, hi), jnp.full_like(like, lo)))


def add(x, y):
    """Accurate double-double addition (QD ``ieee_add``)."""
    s1, s2 = two_sum(x[0], y[0])
    t1, t2 = two_sum(x[1], y[1])
    s1, s2 = quick_two_sum(s1, s2 + t1)
    return quick_two_sum(s1, s2 + t2)


def neg(x):
    return -x[0], -x[1]


def sub(x, y):
    return add(x, neg(y))


def mul(x, y):
    p1, p2 = two_prod(x[0], y[0])
    return quick_two_sum(p1, p2 + (x[0] * y[1] + x[1] * y[0]))


def mul_f(x, b):
    """Double-double times float64."""
    p1, p2 = two_prod(x[0], b)
    return quick_two_sum(p1, p2 + x[1] * b)


def div(x, y):
    """``x / y`` by three steps of long division (QD ``accurate_div``)."""
    q1 = x[0] / y[0]
    r = sub(x, mul_f(y, q1))
    q2 = r[0] / y[0]
    r = sub(r, mul_f(y, q2))
    q3 = r[0] / y[0]
    return add(quick_two_sum(q1, q2), dd(q3))


def sqrt(x):
    """``sqrt(x)`` for ``x > 0``: one Newton step from the float64 root (Karp & Markstein)."""
    s = jnp.sqrt(x[0])
    r = sub(x, two_prod(s, s))
    return quick_two_sum(s, r[0] / (2.0 * s))


def ldexp(x, k):
    return jnp.ldexp(x[0], k), jnp.ldexp(x[1], k)


def total(x, axis=0):
    """Sum of a double-double array over ``axis``: one ``lax.reduce`` whose combiner is :func:`add`.

    (A hand-written halving tree lets XLA fuse every level into the next, and since ``add``
    reads each operand several times the leaves were recomputed exponentially often.)
    """
    zero = jnp.zeros((), x[0].dtype)
    return jax.lax.reduce((x[0], x[1]), (zero, zero), lambda a, b: add(a, b), (axis % x[0].ndim,))


def _dd_constant(q: fractions.Fraction):
    hi = float(q)
    return hi, float(q - fractions.Fraction(hi))


# ln 2 as three float64 words (to 2^-160): k ln 2 must be accurate to 2^-106 relative to r for
# |k| up to ~1000, which a two-word constant is not (it would cost ~10 bits at p ~ 1e-280).
_LN2 = (0.6931471805599453, 2.3190468138462996e-17, 5.707708438416212e-34)
_EXP_TERMS = 14  # Taylor terms of expm1 on |r| <= ln(2)/2 / 2^4: truncation < 1e-32 relative
_EXP_SQUARINGS = 4  # each squaring doubles the relative error: 2^4 eps_dd in all
_INV_FACT = [_dd_constant(fractions.Fraction(1, math.factorial(j))) for j in range(2, _EXP_TERMS + 1)]


def exp(x):
    r"""``exp(x)`` for a double-double ``x`` (QD's algorithm).

    :math:`x = k\ln 2 + r`, :math:`|r| \le \ln 2/2`; :math:`e^{r/2^4} - 1` by Taylor series,
    squared back with :math:`s \mapsto s(2 + s)` (the expm1 form keeps relative precision),
    then :math:`e^x = 2^k(1 + s)`.  Arguments below about -700 underflow to 0.
    """
    k = jnp.round(x[0] / _LN2[0])
    c0, c1 = const(_LN2[:2], x[0])
    # r = x - k ln 2 without rounding k ln 2 (|k ln 2| ~ 700 would cost 700 * 2^-106 absolute):
    # k has at most 11 bits, so k c0 = p + e and k c1 = q + f are exact, and x_hi - p is exact
    # (Sterbenz); the remaining corrections are small.
    p, e = two_prod(k, c0)
    q, f = two_prod(k, c1)
    r = add(dd(x[0] - p), dd(x[1]))
    r = sub(sub(sub(r, dd(e)), (q, f)), dd(k * _LN2[2]))
    r = ldexp(r, -_EXP_SQUARINGS)
    # Loops, not unrolled chains: XLA's fusion would duplicate a long chain of reused values.
    coef = (jnp.asarray([c[0] for c in _INV_FACT]), jnp.asarray([c[1] for c in _INV_FACT]))

    def horner(j, poly):
        c = (coef[0][-2 - j], coef[1][-2 - j])
        return add(mul(poly, r), (jnp.broadcast_to(c[0], r[0].shape), jnp.broadcast_to(c[1], r[0].shape)))

    last = (jnp.broadcast_to(coef[0][-1], r[0].shape), jnp.broadcast_to(coef[1][-1], r[0].shape))
    poly = jax.lax.fori_loop(0, len(_INV_FACT) - 1, horner, last)
    s = add(r, mul(mul(poly, r), r))  # expm1(r) = r + r^2 (1/2 + r/6 + ...)
    two = const(2.0, x[0])
    s = jax.lax.fori_loop(0, _EXP_SQUARINGS, lambda _, s: mul(s, add(s, two)), s)
    one_plus = add(const(1.0, x[0]), s)
    return ldexp(one_plus, k.astype(jnp.int32))


# --------------------------------------------------------------------------- the cumulant route in double-double


def supported(family: Family) -> bool:
    """Single-head softmax-linear families (any query dimension)."""
    heads = family.softmax_heads()
    return heads is not None and len(heads) == 1


# The route is split into stages, each compiled on its own: XLA fuses a long double-double
# chain with reused values by duplicating producers into consumers, which made one monolithic
# program slow to compile (seconds to minutes) and slow to run.  Stage outputs are materialised.


def _logits(keys, scale, offset, x):
    r""":math:`d_i = k_i - k_{top}` (exact) and :math:`y_i = s\,d_i\cdot x + (b_i - b_{top})` for one point.

    Formed from the exact differences, the error of :math:`y_i` is relative to :math:`|y_i|`
    itself, not to the (possibly much larger) logits.  Also the smallest ``y`` (float64).
    ``offset`` ``b`` is ``None`` (no offset: nothing is added) or the ``(n,)`` logit offsets.
    """
    z = scale * (keys @ x) if offset is None else scale * (keys @ x) + offset
    top = jnp.argmax(z)  # the dominant key (a near-tie is harmless: p is normalised later)
    d = two_sum(keys, -keys[top][None, :])
    y = mul_f(total(mul_f(d, x[None, :]), axis=1), scale)
    if offset is not None:
        y = add(y, two_sum(offset, -offset[top]))
    return y, d, jnp.min(y[0])


def _atoms(e, d, scale):
    r""":math:`p_i = e_i/\sum_j e_j` and :math:`u_i = s\,(d_i - \sum_j p_j d_j)` (dominant-key centring
    of :func:`geometry._src.fisher.softmax_atoms`)."""
    p = div(e, total(e))
    dbar = total(mul((p[0][:, None], p[1][:, None]), d), axis=0)
    return p, mul_f(sub(d, (dbar[0][None], dbar[1][None])), scale)


def _columns(x):
    return [(x[0][..., j], x[1][..., j]) for j in range(x[0].shape[-1])]


def _stack(cols):
    return jnp.stack([c[0] for c in cols], -1), jnp.stack([c[1] for c in cols], -1)


def _metric(p, uu):
    r"""Whitening ``(L^{-1})`` rows of :math:`g = \sum_i p_i u_i u_i^\top = LL^\top` and :math:`\kappa`.

    Cholesky and triangular inverse unrolled over ``m``; :math:`\kappa` as in
    :func:`geometry._src.linalg.scaled_condition` (from the leading words).
    Returns ``linv`` as an ``(m, m)`` double-double array (zero above the diagonal).
    """
    u = _columns(uu)
    m = len(u)
    pu = [mul(p, v) for v in u]
    g = {(i, j): total(mul(pu[i], u[j])) for i in range(m) for j in range(i + 1)}
    chol = {}
    for j in range(m):
        s = g[j, j]
        for k in range(j):
            s = sub(s, mul(chol[j, k], chol[j, k]))
        chol[j, j] = sqrt(s)
        for i in range(j + 1, m):
            s = g[i, j]
            for k in range(j):
                s = sub(s, mul(chol[i, k], chol[j, k]))
            chol[i, j] = div(s, chol[j, j])
    linv = {}
    for i in range(m):
        linv[i, i] = div(const(1.0, chol[i, i][0]), chol[i, i])
        for j in range(i):
            s = mul(chol[i, j], linv[j, j])
            for k in range(j + 1, i):
                s = add(s, mul(chol[i, k], linv[k, j]))
            linv[i, j] = neg(div(s, chol[i, i]))
    zero = dd(jnp.zeros_like(p[0][0]))
    rows = [_stack([linv.get((i, j), zero) for j in range(m)]) for i in range(m)]
    kappa = scaled_condition_unrolled({ij: v[0] for ij, v in g.items()}, {ij: v[0] for ij, v in linv.items()}, m)
    return (jnp.stack([r[0] for r in rows]), jnp.stack([r[1] for r in rows])), kappa


def _third_cumulant(p, uu, linv):
    r""":math:`T_{abc} = \sum_i p_i w_{ia}w_{ib}w_{ic}` for :math:`a \le b \le c`, whitened atoms
    :math:`w_i = L^{-1}u_i` (stacked in ``itertools.combinations_with_replacement`` order)."""
    u = _columns(uu)
    m = len(u)
    w = []
    for i in range(m):
        acc = mul(u[0], (linv[0][i, 0], linv[1][i, 0]))
        for j in range(1, i + 1):
            acc = add(acc, mul(u[j], (linv[0][i, j], linv[1][i, j])))
        w.append(acc)
    pw = [mul(p, v) for v in w]
    return _stack([total(mul(mul(pw[a], w[b]), w[c])) for a, b, c in itertools.combinations_with_replacement(range(m), 3)])


def _curvature(tens, m):
    r""":math:`R = \tfrac14(|T|^2 - |\tau|^2)` with :math:`\tau_c = \sum_a T_{aac}`, and the cancellation factor."""
    combos = list(itertools.combinations_with_replacement(range(m), 3))
    t = {abc: (tens[0][k], tens[1][k]) for k, abc in enumerate(combos)}
    t2 = None
    for (a, b, c), v in t.items():
        term = mul_f(mul(v, v), float(len(set(itertools.permutations((a, b, c))))))
        t2 = term if t2 is None else add(t2, term)
    tau2 = None
    for c in range(m):
        tau = t[tuple(sorted((0, 0, c)))]
        for a in range(1, m):
            tau = add(tau, t[tuple(sorted((a, a, c)))])
        tau2 = mul(tau, tau) if tau2 is None else add(tau2, mul(tau, tau))
    r = mul_f(sub(t2, tau2), 0.25)
    value = r[0] + r[1]
    return value, (jnp.abs(t2[0]) + jnp.abs(tau2[0])) / jnp.abs(value)


def _rows(x, i):
    return x[0][i], x[1][i]


def _cholesky_any(p, uu):
    r"""Lower-triangular :math:`L` with :math:`g = \sum_i p_i u_i u_i^\top = LL^\top` for any ``m``:
    one column per ``fori_loop`` step, :math:`L_{ij} = (g_{ij} - \sum_{k<j} L_{ik}L_{jk})/L_{jj}`
    (columns ``k >= j`` are still zero, so the sum runs over all ``k``).  Also ``g`` (double-double)."""
    m = uu[0].shape[1]
    pu = mul((p[0][:, None], p[1][:, None]), uu)
    g = total(mul((pu[0][:, :, None], pu[1][:, :, None]), (uu[0][:, None, :], uu[1][:, None, :])), axis=0)
    rows = jnp.arange(m)

    def column(j, chol):
        lj = _rows(chol, j)
        s = sub((g[0][:, j], g[1][:, j]), total(mul(chol, (lj[0][None, :], lj[1][None, :])), axis=1))
        diag = sqrt(_rows(s, j))
        col = div(s, (jnp.full_like(s[0], diag[0]), jnp.full_like(s[1], diag[1])))
        col = tuple(jnp.where(rows > j, c, jnp.where(rows == j, dg, 0.0)) for c, dg in zip(col, diag))
        return chol[0].at[:, j].set(col[0]), chol[1].at[:, j].set(col[1])

    zero = jnp.zeros((m, m))
    return jax.lax.fori_loop(0, m, column, (zero, zero)), g


def _whiten_any(chol, uu):
    r"""Whitened atoms :math:`W = L^{-1}U^\top` (``(m, n)``) by forward substitution, one row per step."""
    m, n = uu[0].shape[1], uu[0].shape[0]

    def row(i, w):
        li = _rows(chol, i)
        s = sub((uu[0][:, i], uu[1][:, i]), total(mul((li[0][:, None], li[1][:, None]), w), axis=0))
        wi = div(s, (jnp.full_like(s[0], li[0][i]), jnp.full_like(s[1], li[1][i])))
        return w[0].at[i].set(wi[0]), w[1].at[i].set(wi[1])

    zero = jnp.zeros((m, n))
    return jax.lax.fori_loop(0, m, row, (zero, zero))


def _gram_any(p, w):
    r"""Gram form of :func:`geometry._src.routes.cumulant_contractions` for any ``m``:
    :math:`M = W^\top W`, :math:`|T|^2 = \sum_{ij} p_ip_j M_{ij}^3`,
    :math:`|\tau|^2 = \sum_{ij} p_iM_{ii}\,p_jM_{jj}\,M_{ij}`; ``R`` rounded to float64, the
    cancellation factor, and the Gram sums' magnitude ratio (sum of |terms| over
    :math:`|T|^2+|\tau|^2`, folded into kappa as in the float64 route)."""
    m, n = w[0].shape

    def acc(a, gram):
        wa = _rows(w, a)
        return add(gram, mul((wa[0][:, None], wa[1][:, None]), (wa[0][None, :], wa[1][None, :])))

    zero = jnp.zeros((n, n))
    gram = jax.lax.fori_loop(0, m, acc, (zero, zero))
    diag = (jnp.diagonal(gram[0]), jnp.diagonal(gram[1]))
    pn = mul(p, diag)
    pp = mul((p[0][:, None], p[1][:, None]), (p[0][None, :], p[1][None, :]))
    t2 = total(total(mul(pp, mul(mul(gram, gram), gram)), axis=1))
    tau2 = total(total(mul(mul((pn[0][:, None], pn[1][:, None]), (pn[0][None, :], pn[1][None, :])), gram), axis=1))
    r = mul_f(sub(t2, tau2), 0.25)
    value = r[0] + r[1]
    big = jnp.abs(t2[0]) + jnp.abs(tau2[0])
    mag = jnp.sum(pp[0] * jnp.abs(gram[0]) ** 3) + jnp.sum(jnp.abs(pn[0][:, None] * pn[0][None, :] * gram[0]))
    return value, big / jnp.abs(value), mag / big


def _metric_any(p, uu):
    """``(W, kappa)``: whitened atoms and the scaled condition number of :math:`g` (from its leading words)."""
    chol, g = _cholesky_any(p, uu)
    linv = jax.scipy.linalg.solve_triangular(chol[0], jnp.eye(chol[0].shape[0]), lower=True)
    return _whiten_any(chol, uu), scaled_condition(g[0], linv)


@functools.lru_cache(maxsize=None)
def _stages(m: int):
    """``(logits, exp, atoms, contractions)``, each jit-compiled and vectorised on its own;
    ``contractions(p, u) -> (R, cancellation, kappa)`` is the unrolled tensor form for
    ``m <= MAX_UNROLLED_DIM`` and the looped Gram form beyond."""
    v = lambda f, axes: jax.jit(jax.vmap(f, in_axes=axes))  # noqa: E731
    if m <= MAX_UNROLLED_DIM:
        metric, third, curv = v(_metric, (0, 0)), v(_third_cumulant, (0, 0, 0)), v(lambda t: _curvature(t, m), (0,))

        def contractions(p, u):
            linv, kappa = metric(p, u)
            return (*curv(third(p, u, linv)), kappa)

    else:
        metric, gram = v(_metric_any, (0, 0)), v(_gram_any, (0, 0))

        def contractions(p, u):
            w, kappa = metric(p, u)
            r, cancel, fold = gram(p, w)
            return r, cancel, kappa * fold

    return v(_logits, (None, None, None, 0)), v(exp, (0,)), v(_atoms, (0, 0, None)), contractions


def _cumulant(keys, scale, offset, theta):
    r"""The ``cumulant`` route in double-double for points ``theta`` of shape ``(B, m)``.

    Returns float64 numpy arrays ``(R, cancellation, kappa, ok)``: the tensor form of
    :func:`geometry._src.routes.cumulant_contractions` for ``m <= MAX_UNROLLED_DIM``
    (:math:`g = LL^\top`, whitened atoms, :math:`T`, :math:`\tau_c = \sum_a T_{aac}`,
    :math:`R = \tfrac14(|T|^2 - |\tau|^2)`), its Gram form beyond, ``R`` as ``hi + lo``
    rounded to float64.  ``ok`` is false (decline: mpmath takes the point) when a
    probability is below ``exp(MIN_LOG_P)`` or a value is not finite.
    """
    n, m = keys.shape
    logits, expo, atoms, contractions = _stages(m)
    y, d, lowest = logits(keys, scale, offset, theta)
    # atoms in the coordinates D x (powers of two, exact: R is invariant), so that extreme keys or
    # scales do not underflow the third moments (families.equilibration)
    p, u = atoms(expo(y), d, scale * equilibration([Head(keys, scale)]))
    r, cancel, kappa, lowest = (np.asarray(a) for a in (*contractions(p, u), lowest))
    # the Gram form (m > MAX_UNROLLED_DIM, n <= m^2) multiplies pairs of probabilities
    floor = MIN_LOG_P_GRAM if m > MAX_UNROLLED_DIM and n <= m * m else MIN_LOG_P
    with np.errstate(invalid="ignore"):
        ok = (lowest >= floor) & np.isfinite(r) & np.isfinite(cancel) & np.isfinite(kappa)
    return r, cancel, kappa, ok


def evaluate(family: Family, theta: np.ndarray, chunk: int):
    """:func:`_cumulant` over ``theta`` (N, m) in fixed-size chunks (padded: one compilation per key shape)."""
    (head,) = family.softmax_heads()
    keys, scale = jnp.asarray(head.keys), jnp.asarray(head.scale, jnp.float64)
    offset = None if head.offset is None else jnp.asarray(head.offset, jnp.float64)
    n, m = head.keys.shape
    if m > MAX_UNROLLED_DIM:
        chunk = max(1, min(chunk, GRAM_CHUNK_ELEMENTS // max(n * n, n * m * m)))
    outs = []
    for start in range(0, theta.shape[0], chunk):
        block = theta[start : start + chunk]
        outs.append([a[: block.shape[0]] for a in _cumulant(keys, scale, offset, jnp.asarray(pad_rows(block, chunk)))])
    return [np.concatenate(parts) for parts in zip(*outs)]


#: Points per compiled call of the double-double tier (one shape: it compiles once per key shape).
DD_CHUNK = 256


class DoubleDouble:
    """The double-double tier (contract in :mod:`geometry._src.tiers`): single-head softmax families.

    Same error model as float64 with :math:`\varepsilon_{dd} = 2^{-103}`; points it declines
    (probabilities below ``exp(MIN_LOG_P)``, non-finite values) keep an infinite estimate and
    go to the next tier.  ``dps = 32`` marks its points.
    """

    name = "double-double"
    status = HIGH_PRECISION
    eps = EPS_DD

    def supports(self, family) -> bool:
        return supported(family)

    def evaluate(self, family, rows, rtol, clock, mapper=None) -> Outcome:
        val, cancel, kappa, ok = evaluate(family, np.asarray(rows, np.float64), DD_CHUNK)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            est = error_estimate(cancel, kappa, EPS_DD)
        est = np.where(ok & (est >= 0), est, np.inf)
        return Outcome(np.where(ok, val, np.nan), est, np.full(val.shape[0], 32, np.int32))


TIER = DoubleDouble()
