r"""Checks on the shape of R(H): linear-law, decreasing-in-entropy, high-entropy-negative, the lemma.

All four read the shared per-family sweep of :mod:`checks._src.sweep`.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

import figures
import geometry

from . import fit, sweep, verdicts
from .registry import FAILS, HOLDS, Result, Threshold, register

#: query plane of the curvature/entropy field picture: [-L, L]^2 with this L (times sqrt(m)).
FIELD_HALF_WIDTH = 3.0
FIELD_GRID = 61
FIELD_GRID_QUICK = 31


def _family_row(s: sweep.FamilySweep, seed: int) -> dict:
    ok = np.isfinite(s.R) & np.isfinite(s.H)
    row = dict(family=s.name, group=s.group, points=s.counts, finite=int(ok.sum()))
    if ok.sum() < 2 * fit.DEPENDENCE_BINS:
        row.update(holds=False, why=[f"only {int(ok.sum())} finite points"])
        return row
    h, r = s.H[ok], s.R[ok]
    if np.ptp(h) <= fit.CONSTANT_RTOL * max(np.max(np.abs(h)), 1.0):
        # a family whose entropy does not depend on theta (a regression model: fixed noise): no slope exists;
        # if R varies there, R is not a function of H at all
        varies = np.ptp(r) > fit.CONSTANT_RTOL * max(np.max(np.abs(r)), np.finfo(float).tiny)
        row.update(H_range=[float(h.min()), float(h.max())], R_range=[float(r.min()), float(r.max())], holds=False,
                   why=[f"H is the same at every point ({h[0]:.6g} nats): no slope dR/dH exists"
                        + (f", while R varies over [{r.min():.4g}, {r.max():.4g}]: R is not a function of H" if varies else "")])
        return row
    f = fit.linear_fit(s.H, s.R, seed=seed)
    eta2 = fit.dependence(s.H, s.R)
    holds, why = verdicts.law_family(f, eta2)
    cert = fit.certificate(s.H, s.R)
    row.update(
        H_range=[float(s.H[ok].min()), float(s.H[ok].max())],
        R_range=[float(s.R[ok].min()), float(s.R[ok].max())],
        fit=f.as_dict(),
        eta2_rank=eta2,
        certificate=cert.as_dict() if cert else None,
        holds=holds,
        why=why,
    )
    return row


def _field(ctx, family, m_keys):
    """R and H over a 2-D query plane of an m = 2 attention family."""
    k = FIELD_GRID_QUICK if ctx.quick else FIELD_GRID
    half = FIELD_HALF_WIDTH * np.sqrt(2.0)
    x1 = np.linspace(-half, half, k)
    x2 = np.linspace(-half, half, k)
    xx = np.stack(np.meshgrid(x1, x2), axis=-1)
    r, counts = sweep.curvature(family, xx)
    h = sweep.entropy(family, xx)
    return x1, x2, r, h, counts


@register("linear-law", "R(d) = C·(α − H) with C, α > 0 constants (scalar curvature is a linear function of attention entropy)", order=20,
          quote="Here’s the key relationship — and it’s exact, not metaphorical: R(d) = C · (α − H) … C and α are positive constants dependent on your model’s architecture.",
          measured="R = C·(α − H) with C, α > 0 describes {n_hold} of {n_families} families; on one attention head, two queries with nearly the same entropy, H ≈ {field.certificate.H1:.2g} nats, have R = {field.certificate.R1:.3g} and R = {field.certificate.R2:.3g}.")
def linear_law(ctx) -> Result:
    thresholds = verdicts.law_thresholds()
    data = sweep.sweep(ctx)
    points: dict = {}
    rows = []
    for s in data:
        sweep.add_counts(points, s.counts)
        rows.append(_family_row(s, ctx.seed))
    n_hold = sum(r["holds"] for r in rows)
    verdict = verdicts.aggregate(n_hold, len(rows))
    by_group = {}
    for r in rows:
        g = by_group.setdefault(r["group"], {"families": 0, "holds": 0})
        g["families"] += 1
        g["holds"] += int(r["holds"])

    panels = [
        dict(name=r["family"], H=s.H, R=s.R, fit=(r["fit"]["intercept"], r["fit"]["slope"]) if "fit" in r else None,
             r2=r.get("fit", {}).get("r2", float("nan")), verdict="holds" if r["holds"] else "fails")
        for r, s in zip(rows, data)
    ]
    fig1 = figures.r_vs_h_grid(
        panels, ctx.figure_path("linear_law_r_vs_h.png"),
        f"R vs H per family: the linear law R = C(α−H), C, α > 0 holds for {n_hold} of {len(rows)} families", ncols=6,
    )
    # the picture that shows R is not a function of H: one m = 2 attention family
    att = next(s for s in data if s.group == "attention" and s.family.dim == 2)
    x1, x2, rf, hf, fcounts = _field(ctx, att.family, att.family.heads[0].keys)
    sweep.add_counts(points, fcounts)
    eta2_field = fit.dependence(hf.ravel(), rf.ravel())
    cert_field = fit.certificate(hf.ravel(), rf.ravel())
    is_function = eta2_field >= verdicts.LAW_DEPENDENCE_MIN
    title = f"{att.name}: R {'is nearly' if is_function else 'is not'} a function of H (η² of rank R on H-bins = {eta2_field:.2f})"
    if cert_field:
        title += f"\nequal-H witness: H≈{cert_field.h1:.4f} has R={cert_field.r1:.3g} and R={cert_field.r2:.3g}"
    fig2 = figures.curvature_entropy_fields(x1, x2, rf, hf, att.family.heads[0].keys, ctx.figure_path("linear_law_fields.png"), title)

    summary = (
        f"The law holds for {n_hold} of {len(rows)} families. "
        + "; ".join(f"{g}: {v['holds']}/{v['families']}" for g, v in by_group.items())
        + f". Query-plane field of {att.name}: η²(rank R | H) = {eta2_field:.3f} vs LAW_DEPENDENCE_MIN = {verdicts.LAW_DEPENDENCE_MIN}"
        + (f"; witness: H = {cert_field.h1:.5f}/{cert_field.h2:.5f} gives R = {cert_field.r1:.4g}/{cert_field.r2:.4g}." if cert_field else ".")
    )
    return Result(
        verdict=verdict,
        thresholds=thresholds,
        measurements=dict(
            families=rows, by_group=by_group, n_families=len(rows), n_hold=n_hold,
            field=dict(family=att.name, grid=len(x1), eta2_rank=eta2_field, certificate=cert_field.as_dict() if cert_field else None),
        ),
        figures=[fig1.split("/")[-1], fig2.split("/")[-1]],
        points=points,
        summary=summary,
    )


@register("lemma-any-fisher-metric", "Lemma: the scalar curvature of any manifold with a Fisher metric is a decreasing linear function of the entropy", order=80,
          quote="Lemma : The scalar curvature R of a manifold with Fisher metric is a decreasing linear function of the entropy of the underlying distribution.",
          measured="{counterexamples|len} of {families|len} Fisher metrics that are not attention contradict the lemma: {counterexamples|join}.")
def lemma(ctx) -> Result:
    thresholds = verdicts.law_thresholds() + [
        Threshold("LEMMA_COUNTEREXAMPLES_MAX", 0, "a lemma about every Fisher metric holds only if the number of counterexamples <= value"),
    ]
    data = sweep.sweep(ctx, groups=("gaussian", "categorical", "tempered", "user"))
    points: dict = {}
    rows = []
    for s in data:
        sweep.add_counts(points, s.counts)
        rows.append(_family_row(s, ctx.seed))
    counter = [r["family"] for r in rows if not r["holds"]]
    verdict = HOLDS if rows and len(counter) <= 0 else FAILS
    gauss = next((r for r in rows if r["group"] == "gaussian"), None)
    summary = f"{len(counter)} of {len(rows)} non-attention Fisher metrics violate the lemma (LEMMA_COUNTEREXAMPLES_MAX = 0)"
    if gauss and "fit" in gauss:
        summary += (
            f"; Gaussian: R in [{gauss['R_range'][0]:.10g}, {gauss['R_range'][1]:.10g}] while H spans "
            f"[{gauss['H_range'][0]:.3g}, {gauss['H_range'][1]:.3g}] nats (C = {gauss['fit']['C'] + 0.0:.3g})"
        )
    cat = [r for r in rows if r["group"] == "categorical"]
    if cat:
        summary += "; categorical " + ", ".join(r["family"].split()[-1] for r in cat) + ": R constant = " + ", ".join(f"{r['R_range'][0]:.6g}" for r in cat if "R_range" in r) + " = (n-1)(n-2)/4"
    panels = [dict(name=r["family"], H=s.H, R=s.R, fit=(r["fit"]["intercept"], r["fit"]["slope"]) if "fit" in r else None,
                   r2=r.get("fit", {}).get("r2", float("nan")), verdict="holds" if r["holds"] else "fails") for r, s in zip(rows, data)]
    fig = figures.r_vs_h_grid(panels, ctx.figure_path("lemma_r_vs_h.png"),
                              (f"Non-attention Fisher metrics: R is not a decreasing linear function of H in {len(counter)} of {len(rows)} families"
                               if counter else f"Non-attention Fisher metrics: R = C(α−H) in all {len(rows)} families"), ncols=5)
    return Result(verdict, thresholds, dict(families=rows, counterexamples=counter), [fig.split("/")[-1]], points, summary + ".")


@register("high-entropy-negative", "When H is large, R → negative values (hyperbolic geometry)", order=50,
          quote="When H is large, R → negative values (hyperbolic geometry — high diversity, good generalization).",
          measured="In the highest-entropy tenth of the points, R is negative on at least {TOP_DECILE_NEGATIVE_MIN:.0%} of them in {families.holds|count} of {families|len} families.")
def high_entropy_negative(ctx) -> Result:
    thresholds = [Threshold("TOP_DECILE_NEGATIVE_MIN", verdicts.TOP_DECILE_NEGATIVE_MIN,
                            "per family: holds if the fraction of R < 0 in the top 10% of entropies >= value")]
    points: dict = {}
    rows = []
    for s in sweep.sweep(ctx):
        sweep.add_counts(points, s.counts)
        frac, ok = verdicts.top_decile_negative(s.H, s.R)
        fin = np.isfinite(s.H) & np.isfinite(s.R)
        cut = float(np.quantile(s.H[fin], 0.9)) if fin.any() else float("nan")
        top = fin & (s.H >= cut)
        rows.append(dict(family=s.name, group=s.group, H_cut=cut, fraction_negative=frac, holds=ok,
                         R_median_top=float(np.median(s.R[top])) if top.any() else float("nan")))
    n_hold = sum(r["holds"] for r in rows)
    groups = {}
    for r in rows:
        g = groups.setdefault(r["group"], [0, 0])
        g[0] += int(r["holds"])
        g[1] += 1
    summary = f"R < 0 on >= {verdicts.TOP_DECILE_NEGATIVE_MIN:.0%} of the top entropy decile in {n_hold} of {len(rows)} families (" + \
        ", ".join(f"{g}: {a}/{b}" for g, (a, b) in groups.items()) + ")."
    return Result(verdicts.aggregate(n_hold, len(rows)), thresholds, dict(families=rows, by_group=groups), [], points, summary)


#: temperature grid of the rays x -> x/T (kept away from T -> 0, which is the low-entropy check's job)
RAY_T = (0.2, 20.0)
RAY_STEPS, RAY_STEPS_QUICK = 40, 16
RAYS_PER_FAMILY, RAYS_PER_FAMILY_QUICK = 3, 2
RAY_TIME_BUDGET = 30.0


def family_spearman(h, r) -> float:
    """Spearman rank correlation of ``R`` with ``H`` over a family's finite points; NaN when ``R`` is
    constant up to ``DRDH_FLAT_RTOL * max|R|`` (ranking rounding noise gives a sign, not a trend)."""
    ok = np.isfinite(h) & np.isfinite(r)
    if not ok.any() or np.ptp(r[ok]) <= verdicts.DRDH_FLAT_RTOL * np.max(np.abs(r[ok])):
        return float("nan")
    return float(scipy.stats.spearmanr(h[ok], r[ok]).statistic)


@register("decreasing-in-entropy", "∂R/∂H < 0: curvature decreases as entropy increases", order=30,
          quote="Low entropy ⇒ High curvature. … Therefore : ∂R/∂H < 0. Negative. Inverse.",
          measured="R fell steadily as a temperature raised H along {rays.holds|count} of {rays|len} temperature rays; across the sweep, R tends to fall with H in {spearman_by_family|negative} of the {spearman_by_family|known} families whose R is not constant.")
def decreasing(ctx) -> Result:
    thresholds = [
        Threshold("DRDH_FLAT_RTOL", verdicts.DRDH_FLAT_RTOL, "a step counts as dR/dH < 0 only if ΔR < -value·max|R| on the path; "
                  "a family counts as constant (no Spearman ρ) if max R - min R <= value·max|R|"),
        Threshold("PATH_NEGATIVE_MIN", verdicts.PATH_NEGATIVE_MIN, "a temperature ray holds if dR/dH < 0 on >= value of its steps"),
    ]
    data = [s for s in sweep.sweep(ctx) if s.family.kind == "softmax-linear"]
    chosen = []
    for grp in ("categorical", "tempered", "attention", "multihead", "user"):
        cand = [s for s in data if s.group == grp]
        chosen += cand[:: max(1, len(cand) // (2 if ctx.quick else 6))]
    steps = RAY_STEPS_QUICK if ctx.quick else RAY_STEPS
    n_rays = RAYS_PER_FAMILY_QUICK if ctx.quick else RAYS_PER_FAMILY
    temps = np.geomspace(*RAY_T, steps)
    points: dict = {}
    rays, rows = [], []
    bar = ctx.bar(total=len(chosen), desc="temperature rays")
    for i, s in enumerate(chosen):
        rng = ctx.rng(300 + i)
        base = s.theta[rng.choice(s.theta.shape[0], n_rays, replace=False)]
        base = base / np.linalg.norm(base, axis=1, keepdims=True) * np.sqrt(s.family.dim) * 2.0
        xs = base[:, None, :] / temps[None, :, None]
        r, counts = sweep.curvature(s.family, xs, time_budget=RAY_TIME_BUDGET)
        sweep.add_counts(points, counts)
        h = sweep.entropy(s.family, xs)
        for j in range(n_rays):
            frac, ok = verdicts.path_decreasing(h[j], r[j])
            rows.append(dict(family=s.name, ray=j, fraction_negative_steps=frac, holds=ok,
                             R_range=[float(np.nanmin(r[j])), float(np.nanmax(r[j]))], H_range=[float(h[j].min()), float(h[j].max())]))
            rays.append(dict(label=f"{s.name} #{j}", T=temps, H=h[j], R=r[j]))
        bar.update(1)
    bar.close()
    # across the sweep: Spearman rank correlation of R with H per family (negative = decreasing trend);
    # families whose R is constant up to rounding (the simplex, attention heads that cover it) have
    # none: ranking their rounding noise gave a sign that changed with the summation order
    spearman = {}
    for s in sweep.sweep(ctx):
        spearman[s.name] = family_spearman(s.H, s.R)
        sweep.add_counts(points, s.counts)
    n_hold = sum(r["holds"] for r in rows)
    verdict = verdicts.aggregate(n_hold, len(rows))
    flat = [r for r in rays if r["label"].startswith("categorical")]
    curved = [r for r in rays if not r["label"].startswith("categorical")]
    shown = curved[:: max(1, len(curved) // 10)] + flat[:2]
    fig = figures.temperature_rays(shown, ctx.figure_path("temperature_rays.png"),
                                   f"R along temperature rays x/T: dR/dH < 0 on {n_hold} of {len(rows)} rays")
    rho_vals = np.array([v for v in spearman.values() if np.isfinite(v)])
    summary = (
        f"dR/dH < 0 on >= {verdicts.PATH_NEGATIVE_MIN:.0%} of the steps on {n_hold} of {len(rows)} temperature rays "
        f"(categorical rays are flat: R constant). Across the sweep, Spearman ρ(H, R) < 0 in {int(np.sum(rho_vals < 0))} "
        f"of {rho_vals.size} non-constant families."
    )
    return Result(verdict, thresholds, dict(rays=rows, fraction_rays_holding=n_hold / max(1, len(rows)), spearman_by_family=spearman),
                  [fig.split("/")[-1]], points, summary)
