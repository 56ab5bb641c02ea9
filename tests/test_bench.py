"""The benchmark command runs in --quick mode and writes a valid results file.

Benchmarks are not timed tests: nothing here asserts a speed.  It asserts the
structure of ``results.json`` (every route of every configuration measured, ratios
against levi-civita consistent with the throughputs, every target recorded with its
threshold, measurement and rule; the large-heads and multi-process sections record
every head and case) and the invariants a benchmark must not break
(the routes agree on the same points; sharded sweeps equal the single-device sweep
bit for bit and compile once).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The routes agree to this relative difference on the common, well-conditioned points of the run.
ROUTE_AGREEMENT = 1e-6


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as fh:
        return json.load(fh), out, proc.stdout


def test_quick_benchmark_writes_every_route_and_ratio(quick_results):
    res, out, stdout = quick_results
    assert res["meta"]["quick"] is True
    assert {"categorical n=3", "attention n=16 m=2"} <= set(res["configs"])
    for name, conf in res["configs"].items():
        routes = conf["routes"]
        assert {"levi-civita", "default"} <= set(routes), name
        lc = routes["levi-civita"]["points_per_second"]
        for route, rec in routes.items():
            assert rec["points"] > 0 and rec["points_per_second"] > 0 and rec["first_call_seconds"] > 0
            assert rec["ratio_vs_levi_civita"] == pytest.approx(rec["points_per_second"] / lc)
        for route, diff in conf["max_rel_diff_vs_default"].items():
            assert diff < ROUTE_AGREEMENT, (name, route, diff)
        assert "skipped" in conf["geomstats"] or "points_per_second" in conf["geomstats"]
    assert "cumulant" in res["configs"]["attention n=16 m=2"]["routes"]
    assert os.path.exists(out / res["figures"][0])
    assert "targets (issue 7)" in stdout


def test_quick_benchmark_records_targets_scaling_and_memory(quick_results):
    res, _, _ = quick_results
    names = {t["name"] for t in res["targets"]}
    assert {"CUMULANT_SPEEDUP_MIN", "CUMULANT_RATE_MIN", "SWEEP_RSS_MAX_GB", "NO_RECOMPILATION"} <= names
    for t in res["targets"]:
        assert set(t) == {"name", "value", "measured", "rule", "met"} and isinstance(t["met"], bool)
    scaling = res["scaling"]
    assert "error" not in scaling, scaling.get("error")
    assert set(scaling) == {"1", "2"}
    for rec in scaling.values():
        assert rec["bitwise_equal_to_first"] and rec["traces"] == 1
    mem = res["memory_sweep"]
    assert "error" not in mem, mem.get("error")
    assert mem["finite_or_reported"] and mem["traces"] == 1 and mem["chunks"] >= 2


def test_quick_benchmark_records_large_heads(quick_results):
    res, _, stdout = quick_results
    lh = res["large_heads"]
    assert lh["quick"] is True and lh["gemm_gflops"] == max(g["gflops"] for g in lh["gemm"]) > 0
    random = [r for r in lh["heads"].values() if r["kind"] == "random"]
    assert {(r["n"], r["m"]) for r in random} == {(128, 32), (128, 64)}
    for name, rec in lh["heads"].items():
        if "skipped" in rec:  # a real model that is not installed: the reason names the install command
            assert rec["kind"] == "real" and "pip install" in rec["skipped"], (name, rec)
            continue
        assert rec["gram_kernel"], name  # the flop model is the Gram kernel's
        for key in ("raw_points_per_second", "default_points_per_second", "raw_gflops", "raw_gflops_gram_only"):
            assert rec[key] > 0, (name, key)
        assert rec["default_over_raw"] == pytest.approx(rec["default_seconds"] / rec["raw_seconds"])
        assert rec["raw_fraction_of_gemm"] == pytest.approx(rec["raw_gflops"] / lh["gemm_gflops"])
        assert rec["raw_gflops_gram_only"] < rec["raw_gflops"]
        c = rec["counts"]
        assert c["total"] == rec["points"] and rec["double_double_points"] + rec["mpmath_points"] == c["high_precision"]
        assert rec["max_rel_diff_raw_vs_default"] is not None
    names = {t["name"] for t in res["targets"]}
    assert {f"LARGE_HEAD_GEMM_FRACTION_MIN [random n=128 m={m}]" for m in (32, 64)} <= names
    assert "targets (issue 16, large heads)" in stdout


def test_quick_benchmark_records_distributed(quick_results):
    res, _, _ = quick_results
    dist = res["distributed"]
    assert "error" not in dist, dist.get("error")
    assert dist["quick"] is True and dist["cases"]
    for name, case in dist["cases"].items():
        for p in ("1", "2"):
            assert "error" not in case[p], (name, p, case[p].get("error"))
            assert case[p]["gathered"]["points_per_second"] > 0 and case[p]["to_disk"]["checkpoints_written"] >= 1
        assert case["speedup_2_vs_1"] > 0 and "checkpoint_overhead" in case
