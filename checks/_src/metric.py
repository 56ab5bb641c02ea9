r"""metric-is-fisher and temperature-invariance: two identities, measured.

metric-is-fisher
    The metric that ``x -> p(x) = softmax(s K x)`` induces on the query is the
    pullback of the simplex's Fisher metric,
    :math:`g(x) = s^2 K^\top(\operatorname{diag}p - pp^\top)K`, and equals the Fisher
    information :math:`E_p[\nabla\log p\otimes\nabla\log p]` of the family.  Its
    rank is at most :math:`\min(n-1, m)` (the centred keys span at most ``n - 1``
    directions), so for ``m > n - 1`` or rank-deficient keys it is degenerate and
    the scalar curvature does not exist (unless one passes to the quotient,
    ``geometry.project_keys``).
temperature-invariance
    :math:`\mathrm{softmax}(sKx/T) = \mathrm{softmax}(sK(x/T))`: the tempered family
    is the same family in the coordinates :math:`x/T`, and ``R`` and ``H`` are
    invariants, so :math:`R_T(x) = R_1(x/T)` and :math:`H_T(x) = H_1(x/T)`; the set
    of reachable (H, R) pairs does not depend on ``T``.
"""

from __future__ import annotations

import numpy as np

import geometry

from . import sweep, verdicts
from .registry import FAILS, HOLDS, PARTIAL, Result, Threshold, register

#: a metric is degenerate when lambda_min / lambda_max is below this
DEGENERATE_RATIO = 1e-12
QUERIES, QUERIES_QUICK = 60, 20


def pullback_metric(keys, scale, x):
    r""":math:`s^2 K^\top(\operatorname{diag}p - pp^\top)K` at each query (numpy, float64)."""
    keys = np.asarray(keys, float)
    p = np.exp(sweep.softmax_log_probs(scale * np.einsum("nm,...m->...n", keys, x)))
    cov = np.einsum("...n,nm,nk->...mk", p, keys, keys) - np.einsum("...m,...k->...mk", p @ keys, p @ keys)
    return scale**2 * cov


def metric_verdict(max_rel_diff: float, n_degenerate: int) -> str:
    """fails if pullback != Fisher; partial if equal but degenerate on part of the configurations; else holds."""
    if not verdicts.identity_holds(max_rel_diff):
        return FAILS
    return PARTIAL if n_degenerate else HOLDS


@register("metric-is-fisher", "The metric induced by attention on the embedding is (proportional to) the Fisher information of p_d", order=10,
          quote="For a single-head attention mechanism with weight matrix W, the induced metric at embedding d is proportional to the Fisher information of the softmax distribution p_d.",
          measured="On {configurations|len} key configurations the metric attention induces equals the Fisher information of p up to a relative difference of {max_rel_diff:.0e}, but on {n_degenerate} of them it is degenerate (the keys span fewer directions than the query has), so no curvature exists there.")
def metric_is_fisher(ctx) -> Result:
    thresholds = [
        Threshold("IDENTITY_RTOL", verdicts.IDENTITY_RTOL, "holds if max ||pullback - E[score⊗score]||_F / ||.||_F <= value"),
        Threshold("DEGENERATE_RATIO", DEGENERATE_RATIO, "metric degenerate (curvature undefined) if λ_min/λ_max < value"),
    ]
    rng = ctx.rng(100)
    nq = QUERIES_QUICK if ctx.quick else QUERIES
    configs = [(4, 2, "random"), (8, 3, "random"), (16, 2, "random"), (3, 3, "random"), (4, 5, "random"), (6, 3, "planar")]
    if ctx.quick:
        configs = [(4, 2, "random"), (4, 5, "random"), (6, 3, "planar")]
    rows = []
    max_rel = 0.0
    n_deg = 0
    for n, m, kind in configs:
        keys = rng.normal(size=(n, m))
        if kind == "planar":  # keys in a 2-d plane of R^3: centred rank 2 < m
            keys[:, 2] = 0.5 * keys[:, 0] - keys[:, 1]
        x = rng.normal(size=(nq, m)) * 1.5
        scale = 1 / np.sqrt(m)
        pb = pullback_metric(keys, scale, x)
        lam = np.linalg.eigvalsh(pb)
        ratio = lam[:, 0] / lam[:, -1]
        degenerate = bool(np.all(ratio < DEGENERATE_RATIO))
        rank_bound = min(n - 1, m)
        row = dict(n=n, m=m, keys=kind, rank_bound_min_n_minus_1_m=rank_bound,
                   numerical_rank_max=int(np.max(np.sum(lam > DEGENERATE_RATIO * lam[:, -1:], axis=1))),
                   min_eig_ratio=float(ratio.max()), degenerate=degenerate)
        if degenerate:
            n_deg += 1
            try:
                geometry.attention(keys, scale)
                row["geometry_refuses"] = False
            except ValueError as exc:
                row["geometry_refuses"] = True
                row["geometry_message"] = str(exc).split(":")[0]
            # the quotient is fine: project onto the keys' span and compare there too
            kp, basis = geometry.project_keys(keys)
            xq = x @ basis
            fam = geometry.attention(kp, scale)
            fisher = np.asarray(geometry.fisher_metric(fam, xq, method="score"))
            pbq = pullback_metric(kp, scale, xq)
            row["quotient_dim"] = int(kp.shape[1])
        else:
            fam = geometry.attention(keys, scale)
            fisher = np.asarray(geometry.fisher_metric(fam, x, method="score"))
            pbq = pb
        rel = float(np.max(np.linalg.norm(pbq - fisher, axis=(-2, -1)) / np.linalg.norm(fisher, axis=(-2, -1))))
        row["max_rel_diff_pullback_vs_score"] = rel
        max_rel = max(max_rel, rel)
        rows.append(row)
    verdict = metric_verdict(max_rel, n_deg)
    summary = (
        f"Pullback s²Kᵀ(diag p − ppᵀ)K equals E[score⊗score] to {max_rel:.1e} (IDENTITY_RTOL = {verdicts.IDENTITY_RTOL:g}) "
        f"on {len(rows)} key configurations; it is degenerate (rank ≤ min(n−1, m) < m, curvature undefined) on {n_deg} of them: "
        + ", ".join(f"n={r['n']} m={r['m']} {r['keys']}" for r in rows if r["degenerate"])
        + ". Holds on the sub-domain rank(centred K) = m; elsewhere only on the quotient (geometry.project_keys)."
    )
    return Result(verdict, thresholds, dict(configurations=rows, max_rel_diff=max_rel, n_degenerate=n_deg), [], {}, summary)


#: not powers of two, so x/T and s/T are rounded differently and the comparison is not trivially exact
TEMPERATURES, TEMPERATURES_QUICK = (0.7, 3.0), (3.0,)


@register("temperature-invariance", "A softmax temperature only reparametrises the family: R_T(x) = R_1(x/T), same (H, R) set", order=70,
          measured="Computing at temperature T gives the same R and H as computing at x/T, up to a relative difference of {worst_rel_diff:.0e}, over {pairs|len} (family, T) pairs: a temperature moves a point along the family and cannot change which (H, R) pairs occur.")
def temperature_invariance(ctx) -> Result:
    thresholds = [Threshold("IDENTITY_RTOL", verdicts.IDENTITY_RTOL,
                            "holds if max |R_T(x) − R_1(x/T)| / max(|R_T|, |R_1|) <= value and the same for H")]
    rng = ctx.rng(700)
    fams = [("categorical n=3", geometry.categorical(3))]
    if not ctx.quick:
        fams = [("categorical n=5", geometry.categorical(5))]
    for n, m in ((4, 2),) if ctx.quick else ((8, 2), (16, 3)):
        fams.append((f"attention n={n} m={m}", geometry.attention(sweep.random_keys(rng, n, m))))
    if not ctx.quick:
        fams.append(("multihead h=2 n=4 m=2", geometry.multihead_attention([sweep.random_keys(rng, 4, 2) for _ in range(2)])))
    temps = TEMPERATURES_QUICK if ctx.quick else TEMPERATURES
    nq = QUERIES_QUICK if ctx.quick else QUERIES
    points: dict = {}
    rows = []
    worst = 0.0
    for name, fam in fams:
        x = rng.normal(size=(nq, fam.dim)) * 2.0
        for t in temps:
            heads = fam.heads
            if name.startswith("categorical"):
                fam_t = geometry.categorical(len(heads[0].keys), t)
            elif len(heads) == 1:
                fam_t = geometry.attention(heads[0].keys, heads[0].scale / t)
            else:
                fam_t = geometry.multihead_attention([h.keys for h in heads], heads[0].scale / t)
            rt, c1 = sweep.curvature(fam_t, x)
            r1, c2 = sweep.curvature(fam, x / t)
            sweep.add_counts(points, c1)
            sweep.add_counts(points, c2)
            ht, h1 = sweep.entropy(fam_t, x), sweep.entropy(fam, x / t)
            ok = np.isfinite(rt) & np.isfinite(r1)
            rel_r = float(np.max(np.abs(rt[ok] - r1[ok]) / np.maximum(np.maximum(np.abs(rt[ok]), np.abs(r1[ok])), 1e-300)))
            rel_h = float(np.max(np.abs(ht - h1) / np.maximum(np.abs(h1), 1e-300)))
            worst = max(worst, rel_r, rel_h)
            rows.append(dict(family=name, T=t, points=int(ok.sum()), max_rel_diff_R=rel_r, max_rel_diff_H=rel_h))
    verdict = HOLDS if verdicts.identity_holds(worst) else FAILS
    summary = (f"R_T(x) = R_1(x/T) and H_T(x) = H_1(x/T) to a worst relative difference {worst:.1e} (IDENTITY_RTOL = "
               f"{verdicts.IDENTITY_RTOL:g}) over {len(rows)} (family, T) pairs: temperature moves points along the "
               "family, it cannot change which (H, R) pairs exist.")
    return Result(verdict, thresholds, dict(pairs=rows, worst_rel_diff=worst), [], points, summary)
