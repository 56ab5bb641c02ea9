r"""Linear algebra of the metric and the error model (layer 4): Cholesky, scaled condition number.

Every route inverts ``g`` by Cholesky without pivoting and otherwise contracts
indices, so its floating-point result is exactly the same after rescaling any
coordinate by a power of two; that is what lets the error model use the condition
number of the Jacobi-scaled metric (:func:`scaled_condition`).

The error model of every route and tier (one definition, :func:`error_estimate`):

.. math:: \delta = 64\,\varepsilon\,M\,\max(\kappa, 1), \qquad
          \mathrm{err} = \frac{\delta}{|\tilde R| - \delta}\quad(|\tilde R| > \delta), \qquad
          \mathrm{err} = \infty \quad(|\tilde R| \le \delta)

with :math:`M` the magnitude of the route's terms (:math:`|T|^2 + |\tau|^2`, or the sum of
their absolute values), :math:`\kappa` the scaled condition number, :math:`\varepsilon` the
unit roundoff of the arithmetic and :math:`\tilde R` the computed value.  :math:`\delta` is
a bound on the *absolute* error that is formed from the terms alone; the relative error is
then bounded with :math:`|\tilde R| - \delta`, a lower bound on the true :math:`|R|`, never
with the computed :math:`|\tilde R|` it judges: a value that the terms cannot resolve
(:math:`|\tilde R| \le \delta`) is never certified, however large it came out.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

EPS = float(np.finfo(np.float64).eps)
#: Safety factor between the first-order error model ``eps * cancellation * kappa`` and the
#: error actually observed against the mpmath oracle (tests/test_error_model.py measures it).
SAFETY = 64.0

#: Largest dimension whose Cholesky factor and its inverse are written out in closed form
#: (fused elementwise code; larger metrics call LAPACK, one call per matrix under ``vmap``).
MAX_UNROLLED_DIM = 4


def error_estimate(cancel, kappa, eps=EPS):
    r"""The error model of the module docstring, :math:`\delta / (|\tilde R| - \delta)`, from ``cancel``
    :math:`= M / |\tilde R|` and ``kappa`` (:func:`scaled_condition`; numpy or JAX arrays; ``eps`` is the
    unit roundoff of the arithmetic used).  With :math:`x = \delta/|\tilde R| = 64\varepsilon\,c\,\kappa`
    it is :math:`x / (1 - x)`, and ``inf`` for :math:`x \ge 1`."""
    x = SAFETY * eps * cancel * kappa.clip(1.0)
    return x / (1.0 - x.clip(None, 1.0))


def scaled_condition(g, linv):
    r"""Condition number of the metric after Jacobi scaling: the amplification factor of the error model.

    .. math:: \kappa = \|H\|_\infty\,\|H^{-1}\|_\infty \;\ge\; \kappa_2(H),
              \qquad H = D^{-1/2} g D^{-1/2},\quad D = \mathrm{diag}(g),\quad
              H^{-1} = (L^{-1}D^{1/2})^\top (L^{-1}D^{1/2}),\quad g = LL^\top

    (:math:`\|A\|_2 \le \|A\|_\infty` for symmetric ``A``; measured 3-4 times
    :math:`\kappa_2(H)` for attention heads, where :math:`\|H\|_F\|H^{-1}\|_F` is 8-20 times).
    Why the *scaled* metric: rescaling a coordinate by a power of two rescales every
    intermediate of every route exactly and leaves the computed ``R`` bit for bit unchanged
    (``tests/test_error_model.py``).  The rounding error of ``R`` is therefore that of the
    coordinates in which ``diag(g)`` is within a factor 2 of 1, whose condition number is
    within a factor 4 of :math:`\kappa_2(H)`; Jacobi scaling is within a factor ``m`` of the
    best diagonal scaling (van der Sluis 1969) and is what governs Cholesky's accuracy
    (Demmel 1989; Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
    Thm 7.5 and sec. 10.1).  No eigensolver: a batched ``eigvalsh`` (m = 32) hung a
    pipelined sweep on XLA's CPU client here (cf. jax-ml/jax#25861).
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


def inverse(g):
    """``(g^{-1}, kappa)`` by Cholesky (NaN for a metric that is not numerically definite)."""
    linv = cholesky_inverse(g)
    return linv.T @ linv, scaled_condition(g, linv)


#: Blocks of at most this size are factorised by the column loops; larger ones by 2 x 2 block recursion.
#: Measured at B = 64 (m = 64): leaf 4, 8, 16 -> 27, 21, 32 us a point; the loops alone 70.
CHOLESKY_LEAF = 8


def batched_cholesky_inverse(g):
    r"""``(L, L^{-1})`` for a batch of metrics ``g`` ``(B, m, m)``, :math:`g = LL^\top`, in plain XLA operations.

    Block recursion on the 2 x 2 partition ``g = [[g11, g21^T], [g21, g22]]`` (``g11`` of size ``m // 2``):

    .. math:: L_{11}L_{11}^\top = g_{11},\quad L_{21} = g_{21}L_{11}^{-\top},\quad
              L_{22}L_{22}^\top = g_{22} - L_{21}L_{21}^\top,\quad
              (L^{-1})_{21} = -L_{22}^{-1}L_{21}L_{11}^{-1},

    down to blocks of at most :data:`CHOLESKY_LEAF`, which :func:`_cholesky_inverse_loops` factorises.
    Every product is a batched matrix product, where the loops' steps are batched matrix-vector
    products that each read the whole ``(B, m, m)`` factor (memory-bound: 3.3x slower at m = 64).
    ``L21`` is formed with the computed inverse of ``L11`` rather than by substitution; for
    symmetric positive definite matrices block factorisations built this way are stable
    (Higham 2002, ch. 13, sec. 13.3), and the kernel's error is measured against the mpmath
    oracle in ``tests/test_large_heads.py``.  The Schur complement of a positive definite
    matrix is positive definite, so a leaf meets a non-positive pivot only when ``g`` is not
    numerically positive definite (NaN then).
    """
    m = g.shape[-1]
    if m <= CHOLESKY_LEAF:
        return _cholesky_inverse_loops(g)
    k = m // 2
    l11, i11 = batched_cholesky_inverse(g[:, :k, :k])
    l21 = jnp.einsum("bij,bkj->bik", g[:, k:, :k], i11)
    l22, i22 = batched_cholesky_inverse(g[:, k:, k:] - jnp.einsum("bik,bjk->bij", l21, l21))
    i21 = -jnp.einsum("bij,bjk->bik", i22, jnp.einsum("bij,bjk->bik", l21, i11))
    zero = jnp.zeros_like(l21).swapaxes(1, 2)
    block = lambda a11, a21, a22: jnp.concatenate(  # noqa: E731
        [jnp.concatenate([a11, zero], 2), jnp.concatenate([a21, a22], 2)], 1)
    return block(l11, l21, l22), block(i11, i21, i22)


def _cholesky_inverse_loops(g):
    r"""``(L, L^{-1})`` for a batch ``g`` ``(B, m, m)`` by loops over columns and rows (the leaves of
    :func:`batched_cholesky_inverse`).

    Left-looking Cholesky, one column a step (:math:`L_{ij} = (g_{ij} - \sum_{k<j} L_{ik}L_{jk})/L_{jj}`),
    then forward substitution for :math:`L^{-1}` one row a step, each step one batched
    matrix-vector product: the same :math:`O(m^3)` operations as LAPACK's ``potrf``/``trtri``
    in a different order, so the same backward error bounds (Higham 2002, Thm 10.3 and 8.5).
    Why not LAPACK: XLA's CPU client calls LAPACK once per matrix of the batch, and a program
    with several batched LAPACK calls at m = 64 deadlocked its thread pool here (every thread
    waiting; cf. jax-ml/jax#25861), where these loops run.  A non-positive pivot gives NaN.
    """
    import jax

    b, m, _ = g.shape
    idx = jnp.arange(m)

    def column(j, chol):
        v = g[:, :, j] - jnp.einsum("bik,bk->bi", chol, chol[:, j, :])  # columns >= j of chol are still 0
        pivot = jnp.sqrt(v[:, j])
        col = jnp.where(idx[None, :] >= j, v / pivot[:, None], 0.0)
        return chol.at[:, :, j].set(col)

    chol = jax.lax.fori_loop(0, m, column, jnp.zeros_like(g))

    def row(i, inv):
        # row i of L^{-1}: (e_i - sum_{k<i} L_ik (L^{-1})_k) / L_ii (rows >= i of inv are still 0)
        r = (idx == i).astype(g.dtype)[None, :] - jnp.einsum("bk,bkj->bj", chol[:, i, :] * (idx < i)[None, :], inv)
        return inv.at[:, i, :].set(r / chol[:, i, i][:, None])

    linv = jax.lax.fori_loop(0, m, row, jnp.zeros_like(g))
    return chol, linv
