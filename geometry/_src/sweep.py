r"""Curvature sweeps at scale: batch-major cumulant kernel, device sharding, bounded memory.

Two pieces live here.

1. :func:`cumulant_batch_major`, the vectorised form of the ``cumulant`` route
   (:func:`geometry._src.curvature.scalar_cumulant` dispatches to it under
   ``jax.vmap`` through a ``custom_vmap`` rule).  The per-point code batched by
   ``vmap`` turns every ``m x m`` Cholesky, triangular solve and ``einsum`` into a
   batched LAPACK/dot call on tiny matrices, which dominates the cost on a CPU.
   Here the batch axis comes first and is the *only* array axis besides the
   atom axis: every ``m``-indexed quantity (``g_ij``, ``L_ij``, ``(L^{-1})_ij``,
   ``T_ijk``) is a Python list of ``(B,)`` vectors, and the Cholesky factor of
   :math:`g = LL^\top` is unrolled in closed form,

   .. math:: L_{jj} = \sqrt{g_{jj} - \textstyle\sum_{k<j} L_{jk}^2},\qquad
             L_{ij} = (g_{ij} - \textstyle\sum_{k<j} L_{ik}L_{jk})/L_{jj}\quad(i>j),

   (:func:`geometry._src.curvature.unrolled_cholesky_inverse`), so XLA fuses the
   per-point work into a few elementwise loops.  The atom axis is the minor one
   (``(B, N)`` arrays); every group of sums over it is *one* variadic
   ``lax.reduce`` (XLA fuses the products into it and reads the atoms once): the
   dominant key (largest logit and its key's coordinates), then
   :math:`\sum_i e_i` and :math:`\sum_i e_i d_i`, then every entry of ``g`` and ``T``
   together.  One ``jnp.sum`` per entry would make one pass each and materialise the
   products.  The mathematics (dominant-key centring, whitened atoms
   :math:`W_a = L^{-1}u_a`, the Gram or tensor form of :math:`|T|^2` and :math:`|\tau|^2`, the
   cancellation factor :math:`(|T|^2+|\tau|^2)/|R|` and the condition number of the
   Jacobi-scaled metric, :func:`geometry._src.curvature.scaled_condition`)
   is exactly that of :mod:`geometry._src.curvature`; only the summation order
   and two exact homogeneities differ (:func:`_atoms_batch_major`): the tensor form
   weights the atoms by :math:`e_i = e^{z_i - z_{\max}}` instead of
   :math:`p_i = e_i/\sum_j e_j` (the Gram form's weights) and multiplies ``R`` by
   :math:`\sum_j e_j` once, and a single head's key scale, which cancels from ``R``,
   is left out of ``u``.  Either weight is accurate to a few ulps in every entry,
   where the per-point route's :math:`\exp(\log p_i)` errs like :math:`|\log p_i|\,\varepsilon`.
   Used for query dimension ``m <= MAX_UNROLLED_DIM``; larger ``m`` keep the
   per-point route (batched LAPACK is efficient there).

2. :func:`sweep`, the scalable form of :func:`geometry.scalar_curvature`: the
   same float64 kernels and the same mpmath fallback (it calls
   :mod:`geometry._src.api`), but points are streamed through one compiled,
   fixed-shape program in chunks, each chunk sharded across every visible
   device with :func:`jax.shard_map`, so memory stays bounded (outputs only:
   about 21 bytes per point) and nothing recompiles.

Running on several devices or hosts
-----------------------------------
``sweep`` uses ``jax.devices()`` (all devices of all processes).  On a GPU
machine install ``jax[cuda12]`` and call it unchanged.  On a CPU, simulate
``k`` devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=k``.  On a
cluster, call ``jax.distributed.initialize()`` (coordinator address, number of
processes and process id from the arguments or the cluster environment: SLURM,
Open MPI and Kubernetes are detected) in every process *before* the first JAX
computation, then call ``sweep`` with the same ``theta`` in every process (for
example read from a shared file or generated from a seed, optionally as a
``np.memmap``): each process reads only the rows of the chunks its devices own,
and the results are gathered to every process with
``jax.experimental.multihost_utils.process_allgather``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import api as _api
from . import curvature as _curv
from . import fisher as _fisher
from .families import Family
from .points import as_points, check_family, default_chunk, pad_rows

#: Largest query dimension for which the unrolled (Cholesky in closed form) kernel is used.
MAX_UNROLLED_DIM = _curv.MAX_UNROLLED_DIM


# --------------------------------------------------------------------------- batch-major cumulant kernel


def unrolled_ok(family: Family) -> bool:
    """Whether :func:`cumulant_batch_major` handles ``family`` (softmax-linear, ``dim <= MAX_UNROLLED_DIM``)."""
    return family.kind == "softmax-linear" and family.dim <= MAX_UNROLLED_DIM


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
    r"""Atoms of :func:`geometry._src.fisher.softmax_atoms` for a batch ``x (B, m)``, up to two scale factors.

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
    ws, us = [], [[] for _ in range(m)]
    for h in heads:
        keys = jnp.asarray(h.keys)
        z = h.scale * sum(x[:, j : j + 1] * keys[None, :, j] for j in range(m))  # (B, n), fused into its consumers
        zmax, k_top = _dominant_key(z, h.keys)
        e = jnp.exp(z - zmax[:, None])  # e_top = 1 exactly
        d = [keys[None, :, j] - k_top[j][:, None] for j in range(m)]  # centred at the dominant key: no cancellation
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
    if _curv.gram_form(n, m):
        g = dict(zip(pairs, _sums(wuu[ab] for ab in pairs)))
    else:
        triples = _desc_triples(m)
        sums = _sums([wuu[ab] for ab in pairs] + [wuu[a, b] * u[c] for a, b, c in triples])
        g, t = dict(zip(pairs, sums[: len(pairs)])), dict(zip(triples, sums[len(pairs) :]))
    _, linv = _curv.unrolled_cholesky_inverse(g, m)
    kappa = _curv.scaled_condition_unrolled(g, linv, m)
    if _curv.gram_form(n, m):  # O(n^2 m)
        wt = [sum(linv[i, j][:, None] * u[j] for j in range(i + 1)) for i in range(m)]  # W_a = L^{-1} u_a
        wn = w * sum(v * v for v in wt)
        gram = sum(v[:, :, None] * v[:, None, :] for v in wt)
        t2 = jnp.sum(w[:, :, None] * w[:, None, :] * gram**3, axis=(1, 2))
        tau2 = jnp.sum(wn[:, :, None] * wn[:, None, :] * gram, axis=(1, 2))
        # terms of both signs: fold (sum of |terms|) / (|T|^2 + |tau|^2) into the amplification,
        # as in curvature.cumulant_contractions
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
    :math:`\kappa` = :func:`geometry._src.curvature.scaled_condition` (see the module docstring and
    :mod:`geometry._src.curvature`).  Requires :func:`unrolled_ok`.  The tensor form runs on
    unnormalised weights :math:`e_i` and rescales ``R`` once, :math:`R = (\sum_i e_i)\,R(e)`
    (:func:`_atoms_batch_major`); the Gram form (``n <= m^2``) normalises the weights first.
    """
    if not unrolled_ok(family):
        raise ValueError(f"cumulant_batch_major needs a softmax-linear family with dim <= {MAX_UNROLLED_DIM}; got {family!r}")
    n = sum(h.keys.shape[0] for h in family.heads)
    w, u, s = _atoms_batch_major(family, x, normalised=_curv.gram_form(n, family.dim))
    t2, tau2, kappa = _contractions_batch_major(w, u)
    r = 0.25 * (t2 - tau2)
    cancel = (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r)
    return (r if s is None else r * s), cancel, kappa


def cumulant_point(family: Family, theta):
    """Route ``cumulant`` at one point: :func:`geometry._src.curvature.cumulant_contractions` of the atoms."""
    t2, tau2, kappa = _curv.cumulant_contractions(*_fisher.softmax_atoms(family, theta))
    r = 0.25 * (t2 - tau2)
    return r, (jnp.abs(t2) + jnp.abs(tau2)) / jnp.abs(r), kappa


@functools.lru_cache(maxsize=256)
def batched_cumulant_fn(family: Family):
    """``theta -> (R, cancellation, kappa)``: :func:`cumulant_point` alone, :func:`cumulant_batch_major` under ``vmap``.

    ``custom_vmap`` selects the kernel; the outer ``custom_jvp`` differentiates the
    per-point formula, so ``jax.grad``/``jax.jacfwd`` still work (``custom_vmap``
    alone has no reverse mode).
    """

    @jax.custom_batching.custom_vmap
    def fn(theta):
        return cumulant_point(family, theta)

    @fn.def_vmap
    def _rule(axis_size, in_batched, theta):
        (batched,) = in_batched
        if not batched:
            return cumulant_point(family, theta), (False, False, False)
        return cumulant_batch_major(family, theta), (True, True, True)

    @jax.custom_jvp
    def wrapped(theta):
        return fn(theta)

    @wrapped.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(lambda t: cumulant_point(family, t), primals, tangents)

    return wrapped


# --------------------------------------------------------------------------- sweeps


@dataclasses.dataclass
class SweepStats:
    """Timing and shape record of one :func:`sweep` (``traces`` counts compilations; 1 means none repeated)."""

    points: int
    devices: int
    processes: int
    chunk_per_device: int
    chunks: int
    traces: int
    compile_seconds: float
    run_seconds: float
    fallback_seconds: float
    route: str

    @property
    def points_per_second(self) -> float:
        return self.points / self.run_seconds if self.run_seconds > 0 else float("inf")


class _Rows:
    """Read-only ``(N, dim)`` float64 row view of a possibly huge / memory-mapped ``theta`` (no copy)."""

    def __init__(self, arr):
        self._arr = arr
        self.shape = arr.shape

    def __getitem__(self, i):
        return np.asarray(self._arr[i], dtype=np.float64)


_TRACES: dict = {}


def _trace_count(key) -> int:
    return _TRACES.get(key, 0)


@functools.lru_cache(maxsize=128)
def _sharded_program(kernel: Callable, family: Family, devices: tuple, chunk: int):
    """AOT-compiled ``(ndev * chunk, dim) -> kernel outputs`` (the route kernel of :mod:`geometry._src.api`), sharded over ``devices``.

    Returns ``(compiled, sharding, trace key)``.  The Python body below runs
    only when JAX traces it; ``_TRACES`` counts those traces so tests can assert
    that a sweep compiled once.
    """
    key = (kernel.__name__, id(family), devices, chunk)
    mesh = Mesh(np.array(devices), ("points",))
    spec = PartitionSpec("points")
    sharding = NamedSharding(mesh, spec)

    def body(block):
        _TRACES[key] = _TRACES.get(key, 0) + 1
        return jax.vmap(lambda t: kernel(family, t))(block)

    fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec), in_shardings=sharding, out_shardings=sharding)
    shape = jax.ShapeDtypeStruct((len(devices) * chunk, family.dim), jnp.float64, sharding=sharding)
    return fn.lower(shape).compile(), sharding, key


def _to_host(x):
    if jax.process_count() > 1:  # pragma: no cover - needs a cluster
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def sweep(
    family: Family,
    theta,
    method: str | None = None,
    *,
    rtol: float = _api.DEFAULT_RTOL,
    chunk_size: int | None = None,
    devices=None,
    progress: bool | Callable[[int], None] = True,
    time_budget: float | None = None,
    return_info: bool = False,
    return_stats: bool = False,
):
    r"""Scalar curvature of many points, streamed in fixed-shape chunks sharded across devices.

    Same values, error model and fallback as :func:`geometry.scalar_curvature`
    (``method=None`` is precision-controlled: points whose float64 error estimate
    :math:`64\,\varepsilon\,\kappa(g)\,(|T|^2+|\tau|^2)/|R|` exceeds ``rtol`` are
    recomputed in mpmath by ``geometry._src.api``; ``method="cumulant" | "hessian" |
    "levi-civita"`` forces a raw float64 route).

    ``theta``: array-like ``(..., dim)``; a ``np.memmap`` is read chunk by chunk.
    ``chunk_size``: points *per device* per step (default from :func:`geometry._src.points.default_chunk`);
    every step has shape ``(len(devices) * chunk_size, dim)`` (the tail is padded),
    so one sweep compiles once.  ``devices``: default ``jax.devices()`` (every
    device of every process).  ``progress``: ``True`` for a tqdm bar, ``False``
    for none, or a callable receiving the number of points done per step.

    Returns ``R`` with shape ``theta.shape[:-1]``; with ``return_info=True`` also
    the :class:`geometry.CurvatureInfo`; with ``return_stats=True`` also a
    :class:`SweepStats` (compile time separate from steady-state run time).
    Memory: the outputs (``R``, error estimate, status, digits: 21 bytes per
    point) plus one chunk; ``theta`` itself is never copied whole.
    """
    fam = check_family(family)
    route = _api._check_route(fam, method)
    if not (isinstance(rtol, (float, int)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a relative tolerance in (0, 1), got {rtol!r}")
    if isinstance(theta, (str, bytes)) or theta is None:
        raise TypeError(f"theta must be an array of shape (..., {fam.dim}), got {type(theta).__name__}")
    arr = theta if isinstance(theta, np.ndarray) else np.asarray(theta)
    if arr.ndim == 0 or arr.shape[-1] != fam.dim:
        raise ValueError(f"theta must have shape (..., {fam.dim}) for {fam.name}, got shape {arr.shape}")
    lead = arr.shape[:-1]
    rows = arr.reshape(-1, fam.dim)  # a view for contiguous arrays and memmaps
    n = rows.shape[0]
    devs = tuple(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must be a non-empty sequence of jax devices (default: jax.devices())")
    if chunk_size is not None and not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive integer (points per device per step), got {chunk_size!r}")
    chunk = int(chunk_size or default_chunk(fam, route))
    step = chunk * len(devs)

    r = np.zeros(n)
    rel = np.zeros(n)
    status = np.zeros(n, np.int8)
    dps = np.zeros(n, np.int32)
    reasons: dict = {}
    bar, tick = _progress(progress, n, f"curvature {fam.name} [{route}]")
    compile_s = run_s = fallback_s = 0.0
    chunks = 0
    key = None
    try:
        if fam.dim == 1:  # R = 0 identically; only the metric must be definite
            for start in range(0, n, step):
                flat, _ = as_points(fam, rows[start : start + step], f"theta[{start}:{start + step}]")
                if fam.kind != "softmax-linear":
                    _validate(fam, flat, chunk)
                    _api._check_positive_definite(fam, flat, chunk)
                tick(flat.shape[0])
        elif n:
            t0 = time.perf_counter()
            compiled, sharding, key = _sharded_program(_route_kernel(route, method), fam, devs, chunk)  # cached: 0 s when reused
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pending = None
            for start in range(0, n, step):
                flat, _ = as_points(fam, rows[start : start + step], f"theta[{start}:{start + step}]")
                _validate(fam, flat, chunk)
                k = flat.shape[0]
                if k < step:
                    flat = pad_rows(flat, step)
                block = jax.make_array_from_callback(flat.shape, sharding, lambda idx, f=flat: f[idx])
                out = compiled(block)  # asynchronous: the host prepares the next chunk meanwhile
                if pending is not None:
                    _collect(fam, rows, pending, r, rel, tick)
                pending = (start, k, out)
                chunks += 1
            if pending is not None:
                _collect(fam, rows, pending, r, rel, tick)
            run_s = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()

    if fam.dim > 1 and n:
        t0 = time.perf_counter()
        view = _Rows(rows)
        if method is None:
            bad = np.flatnonzero(~(rel <= rtol))
            if bad.size:
                _api._high_precision(fam, view, bad, r, rel, status, dps, reasons, rtol, time_budget)
        else:
            for i in np.flatnonzero(~np.isfinite(r)):
                status[i], reasons[int(i)] = _api.UNDEFINED, f"raw {route} route gave a non-finite value (singular or overflowing metric in float64)"
                r[i] = np.nan
        fallback_s = time.perf_counter() - t0

    info = _api.CurvatureInfo(rel.reshape(lead), status.reshape(lead), dps.reshape(lead), reasons, route, rtol)
    out = r.reshape(lead)
    if not return_info and reasons:
        import warnings

        first = next(iter(reasons.items()))
        warnings.warn(
            f"{len(reasons)} of {n} points have no trustworthy curvature (NaN); first: point {first[0]}: {first[1]}. "
            "Call sweep(..., return_info=True) for the per-point status.",
            _api.UndefinedCurvatureWarning,
            stacklevel=2,
        )
    stats = SweepStats(
        points=n, devices=len(devs), processes=jax.process_count(), chunk_per_device=chunk, chunks=chunks,
        traces=_trace_count(key) if key is not None else 0,
        compile_seconds=compile_s, run_seconds=run_s, fallback_seconds=fallback_s, route=route,
    )
    result = (out,) + ((info,) if return_info else ()) + ((stats,) if return_stats else ())
    return result[0] if len(result) == 1 else result


def _collect(fam, rows, pending, r, rel, tick):
    start, k, out = pending
    rr, e, lam_rel = (_to_host(a)[:k] for a in out)  # (R, estimated relative error, definiteness): api._route_kernel
    looked = np.zeros(0, int)
    if fam.kind != "softmax-linear" and not np.all(lam_rel > -1e-12):
        full = np.ones(rows.shape[0])
        full[start : start + k] = lam_rel
        # raises for truly indefinite metrics; returns points whose float64 metric only looked indefinite
        looked = _api._raise_if_indefinite(fam, _Rows(rows), full)
    r[start : start + k] = rr
    rel[start : start + k] = np.where(np.isfinite(e) & np.isfinite(rr), e, np.inf)
    rel[looked] = np.inf  # recompute those in high precision
    tick(k)


def _route_kernel(route, method):
    """The per-point kernel :func:`geometry.scalar_curvature` uses for ``route`` (controlled when ``method is None``)."""
    controlled = getattr(_api, "_CONTROLLED_KERNELS", None)
    return (controlled if method is None and controlled else _api._ROUTE_KERNELS)[route]


def _validate(fam, flat, chunk):
    check = getattr(_api, "_validate_user_family", None)
    if check is not None:
        check(fam, flat, chunk)


def _progress(progress, total, desc):
    if callable(progress) and not isinstance(progress, bool):
        return None, progress
    if not progress:
        return None, lambda k: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="pt", unit_scale=True, leave=False, disable=None)
    return bar, bar.update
