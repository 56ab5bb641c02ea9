r"""Curvature sweeps at scale (layer 10): the engine with a sharded mapper, over processes, to disk.

:func:`sweep` is :func:`geometry.scalar_curvature` with
:class:`~geometry._src.mapping.ShardedMapper` in place of the local mapper: the same
validation, route kernels, error model, tiers and status bookkeeping
(:mod:`geometry._src.engine`), but points are streamed through one compiled,
fixed-shape program in chunks, each chunk sharded across the devices with
:func:`jax.shard_map`, so memory stays bounded (outputs plus one chunk) and nothing
recompiles.

Several processes (``jax.distributed``)
---------------------------------------
In a program of several processes (``jax.distributed.initialize()`` in every process, e.g. through
:func:`geometry.launch.initialize`), every process calls ``sweep`` with the same arguments.  The
processes that own some of ``devices`` (default ``jax.devices()``: all of them) each take one
contiguous share of the points, whole chunks of ``chunk_size`` rows (:func:`~geometry._src.processes.share`),
read only those rows of ``theta`` (an array or a ``np.memmap``) and compute them on their own devices,
fallback tiers included; no compiled step spans two processes.  Each point is then computed
exactly as in a one-process run (same chunk size per device, same position in its chunk), so
the results are the same bits.  Without ``out`` the shares are gathered into every process
(collectives, after every process reported success); with ``out=PATH`` each process writes
its rows to the files under ``PATH`` and nothing is gathered (:mod:`geometry._src.store`).

Resuming.  With ``out=PATH`` the points are cut into checkpoints of ``checkpoint_size`` rows; one is
marked complete only after its results are on disk.  Calling ``sweep`` again with the same family,
points and options verifies and skips the complete checkpoints and computes the others (spread
over the processes of *this* call, whatever their number); a call that differs is refused with the
fields that differ.  See :mod:`geometry._src.store` for the layout of ``PATH`` and the fingerprint.

Failures.  An error in one process (bad points in its share, Ctrl-C) is published to the others,
which raise at their next check (every :data:`~geometry._src.processes.CHECK_INTERVAL` seconds);
a dead process is detected by the runtime's heartbeat (:mod:`geometry._src.processes`).  A sweep
that did not finish returns nothing and leaves ``PATH`` without ``accounting.json``.

Devices: on a GPU machine install ``jax[cuda12]`` and call it unchanged.  On a CPU, simulate ``k``
devices per process with ``XLA_FLAGS=--xla_force_host_platform_device_count=k``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import time
from typing import Callable

import jax
import numpy as np

from . import engine, processes, routes, store
from .engine import DEFAULT_RTOL, CurvatureInfo, check_family
from .families import Family
from .mapping import ShardedMapper, trace_count
from .tiers import STATUS_NAMES

__all__ = ["SweepOutput", "SweepStats", "open_sweep", "sweep"]

#: Default checkpoint of ``sweep(..., out=PATH)``: this many chunks (``chunk_size`` points each).  The
#: route's chunk policy scales the chunk with the cost of a point, so a checkpoint is a fraction of a
#: second to a few seconds of one core (about a million points of attention n=16, m=2; a few thousand
#: of a 128-key, 64-dimensional head): little to lose on an interruption, a few percent of overhead.
DEFAULT_CHECKPOINT_CHUNKS = 64


@dataclasses.dataclass
class SweepStats:
    """Timing and shape record of one :func:`sweep` (``traces`` counts compilations; 1 means none repeated).

    ``points``: all points of the call; ``process_points``: those this process computed (its share,
    less checkpoints verified and skipped); ``process_counts``: ``{process: CurvatureInfo.counts()}``
    of the points each process computed in this call (their totals add up to ``points`` without
    ``out``; with ``out``, to the points not skipped).  Times are this process's: ``run_seconds``
    float64 pass without compilation, ``fallback_seconds`` high-precision tiers,
    ``checkpoint_seconds`` hashing, writing and syncing checkpoints (in a writer thread, overlapping the
    computation of the next one), ``verify_seconds`` checking
    skipped ones, ``wait_seconds`` waiting for the other processes (and gathering), ``wall_seconds``
    the whole call.
    """

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
    process_points: int | None = None
    process_counts: dict = dataclasses.field(default_factory=dict)
    skipped_points: int = 0
    checkpoints_written: int = 0
    checkpoint_seconds: float = 0.0
    verify_seconds: float = 0.0
    wait_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __post_init__(self):
        if self.process_points is None:
            self.process_points = self.points

    @property
    def points_per_second(self) -> float:
        """Points this process computed per second of its float64 pass."""
        return self.process_points / self.run_seconds if self.run_seconds > 0 else float("inf")


@dataclasses.dataclass(frozen=True)
class SweepOutput:
    """The results of ``sweep(..., out=PATH)`` on disk (what :func:`open_sweep` returns).

    ``R``, ``rel_error``, ``status``, ``dps``: read-only ``np.memmap`` arrays of shape ``shape``
    (``theta.shape[:-1]``), the fields of :class:`geometry.CurvatureInfo`.  In an unfinished sweep
    (opened with ``partial=True``) ``status`` is :data:`~geometry._src.store.PENDING` (-1) on every
    point whose checkpoint is not complete, and only points with ``status >= 0`` hold results.  ``complete``: every checkpoint is done and the accounting
    adds up; ``counts()`` is that accounting; ``info()`` a :class:`geometry.CurvatureInfo` over the
    memory-mapped arrays.  Memory stays at what is read.
    """

    path: pathlib.Path
    shape: tuple
    complete: bool
    route: str
    rtol: float
    accounting: dict | None = None

    def _load(self, name: str):
        file = self.path / f"{name}.npy"
        return np.load(file, mmap_mode="r") if int(np.prod(self.shape, dtype=np.int64)) else np.load(file)

    @property
    def R(self) -> np.ndarray:
        return self._load("R")

    @property
    def rel_error(self) -> np.ndarray:
        return self._load("rel_error")

    @property
    def status(self) -> np.ndarray:
        """The status codes; in an unfinished sweep a copy with :data:`~geometry._src.store.PENDING` on every row
        whose checkpoint is not complete (it may have been written, not yet verified and marked)."""
        status = self._load("status")
        if self.complete:
            return status
        st = store.Store.attach(self.path)
        masked = np.full(status.shape, store.PENDING, np.int8)
        flat, src = masked.reshape(-1), np.asarray(status).reshape(-1)
        for unit in st.records():
            a, b = st.unit_rows(unit)
            flat[a:b] = src[a:b]
        return masked

    @property
    def dps(self) -> np.ndarray:
        return self._load("dps")

    @property
    def reasons(self) -> dict:
        """``{flat index: reason}`` for the points without a trusted value."""
        if self.complete:
            return {int(k): v for k, v in store.read_json(self.path / store.REASONS).items()}
        recs = store.Store.attach(self.path).records()
        return {int(k): v for rec in recs.values() for k, v in rec["reasons"].items()}

    def counts(self) -> dict:
        """``CurvatureInfo.counts()`` over all points; an unfinished sweep adds ``"pending"`` (not computed yet)."""
        if self.complete:
            return dict(self.accounting["counts"])
        st = store.Store.attach(self.path)
        out = {"total": st.points, **{name: 0 for name in STATUS_NAMES.values()}}
        for rec in st.records().values():
            for name in STATUS_NAMES.values():
                out[name] += int(rec["counts"].get(name, 0))
        out["pending"] = st.points - sum(out[name] for name in STATUS_NAMES.values())
        return out

    def info(self) -> CurvatureInfo:
        return CurvatureInfo(self.rel_error, self.status, self.dps, self.reasons, self.route, self.rtol)


def open_sweep(path, *, partial: bool = False) -> SweepOutput:
    """The results under ``path`` written by ``geometry.sweep(..., out=path)``.

    Raises ``ValueError`` if ``path`` holds no sweep, or an unfinished one unless ``partial=True``
    (then ``complete`` is false and ``status == -1`` marks the points not computed yet).
    """
    path = pathlib.Path(_check_out(path))
    if not (path / store.MANIFEST).exists():
        raise ValueError(f"{str(path)!r} does not hold a geometry.sweep (no {store.MANIFEST}); pass the out= directory of a sweep")
    man = store.read_json(path / store.MANIFEST)
    acc = store.load_accounting(path)
    complete = bool(acc and acc.get("complete") and acc.get("fingerprint") == man["fingerprint"])
    if not complete and not partial:
        done = len(store.Store.attach(path).records())
        raise ValueError(
            f"{str(path)!r} holds an unfinished sweep ({done} of {man['checkpoints']} checkpoints complete): call "
            "geometry.sweep with the same family, points and options and out= this directory to finish it, or pass "
            "partial=True to read the completed rows (status -1 marks points not computed yet)")
    cmp = man["compare"]
    return SweepOutput(path, tuple(cmp["points"]["shape"]), complete, cmp["options"]["route"], cmp["options"]["rtol"],
                       acc if complete else None)


def _check_devices(devices) -> tuple:
    if devices is None:
        return tuple(jax.devices())
    if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
        raise TypeError(
            f"devices must be None (every device: jax.devices()) or a sequence of jax devices, e.g. "
            f"jax.devices('cpu') or [jax.devices()[0]], got {devices!r}"
        )
    devs = tuple(devices)
    if not devs:
        raise ValueError("devices must be a non-empty sequence of jax devices (default: jax.devices())")
    bad = [d for d in devs if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(f"devices must contain jax.Device objects (e.g. from jax.devices()), got {bad[0]!r}")
    return devs


def _check_out(out):
    if out is None:
        return None
    if isinstance(out, bytes) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be None (return the results) or a directory path (str or os.PathLike), got {out!r}")
    text = os.fspath(out)
    if not text:
        raise ValueError("out must be a non-empty directory path (or None to return the results)")
    return os.path.abspath(text)


def _check_checkpoint(checkpoint_size, out, chunk: int) -> int:
    if checkpoint_size is None:
        return DEFAULT_CHECKPOINT_CHUNKS * chunk
    if out is None:
        raise ValueError("checkpoint_size only applies with out=PATH (results written to disk); pass out= or drop checkpoint_size")
    if not engine._is_int(checkpoint_size) or checkpoint_size < 1:
        raise ValueError(f"checkpoint_size must be None or a positive integer (points per checkpoint), got {checkpoint_size!r}")
    return -(-int(checkpoint_size) // chunk) * chunk  # whole chunks: every point keeps its place in its chunk


_INDEX = re.compile(r"(flat index |theta\[)(\d+)")


@dataclasses.dataclass
class _Call:
    """What every part of one multi-process or out= sweep shares."""

    fam: Family
    route: routes.Route
    method: str | None
    rows: object
    lead: tuple
    rtol: float
    chunk: int
    time_budget: float | None
    progress: object
    devices: tuple
    group: processes.Group
    mapper: ShardedMapper | None

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    def signature(self, **extra) -> dict:
        """What every process must agree on (compared at the start of the call)."""
        return {"family": store.family_digest(self.fam), "shape": list(self.lead), "dtype": self.rows.dtype.str,
                "sample": store.sample_digest(self.rows), "method": self.method, "rtol": self.rtol, "chunk_size": self.chunk,
                "time_budget": self.time_budget, "devices": [int(d.id) for d in self.devices], **extra}

    def handshake(self, sig: dict) -> None:
        grp = self.group
        if not grp.distributed:
            return
        mine = json.dumps(sig, sort_keys=True)
        grp.publish("hello", mine)
        got = grp.wait("hello", "starting the sweep", timeout=processes.HANDSHAKE_TIMEOUT)
        grp.forget_previous()
        for p, text in sorted(got.items()):
            if text != mine:
                diff = store.differences(json.loads(text), sig, (f"process {p} has", f"process {grp.index} has"))
                raise ValueError(
                    f"geometry.sweep was called with different arguments in process {p} and process {grp.index}: "
                    + "; ".join(diff) + ". Every process must pass the same family, theta, options and devices.")

    def curvature(self, block, offset: int, progress, budget):
        """The engine on rows ``[offset, offset + len(block))``; errors and reasons name global indices."""
        try:
            r, info, timings = engine.curvature(self.fam, block, method=self.method, rtol=self.rtol, chunk_size=self.chunk,
                                                time_budget=budget, progress=progress, mapper=self.mapper)
        except (ValueError, TypeError) as exc:
            msg = _INDEX.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + offset}", str(exc))
            where = f" [while computing rows {offset}..{offset + block.shape[0] - 1} of theta"
            where += f" in process {self.group.index} of {self.group.count}]" if self.group.distributed else "]"
            raise (ValueError if isinstance(exc, ValueError) else TypeError)(msg + where) from exc
        reasons = {int(k) + offset: v for k, v in info.reasons.items()}
        return r, info, timings, reasons

    def stats(self, t0: float, **kw) -> SweepStats:
        m = self.mapper
        return SweepStats(
            points=self.n, devices=len(self.devices), processes=len(self.group.participants), chunk_per_device=self.chunk,
            traces=trace_count(m.trace_key) if m is not None and m.trace_key is not None else 0,
            compile_seconds=m.compile_seconds if m is not None else 0.0, route=self.route.name,
            wall_seconds=time.perf_counter() - t0, **kw)


def sweep(
    family: Family,
    theta,
    method: str | None = None,
    *,
    rtol: float = DEFAULT_RTOL,
    chunk_size: int | None = None,
    devices=None,
    progress: bool | Callable[[int], None] = True,
    time_budget: float | None = None,
    return_info: bool = False,
    return_stats: bool = False,
    out=None,
    checkpoint_size: int | None = None,
):
    r"""Scalar curvature of many points, streamed in fixed-shape chunks sharded across devices and processes.

    Same values, error model and fallback as :func:`geometry.scalar_curvature`
    (``method=None`` is precision-controlled; ``method="cumulant" | "hessian" |
    "levi-civita"`` forces a raw float64 route).

    ``theta``: array-like ``(..., dim)``; a ``np.memmap`` is read chunk by chunk.
    ``chunk_size``: points *per device* per step (default: the route's chunk policy,
    :func:`geometry._src.routes.default_chunk`); every step has shape
    ``(local devices * chunk_size, dim)`` (the tail is padded), so one sweep compiles
    once.  ``devices``: default ``jax.devices()`` (of every process).  ``progress``: ``True`` for a
    tqdm bar, ``False`` for none, or a callable receiving the number of points done per step.
    ``time_budget``: seconds of high-precision recomputation allowed *per process* (per call); the
    points beyond it are reported ``not_computed_budget``.

    In a program of several processes every process calls ``sweep`` with the same arguments
    (``theta`` may be a ``np.memmap`` of a shared file); each computes one share and the values
    are bit for bit those of a one-process run; with ``time_budget`` that holds while no budget
    runs out (time is not reproducible).

    ``out``: ``None`` returns the results in memory (gathered into every process).  A directory
    path writes them to ``out`` instead, each process its own rows, checkpoint by checkpoint
    (``checkpoint_size`` points, rounded up to whole chunks; default
    :data:`DEFAULT_CHECKPOINT_CHUNKS` chunks), and returns a :class:`SweepOutput` (memory-mapped
    arrays and the accounting; the layout is in :mod:`geometry._src.store`).  Calling again with
    the same arguments resumes: complete checkpoints are verified and skipped, the others
    computed, and the bits are those of an uninterrupted run.  A call whose family, points or
    options differ from what ``out`` holds raises ``ValueError`` naming the fields.

    Returns ``R`` with shape ``theta.shape[:-1]`` (with ``out``: the :class:`SweepOutput`); with
    ``return_info=True`` also the :class:`geometry.CurvatureInfo` (every point, each counted once
    over all processes); with ``return_stats=True`` also a :class:`SweepStats` (this process's
    times; compile time separate from steady-state run time).  Raises ``ValueError`` /
    ``TypeError`` naming the argument; in several processes, an error in one process is raised in
    every process (:class:`geometry._src.processes.ProcessFailedError` when it is not bad input).
    """
    fam = check_family(family)
    route = routes.select(fam, method)
    chunk_size = engine.check_chunk_size(chunk_size, "points per device per step")
    devs = _check_devices(devices)
    out = _check_out(out)
    if checkpoint_size is not None and out is None:
        _check_checkpoint(checkpoint_size, out, 1)
    if out is None and jax.process_count() == 1:
        return _one_process(fam, theta, method, route, rtol, chunk_size, devs, progress, time_budget, return_info, return_stats)
    t0 = time.perf_counter()
    grp = processes.group(devs)
    try:  # an argument refused in one process only (a different theta) must stop the others too
        rows, lead = engine.as_rows(fam, theta)
        chunk = chunk_size or routes.default_chunk(fam, route)
        local = tuple(d for d in devs if d.process_index == grp.index)
        call = _Call(fam, route, method, rows, tuple(lead), engine.check_rtol(rtol), chunk,
                     engine.check_time_budget(time_budget), engine.check_progress(progress), devs, grp,
                     ShardedMapper(local, chunk, points=int(rows.shape[0])) if local else None)
        checkpoint = _check_checkpoint(checkpoint_size, out, chunk) if out is not None else None
    except BaseException as exc:
        grp.fail(exc)
        raise
    if out is None:
        result = _gathered(call, t0)
    else:
        result = _to_disk(call, pathlib.Path(out), checkpoint, t0)
    value, info, stats = result
    if not return_info:
        engine.warn_undefined(info, "sweep", stacklevel=2)
    result = (value,) + ((info,) if return_info else ()) + ((stats,) if return_stats else ())
    return result[0] if len(result) == 1 else result


def _one_process(fam, theta, method, route, rtol, chunk_size, devs, progress, time_budget, return_info, return_stats):
    t0 = time.perf_counter()
    mapper = ShardedMapper(devs, chunk_size)
    r, info, timings = engine.curvature(fam, theta, method=method, rtol=rtol, chunk_size=chunk_size,
                                        time_budget=time_budget, progress=progress, mapper=mapper)
    if not return_info:
        engine.warn_undefined(info, "sweep", stacklevel=3)
    stats = SweepStats(
        points=int(r.size), devices=len(mapper.devices), processes=1,
        chunk_per_device=mapper.chunk_used or chunk_size or routes.default_chunk(fam, route), chunks=mapper.chunks,
        traces=trace_count(mapper.trace_key) if mapper.trace_key is not None else 0,
        compile_seconds=mapper.compile_seconds, run_seconds=max(timings.float64 - mapper.compile_seconds, 0.0),
        fallback_seconds=timings.fallback, route=route.name, process_counts={0: info.counts()},
        wall_seconds=time.perf_counter() - t0,
    )
    result = (r,) + ((info,) if return_info else ()) + ((stats,) if return_stats else ())
    return result[0] if len(result) == 1 else result


def _empty(k: int = 0):
    return np.zeros(k), np.zeros(k), np.zeros(k, np.int8), np.zeros(k, np.int32)


def _sum_counts(counts: dict) -> int:
    return sum(int(c[name]) for c in counts.values() for name in STATUS_NAMES.values())


def _gathered(call: _Call, t0: float):
    """Every participant computes its share; the shares are gathered into every process."""
    grp, n = call.group, call.n
    call.handshake(call.signature(out=None))
    ranks = len(grp.participants)
    lo, hi = processes.share(n, call.chunk, grp.rank, ranks) if grp.rank is not None else (0, 0)
    timings = engine.Timings()
    try:
        if hi > lo:
            r, info, timings, reasons = call.curvature(call.rows[lo:hi], lo, call.progress, call.time_budget)
            parts = (r.reshape(-1), info.rel_error.reshape(-1), info.status.reshape(-1), info.dps.reshape(-1))
            mine = info.counts()
        else:
            parts, reasons = _empty(), {}
            mine = {"total": 0, **{name: 0 for name in STATUS_NAMES.values()}}
        if mine["total"] != hi - lo:
            raise RuntimeError(f"process {grp.index} accounted {mine['total']} points for its share of {hi - lo}")
        tw = time.perf_counter()
        grp.publish("computed", json.dumps(mine))
        counts = {int(p): json.loads(v) for p, v in grp.wait("computed", "waiting for the other processes' shares").items()}
    except BaseException as exc:
        grp.fail(exc)
        raise
    counts = counts or {grp.index: mine}
    if _sum_counts(counts) != n:
        raise RuntimeError(f"the processes' shares account for {_sum_counts(counts)} points, not {n}: {counts}")
    text = np.frombuffer(json.dumps({str(k): v for k, v in reasons.items()}).encode(), np.uint8)
    r, rel, status, dps, text = grp.allgather([*parts, text])
    merged = {}
    width = int(text.size)
    if width:  # the JSON documents of every process, concatenated in process order
        decoder, pos, raw = json.JSONDecoder(), 0, text.tobytes().decode()
        while pos < len(raw):
            obj, pos = decoder.raw_decode(raw, pos)
            merged.update({int(k): v for k, v in obj.items()})
    merged = dict(sorted(merged.items()))
    lead = call.lead
    info = CurvatureInfo(rel.reshape(lead), status.reshape(lead), dps.reshape(lead), merged, call.route.name, call.rtol)
    if info.counts() != _merge_counts(counts):
        raise RuntimeError(f"gathered statuses {info.counts()} differ from the processes' accounting {counts}")
    m = call.mapper
    stats = call.stats(t0, chunks=m.chunks if m is not None and hi > lo else 0,
                       run_seconds=max(timings.float64 - (m.compile_seconds if m is not None else 0.0), 0.0),
                       fallback_seconds=timings.fallback, process_points=hi - lo, process_counts=counts,
                       wait_seconds=time.perf_counter() - tw)
    return r.reshape(lead), info, stats


def _merge_counts(counts: dict) -> dict:
    out = {"total": 0, **{name: 0 for name in STATUS_NAMES.values()}}
    for c in counts.values():
        for k in out:
            out[k] += int(c.get(k, 0))
    return out


def _to_disk(call: _Call, path: pathlib.Path, size: int, t0: float):
    """Checkpoints of ``size`` rows: verify the complete ones, compute the others, write each, then account."""
    grp, n = call.group, call.n
    man = store.manifest(call.fam, call.route.name, call.method, call.lead, call.rows.dtype, rtol=call.rtol, chunk=call.chunk,
                         checkpoint=size, time_budget=call.time_budget, devices=call.devices)
    call.handshake(call.signature(out=str(path), manifest=man["fingerprint"]))
    ranks = len(grp.participants)
    st, bar = None, None
    totals = dict(chunks=0, run=0.0, fallback=0.0, written=0, points=0, checkpoint=0.0, verify=0.0, skipped=0, wait=0.0)
    mine = {"total": 0, **{name: 0 for name in STATUS_NAMES.values()}}
    try:
        if grp.index == grp.coordinator:
            st = store.Store.create_or_open(path, man)
            (path / store.ACCOUNTING).unlink(missing_ok=True)  # being written: not complete until the end
            done = sorted(st.records())
            grp.publish("open", json.dumps(done))
        if grp.distributed:
            done = json.loads(grp.wait("open", f"opening out={str(path)!r}", ids=[grp.coordinator])[grp.coordinator])
        if st is None:
            st = store.Store.attach(path)
        recs = st.records()
        todo = [u for u in range(st.checkpoints) if u not in set(done)]
        mine_verify = processes.split(done, grp.rank, ranks) if grp.rank is not None else []
        mine_todo = processes.split(todo, grp.rank, ranks) if grp.rank is not None else []

        tv = time.perf_counter()
        for u in mine_verify:  # before anything is written: a different theta is refused, not mixed in
            grp.check("verifying complete checkpoints")
            a, b = st.unit_rows(u)
            verdict = st.verify(recs[u], np.ascontiguousarray(call.rows[a:b])) if u in recs else "output"
            if verdict == "input":
                raise ValueError(
                    f"theta differs from the points out={str(path)!r} was computed from, at rows {a}..{b - 1} (checkpoint {u}): "
                    "refusing to mix results. Pass the same points to resume, or a new out= directory.")
            if verdict == "output":
                mine_todo.append(u)  # stored bytes do not match their checksum: recompute
            else:
                totals["skipped"] += b - a
        totals["verify"] = time.perf_counter() - tv
        tw = time.perf_counter()
        grp.publish("verified")
        grp.wait("verified", "verifying complete checkpoints")
        totals["wait"] += time.perf_counter() - tw

        bar, tick = engine.progress_meter(call.progress, sum(b - a for a, b in map(st.unit_rows, mine_todo)),
                                          f"curvature {call.fam.name} [{call.route.name}] -> {path.name}")
        pending = None
        for u in sorted(mine_todo):
            grp.check("computing checkpoints")
            a, b = st.unit_rows(u)
            block = np.ascontiguousarray(call.rows[a:b])
            budget = None if call.time_budget is None else max(call.time_budget - totals["fallback"], 0.0)
            tc = time.perf_counter()
            r, info, timings, reasons = call.curvature(block, a, tick, budget)
            counts = info.counts()
            values = {"R": r, "rel_error": info.rel_error, "status": info.status, "dps": info.dps}
            extra = {"seconds": round(time.perf_counter() - tc, 6), "fallback_seconds": round(timings.fallback, 6)}
            if pending is not None:
                pending.result()  # at most one checkpoint in the writer: memory stays at two checkpoints
            pending = st.submit(u, block, values, counts, reasons, grp.index, extra)
            totals["chunks"] += call.mapper.chunks
            totals["run"] += timings.float64
            totals["fallback"] += timings.fallback
            totals["written"] += 1
            totals["points"] += b - a
            for k in mine:
                mine[k] += counts[k]
        if pending is not None:
            pending.result()
        totals["checkpoint"] = st.write_seconds
        if bar is not None:
            bar.close()
            bar = None
        tw = time.perf_counter()
        grp.publish("computed", json.dumps(mine))
        if grp.index == grp.coordinator:
            counts = grp.wait("computed", "waiting for the other processes' checkpoints")
            acc = st.finish(ranks)
            grp.publish("final", json.dumps(acc["counts"]))
        else:
            counts = grp.wait("computed", "waiting for the other processes' checkpoints")
            grp.wait("final", "waiting for the accounting", ids=[grp.coordinator])
        totals["wait"] += time.perf_counter() - tw
    except BaseException as exc:
        grp.fail(exc)
        raise
    finally:
        if bar is not None:
            bar.close()
        if st is not None:
            st.close()
    handle = open_sweep(path)
    m = call.mapper
    counts = {int(p): json.loads(v) for p, v in counts.items()} if counts else {grp.index: mine}
    stats = call.stats(t0, chunks=totals["chunks"],
                       run_seconds=max(totals["run"] - (m.compile_seconds if m is not None else 0.0), 0.0),
                       fallback_seconds=totals["fallback"], process_points=totals["points"], process_counts=counts,
                       skipped_points=totals["skipped"], checkpoints_written=totals["written"],
                       checkpoint_seconds=totals["checkpoint"], verify_seconds=totals["verify"], wait_seconds=totals["wait"])
    return handle, handle.info(), stats
