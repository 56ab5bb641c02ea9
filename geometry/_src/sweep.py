r"""Curvature sweeps at scale (layer 10): the engine with a sharded mapper.

:func:`sweep` is :func:`geometry.scalar_curvature` with
:class:`~geometry._src.mapping.ShardedMapper` in place of the local mapper: the same
validation, route kernels, error model, tiers and status bookkeeping
(:mod:`geometry._src.engine`), but points are streamed through one compiled,
fixed-shape program in chunks, each chunk sharded across every visible device with
:func:`jax.shard_map`, so memory stays bounded (outputs plus one chunk) and nothing
recompiles.

Running on several devices or hosts
-----------------------------------
``sweep`` uses ``jax.devices()`` (all devices of all processes).  On a GPU
machine install ``jax[cuda12]`` and call it unchanged.  On a CPU, simulate
``k`` devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=k``.  On a
cluster, call ``jax.distributed.initialize()`` in every process *before* the first
JAX computation, then call ``sweep`` with the same ``theta`` in every process (for
example read from a shared file or generated from a seed, optionally as a
``np.memmap``): each process reads only the rows of the chunks its devices own,
and the results are gathered to every process.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from . import engine, routes
from .engine import DEFAULT_RTOL, check_family
from .families import Family
from .mapping import ShardedMapper, trace_count

__all__ = ["SweepStats", "sweep"]


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
):
    r"""Scalar curvature of many points, streamed in fixed-shape chunks sharded across devices.

    Same values, error model and fallback as :func:`geometry.scalar_curvature`
    (``method=None`` is precision-controlled; ``method="cumulant" | "hessian" |
    "levi-civita"`` forces a raw float64 route).

    ``theta``: array-like ``(..., dim)``; a ``np.memmap`` is read chunk by chunk.
    ``chunk_size``: points *per device* per step (default: the route's chunk policy,
    :func:`geometry._src.routes.default_chunk`); every step has shape
    ``(len(devices) * chunk_size, dim)`` (the tail is padded), so one sweep compiles
    once.  ``devices``: default ``jax.devices()``.  ``progress``: ``True`` for a tqdm
    bar, ``False`` for none, or a callable receiving the number of points done per step.

    Returns ``R`` with shape ``theta.shape[:-1]``; with ``return_info=True`` also
    the :class:`geometry.CurvatureInfo`; with ``return_stats=True`` also a
    :class:`SweepStats` (compile time separate from steady-state run time).
    """
    fam = check_family(family)
    route = routes.select(fam, method)
    chunk_size = engine.check_chunk_size(chunk_size, "points per device per step")
    mapper = ShardedMapper(_check_devices(devices), chunk_size)
    r, info, timings = engine.curvature(fam, theta, method=method, rtol=rtol, chunk_size=chunk_size,
                                        time_budget=time_budget, progress=progress, mapper=mapper)
    if not return_info:
        engine.warn_undefined(info, "sweep", stacklevel=2)
    stats = SweepStats(
        points=int(r.size), devices=len(mapper.devices), processes=jax.process_count(),
        chunk_per_device=mapper.chunk_used or chunk_size or routes.default_chunk(fam, route), chunks=mapper.chunks,
        traces=trace_count(mapper.trace_key) if mapper.trace_key is not None else 0,
        compile_seconds=mapper.compile_seconds, run_seconds=max(timings.float64 - mapper.compile_seconds, 0.0),
        fallback_seconds=timings.fallback, route=route.name,
    )
    result = (r,) + ((info,) if return_info else ()) + ((stats,) if return_stats else ())
    return result[0] if len(result) == 1 else result
