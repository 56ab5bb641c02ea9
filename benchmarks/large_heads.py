r"""Large heads (issue 16): the cumulant route at ``n = 128`` keys against the machine's float64 matrix-product rate.

One run measures

* the float64 GEMM rate: ``a @ a`` for a square ``(s, s)`` float64 matrix under ``jax.jit``,
  :math:`2s^3/t` flop/s, best of several calls after a compiling one (``s = 1024, 2048``), once
  before and once after the heads; the fastest rate seen is the reference (on a shared machine
  the GEMM, which uses every core, moves with the load; the fastest can only shrink the fractions);
* for single heads with ``n = 128`` keys: random keys ``rng.normal(size=(128, m))``, ``m = 32, 64``
  (queries ``QUERY_SCALE * rng.normal(size=(points, m))``, so the logits have a standard
  deviation of about ``QUERY_SCALE``: neither near uniform nor one-hot), and the real keys and
  queries of layer :data:`REAL_LAYER`, head :data:`REAL_HEAD` of the first 128-token window of
  each model's model-card prose (all-MiniLM-L6-v2, ``m = 32``; all-mpnet-base-v2, ``m = 64``);
  the real heads run on their 128 queries and again on those queries repeated up to the random
  heads' batch (``x32``: the rate without the fixed costs of a 128-point call);
* per head, on the same points, after a warm-up call of each (compilation excluded), interleaved
  over ``repeats`` rounds: the raw route ``geometry.scalar_curvature(fam, x, method="cumulant")``
  and the precision-controlled default ``geometry.scalar_curvature(fam, x, return_info=True)``;
  the best time of each, their ratio and the median of the per-round ratios; which points the
  default recomputed and in which tier (``info.dps``: 32 is double-double, more is mpmath).

MPNet's relative position bias is a logit offset per key that depends on the query's position.
Here every query of the window is evaluated in *one* family, ``attention(K, 1/8,
offset=B[MPNET_OFFSET_POSITION])``: the attention row of the query at that position, probed at
all 128 real queries of the head.  (``checks/_src/real_model/analysis.py`` instead builds one
family per query, i.e. one core call per point, which measures call overhead, not the kernel.)

Flop model of the raw route (the Gram kernel ``cumulant_gram_batch`` in ``geometry/_src/routes.py``,
which runs for ``m > MAX_UNROLLED_DIM`` and ``N <= m^2``), per point with ``N`` keys in dimension
``m``: :math:`2Nm` (logits) + :math:`2Nm` (centre) + :math:`2Nm^2` (``g``) + :math:`2Nm^2`
(whitening ``W = L^{-1}U^T``; the kernel runs it as a full, not a triangular, product) +
:math:`2N^2m` (Gram ``G = W^T W``) + :math:`2m^3/3` (Cholesky and ``L^{-1}``).  The achieved rate
is ``points/s * flops per point``; ``gram_only`` counts just the dominant :math:`2N^2m`.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

SEED = 20240616
#: keys per head, key dimensions of the random heads
N_KEYS = 128
RANDOM_DIMS = (32, 64)
#: queries of the random heads: x = QUERY_SCALE * N(0, I), so logits (scale 1/sqrt(m)) have std ~ QUERY_SCALE
QUERY_SCALE = 2.0
RANDOM_POINTS, RANDOM_POINTS_QUICK = 4096, 512
#: the real head: layer, head and window length (tokens incl. [CLS]/[SEP]) of each model's model-card prose
REAL_LAYER, REAL_HEAD, REAL_LENGTH = 3, 0, 128
#: MPNet: the query position whose relative-position-bias row is the offset of the family
MPNET_OFFSET_POSITION = 64
#: GEMM sizes (the reference is the faster of them)
GEMM_SIZES, GEMM_SIZES_QUICK = (1024, 2048), (1024,)

# ---------------------------------------------------------------- targets (issue 16), fixed before measuring
#: raw cumulant route GFlop/s (flop model above) / measured float64 GEMM GFlop/s, random heads n=128, m=32 and 64.
GEMM_FRACTION_MIN = 0.25
#: best default time / best raw time on the same points, real heads.
DEFAULT_RATIO_MAX = 2.0


def flops_per_point(n: int, m: int) -> dict:
    """Flops per point of the Gram kernel: ``model`` (every term of the module docstring) and ``gram_only`` (2 N^2 m)."""
    model = 2 * n * m + 2 * n * m + 2 * n * m**2 + 2 * n * m**2 + 2 * n**2 * m + 2 * m**3 / 3
    return {"model": float(model), "gram_only": float(2 * n**2 * m)}


def gemm_rate(size: int, repeats: int) -> dict:
    """Best of ``repeats`` jitted float64 ``a @ a`` (``(size, size)``) after a compiling call: ``2 size^3 / t``."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(SEED).normal(size=(size, size)))
    assert a.dtype == jnp.float64, "x64 must be enabled (import geometry first)"
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return {"size": size, "seconds": best, "repeats": repeats, "gflops": 2 * size**3 / best / 1e9}


def real_heads(quick: bool) -> list:
    """``(name, family, queries, description)`` for the real heads, or ``(name, None, None, reason)`` if a model is missing."""
    import geometry
    from checks._src.real_model import encoder, loading, text

    out = []
    for key in ("minilm", "mpnet"):
        spec = loading.spec(key)
        name = f"{spec.name} L{REAL_LAYER}H{REAL_HEAD}"
        reason = spec.missing_reason()
        if reason:
            out.append((name, None, None, f"skipped: {spec.name} {reason}"))
            continue
        model = encoder.load(key)
        win = text.windows(key, model.tokenizer, REAL_LENGTH, 1)
        res = model(win.ids)
        keys = res.keys[REAL_LAYER, 0, REAL_HEAD]
        queries = res.queries[REAL_LAYER, 0, REAL_HEAD]
        m = keys.shape[1]
        bias = res.offsets(REAL_HEAD, keys.shape[0])
        what = (f"layer {REAL_LAYER} head {REAL_HEAD}, first {REAL_LENGTH}-token window of the model-card prose "
                f"({win.previews[0]!r}); its {len(queries)} real queries")
        if bias is None:
            fam = geometry.attention(keys, 1 / math.sqrt(m))
        else:
            fam = geometry.attention(keys, 1 / math.sqrt(m), offset=bias[MPNET_OFFSET_POSITION])
            what += (f", all in the family of query position {MPNET_OFFSET_POSITION} (its relative-position-bias row "
                     "as the offset)")
        out.append((name, fam, np.asarray(queries, np.float64), what))
        del model, res
    return out


def _raw(geometry, fam, x):
    return np.asarray(geometry.scalar_curvature(fam, x, method="cumulant"))


def head_case(geometry, fam, x, repeats: int) -> dict:
    """Raw route and default on the same points: warm-up each, then ``repeats`` interleaved rounds (best of each)."""
    from geometry._src import routes

    n, m = fam.heads[0].keys.shape
    raw_vals = _raw(geometry, fam, x)  # warm-up (compiles)
    geometry.scalar_curvature(fam, x, return_info=True)
    raw_t, def_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _raw(geometry, fam, x)
        t1 = time.perf_counter()
        vals, info = geometry.scalar_curvature(fam, x, return_info=True)
        t2 = time.perf_counter()
        raw_t.append(t1 - t0)
        def_t.append(t2 - t1)
    k = len(x)
    counts = info.counts()
    dps = np.asarray(info.dps).ravel()
    dd, mp = int(np.sum(dps == 32)), int(np.sum(dps > 32))
    fl = flops_per_point(n, m)
    raw_rate = k / min(raw_t)
    entropy = np.asarray(geometry.entropy(fam, x))
    ok = np.isfinite(vals) & np.isfinite(raw_vals)
    return {
        "n": n, "m": m, "points": k, "repeats": repeats, "gram_kernel": bool(routes.gram_batch_ok(fam)),
        "entropy_quartiles": [float(q) for q in np.quantile(entropy, [0.25, 0.5, 0.75])],
        "raw_seconds": min(raw_t), "default_seconds": min(def_t),
        "raw_points_per_second": raw_rate, "default_points_per_second": k / min(def_t),
        "default_over_raw": min(def_t) / min(raw_t),
        "default_over_raw_median_of_rounds": float(np.median(np.array(def_t) / np.array(raw_t))),
        "counts": counts,
        "recomputed_fraction": counts["high_precision"] / max(1, counts["total"]),
        "double_double_points": dd, "mpmath_points": mp,
        "mpmath_dps": sorted({int(d) for d in dps[dps > 32]}),
        "flops_per_point": fl["model"], "flops_per_point_gram_only": fl["gram_only"],
        "raw_gflops": raw_rate * fl["model"] / 1e9, "raw_gflops_gram_only": raw_rate * fl["gram_only"] / 1e9,
        "max_rel_diff_raw_vs_default": float(np.max(np.abs(raw_vals[ok] - vals[ok]) / np.maximum(np.abs(vals[ok]), 1e-300))) if ok.any() else None,
    }


def large_heads_benchmark(quick: bool = False) -> dict:
    """The issue-16 table: GEMM rate, then raw and default rates of random and real ``n = 128`` heads.

    Returns ``{"gemm": [records], "gemm_gflops", "heads": {name: record | {"skipped": reason}},
    "targets": [...], "flop_model", "quick"}``; a head record is :func:`head_case`'s plus ``kind``
    and ``description``.
    """
    import geometry

    repeats = 3 if quick else 5
    sizes = GEMM_SIZES_QUICK if quick else GEMM_SIZES
    load_before = list(os.getloadavg())
    gemm = [{"when": "before the heads", **gemm_rate(s, 3 if quick else (10 if s <= 1024 else 5))} for s in sizes]
    rng = np.random.default_rng(SEED)
    heads = {}
    points = RANDOM_POINTS_QUICK if quick else RANDOM_POINTS
    for m in RANDOM_DIMS:
        fam = geometry.attention(rng.normal(size=(N_KEYS, m)))
        x = QUERY_SCALE * rng.normal(size=(points, m))
        rec = head_case(geometry, fam, x, repeats)
        heads[f"random n={N_KEYS} m={m}"] = {"kind": "random", "description": f"keys N(0, 1), queries {QUERY_SCALE:g} * N(0, I)", **rec}
    for name, fam, x, what in real_heads(quick):
        if fam is None:
            heads[name] = {"kind": "real", "skipped": what}
            continue
        heads[name] = {"kind": "real", "description": what, **head_case(geometry, fam, x, repeats)}
        # the same queries repeated up to the random heads' batch: the rate without the per-call costs of a 128-point call
        tile = max(1, points // len(x))
        heads[f"{name} x{tile}"] = {"kind": "real (tiled)", "tiled": tile,
                                    "description": f"the {len(x)} queries above, each {tile} times",
                                    **head_case(geometry, fam, np.tile(x, (tile, 1)), repeats)}
    # again after the heads: on a shared machine the GEMM rate moves with the load, and the fastest
    # rate seen is the conservative reference (it can only make the fractions smaller)
    gemm += [{"when": "after the heads", **gemm_rate(s, 3 if quick else (10 if s <= 1024 else 5))} for s in sizes]
    ref = max(g["gflops"] for g in gemm)
    for rec in heads.values():
        if "skipped" not in rec:
            rec["raw_fraction_of_gemm"] = rec["raw_gflops"] / ref
            rec["raw_fraction_of_gemm_gram_only"] = rec["raw_gflops_gram_only"] / ref
    targets = []
    for name, rec in heads.items():
        if "skipped" in rec:
            continue
        if rec["kind"] == "real (tiled)":
            continue
        if rec["kind"] == "random":
            targets.append({"name": f"LARGE_HEAD_GEMM_FRACTION_MIN [{name}]", "value": GEMM_FRACTION_MIN,
                            "measured": rec["raw_fraction_of_gemm"], "met": bool(rec["raw_fraction_of_gemm"] >= GEMM_FRACTION_MIN),
                            "rule": "met if raw cumulant GFlop/s (flop model of cumulant_gram_batch) / float64 GEMM GFlop/s >= value"})
        else:
            targets.append({"name": f"LARGE_HEAD_DEFAULT_RATIO_MAX [{name}]", "value": DEFAULT_RATIO_MAX,
                            "measured": rec["default_over_raw"], "met": bool(rec["default_over_raw"] <= DEFAULT_RATIO_MAX),
                            "rule": "met if best default time / best raw cumulant time on the same points <= value"})
    return {"quick": quick, "gemm": gemm, "gemm_gflops": ref, "heads": heads, "targets": targets,
            "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "flop_model": "per point 2Nm (logits) + 2Nm (centre) + 2Nm^2 (g) + 2Nm^2 (whitening, full product) + 2N^2m (Gram) + 2m^3/3"}


def print_large_heads_benchmark(res: dict) -> None:
    for g in res["gemm"]:
        print(f"  float64 GEMM {g['size']}x{g['size']} (jit a @ a), {g['when']}: {g['gflops']:7.1f} GFlop/s "
              f"(best of {g['repeats']}, {g['seconds'] * 1e3:.1f} ms)")
    print(f"  reference rate (fastest above) {res['gemm_gflops']:.1f} GFlop/s; load average {res['load_average_before'][0]:.1f} "
          f"before, {res['load_average_after'][0]:.1f} after; flop model: {res['flop_model']}")
    print(f"  {'head':28s} {'m':>3s} {'pts':>5s} {'raw pts/s':>10s} {'default pts/s':>13s} {'def/raw':>7s} "
          f"{'recomputed (dd, mpmath)':>23s} {'raw GFlop/s':>11s} {'of GEMM':>7s} {'2N^2m GF/s':>10s} {'of GEMM':>7s}")
    for name, r in res["heads"].items():
        if "skipped" in r:
            print(f"  {name:28s} {r['skipped']}")
            continue
        rec = f"{r['recomputed_fraction']:.2%} ({r['double_double_points']}, {r['mpmath_points']})"
        print(f"  {name:28s} {r['m']:3d} {r['points']:5d} {r['raw_points_per_second']:10.0f} {r['default_points_per_second']:13.0f} "
              f"{r['default_over_raw']:6.2f}x {rec:>23s} {r['raw_gflops']:11.2f} {r['raw_fraction_of_gemm']:7.1%} "
              f"{r['raw_gflops_gram_only']:10.2f} {r['raw_fraction_of_gemm_gram_only']:7.1%}")
    for name, r in res["heads"].items():
        if "description" in r:
            print(f"    {name}: {r['description']}; entropy quartiles {', '.join(f'{q:.2f}' for q in r['entropy_quartiles'])} nats; "
                  f"median of per-round default/raw x{r['default_over_raw_median_of_rounds']:.2f}; max rel diff raw vs default "
                  f"{r['max_rel_diff_raw_vs_default']:.1e}")
    for t in res["targets"]:
        print(f"  {'MET ' if t['met'] else 'MISS'} {t['name']} = {t['value']:g}: measured {t['measured']:.3g}  ({t['rule']})")


def markdown_table(res: dict) -> str:
    """A README-ready markdown table of :func:`large_heads_benchmark`'s result."""
    gemm = ", ".join(f"{g['size']}x{g['size']} {g['when']}: {g['gflops']:.1f} GFlop/s" for g in res["gemm"])
    lines = [
        f"float64 matrix product (jit `a @ a`, best of several): {gemm}; reference (the fastest) {res['gemm_gflops']:.1f} GFlop/s; "
        f"load average {res['load_average_before'][0]:.1f} before, {res['load_average_after'][0]:.1f} after.",
        "",
        "| head | m | points | raw points/s | default points/s | default / raw | recomputed (double-double, mpmath) "
        "| raw GFlop/s (of GEMM) | 2N²m only GFlop/s (of GEMM) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["heads"].items():
        if "skipped" in r:
            lines.append(f"| {name} | | | {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['m']} | {r['points']} | {r['raw_points_per_second']:,.0f} | {r['default_points_per_second']:,.0f} "
            f"| {r['default_over_raw']:.2f}× | {r['recomputed_fraction']:.2%} ({r['double_double_points']}, {r['mpmath_points']}) "
            f"| {r['raw_gflops']:.2f} ({r['raw_fraction_of_gemm']:.1%}) | {r['raw_gflops_gram_only']:.2f} ({r['raw_fraction_of_gemm_gram_only']:.1%}) |")
    lines += ["", "n = 128 keys per head. Raw: `geometry.scalar_curvature(fam, x, method=\"cumulant\")`; default: "
              "`geometry.scalar_curvature(fam, x, return_info=True)`; best of "
              f"{next((r['repeats'] for r in res['heads'].values() if 'repeats' in r), '?')} interleaved rounds after a warm-up "
              f"call, same points. Flop model: {res['flop_model']}."]
    for name, r in res["heads"].items():
        if "description" in r:
            lines.append(f"- {name}: {r['description']}.")
    lines += [f"- {'met' if t['met'] else 'missed'}: {t['name']} = {t['value']:g}, measured {t['measured']:.3g}" for t in res["targets"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    result = large_heads_benchmark(quick="--quick" in sys.argv)
    print_large_heads_benchmark(result)
