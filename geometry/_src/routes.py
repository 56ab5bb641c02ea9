r"""Routes to the scalar curvature (layer 6): each a pure JAX function of one point.

A route is a small value (:class:`Route`): a name, the capability it needs of a
family, and ``fn(family, theta) -> (R, cancellation, kappa)`` for one point, where
``cancellation`` and ``kappa`` (the scaled condition number,
:func:`geometry._src.linalg.scaled_condition`) feed the one error model
:func:`geometry._src.linalg.error_estimate`.  Conventions are those of
:mod:`geometry._src.tensors`: the round sphere has positive curvature.

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
    Under ``jax.vmap`` (query dimension ``<= MAX_UNROLLED_DIM``) a ``custom_vmap``
    rule runs the batch-major kernel :func:`cumulant_batch_major` (same formulas,
    closed-form Cholesky, every sum over keys one fused reduction); a ``custom_jvp``
    differentiates the per-point formula, so ``grad`` and ``jacfwd`` work with respect
    to the point and to the keys.

Where precision is lost
-----------------------
:math:`|T|^2` and :math:`|\tau|^2` grow like :math:`1/p_{\min}` at low entropy while
:math:`R` stays bounded (for the simplex it is constant), so :math:`R` is a
difference of two huge numbers.  Each route therefore reports the cancellation
factor :math:`(|T|^2 + |\tau|^2)/|R|` (Levi-Civita: the sum of absolute values of
the terms over :math:`|R|`) and the scaled condition number of ``g``.

Batch-major kernel
------------------
The per-point code batched by ``vmap`` turns every ``m x m`` Cholesky, triangular
solve and ``einsum`` into a batched LAPACK/dot call on tiny matrices, which
dominates the cost on a CPU.  In :func:`cumulant_batch_major` the batch axis comes
first and is the *only* array axis besides the atom axis: every ``m``-indexed
quantity is a Python list of ``(B,)`` vectors, the Cholesky factor is unrolled in
closed form (:func:`geometry._src.linalg.unrolled_cholesky_inverse`), and every
group of sums over the atom axis is *one* variadic ``lax.reduce`` (XLA fuses the
products into it and reads the atoms once).  Only the summation order and two
exact homogeneities differ from the per-point route (:func:`_atoms_batch_major`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import fisher
from .families import Family, equilibration, softmax_atoms
from .mathns import JAX, stable_log_softmax
from .linalg import (
    EPS,
    MAX_UNROLLED_DIM,
    batched_cholesky_inverse,
    SAFETY,
    cholesky_inverse,
    error_estimate,
    inverse,
    scaled_condition,
    scaled_condition_unrolled,
    unrolled_cholesky_inverse,
)
from .tensors import riemann_terms

# --------------------------------------------------------------------------- levi-civita


def scalar_levi_civita(family: Family, theta):
    """Route ``levi-civita``: ``g^{sn} R^r_{srn}`` by nested autodiff of the metric."""
    a, b, c, d = riemann_terms(family, theta)
    g = fisher.metric(family, theta)
    ginv, kappa = inverse(g)
    ric = jnp.einsum("rsrn->sn", a - b + c - d)
    r = jnp.sum(ginv * ric)
    mag = jnp.einsum("rsrn->sn", jnp.abs(a) + jnp.abs(b) + jnp.abs(c) + jnp.abs(d))
    scale = jnp.sum(jnp.abs(ginv) * mag)
    return r, scale / jnp.abs(r), kappa


# --------------------------------------------------------------------------- hessian


def hessian_contractions(g, t):
    """``(|T|^2_g, |tau|^2_g, kappa)`` for a totally symmetric ``t[i, j, k]``."""
    ginv, kappa = inverse(g)
    tup = jnp.einsum("ia,jb,kc,abc->ijk", ginv, ginv, ginv, t)
    t2 = jnp.sum(tup * t)
    tau = jnp.einsum("ij,ijk->k", ginv, t)
    tau2 = tau @ ginv @ tau
    return t2, tau2, kappa


def hessian_jets(family: Family, theta):
    """``g = hess psi`` and ``T = grad^3 psi`` at ``eta(theta)`` in natural coordinates."""
    psi_xp, chart_xp = family.potential()
    psi = lambda eta: psi_xp(eta, JAX)  # noqa: E731
    eta = theta if chart_xp is None else chart_xp(theta, JAX)
    return jax.hessian(psi)(eta), jax.jacfwd(jax.hessian(psi))(eta)


def scalar_hessian(family: Family, theta):
    r"""Route ``hessian``: :math:`R = \tfrac14(|T|^2_g - |\tau|^2_g)` with autodiff :math:`T=\nabla^3\psi`."""
    g, t = hessian_jets(family, theta)
    t2, tau2, kappa = hessian_contractions(g, t)
    r = 0.25 * (t2 - tau2)
    return r, (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r), kappa


# --------------------------------------------------------------------------- cumulant


def gram_form(n: int, m: int) -> bool:
    """Whether the cumulant contractions over ``n`` atoms in dimension ``m`` take the Gram form
    (``O(n^2 m)``, pairs of atoms) rather than the tensor form (``O(n m^3)``): ``n <= m^2``."""
    return n <= m * m


def num_atoms(family: Family) -> int:
    return sum(h.keys.shape[0] for h in family.softmax_heads())


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


def cumulant_point(family: Family, theta):
    """Route ``cumulant`` at one point: :func:`cumulant_contractions` of the atoms."""
    heads = family.softmax_heads()
    w, u = softmax_atoms(heads, theta)
    t2, tau2, kappa = cumulant_contractions(w, u * equilibration(heads)[None, :])  # exact: R is invariant
    r = 0.25 * (t2 - tau2)
    return r, (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r), kappa


def unrolled_ok(family: Family) -> bool:
    """Whether :func:`cumulant_batch_major` handles ``family`` (softmax-linear, ``dim <= MAX_UNROLLED_DIM``)."""
    return family.softmax_heads() is not None and family.dim <= MAX_UNROLLED_DIM


def _sums(terms, axes=(1,)):
    """Sums of several same-shape arrays over ``axes`` as one variadic ``lax.reduce``.

    XLA fuses the terms' producers into that single reduction, so the operands are read once
    (one pass over the ``(B, N)`` atom arrays for all sums); separate ``jnp.sum`` calls would
    each make their own pass (or materialise the products first).
    """
    terms = tuple(terms)
    zero = tuple(jnp.zeros((), t.dtype) for t in terms)
    return list(jax.lax.reduce(terms, zero, lambda a, b: tuple(x + y for x, y in zip(a, b)), tuple(axes)))


def _dominant_key(z, keys):
    """``(max_i z_i, k_top)`` per row of ``z (B, n)``: the largest logit and the coordinates ``[(B,)] * m``
    of its key (the first one on ties, as ``argmax``), as one variadic reduction (no gather)."""
    n, m = keys.shape
    idx = jax.lax.broadcasted_iota(jnp.int32, z.shape, 1)
    coords = [jnp.broadcast_to(jnp.asarray(keys[:, j]), z.shape) for j in range(m)]

    def pick(a, b):
        za, ia, *ka = a
        zb, ib, *kb = b
        first = (za > zb) | ((za == zb) & (ia < ib)) | jnp.isnan(za)
        return (jnp.where(first, za, zb), jnp.where(first, ia, ib), *[jnp.where(first, p, q) for p, q in zip(ka, kb)])

    init = (jnp.asarray(-jnp.inf, z.dtype), jnp.asarray(n, jnp.int32), *[jnp.zeros((), z.dtype)] * m)
    zmax, _, *k_top = jax.lax.reduce((z, idx, *coords), init, pick, (1,))
    return zmax, k_top


def _atoms_batch_major(family: Family, x, normalised: bool = False):
    r"""Atoms of :func:`geometry._src.families.softmax_atoms` for a batch ``x (B, m)``, up to two scale factors.

    Returns ``(w (B, N), u = [u_j (B, N)], s)``.  Per head, :math:`e_i = e^{z_i - z_{\max}}`
    (:math:`e_{top} = 1` exactly) and :math:`u_i = c\,(d_i - \bar d)` with :math:`d_i = k_i - k_{top}`
    (centred at the dominant key: no cancellation) and :math:`\bar d = \sum_i e_i d_i / \sum_i e_i`.
    For one head and ``normalised=False``, ``w = e`` is *not* normalised and ``s`` is
    :math:`\sum_i e_i` (so :math:`w = s\,p`); otherwise ``w = p`` (:math:`p_i = e_i/\sum_j e_j` per head)
    and ``s`` is ``None``.  ``c`` is the head's scale for several heads, 1 for one head (the
    scales may be traced values, so they are not compared).

    Both factors drop out of the curvature: with :math:`u \to c\,u` and :math:`w \to \lambda w`,
    :math:`g \to \lambda c^2 g` and :math:`T \to \lambda c^3 T`, so :math:`|T|^2_g` and :math:`|\tau|^2_g`
    scale by :math:`\lambda^{-1}` (``R = s R(e)``), and the cancellation factor and the scaled
    condition number are unchanged.  Leaving them out saves ``N`` divisions and ``m N``
    multiplications a point, and removes their roundings.
    """
    m = x.shape[1]
    heads = family.heads
    single = len(heads) == 1 and not normalised
    scale = equilibration(heads, with_scale=len(heads) > 1)  # coordinates D x: exact, R is invariant
    ws, us = [], [[] for _ in range(m)]
    for h in heads:
        keys = jnp.asarray(h.keys)
        z = h.scale * sum(x[:, j : j + 1] * keys[None, :, j] for j in range(m))  # (B, n), fused into its consumers
        if h.offset is not None:
            z = z + jnp.asarray(h.offset)[None, :]
        scaled = keys * scale[None, :]
        zmax, k_top = _dominant_key(z, scaled)
        e = jnp.exp(z - zmax[:, None])  # e_top = 1 exactly
        d = [scaled[None, :, j] - k_top[j][:, None] for j in range(m)]  # centred at the dominant key: no cancellation
        s, *sd = _sums([e] + [e * dj for dj in d])
        for j in range(m):
            v = d[j] - (sd[j] / s)[:, None]
            us[j].append(v if len(heads) == 1 else h.scale * v)
        ws.append(e if single else e / s[:, None])
    return jnp.concatenate(ws, axis=1), [jnp.concatenate(parts, axis=1) for parts in us], (s if single else None)


def _whiten3(t, linv, m):
    r"""Distinct entries ``a >= b >= c`` of :math:`\tilde T_{abc} = L^{-1}_{aa'}L^{-1}_{bb'}L^{-1}_{cc'}T_{a'b'c'}`.

    ``t`` maps sorted (descending) index triples to ``(B,)`` vectors of the symmetric ``T``;
    ``linv`` is lower triangular, applied one index at a time (``O(m^4)`` tiny vector operations).
    """
    key = lambda *idx: tuple(sorted(idx, reverse=True))  # noqa: E731
    # t1[a', b', c] = sum_{c' <= c} Linv[c, c'] T[a', b', c']  (symmetric in a', b')
    t1 = {(a, b, c): sum(linv[c, k] * t[key(a, b, k)] for k in range(c + 1)) for a in range(m) for b in range(a + 1) for c in range(m)}
    # t2[a', b, c] = sum_{b' <= b} Linv[b, b'] t1[a', b', c]  (symmetric in b, c)
    t2 = {(a, b, c): sum(linv[b, k] * t1[max(a, k), min(a, k), c] for k in range(b + 1)) for a in range(m) for b in range(m) for c in range(b + 1)}
    # tw[a, b, c] = sum_{a' <= a} Linv[a, a'] t2[a', b, c]  (totally symmetric)
    return {(a, b, c): sum(linv[a, k] * t2[k, b, c] for k in range(a + 1)) for a, b, c in _desc_triples(m)}


def _desc_triples(m):
    return [(a, b, c) for a in range(m) for b in range(a + 1) for c in range(b + 1)]


def _contractions_batch_major(w, u):
    """``(|T|^2_g, |tau|^2_g, kappa)`` per point, batch-major; formulas of ``cumulant_contractions``.

    ``w (B, N)`` may be any positive weights (:func:`_atoms_batch_major`): ``g`` and ``T`` are
    linear in ``w``, so unnormalised weights ``lambda p`` give ``|T|^2`` and ``|tau|^2`` divided by
    ``lambda`` and the same ``kappa``.  Tensor form (``n > m^2``): the atoms are not whitened; the
    third moment :math:`T_{abc} = \\sum_i w_i u_{ia}u_{ib}u_{ic}` is accumulated in the key frame
    (its products share the ``w u_a u_b`` factors of ``g``; ``g`` and ``T`` come from one fused
    pass, a variadic reduction) and whitened as a tensor,
    :math:`\\tilde T = T(L^{-\\top}\\cdot, L^{-\\top}\\cdot, L^{-\\top}\\cdot)`, which equals
    :math:`\\sum_i w_i W_i^{\\otimes 3}` with :math:`W_i = L^{-1}u_i`; then
    :math:`|T|^2_g = \\sum_{abc}\\tilde T_{abc}^2` and :math:`\\tau_c = \\sum_a \\tilde T_{aac}`
    (:math:`= \\sum_i w_i |W_i|^2 W_{ic}`).  That is ``m(m+1)(m+2)/6`` row sums for ``T`` instead
    of that plus ``m`` for ``tau`` and ``m`` whitened ``(B, N)`` atom arrays.
    """
    m, n = len(u), w.shape[1]
    pairs = [(a, b) for a in range(m) for b in range(a + 1)]
    wuu = {(a, b): w * u[a] * u[b] for a, b in pairs}
    if gram_form(n, m):
        g = dict(zip(pairs, _sums(wuu[ab] for ab in pairs)))
    else:
        triples = _desc_triples(m)
        sums = _sums([wuu[ab] for ab in pairs] + [wuu[a, b] * u[c] for a, b, c in triples])
        g, t = dict(zip(pairs, sums[: len(pairs)])), dict(zip(triples, sums[len(pairs) :]))
    _, linv = unrolled_cholesky_inverse(g, m)
    kappa = scaled_condition_unrolled(g, linv, m)
    if gram_form(n, m):  # O(n^2 m)
        wt = [sum(linv[i, j][:, None] * u[j] for j in range(i + 1)) for i in range(m)]  # W_a = L^{-1} u_a
        wn = w * sum(v * v for v in wt)
        gram = sum(v[:, :, None] * v[:, None, :] for v in wt)
        t2 = jnp.sum(w[:, :, None] * w[:, None, :] * gram**3, axis=(1, 2))
        tau2 = jnp.sum(wn[:, :, None] * wn[:, None, :] * gram, axis=(1, 2))
        # terms of both signs: fold (sum of |terms|) / (|T|^2 + |tau|^2) into the amplification,
        # as in cumulant_contractions
        mag = jnp.sum(w[:, :, None] * w[:, None, :] * jnp.abs(gram**3), axis=(1, 2)) + jnp.sum(
            jnp.abs(wn[:, :, None] * wn[:, None, :] * gram), axis=(1, 2)
        )
        kappa = kappa * mag / (jnp.abs(t2) + jnp.abs(tau2))
    else:  # O(n m^3 / 6) products in one pass plus O(m^4) per-point work
        tw = _whiten3(t, linv, m)
        t2 = sum(len(set(itertools.permutations(abc))) * v**2 for abc, v in tw.items())
        key = lambda *idx: tuple(sorted(idx, reverse=True))  # noqa: E731
        tau2 = sum(sum(tw[key(a, a, c)] for a in range(m)) ** 2 for c in range(m))
    return t2, tau2, kappa


def cumulant_batch_major(family: Family, x):
    r"""Route ``cumulant`` for a batch ``x`` of shape ``(B, m)``: ``(R, cancellation, kappa)``, each ``(B,)``.

    :math:`R = \tfrac14(|T|^2_g - |\tau|^2_g)`, cancellation :math:`(|T|^2+|\tau|^2)/|R|`,
    :math:`\kappa` = :func:`geometry._src.linalg.scaled_condition` (module docstring).  Requires :func:`unrolled_ok`.  The tensor form runs on
    unnormalised weights :math:`e_i` and rescales ``R`` once, :math:`R = (\sum_i e_i)\,R(e)`
    (:func:`_atoms_batch_major`); the Gram form (``n <= m^2``) normalises the weights first.
    """
    if not unrolled_ok(family):
        raise ValueError(f"cumulant_batch_major needs a softmax-linear family with dim <= {MAX_UNROLLED_DIM}; got {family!r}")
    n = num_atoms(family)
    w, u, s = _atoms_batch_major(family, x, normalised=gram_form(n, family.dim))
    t2, tau2, kappa = _contractions_batch_major(w, u)
    r = 0.25 * (t2 - tau2)
    cancel = (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r)
    return (r if s is None else r * s), cancel, kappa




def _atoms_gram_batch(family: Family, x):
    r"""Atoms ``(w (B, N), U (B, N, m))`` of :func:`geometry._src.families.softmax_atoms` for a batch ``x (B, m)``
    as matrix products, in the equilibrated coordinates ``D x`` (:func:`geometry._src.families.equilibration`).

    Per head the logits are one product :math:`Z = s\,X K^\top + b`, and the centre about the
    dominant key is :math:`\mu = \sum_{i \ne top} p_i (k_i - k_{top}) = p' K - q\,k_{top}` with
    :math:`p'` the probabilities without the top one and :math:`q = \sum_{i\ne top} p_i` (a sum of
    small terms): a second product, and its error is :math:`O(\varepsilon q |k|)`, small beside
    :math:`\mu \sim q\,|k - k_{top}|` however concentrated ``p`` is (the plain mean
    :math:`pK - k_{top}` would lose :math:`\varepsilon |k| / q` relative as :math:`q \to 0`).
    """
    heads = family.heads
    scale = equilibration(heads)  # D: powers of two per coordinate, exact (R is invariant)
    ws, us = [], []
    for h in heads:
        keys = jnp.asarray(h.keys)
        logp = stable_log_softmax(h.logits(x))  # (B, n): one product X K^T
        p = jnp.exp(logp)
        top = jnp.argmax(logp, axis=1)
        k_top = keys[top]  # (B, m)
        not_top = jnp.arange(keys.shape[0])[None, :] != top[:, None]
        rest = jnp.where(not_top, p, 0.0)
        mu = rest @ keys - jnp.sum(rest, axis=1, keepdims=True) * k_top  # (B, m): sum_{i != top} p_i (k_i - k_top)
        d = keys[None, :, :] - k_top[:, None, :]  # (B, n, m), one rounding
        us.append((h.scale * scale)[None, None, :] * (d - mu[:, None, :]))
        ws.append(p)
    return jnp.concatenate(ws, axis=1), jnp.concatenate(us, axis=1)


def cumulant_gram_batch(family: Family, x):
    r"""Route ``cumulant`` in the Gram form for a batch ``x (B, m)`` as batched matrix products: ``(R, cancellation, kappa)``.

    The formulas of :func:`cumulant_contractions` (Gram form, ``N <= m^2``), with the batch as the
    leading axis of every product, so that XLA runs them as batched GEMMs:

    .. math:: g = U^\top \operatorname{diag}(w)\, U,\quad g = LL^\top,\quad
              W = L^{-1} U^\top\;(m \times N),\quad G = W^\top W,\quad
              |T|^2 = \sum_{ab} w_a w_b G_{ab}^3,\quad
              |\tau|^2 = \sum_{ab} (w G_{aa})_a (w G_{bb})_b G_{ab},

    ``U`` ``(N, m)`` the centred scaled keys of every head and ``w`` their probabilities.
    Flop model per point (``N`` atoms, dimension ``m``): :math:`2Nm` (logits) + :math:`2Nm`
    (centre) + :math:`2Nm^2` (``g``) + :math:`2Nm^2` (whitening, a full product with the triangular
    :math:`L^{-1}`) + :math:`2N^2m` (``G``) +
    :math:`2m^3/3` (Cholesky and ``L^{-1}``) + :math:`O(N^2)` (the sums over ``G``); the
    ``2N^2m`` Gram product dominates.  All four sums over ``G`` (the two contractions and
    the two magnitudes of the error model) are one pass over it.
    """
    b = x.shape[0]
    sub = gram_sub_batch(family)
    if b > sub:  # sub-batches that keep their Gram matrices in cache, one compiled loop (lax.map)
        pad = -b % sub
        xs = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])]) if pad else x
        out = jax.lax.map(lambda c: cumulant_gram_batch(family, c), xs.reshape((-1, sub) + x.shape[1:]))
        return tuple(o.reshape(-1)[:b] for o in out)
    w, u = _atoms_gram_batch(family, x)
    g = jnp.einsum("bam,bak->bmk", u * w[:, :, None], u)
    _, linv = batched_cholesky_inverse(g)
    kappa = jax.vmap(scaled_condition)(g, linv)
    # W^T = U L^{-T}, (B, N, m): the Gram product then contracts the last axes of both operands, the
    # layout XLA's CPU dot runs fastest (measured at N = 128, m = 64: 69 against 79 us a point for (B, m, N))
    wt = jnp.einsum("bmk,bak->bam", linv, u)
    gram = jnp.einsum("bam,bcm->bac", wt, wt)
    wn = w * jnp.sum(wt * wt, axis=2)
    ww, nn = w[:, :, None] * w[:, None, :], wn[:, :, None] * wn[:, None, :]
    cube = gram**3
    t2, tau2, mag3, mag1 = _sums((ww * cube, nn * gram, ww * jnp.abs(cube), jnp.abs(nn * gram)), axes=(1, 2))
    # terms of both signs: fold (sum of |terms|) / (|T|^2 + |tau|^2) into the amplification, as in
    # cumulant_contractions
    kappa = kappa * (mag3 + mag1) / (jnp.abs(t2) + jnp.abs(tau2))
    r = 0.25 * (t2 - tau2)
    return r, (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r), kappa


def gram_batch_ok(family: Family) -> bool:
    """Whether :func:`cumulant_gram_batch` is the batched kernel for ``family``: softmax-linear,
    ``dim > MAX_UNROLLED_DIM`` (smaller dimensions have the unrolled kernel) and the Gram form."""
    return family.softmax_heads() is not None and family.dim > MAX_UNROLLED_DIM and gram_form(num_atoms(family), family.dim)


@jax.custom_batching.custom_vmap
def _cumulant_vmappable(family, theta):
    return cumulant_point(family, theta)


@_cumulant_vmappable.def_vmap
def _cumulant_rule(axis_size, in_batched, family, theta):
    fam_batched, theta_batched = in_batched
    if theta_batched and not any(jax.tree_util.tree_leaves(fam_batched)):
        if unrolled_ok(family):
            return cumulant_batch_major(family, theta), (True, True, True)
        if gram_batch_ok(family):
            return cumulant_gram_batch(family, theta), (True, True, True)
    # a stack of families (or one family over a broadcast point): the per-point formula, vmapped
    axes = (jax.tree_util.tree_map(lambda b: 0 if b else None, fam_batched), 0 if theta_batched else None)
    return jax.vmap(cumulant_point, in_axes=axes, axis_size=axis_size)(family, theta), (True, True, True)


@jax.custom_jvp
def _cumulant_selecting(family, theta):
    return _cumulant_vmappable(family, theta)


@_cumulant_selecting.defjvp
def _cumulant_jvp(primals, tangents):
    return jax.jvp(cumulant_point, primals, tangents)


def scalar_cumulant(family: Family, theta):
    """Route ``cumulant``: closed form from the moments of the keys under ``p`` (softmax-linear only).

    Per point this is :func:`cumulant_point`; under ``jax.vmap`` over points with query
    dimension ``<= MAX_UNROLLED_DIM``, :func:`cumulant_batch_major` (a ``custom_vmap`` rule
    inside a ``custom_jvp``).  Derivatives (with respect to ``theta`` and the keys) are those
    of :func:`cumulant_point`.  Larger query dimensions in the Gram form (``N <= m^2``) run
    :func:`cumulant_gram_batch` (batched matrix products); the tensor form beyond vmaps the
    per-point formula directly.
    """
    if jnp.ndim(theta) != 1 or not (unrolled_ok(family) or gram_batch_ok(family)):
        return cumulant_point(family, theta)
    return _cumulant_selecting(family, theta)


# --------------------------------------------------------------------------- route values


@dataclasses.dataclass(frozen=True)
class Route:
    """A float64 route: ``fn(family, theta) -> (R, cancellation, kappa)`` for one point.

    ``supports(family)`` says whether the family has what ``fn`` needs (``needs``
    names it for error messages); ``chunk`` is the points per compiled call that
    suits the route's memory (``O(dim^4)`` numbers a point for the autodiff routes).
    ``workers(family)`` is how many calls of the compiled program a mapper may run at once
    from host threads (1: one at a time); more than 1 only for programs made of plain XLA
    operations, without LAPACK calls, whose use of XLA's thread pool deadlocked concurrent
    calls here (cf. jax-ml/jax#25861).
    """

    name: str
    fn: Callable
    supports: Callable[[Family], bool]
    needs: str
    chunk: int
    workers: Callable[[Family], int] = lambda family: 1


LEVI_CIVITA = Route("levi-civita", scalar_levi_civita, lambda f: True, "a metric", 256)
HESSIAN = Route("hessian", scalar_hessian, lambda f: f.potential() is not None, "an exponential family (a Hessian metric)", 1024)
#: Cumulant route, attention n=16 m=2 on an idle 2-core machine: 3.4 M/s at 4096 points a call,
#: 4.0-4.8 M/s at 16384 (XLA's intra-op threads use both cores), 2.1 M/s at 65536 (out of cache).
#: The a-posteriori estimate of :class:`geometry._src.tiers.Rotated` may tighten the a-priori bound by at
#: most this factor: a point whose a-priori bound exceeds ``rtol * POSTERIORI_MAX_GAIN`` is never
#: certified by the agreement of two roundings alone (defence in depth against two wrong values
#: that agree by chance; the a-priori bound over-estimates the error observed against the mpmath
#: oracle by 1e4 to 1e6 on heads with n = 40-128 keys in m = 8-64 dimensions).
POSTERIORI_MAX_GAIN = 1e4


def _rotation(m: int) -> np.ndarray:
    """A fixed orthogonal ``(m, m)`` matrix (QR of a Gaussian matrix, seed 0): generic, reproducible."""
    q, r = np.linalg.qr(np.random.default_rng(0).normal(size=(m, m)))
    return q * np.sign(np.diag(r))[None, :]


def rotated(family: Family, mat) -> Family:
    """``family`` with every head's keys ``K M``: the same distributions at ``M^{-1} x``, hence the same curvature."""
    heads = tuple(type(h)(jnp.asarray(h.keys) @ mat, h.scale, h.offset) for h in family.softmax_heads())
    return eqx.tree_at(lambda f: f.heads_, family, heads)


def rotated_cumulant(family: Family, theta):
    r"""The cumulant route at one point in rotated coordinates: ``(R_Q, cancellation, logit spread)``.

    ``R`` is a coordinate invariant, so the same formula evaluated with keys :math:`K D Q` at the
    query :math:`Q^\top D^{-1} x` (``D`` the equilibration, powers of two, exact; ``Q`` a fixed
    generic orthogonal matrix, :func:`_rotation`) computes the same number with *other*
    roundings: the atoms, the metric, its Cholesky factor and the whitening all round
    differently, and the part of the error that the conditioning amplifies is resampled
    (the rounding-perturbation idea of CESTAC / Monte Carlo arithmetic: Vignes 1993,
    *Math. Comput. Simul.* 35; Parker 1997).  The spread :math:`\max_i (z_{top} - z_i)` of the
    logits measures the rounding the two evaluations share: :math:`\log p_i` carries an
    absolute error of about :math:`\varepsilon(z_{top} - z_i + 4)`, a relative error of
    :math:`p_i` that perturbs ``g`` and ``T`` relatively (the weights are positive), which the
    conditioning does not amplify.  Used by :class:`geometry._src.tiers.Rotated`.
    """
    heads = family.softmax_heads()
    d = equilibration(heads)
    mat = d[:, None] * jnp.asarray(_rotation(family.dim))
    r_q, cancel, _ = scalar_cumulant(rotated(family, mat), mat.T @ (theta / d**2))
    spread = max(jnp.max(jnp.minimum(jnp.max(z) - z, 745.0)) for z in (h.logits(theta) for h in heads))
    return r_q, cancel, spread


CUMULANT = Route("cumulant", scalar_cumulant, lambda f: f.softmax_heads() is not None,
                 "a softmax-linear family (categorical/attention)", 16384,
                 lambda f: GRAM_WORKERS if gram_batch_ok(f) else 1)
ROUTES = {r.name: r for r in (LEVI_CIVITA, HESSIAN, CUMULANT)}


def default_route(family: Family) -> Route:
    """Fastest accurate float64 route.  Exponential families given through a chart (the Gaussian in
    ``(mu, sigma)``) use Levi-Civita in their own coordinates: the natural coordinates of a narrow
    Gaussian are badly scaled (``eta_2 = -1/(2 sigma^2)``), which would cost digits for nothing."""
    if CUMULANT.supports(family):
        return CUMULANT
    if HESSIAN.supports(family) and family.potential()[1] is None:
        return HESSIAN
    return LEVI_CIVITA


def select(family: Family, method) -> Route:
    """The route ``method`` names (``None``: :func:`default_route`), or ``ValueError`` saying what it needs."""
    if method is not None and method not in ROUTES:
        raise ValueError(f"method must be None, 'cumulant', 'hessian' or 'levi-civita', got {method!r}")
    route = default_route(family) if method is None else ROUTES[method]
    if not route.supports(family):
        raise ValueError(f"method={route.name!r} needs {route.needs}; {family.name} is {family.kind}")
    return route


#: The cumulant chunk shrinks so that ``chunk`` times its per-point intermediates (``n^2`` in the
#: Gram form, ``n m^3`` in the tensor form) stays below this many float64s.
MAX_CHUNK_ATOM_ELEMENTS = 1 << 23


#: :func:`cumulant_gram_batch` keeps its ``(B, N, N)`` Gram matrices within this many float64s
#: (8 MiB): measured on this 2-core machine at N = 128, m = 32, the batched Gram product runs at
#: about 80 GFlop/s for B <= 128 and at 23 GFlop/s at B = 256, once the Gram matrices leave the cache.
GRAM_BATCH_ELEMENTS = 1 << 20
#: Points per compiled call of :func:`cumulant_gram_batch` (it loops over sub-batches of
#: :func:`gram_sub_batch` points inside the call, so the call's fixed host costs are shared by many
#: sub-batches: at N = 128, m = 32 the engine took 85 us a point in calls of 64 points, 63 in calls of 1024).
GRAM_CHUNK = 1024
#: Calls of the Gram kernel run at once from host threads (:attr:`Route.workers`).  One call keeps
#: about 1.2 of this machine's 2 cores busy (its batched products of 128 x 128 x m and its
#: reductions over the Gram matrices run on one thread): measured at N = 128, chunks of 1024 points,
#: 58 -> 37 us a point at m = 32 and 150-167 -> 92-99 us at m = 64 with two calls at once.  The cores
#: counted are those this process may run on: a process pinned to one core (``geometry.launch
#: --cpus-per-process 1``) gets one worker, since a second thread there has no core to run on.
GRAM_WORKERS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def gram_sub_batch(family: Family) -> int:
    """Points per batched product of :func:`cumulant_gram_batch`: ``(B, N, N)`` Gram matrices within
    :data:`GRAM_BATCH_ELEMENTS` (a power of two, at least 16)."""
    n = num_atoms(family)
    sub = max(16, GRAM_BATCH_ELEMENTS // (n * n))
    return 1 << (int(sub).bit_length() - 1)


def default_chunk(family: Family, route: Route) -> int:
    """Points per compiled call of ``route`` for ``family`` (a power of two)."""
    chunk = route.chunk
    if route is CUMULANT and gram_batch_ok(family):
        return GRAM_CHUNK
    if route is CUMULANT:
        n, m = num_atoms(family), family.dim
        per_point = n * n if gram_form(n, m) else n * m**3
        budget = GRAM_BATCH_ELEMENTS if gram_batch_ok(family) else MAX_CHUNK_ATOM_ELEMENTS
        chunk = min(chunk, max(16, budget // per_point))
    return 1 << (int(chunk).bit_length() - 1)


def cross_check_route(family: Family, route: Route) -> Route | None:
    """The independent route whose disagreement bounds the error of building the metric, or ``None``.

    The error model does not see error made while *building* the metric (``J^T (hess psi) J``
    of a narrow Gaussian far from the origin; a few-ulp polygamma amplified by the metric's
    conditioning), so where a family has both autodiff routes, each checks the other.
    """
    if route is CUMULANT or not HESSIAN.supports(family):
        return None
    return LEVI_CIVITA if route is HESSIAN else HESSIAN


def kernel(route: Route, checked: bool):
    r"""Per-point kernel ``(family, theta) -> (R, estimated relative error, definiteness)``.

    The estimate is :func:`geometry._src.linalg.error_estimate`; with ``checked`` (the
    precision-controlled default) it is at least :math:`64\,|R - R'|/|R|` for the
    :func:`cross_check_route` ``R'`` (a wrapper around the route, not a branch inside it), and for a
    family computed by a numerical rule (:meth:`geometry.Family.coarse`) it adds
    :math:`\delta/(|R| - \delta)`, :math:`\delta = |R - R_{\mathrm{coarse}}|`.
    A negative or NaN estimate means garbage and becomes ``inf``.  ``definiteness`` is
    ``1/kappa`` (a lower bound of the scaled metric's smallest over largest eigenvalue)
    where the route's Cholesky factor exists, NaN where it does not, and 1 for families
    definite by construction.
    """

    def fn(family, theta):
        r, cancel, kappa = route.fn(family, theta)
        est = error_estimate(cancel, kappa)
        other = cross_check_route(family, route) if checked else None
        if other is not None:
            est = jnp.maximum(est, SAFETY * jnp.abs(r - other.fn(family, theta)[0]) / jnp.abs(r))
        coarse = family.coarse() if checked else None
        if coarse is not None:  # a family computed by a numerical rule: its error is |R - R_coarse| at most
            delta = jnp.abs(r - route.fn(coarse, theta)[0])
            est = est + jnp.where(jnp.abs(r) > delta, delta / (jnp.abs(r) - delta), jnp.inf)
            est = est + SAFETY * family.rounding_floor(theta)
        est = jnp.where(est >= 0, est, jnp.inf)
        lowest = family.smallest_log_prob(theta)
        if lowest is not None:  # products of two probabilities would underflow: not float64's range
            est = jnp.where(lowest >= LOG_PRODUCT_FLOOR, est, jnp.inf)
        if family.definite_by_construction:
            return r, est, jnp.ones_like(r)
        return r, est, jnp.where(kappa >= 1.0, 1.0 / kappa, jnp.nan)

    fn.__name__ = f"scalar_{route.name}{'_checked' if checked else ''}"
    return fn


#: ``ln`` of the smallest probability whose square is still a normal float64 (XLA on the CPU flushes
#: subnormals to zero, so ``p_i p_j`` below 2^-1022 becomes 0 and the autodiff routes lose terms
#: their error model cannot see): ``ln(2^-1022) / 2``.
LOG_PRODUCT_FLOOR = -1022 * 0.6931471805599453 / 2


_KERNELS = {(name, checked): kernel(route, checked) for name, route in ROUTES.items() for checked in (False, True)}


def route_kernel(route: Route, checked: bool):
    """The cached kernel of :func:`kernel` (one function object per route: compiled programs are reused)."""
    return _KERNELS[route.name, checked]

