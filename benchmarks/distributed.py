r"""Multi-process sweeps: points per second with 1 and 2 processes, and the cost of checkpointing.

:func:`distributed_benchmark` runs one worker script under ``python -m geometry.launch
--processes P --cpus-per-process 1`` (every process pinned to its own core) for ``P = 1, 2`` and
two heads, attention ``n = 16, m = 2`` and a real-size head ``n = 128, m = 64``, all with the
precision-controlled default (``method=None``, fallbacks included).  In each run, after a warm-up
sweep that compiles everything, the processes meet at a barrier and then time, on the same points:

* ``gathered``: ``geometry.sweep(fam, theta)`` (results gathered into every process);
* ``to_disk``: ``geometry.sweep(fam, theta, out=PATH)`` in :data:`CHECKPOINTS_PER_SWEEP` checkpoints
  (whole chunks);
* with one process also ``to_disk_small``: checkpoints of one chunk each (the worst case).

Points per second are ``points / wall seconds`` of the slowest process (every call ends with all
processes agreeing, so the walls are equal up to the final message).  ``checkpoint_overhead`` is
``to_disk / gathered - 1`` of the one-process run; ``checkpoint_seconds`` the time spent hashing,
writing and syncing checkpoints (in the writer thread).  On a shared machine the rates move with the load: read ratios
within one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20240618

#: ``to_disk`` cuts the points into this many checkpoints (the default size, 64 chunks, would give a
#: benchmark-sized sweep a single checkpoint: nothing to share between processes).
CHECKPOINTS_PER_SWEEP = 8
#: ``(name, n, m, points full, points quick, repeats)`` (each timing is the fastest of ``repeats`` runs).
CASES = (("attention n=16 m=2", 16, 2, 2_000_000, 200_000, 3), ("attention n=128 m=64", 128, 64, 4096, 512, 1))

WORKER = textwrap.dedent(
    """
    import json, os, shutil, sys, time
    from geometry import launch
    pid, count = launch.initialize()
    import numpy as np, jax, geometry
    from jax.experimental import multihost_utils

    n, m, points, small, work, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5], sys.argv[6]
    repeats = int(sys.argv[7])
    rng = np.random.default_rng(%d)
    fam = geometry.attention(rng.normal(size=(n, m)))
    th = rng.normal(size=(points, m))
    # compile: a prefix large enough for the same program in every process (leaves compiled in as constants from
    # 2**17 points on; large heads run calls of 1024 points, and a process's share of a shorter prefix would
    # compile a smaller call and leave the timed sweep to compile its own)
    geometry.sweep(fam, th[: min(points, 1 << 17 if m <= 4 else 1024 * count)], progress=False)

    def timed(out=None, **kw):
        best = None
        for rep in range(repeats):  # the fastest of `repeats` runs (a fresh directory each time: nothing to resume)
            multihost_utils.sync_global_devices("start") if count > 1 else None
            t0 = time.perf_counter()
            res = geometry.sweep(fam, th, progress=False, return_stats=True, return_info=True,
                                 out=None if out is None else f"{out}-{rep}", **kw)
            wall = time.perf_counter() - t0
            best = (wall, res) if best is None or wall < best[0] else best
        wall, res = best
        st, info = res[-1], res[-2]
        return {"wall_seconds": wall, "points_per_second": points / wall, "run_seconds": st.run_seconds,
                "fallback_seconds": st.fallback_seconds, "checkpoint_seconds": st.checkpoint_seconds,
                "checkpoints_written": st.checkpoints_written, "process_points": st.process_points,
                "counts": info.counts(), "chunk_per_device": st.chunk_per_device}

    rec = {"processes": count, "points": points, "gathered": timed()}
    chunk = rec["gathered"]["chunk_per_device"]
    path = os.path.join(work, "sweep")
    rec["checkpoint_size"] = max(chunk, -(-points // CHECKPOINTS // chunk) * chunk)
    rec["to_disk"] = timed(out=path, checkpoint_size=rec["checkpoint_size"])
    if small:
        multihost_utils.sync_global_devices("clean") if count > 1 else None
        if pid == 0:
            for rep in range(repeats):
                shutil.rmtree(f"{path}-{rep}")
        rec["to_disk_small"] = timed(out=path + "-small", checkpoint_size=chunk)
    with open(f"{out}.{pid}", "w") as f:
        json.dump(rec, f)
    """
    % SEED
).replace("CHECKPOINTS", str(CHECKPOINTS_PER_SWEEP))


def _run(processes: int, n: int, m: int, points: int, small: bool, repeats: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="geometry-distributed-bench-") as work:
        script = os.path.join(work, "worker.py")
        with open(script, "w") as f:
            f.write(WORKER)
        out = os.path.join(work, "result.json")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "geometry.launch", "--processes", str(processes), "--cpus-per-process", "1",
               "--timeout", str(timeout), script, str(n), str(m), str(points), "1" if small else "0", work, out, str(repeats)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 60, cwd=ROOT)
        files = [f"{out}.{i}" for i in range(processes)]
        if proc.returncode != 0 or not all(os.path.exists(f) for f in files):
            return {"error": (proc.stdout + proc.stderr)[-2000:]}
        recs = []
        for name in files:
            with open(name) as f:
                recs.append(json.load(f))
    merged = {"processes": processes, "points": points, "checkpoint_size": recs[0]["checkpoint_size"]}
    for mode in ("gathered", "to_disk", "to_disk_small"):
        if mode not in recs[0]:
            continue
        per = [r[mode] for r in recs]
        wall = max(p["wall_seconds"] for p in per)
        merged[mode] = {"wall_seconds": wall, "points_per_second": points / wall,
                        "checkpoints_written": sum(p["checkpoints_written"] for p in per),
                        "checkpoint_seconds": sum(p["checkpoint_seconds"] for p in per),
                        "fallback_seconds": max(p["fallback_seconds"] for p in per),
                        "process_points": [p["process_points"] for p in per], "counts": per[0]["counts"]}
    return merged


def distributed_benchmark(quick: bool = False, timeout: float = 600.0) -> dict:
    """Points per second of ``geometry.sweep`` with 1 and 2 local processes (one core each) and the checkpoint overhead.

    Returns ``{"cases": {name: {"points", "1": record, "2": record, "speedup_2_vs_1", "checkpoint_overhead",
    "small_checkpoint_overhead"}}, "cpus", "load_average"}``; a record holds ``gathered``, ``to_disk``
    (and, for one process, ``to_disk_small``) timings, each with ``points_per_second``, ``wall_seconds``,
    ``checkpoint_seconds`` and the point ``counts``.  A failed run is ``{"error": tail of its output}``.
    """
    res = {"cpus": os.cpu_count(), "load_average_before": list(os.getloadavg()), "quick": quick, "cases": {}}
    for name, n, m, full, short, repeats in CASES:
        points = short if quick else full
        case = {"points": points}
        for p in (1, 2):
            case[str(p)] = _run(p, n, m, points, small=(p == 1), repeats=repeats, timeout=timeout)
        one, two = case["1"], case["2"]
        if "error" not in one and "error" not in two:
            g1, g2 = one["gathered"]["points_per_second"], two["gathered"]["points_per_second"]
            case["speedup_2_vs_1"] = g2 / g1
            case["speedup_2_vs_1_to_disk"] = two["to_disk"]["points_per_second"] / one["to_disk"]["points_per_second"]
            case["checkpoint_overhead"] = one["to_disk"]["wall_seconds"] / one["gathered"]["wall_seconds"] - 1
            case["small_checkpoint_overhead"] = one["to_disk_small"]["wall_seconds"] / one["gathered"]["wall_seconds"] - 1
        res["cases"][name] = case
    res["load_average_after"] = list(os.getloadavg())
    return res


def print_distributed_benchmark(res: dict) -> None:
    print(f"  {res['cpus']} cores, load average {res['load_average_before'][0]:.1f} before, {res['load_average_after'][0]:.1f} after")
    for name, case in res["cases"].items():
        for p in ("1", "2"):
            rec = case[p]
            if "error" in rec:
                print(f"  {name}, {p} process(es): FAILED\n{rec['error']}")
                continue
            line = ", ".join(f"{k} {rec[k]['points_per_second'] / 1e3:9.1f} k/s ({rec[k]['checkpoints_written']} ckpt, "
                             f"{rec[k]['checkpoint_seconds']:.3f} s writing)" if k != "gathered" else
                             f"gathered {rec[k]['points_per_second'] / 1e3:9.1f} k/s"
                             for k in ("gathered", "to_disk", "to_disk_small") if k in rec)
            print(f"  {name:22s} {p} proc, {case['points']} pts: {line}")
        if "speedup_2_vs_1" in case:
            print(f"  {name:22s} 2 vs 1 process: x{case['speedup_2_vs_1']:.2f} (to disk x{case['speedup_2_vs_1_to_disk']:.2f}); "
                  f"checkpoint overhead {case['checkpoint_overhead']:+.1%} (default), {case['small_checkpoint_overhead']:+.1%} (one chunk each)")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = distributed_benchmark(quick=quick)
    print_distributed_benchmark(result)
    print(json.dumps(result, indent=1))
