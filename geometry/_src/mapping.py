"""Mapping a per-point kernel over many points (layer 7): input rows, fixed-shape chunks, mappers.

A *mapper* is a small value with one method, ``map(kernel, family, rows, prepare, progress, chunk, workers)``:
it applies ``kernel(family, theta) -> pytree`` (a pure JAX function of one point) to every
row of ``rows`` (an ``(N, dim)`` array-like, possibly a ``np.memmap``, read chunk by chunk),
calls ``prepare(block, start)`` on each chunk before computing it (validation: it returns
the float64 block or raises), reports the points done to ``progress(k)`` and returns the
outputs as numpy arrays of leading size ``N``.  Every chunk has the same shape (the last
is padded with copies of its first row and trimmed), so a sweep compiles exactly once.
``workers`` (default 1) is how many chunks may be computed at once from host threads; the
caller (a route, :attr:`geometry._src.routes.Route.workers`) says when its program allows it.
Outputs, ``prepare`` calls, errors and progress are in chunk order whatever ``workers`` is.

:class:`LocalMapper` runs on the default device; :class:`ShardedMapper` splits every
step across devices with :func:`jax.shard_map`.  Both pipeline chunks: chunk ``k + 1``
is dispatched (JAX dispatch is asynchronous) before the results of chunk ``k`` are
copied out, so host work overlaps the computation.

Family leaves (keys, scales) are passed to the compiled program as arguments, so many
key sets of one shape compile once -- except calls of at least
:data:`CONSTANT_LEAVES_MIN_POINTS` points on families of dimension ``<= 4``, which compile
the leaves in as constants (XLA then specialises the batch-major cumulant kernel, 74
instead of 146 ns a point for attention n=16, m=2; the values are bit for bit the same).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .linalg import MAX_UNROLLED_DIM

#: Points per compiled call for kernels without a policy of their own.
DEFAULT_CHUNK = 4096
#: Calls on at least this many points of a family with ``dim <= MAX_UNROLLED_DIM`` compile its
#: array leaves in as constants (one compilation per family rather than per key shape).
CONSTANT_LEAVES_MIN_POINTS = 1 << 17


def pad_rows(block: np.ndarray, size: int) -> np.ndarray:
    """``block`` padded to ``size`` rows with copies of its first row (fixed shapes: one compilation)."""
    k = block.shape[0]
    return block if k >= size else np.concatenate([block, np.repeat(block[:1], size - k, axis=0)])


def _split(family, points: int):
    """``(static part, leaves)``: leaves become traced arguments, unless the call is large and the
    family small (then everything is static and the leaves are compiled in as constants)."""
    leaves, treedef = jax.tree_util.tree_flatten(family)
    if leaves and points >= CONSTANT_LEAVES_MIN_POINTS and family.dim <= MAX_UNROLLED_DIM:
        return _Constant(family), ()
    return treedef, tuple(leaves)


class _Constant:
    """Hashable-by-identity holder of a family compiled in as constants."""

    def __init__(self, family):
        self.family = family

    def __hash__(self):
        return id(self.family)

    def __eq__(self, other):
        return isinstance(other, _Constant) and other.family is self.family

    def rebuild(self, leaves):
        return self.family


def _rebuild(static, leaves):
    return static.rebuild(leaves) if isinstance(static, _Constant) else jax.tree_util.tree_unflatten(static, leaves)


@functools.lru_cache(maxsize=256)
def _local_program(kernel: Callable, static, chunk: int):
    return jax.jit(jax.vmap(lambda leaves, t: kernel(_rebuild(static, leaves), t), in_axes=(None, 0)))


def _chunk_for(chunk: int, n: int) -> int:
    if n < chunk:  # round small batches up to a power of two: few distinct shapes, few compilations
        return 1 << max(0, int(n - 1).bit_length()) if n else 1
    return chunk


def _empty_outputs(kernel, family):
    probe = jax.eval_shape(lambda t: kernel(family, t), jax.ShapeDtypeStruct((family.dim,), jnp.float64))
    return jax.tree_util.tree_map(lambda s: np.zeros((0,) + s.shape, s.dtype), probe)


def _pipelined(rows, step: int, prepare, run, collect, to_host=np.asarray, workers: int = 1) -> int:
    """Chunks of ``step`` rows: ``prepare`` each, pad it, ``run`` it (asynchronous dispatch) and copy out the
    previous chunk's results meanwhile (at most two chunks in flight).  Returns the number of chunks.
    With ``workers > 1`` and more than one chunk, :func:`_threaded`."""
    if workers > 1 and rows.shape[0] > step:
        return _threaded(rows, step, prepare, run, collect, to_host, workers)
    pending, chunks = None, 0
    for start in range(0, rows.shape[0], step):
        block = prepare(rows[start : start + step], start)
        res = run(pad_rows(block, step))
        if pending is not None:
            collect(*pending, to_host=to_host)
        pending = (start, block.shape[0], res)
        chunks += 1
    collect(*pending, to_host=to_host)
    return chunks


def _threaded(rows, step: int, prepare, run, collect, to_host, workers: int) -> int:
    """:func:`_pipelined` with up to ``workers`` chunks computed at once, each by a host thread that calls
    ``run`` and waits for its results.  JAX's asynchronous dispatch runs the calls of one host thread
    one after the other on the CPU; calls from different threads run side by side.  ``prepare``
    and ``collect`` stay on the calling thread, in chunk order, so a bad point is reported at the
    same chunk (and with the same message) as without threads; queued chunks are cancelled then."""

    def compute(block):
        return jax.tree_util.tree_map(to_host, run(pad_rows(block, step)))

    pending, chunks = collections.deque(), 0
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="geometry-mapper")
    try:
        for start in range(0, rows.shape[0], step):
            block = prepare(rows[start : start + step], start)  # overlaps the chunks in flight
            while len(pending) >= workers:
                first, k, fut = pending.popleft()
                collect(first, k, fut.result())
            pending.append((start, block.shape[0], pool.submit(compute, block)))
            chunks += 1
        while pending:
            first, k, fut = pending.popleft()
            collect(first, k, fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return chunks


class _Collector:
    """Preallocated host outputs, filled chunk by chunk."""

    def __init__(self, n, progress):
        self.n, self.progress, self.tree, self.out = n, progress, None, None

    def __call__(self, start, k, res, to_host=np.asarray):
        leaves, tree = jax.tree_util.tree_flatten(res)
        if self.out is None:
            self.tree = tree
            self.out = [np.empty((self.n,) + leaf.shape[1:], leaf.dtype) for leaf in leaves]
        for dst, leaf in zip(self.out, leaves):
            dst[start : start + k] = to_host(leaf)[:k]
        if self.progress is not None:
            self.progress(k)

    def result(self):
        return jax.tree_util.tree_unflatten(self.tree, self.out)


@dataclasses.dataclass(frozen=True)
class LocalMapper:
    """Chunked ``jit(vmap(kernel))`` on the default device; ``chunk`` points per call (``None``: the caller's)."""

    chunk: int | None = None

    def points_per_step(self, chunk: int) -> int:
        return chunk

    def map(self, kernel: Callable, family, rows, prepare, progress=None, chunk: int | None = None, workers: int = 1):
        n = rows.shape[0]
        if not n:
            return _empty_outputs(kernel, family)
        chunk = _chunk_for(int(self.chunk or chunk or DEFAULT_CHUNK), n)
        static, leaves = _split(family, n)
        fn = _local_program(kernel, static, chunk)
        collect = _Collector(n, progress)
        _pipelined(rows, chunk, prepare, lambda block: fn(leaves, jnp.asarray(block)), collect, workers=workers)
        return collect.result()


_TRACES: dict = {}


def trace_count(key) -> int:
    """How many times the sharded program ``key`` was traced (tests assert that a sweep compiled once)."""
    return _TRACES.get(key, 0)


@functools.lru_cache(maxsize=128)
def _sharded_program(kernel: Callable, static, devices: tuple, chunk: int, dim: int, leaf_specs: tuple):
    """AOT-compiled ``(leaves, (ndev * chunk, dim)) -> kernel outputs``, sharded over ``devices``."""
    key = (kernel.__name__, static, devices, chunk)
    mesh = Mesh(np.array(devices), ("points",))
    spec = PartitionSpec("points")
    sharding = NamedSharding(mesh, spec)
    replicated = NamedSharding(mesh, PartitionSpec())

    def body(leaves, block):
        _TRACES[key] = _TRACES.get(key, 0) + 1
        return jax.vmap(lambda t: kernel(_rebuild(static, leaves), t))(block)

    fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(PartitionSpec(), spec), out_specs=spec),
                 in_shardings=(replicated, sharding), out_shardings=sharding)
    leaves = tuple(jax.ShapeDtypeStruct(shape, dtype, sharding=replicated) for shape, dtype in leaf_specs)
    block = jax.ShapeDtypeStruct((len(devices) * chunk, dim), jnp.float64, sharding=sharding)
    return fn.lower(leaves, block).compile(), sharding, replicated, key


@dataclasses.dataclass
class ShardedMapper:
    """Every step is ``len(devices) * chunk`` points sharded across ``devices`` (:func:`jax.shard_map`).

    ``devices`` must belong to this process (``jax.local_devices()``): in a program of several
    processes each one maps its own share of the points (:mod:`geometry._src.processes`), so no
    step waits on another process and no result crosses processes here.  ``points``: the size of
    the whole sweep when this mapper sees it in parts (the choice of compiling the family's leaves
    in as constants, :data:`CONSTANT_LEAVES_MIN_POINTS`, is then the same for every part).
    ``chunks`` and ``trace_key`` record the last run (for :class:`geometry.SweepStats`).
    """

    devices: tuple
    chunk: int | None = None
    points: int | None = None
    chunks: int = 0
    trace_key: object = None
    compile_seconds: float = 0.0
    chunk_used: int = 0

    def __post_init__(self):
        here = jax.process_index()
        foreign = [d for d in self.devices if d.process_index != here]
        if foreign:
            raise ValueError(
                f"ShardedMapper devices must belong to this process (jax.local_devices()), got {foreign[0]!r} of process "
                f"{foreign[0].process_index}; geometry.sweep gives every process its own share of the points")

    def points_per_step(self, chunk: int) -> int:
        return len(self.devices) * int(self.chunk or chunk)

    def map(self, kernel: Callable, family, rows, prepare, progress=None, chunk: int | None = None, workers: int = 1):
        n = rows.shape[0]
        if not n:
            return _empty_outputs(kernel, family)
        chunk = self.chunk_used = int(self.chunk or chunk or DEFAULT_CHUNK)
        step = chunk * len(self.devices)
        static, leaves = _split(family, max(n, self.points or 0))
        specs = tuple((np.shape(leaf), jnp.asarray(leaf).dtype) for leaf in leaves)
        t0 = time.perf_counter()
        fn, sharding, replicated, self.trace_key = _sharded_program(kernel, static, self.devices, chunk, family.dim, specs)
        self.compile_seconds += time.perf_counter() - t0  # 0 s when the program is reused
        leaves = jax.device_put(tuple(jnp.asarray(leaf) for leaf in leaves), replicated)
        collect = _Collector(n, progress)

        def run(block):
            return fn(leaves, jax.make_array_from_callback(block.shape, sharding, lambda idx: block[idx]))

        self.chunks = _pipelined(rows, step, prepare, run, collect, workers=workers)
        return collect.result()
