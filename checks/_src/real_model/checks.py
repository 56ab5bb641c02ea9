r"""Three checks of the post's claims on two real pretrained transformers (all-MiniLM-L6-v2, all-mpnet-base-v2).

All three share one measurement per model (:func:`.analysis.measure`, cached per mode): the
model run on windows of its own model card, the entropy of every attention row, and the
Fisher scalar curvature of the :math:`d_h`-dimensional attention family at every real query.
Each check decides per model with the same thresholds and reports one row per model
(``measurements["models"]``) and one figure panel per model; the check's verdict combines the
models' verdicts (:func:`combine`).  A model that is not installed is ``undefined`` with its
install command, and so is the check.
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


def combine(verdicts) -> str:
    """The check's verdict from the models' verdicts: ``undefined`` if any model is undefined,
    ``holds``/``fails`` if every model holds/fails, ``partial`` otherwise."""
    verdicts = list(verdicts)
    if not verdicts or UNDEFINED in verdicts:
        return UNDEFINED
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if all(v == FAILS for v in verdicts):
        return FAILS
    return PARTIAL


def _per_model(runs, one) -> tuple:
    """``(rows, panels, summaries)`` over ``runs`` (:func:`_measurements`): ``one(k, measurement)`` for each installed model ``k``,
    a missing row, panel and reason for the others."""
    rows, panels, summaries = [], [], []
    for k, (spec, m, reason) in enumerate(runs):
        if m is None:
            rows.append(_missing_row(spec, reason))
            panels.append({"name": spec.name, "missing": reason})
            summaries.append(f"{reason}.")
            continue
        row, panel, summary = one(k, m)
        rows.append(row)
        panels.append(panel)
        summaries.append(summary)
    return rows, panels, summaries


def _measurements(ctx: Context) -> list:
    """``[(spec, Measurement or None, missing reason or None)]`` for every model, in report order."""
    out = []
    for spec in loading.MODELS:
        reason = spec.missing_reason()
        out.append((spec, None if reason else analysis.measure(spec, bool(ctx.quick), ctx.bar), reason))
    return out


def _missing_row(spec, reason) -> dict:
    return {"model": spec.name, "verdict": UNDEFINED, "missing": f"{spec.name} is {reason}"}


def _common(m: analysis.Measurement) -> dict:
    return {
        "model": m.name,
        "architecture": f"{m.num_layers} layers x {m.num_heads} heads, head dimension {m.head_dim}"
                        + (", relative position bias (per-query logit offsets)" if m.spec.arch == "mpnet" else ""),
        "weights": m.spec.record(),
        "text": m.windows.record(),
        "queries_per_head": int(m.entropy.shape[-1]),
        "curvature_rtol": analysis.CURVATURE_RTOL,
        "entropy_core_vs_model_max_abs_diff": m.entropy_model_diff,
        "points": m.counts,
        "seconds": {k: round(v, 2) for k, v in m.seconds.items()},
    }


def _points(runs) -> dict:
    tot: dict = {}
    for _, m, _ in runs:
        if m is not None:
            for k, v in m.counts.items():
                tot[k] = tot.get(k, 0) + v
    return tot


def _result(runs, rows, thresholds, figure, summaries) -> Result:
    verdict = combine(r["verdict"] for r in rows)
    summary = " ".join(f"{r['model']}: {s}" for r, s in zip(rows, summaries))
    return Result(verdict, thresholds, {"models": rows}, [figure], _points(runs), summary)


def _bootstrap_mean_interval(units, rng, level=0.95):
    units = np.asarray(units, float)
    idx = rng.integers(0, units.size, size=(BOOTSTRAP_RESAMPLES, units.size))
    means = units[idx].mean(axis=1)
    return means, [float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))]


def _depth_one(m: analysis.Measurement, rng) -> tuple[dict, dict, str]:
    nl = m.num_layers
    units = m.entropy.mean(axis=-1).reshape(nl, -1)  # (L, heads * windows)
    boots, intervals = zip(*(_bootstrap_mean_interval(u, rng) for u in units))
    means = units.mean(axis=1)
    rho = float(scipy.stats.spearmanr(np.arange(nl), means).statistic)
    drop = np.asarray(boots[-1]) - np.asarray(boots[0])
    drop_iv = [float(np.quantile(drop, 0.025)), float(np.quantile(drop, 0.975))]
    log_n = float(np.log(m.windows.length))  # n keys per row
    one_hot = (m.max_prob >= ONE_HOT_PMAX).reshape(nl, -1).mean(axis=1)
    if rho <= DEPTH_RHO_MAX and drop_iv[1] < DEPTH_DROP_MAX:
        verdict = HOLDS
    elif rho >= 0 or drop_iv[0] > DEPTH_DROP_MAX:
        verdict = FAILS
    else:
        verdict = PARTIAL
    row = _common(m)
    row.update({
        "verdict": verdict,
        "layers": nl,
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
    panel = {"name": m.name, "per_layer": [m.entropy[k].ravel() for k in range(nl)], "means": means,
             "intervals": intervals, "log_n": log_n,
             "title": f"{m.name} ({nl} layers): rho = {rho:+.2f}; max log n = {log_n:.2f}"}
    summary = (
        f"mean attention entropy by layer {', '.join(f'{x:.2f}' for x in means)} nats (max {log_n:.2f}); "
        f"Spearman rho = {rho:+.2f} (DEPTH_RHO_MAX = {DEPTH_RHO_MAX}), last - first = {means[-1] - means[0]:+.2f} "
        f"[{drop_iv[0]:+.2f}, {drop_iv[1]:+.2f}] (DEPTH_DROP_MAX = {DEPTH_DROP_MAX}); rows with max p >= {ONE_HOT_PMAX}: "
        f"{100 * one_hot[0]:.0f}% in layer 1, {100 * one_hot[-1]:.0f}% in layer {nl}; {verdict}."
    )
    return row, panel, summary


@register("real-model-depth-entropy", CLAIM_DEPTH, order=900,
          quote="Deep layers in large transformers. Attention distributions go sharp — nearly one-hot. Entropy plummets.",
          measured="In the pretrained models {models.model|join}, the last layer's mean attention entropy minus the first layer's is {models.last_minus_first_mean_entropy|join:+.2f} nats (uniform attention: {models.max_entropy_log_n|join:.2f}); at most {models.fraction_rows_one_hot_by_layer|max:.0%} of the rows in any layer are nearly one-hot.")
def depth_entropy(ctx: Context) -> Result:
    r"""Per-layer mean attention entropy with 95% bootstrap intervals; does it fall with depth?

    Per model, over its own layers: units of resampling are (head, window) means, so queries
    of one head are not treated as independent.  Decided by Spearman's :math:`\rho` between
    layer index and mean H and by the interval of :math:`\bar H_{L} - \bar H_{1}`.
    """
    thresholds = [
        Threshold("DEPTH_RHO_MAX", DEPTH_RHO_MAX, "per model: holds only if Spearman rho(layer, mean H) <= value; fails if rho >= 0"),
        Threshold("DEPTH_DROP_MAX", DEPTH_DROP_MAX, "per model: holds only if the 95% interval of mean H(last) - mean H(first) is < value; fails if it is entirely > value"),
    ]
    runs = _measurements(ctx)
    rows, panels, summaries = _per_model(runs, lambda k, m: _depth_one(m, ctx.rng(61 + 100 * k)))
    from figures import real_model as figs

    fig = figs.entropy_by_layer(panels, ctx.figure_path("real_model_entropy_by_layer.png"),
                                "attention entropy by layer, one panel per model")
    res = _result(runs, rows, thresholds, fig, summaries)
    layers = [str(r["layers"]) for r in rows if "layers" in r]
    res.summary += f" Neither is a large model ({' and '.join(layers)} layers)." if layers else ""
    return res


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


def _law_one(m: analysis.Measurement, seed) -> tuple[dict, dict, str]:
    trusted = m.trusted()
    missing = 1.0 - float(trusted.mean())
    cases, oks = [], []
    if missing <= MISSING_MAX:
        ok, c = _law_case("pooled (all layers)", m.entropy[trusted], m.curvature[trusted], seed)
        cases.append(c)
        oks.append(ok)
        for k in range(m.num_layers):
            t = trusted[k]
            ok, c = _law_case(f"layer {k + 1}", m.entropy[k][t], m.curvature[k][t], seed)
            cases.append(c)
            oks.append(ok)
    short = m.short
    ok_s, c_s = _law_case(f"short sentence n = {short['n']} (n - 1 <= {m.head_dim})", short["H"], short["R"], seed)
    c_s.update({k: short[k] for k in ("text", "expected_R", "max_rel_deviation", "heads_full_rank", "heads", "entropy_range_trusted",
                                      "translation_entropy_max_diff")})
    c_s["points_status"] = short["points"]
    cases.append(c_s)
    oks.append(ok_s)
    short_txt = (f"short sentence (n - 1 = {short['n'] - 1} <= {m.head_dim}): R = {short['expected_R']} at every query "
                 f"(max rel. deviation {short['max_rel_deviation']:.1e}) for H in {_fmt_range(short['entropy_range_trusted'])}, so C = 0")
    if missing > MISSING_MAX:
        verdict = UNDEFINED
        summary = f"{100 * missing:.1f}% of points lack a trusted R (> MISSING_MAX = {MISSING_MAX}); no fit; {short_txt}."
    else:
        verdict = _verdicts.aggregate(sum(oks), len(oks))
        pooled = cases[0]
        summary = (
            f"pooled over {pooled['points']} real queries R^2 = {pooled['r2']:.3f} (LAW_R2_MIN = {_verdicts.LAW_R2_MIN}), "
            f"eta^2 = {pooled['eta2_rank_dependence']:.3f} (LAW_DEPENDENCE_MIN = {_verdicts.LAW_DEPENDENCE_MIN}), "
            f"Spearman rho(H, R) = {pooled['spearman_rho_H_R']:+.2f} (the law needs < 0); {sum(oks)} of {len(oks)} cases "
            f"follow the law; {short_txt}."
        )
    row = _common(m)
    row.update({"verdict": verdict, "cases": cases, "fraction_without_trusted_R": missing,
                "entropy_range_without_trusted_R": _range(m.entropy[~trusted])})
    panel = {"name": m.name, "entropy": [m.entropy[k].ravel() for k in range(m.num_layers)],
             "curvature": [m.curvature[k].ravel() for k in range(m.num_layers)],
             "without_R": int((~trusted).sum()), "title": f"{m.name} ({m.num_layers} layers, d_h = {m.head_dim})"}
    return row, panel, summary


@register("real-model-linear-law", CLAIM_LAW, order=901,
          quote="R(d) = C · (α − H) where: R(d) is the scalar curvature of the attention manifold at token embedding d. H is the entropy of the attention distribution at that point.",
          measured="On real attention ({models.model|join}), {models.cases.holds|count} of {models.cases|len} cases (all layers pooled, each layer, a short sentence) follow R = C·(α − H); the rank correlation of R with H, which the law needs negative, lies between {models.cases.spearman_rho_H_R|min:+.2f} and {models.cases.spearman_rho_H_R|max:+.2f}.")
def linear_law(ctx: Context) -> Result:
    r"""Fit :math:`R = a + bH` at every real query with a trusted R, per model: per layer and pooled.

    Each case uses the same criteria as the synthetic ``linear-law`` check
    (:func:`checks._src.verdicts.law_family`: OLS :math:`R^2`, rank correlation ratio
    :math:`\eta^2` of R on H-bins, Theil--Sen slope interval, :math:`\alpha > 0`).  A further
    case per model is the real 24-token sentence (n - 1 = 23 <= d_h), where R = (n-1)(n-2)/4 exactly.
    """
    thresholds = _verdicts.law_thresholds() + [
        Threshold("MISSING_MAX", MISSING_MAX, "per model: undefined if more than this fraction of points lack a trusted R"),
    ]
    runs = _measurements(ctx)
    rows, panels, summaries = _per_model(runs, lambda k, m: _law_one(m, ctx.seed))
    from figures import real_model as figs

    fig = figs.r_vs_h(panels, ctx.figure_path("real_model_r_vs_h.png"),
                      "Fisher scalar curvature R vs attention entropy H at every real query (colour: layer)")
    return _result(runs, rows, thresholds, fig, summaries)


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


def _sign_one(m: analysis.Measurement) -> tuple[dict, dict, str]:
    rows = sign_table(m.entropy, m.curvature, m.curvature_f64, m.rel_f64)
    verdict, fr = sign_verdict(rows)
    per_layer = []
    for k in range(m.num_layers):
        lr = sign_table(m.entropy[k], m.curvature[k], m.curvature_f64[k], m.rel_f64[k])
        per_layer.append({"layer": k + 1, "lowest_decile": lr[0], "highest_decile": lr[-1]})
    sl = m.slice
    row = _common(m)
    row.update({"verdict": verdict, "deciles": rows, **fr, "per_layer": per_layer,
                "slice": {k: sl[k] for k in ("layer", "head", "query_token", "query_entropy", "offset", "points")}})
    row["slice"].update(R_range=_range(sl["curvature"][np.isfinite(sl["curvature"])]), H_range=_range(sl["entropy"]))
    panel = {"name": m.name, "coords": sl["coords"], "curvature": sl["curvature"], "entropy": sl["entropy"],
             "title": f"{m.name}, layer {sl['layer'] + 1}, head {sl['head'] + 1}: plane through token {sl['query_token']} "
                      f"(H = {sl['query_entropy']:.2f})"}
    lo, hi = rows[0], rows[-1]
    summary = (
        f"lowest-entropy decile (H in [{lo['H_range'][0]:.2g}, {lo['H_range'][1]:.2g}]): {100 * fr['low_fraction_positive']:.0f}% R > 0 "
        f"(LOW_DECILE_POSITIVE_MIN = {LOW_DECILE_POSITIVE_MIN}); highest (H in [{hi['H_range'][0]:.2f}, {hi['H_range'][1]:.2f}]): "
        f"{100 * fr['high_fraction_negative']:.0f}% R < 0 (HIGH_DECILE_NEGATIVE_MIN = {HIGH_DECILE_NEGATIVE_MIN}); "
        f"undetermined signs {lo['undetermined']} and {hi['undetermined']} of {lo['points']} and {hi['points']}; {verdict}."
    )
    return row, panel, summary


@register("real-model-sign", CLAIM_SIGN, order=902, quote="When H → 0, R → C·α. When H is large, R → negative values",
          measured="Of the real attention rows in the lowest tenth of entropies, {models.low_fraction_positive|join:.0%} have R > 0 ({models.model|join}; claimed: R → C·α > 0); of those in the highest tenth, {models.high_fraction_negative|join:.0%} have R < 0 (claimed: negative).")
def sign(ctx: Context) -> Result:
    r"""Sign of R in the lowest- and highest-entropy deciles of all real attention rows (pooled per model).

    A point whose R missed ``CURVATURE_RTOL`` still has a certain sign when the float64
    error estimate is below ``SIGN_REL_MAX``; the rest are undetermined and counted.
    """
    thresholds = [
        Threshold("LOW_DECILE_POSITIVE_MIN", LOW_DECILE_POSITIVE_MIN, "per model, lowest-H decile: claim holds there if fraction with R > 0 >= value"),
        Threshold("HIGH_DECILE_NEGATIVE_MIN", HIGH_DECILE_NEGATIVE_MIN, "per model, highest-H decile: claim holds there if fraction with R < 0 >= value"),
        Threshold("SIGN_REL_MAX", SIGN_REL_MAX, "a float64 R has a certain sign if its estimated relative error < value"),
        Threshold("SIGN_UNDETERMINED_MAX", SIGN_UNDETERMINED_MAX, "per model: undefined if more than this fraction of a decile has no certain sign"),
    ]
    runs = _measurements(ctx)
    rows, panels, summaries = _per_model(runs, lambda k, m: _sign_one(m))
    from figures import real_model as figs

    fig = figs.slice_fields(panels, ctx.figure_path("real_model_slice.png"),
                            "R and H on a plane of query space through a real query, along the keys' two leading principal directions")
    return _result(runs, rows, thresholds, fig, summaries)
