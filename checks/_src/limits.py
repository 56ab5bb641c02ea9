r"""The low-entropy end: R along rays toward a vertex, and Fisher--Rao distances there.

A ray :math:`x(t) = t\,v` in query space sends ``p`` to the vertex of the key
:math:`k_a = \arg\max_i k_i\cdot v`; the entropy falls like :math:`e^{-ct}`.  We
pick ``t`` so that ``log H`` is evenly spaced from ``RAY_H_MAX`` down to
``RAY_H_MIN = 1e-30``.  Curvatures there need 40--100 digits; they come from the
precision-controlled default of ``geometry.scalar_curvature`` (rtol 1e-8).

Distances: on the simplex, the Fisher--Rao distance is
:math:`d(p, q) = 2\arccos\sum_i\sqrt{p_i q_i}` (the image of :math:`p\mapsto 2\sqrt p`
on the sphere of radius 2; Amari & Nagaoka 2000, sec. 2.5), so every distance is
at most the diameter :math:`\pi`.  For attention, the length of the ray itself,
:math:`L(t) = \int_{t_0}^{t}\sqrt{v^\top g(sv)\,v}\,ds`, bounds the induced
geodesic distance from above.
"""

from __future__ import annotations

import numpy as np

import figures
import geometry

from . import sweep, verdicts
from .registry import Result, Threshold, register

RAY_H_MAX = 0.3
RAY_H_MIN = 1e-30
RAY_POINTS, RAY_POINTS_QUICK = 14, 8
#: fit the growth exponent on the points with H below this
GROWTH_FIT_H_MAX = 1e-3
LIMIT_TIME_BUDGET = 90.0
LIMIT_TIME_BUDGET_QUICK = 20.0
#: fine t grid used to place the ray points and to integrate the ray length
T_GRID = np.geomspace(1e-3, 1e5, 4000)
#: entropy at which the reference ray length is read off
DISTANCE_REF_H = 1e-3
#: true geodesic distances (geometry.geodesic_distance): the families (one compile each, ~20 s), the
#: Euclidean step in query space, and the angle between two queries that attend to the same key
GEODESIC_FAMILIES = ("categorical n=3", "attention n=4 m=2 keys#0")
GEODESIC_FAMILIES_QUICK = ("categorical n=3",)
GEODESIC_STEP = 0.5
SAME_KEY_ANGLE = 0.15
#: entropies of the geodesic measurements: RAY_H_MAX down to this (below ~4e-6 the float64 geodesic
#: solve of pairs near different vertices stops converging: geometry._src.geodesics documents why; pairs
#: that do not converge are counted undefined, never used)
GEODESIC_H_MIN = 1e-7
#: sectional curvature of one attention head at fixed entropy (context for "the manifold pinches"): the head's
#: shape (m = 3, so the planes through a point differ), the entropy levels (nats), points per level (random
#: directions scaled to the level by bisection to SECTIONAL_H_RTOL) and random planes per point
SECTIONAL_SHAPE = (16, 3)
SECTIONAL_H_LEVELS = (0.05, 0.3, 1.0, 2.0)
SECTIONAL_POINTS, SECTIONAL_POINTS_QUICK = 8, 4
SECTIONAL_PLANES, SECTIONAL_PLANES_QUICK = 8, 4
SECTIONAL_H_RTOL = 1e-9
#: a plane's sign counts as determined when its status is converged and its relative error estimate is below this
SECTIONAL_SIGN_ERROR_MAX = 0.5
GEODESIC_POINTS, GEODESIC_POINTS_QUICK = 8, 8


def _ray_families(ctx):
    want = ["categorical n=3", "attention n=4 m=2 keys#0", "attention n=16 m=3 keys#0"]
    if not ctx.quick:
        want += ["categorical n=6", "attention n=8 m=2 keys#0", "attention n=32 m=2 keys#0", "multihead h=2 n=4 m=2"]
    return sweep.sweep(ctx, names=want)


def _ray_direction(rng, fam):
    v = rng.normal(size=fam.dim)
    return v / np.linalg.norm(v)


def _ray_ts(fam, v, k):
    h = sweep.entropy(fam, T_GRID[:, None] * v)
    targets = np.exp(np.linspace(np.log(RAY_H_MAX), np.log(RAY_H_MIN), k))
    mono = np.all(np.diff(h) <= 0) and h[-1] < RAY_H_MIN and h[0] > RAY_H_MAX
    if not mono:
        return None
    with np.errstate(divide="ignore"):  # H underflows to 0 far out on the grid: log 0 = -inf sorts first, harmless
        return np.interp(np.log(targets), np.log(h[::-1]), T_GRID[::-1])


def rays(ctx):
    """``[(sweep, v, t, x)]`` one ray per family (cached on the sweep object)."""
    out = []
    for i, s in enumerate(_ray_families(ctx)):
        rng = ctx.rng(500 + i)
        for _ in range(20):  # a direction along which H falls through the whole range
            v = _ray_direction(rng, s.family)
            t = _ray_ts(s.family, v, RAY_POINTS_QUICK if ctx.quick else RAY_POINTS)
            if t is not None:
                out.append((s, v, t))
                break
    return out


@register("low-entropy-limit", "When H → 0, R → C·α (a finite positive limit)", order=40, quote="When H → 0, R → C·α.",
          measured="Following {rays|len} rays down to H ≈ {rays.smallest_H|max:.0e} nats, R settles to a finite positive value on {rays.holds|count}; the most extreme R at the end of a ray is {rays.R_at_smallest_H|absmax:.2g}.")
def low_entropy_limit(ctx) -> Result:
    thresholds = [
        Threshold("GROWTH_EXPONENT_MAX", verdicts.GROWTH_EXPONENT_MAX, "per ray: R finite if |k| <= value in |R| ~ H^k (fit on H < 1e-3)"),
        Threshold("LIMIT_SIGN_MIN", 0.0, "per ray: the limit must be > value (claimed C·α > 0)"),
        Threshold("RAY_H_MIN", RAY_H_MIN, "rays are followed down to H = value (nats)"),
    ]
    points: dict = {}
    rows, plot = [], []
    budget = LIMIT_TIME_BUDGET_QUICK if ctx.quick else LIMIT_TIME_BUDGET
    rs = rays(ctx)
    bar = ctx.bar(total=len(rs), desc="rays to vertices")
    for s, v, t in rs:
        x = t[:, None] * v
        r, counts = sweep.curvature(s.family, x, time_budget=budget)
        sweep.add_counts(points, counts)
        h = sweep.entropy(s.family, x)
        low = h < GROWTH_FIT_H_MAX
        k = verdicts.growth_exponent(h[low], r[low])
        fin = np.isfinite(r)
        r_last = float(r[fin][-1]) if fin.any() else float("nan")
        ok, why = verdicts.limit_family(k, r_last)
        rows.append(dict(family=s.name, H=h.tolist(), R=r.tolist(), growth_exponent=k, R_at_smallest_H=r_last,
                         smallest_H=float(h[fin][-1]) if fin.any() else float("nan"), holds=ok, why=why, points=counts))
        plot.append(dict(label=s.name, H=h, R=r, exponent=k))
        bar.update(1)
    bar.close()
    n_hold = sum(r["holds"] for r in rows)
    diverge = [r for r in rows if not abs(r["growth_exponent"]) <= verdicts.GROWTH_EXPONENT_MAX]
    fig = figures.low_entropy_loglog(plot, ctx.figure_path("low_entropy_loglog.png"),
                                     f"|R| as H → 0: finite positive limit on {n_hold} of {len(rows)} rays; R diverges on {len(diverge)}")
    summary = f"Finite positive limit on {n_hold} of {len(rows)} rays down to H ≈ {RAY_H_MIN:g}. " + "; ".join(
        f"{r['family']}: k = {r['growth_exponent']:.3f}, R({r['smallest_H']:.1e}) = {r['R_at_smallest_H']:.3g}" for r in rows
    ) + "."
    return Result(verdicts.aggregate(n_hold, len(rows)), thresholds, dict(rays=rows), [fig.split("/")[-1]], points, summary)


def fisher_rao_simplex(p, q):
    r"""Fisher--Rao distance :math:`2\arccos\sum_i\sqrt{p_i q_i}` between rows of ``p`` and ``q`` (radians)."""
    bc = np.sum(np.sqrt(np.asarray(p) * np.asarray(q)), axis=-1)
    return 2.0 * np.arccos(np.clip(bc, -1.0, 1.0))


@register("distances-blow-up", "Low entropy makes distances blow up; nearby points become disconnected", order=60,
          quote="The manifold pinches. Distances blow up. Nearby points become disconnected.",
          measured="True geodesic distances grew ≥ {DISTANCE_GROWTH_MIN:g}× as H → 0 in {geodesics.step.blow_up|count} of {geodesics.step.blow_up|known} cases for neighbouring queries and {geodesics.same_key.blow_up|count} of {geodesics.same_key.blow_up|known} for queries attending to the same key; rays down to H ≈ {rays.H_min|max:.0e} have finite length (at most {rays.ray_length_to_H_min|max:.2f}), and no two of {simplex_pairs.pairs} random points of the simplex are farther apart than {simplex_pairs.max_distance:.4f} (π); one attention head's sectional curvature changes sign at fixed entropy at {sectional.levels.sign_changes|count} of {sectional.levels|len} levels.")
def distances_blow_up(ctx) -> Result:
    thresholds = [
        Threshold("DISTANCE_GROWTH_MIN", verdicts.DISTANCE_GROWTH_MIN,
                  "per ray: blow-up if the ray length from H=0.3 grows by >= value between H=1e-3 and H=1e-30"),
        Threshold("SIMPLEX_DIAMETER", verdicts.SIMPLEX_DIAMETER, "every Fisher-Rao distance on the simplex is <= value"),
    ]
    rows = []
    rs = rays(ctx)
    points = {"total": 0, "float64": 0, "high_precision": 0, "undefined": 0, "not_computed_budget": 0, "untrusted": 0}
    for s, v, t in rs:
        fam = s.family
        h_grid = sweep.entropy(fam, T_GRID[:, None] * v)
        use = (h_grid <= RAY_H_MAX * 1.0001) & (h_grid >= RAY_H_MIN * 0.9999)
        tg = T_GRID[use]
        xg = tg[:, None] * v
        g = np.asarray(geometry.fisher_metric(fam, xg))
        speed = np.sqrt(np.maximum(np.einsum("i,nij,j->n", v, g, v), 0.0))
        length = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(tg))])
        hg = h_grid[use]
        l_ref = float(np.interp(np.log(DISTANCE_REF_H), np.log(hg[::-1]), length[::-1]))
        l_far = float(length[-1])
        lam = np.linalg.eigvalsh(g)
        ps = sweep.probs(fam, xg)
        d_fr = sum(fisher_rao_simplex(p, p[:1]) ** 2 for p in ps) ** 0.5  # product of simplices: distances add in quadrature
        rows.append(dict(
            family=s.name,
            ray_length_to_H_1em3=l_ref, ray_length_to_H_min=l_far, H_min=float(hg[-1]),
            fisher_rao_to_far_end=float(d_fr[-1]), fisher_rao_max=float(d_fr.max()),
            metric_eig_max_start=float(lam[0, -1]), metric_eig_max_end=float(lam[-1, -1]),
            metric_eig_min_end=float(lam[-1, 0]),
            blow_up=verdicts.distances_blow_up(l_ref, l_far),
        ))
    geo_rows, geo_plot = _geodesic_distances(ctx, rs)
    sectional, sectional_points = _sectional_at_fixed_entropy(ctx)
    # categorical simplex: random pairs, including near-vertex ones, never exceed pi
    rng = ctx.rng(600)
    n = 6
    logits = rng.normal(size=(4000, 2, n)) * np.exp(rng.uniform(0, np.log(80), size=(4000, 2, 1)))
    p = np.exp(sweep.softmax_log_probs(logits))
    d = fisher_rao_simplex(p[:, 0], p[:, 1])
    n_blow_rays = sum(r["blow_up"] for r in rows)
    cases = [(g["family"], kind, g[kind]) for g in geo_rows for kind in ("step", "same_key")]
    measured = [(f, k, c) for f, k, c in cases if c["blow_up"] is not None]
    n_blow = sum(c["blow_up"] for _, _, c in measured)
    # the verdict is decided by the true geodesic distances; ray lengths (upper bounds) when none converged
    verdict = verdicts.aggregate(n_blow, len(measured)) if measured else verdicts.aggregate(n_blow_rays, len(rows))
    within = bool(d.max() <= verdicts.SIMPLEX_DIAMETER)
    figs = []
    if geo_plot:
        figs.append(figures.geodesic_distances_vs_entropy(
            geo_plot, ctx.figure_path("distances_vs_entropy.png"),
            f"Fisher-Rao geodesic distances as H → 0: grow by >= {verdicts.DISTANCE_GROWTH_MIN:g}x on {n_blow} of {len(measured)} cases").split("/")[-1])
    n_change = sum(lev["sign_changes"] for lev in sectional["levels"])
    figs.append(figures.sectional_at_fixed_entropy(
        sectional["levels"], ctx.figure_path("sectional_at_fixed_entropy.png"),
        f"{sectional['family']}: sectional curvature changes sign at fixed entropy at {n_change} of "
        f"{len(sectional['levels'])} levels").split("/")[-1])
    sectional_text = "; ".join(
        f"H={lev['H']:g}: {lev['positive']} > 0, {lev['negative']} < 0 of {lev['n_determined']} determined"
        + (f", K in [{lev['K_min']:.3g}, {lev['K_max']:.3g}]" if lev["n_determined"] else "") for lev in sectional["levels"])
    geo_text = "; ".join(
        f"{f} {'step ' + format(GEODESIC_STEP, 'g') if k == 'step' else 'same key'}: "
        f"{c['d_ref']:.3g} at H={c['H_ref']:.1e} → {c['d_far']:.3g} at H={c['H_far']:.1e} ({c['converged']}/{c['pairs']} converged)"
        for f, k, c in measured)
    summary = (
        f"True geodesic distances (geometry.geodesic_distance) grow by >= {verdicts.DISTANCE_GROWTH_MIN:g}x as H → 0 in "
        f"{n_blow} of {len(measured)} cases; they shrink: {geo_text}. "
        f"Context: ray length (an upper bound) grows by >= {verdicts.DISTANCE_GROWTH_MIN:g}x from H=1e-3 to "
        f"H=1e-30 on {n_blow_rays} of {len(rows)} rays; it converges: "
        + "; ".join(f"{r['family']}: {r['ray_length_to_H_1em3']:.4f} → {r['ray_length_to_H_min']:.4f}" for r in rows)
        + f". Largest metric eigenvalue at H=1e-30: {max(r['metric_eig_max_end'] for r in rows):.2e} (it shrinks, not grows). "
        f"Simplex n={n}: max Fisher-Rao distance over 4000 random pairs {d.max():.4f} <= π: {within}. "
        f"Sectional curvature of {sectional['family']} on random planes at fixed entropy (sign determined where the "
        f"relative error estimate < {SECTIONAL_SIGN_ERROR_MAX:g}): {sectional_text}; the sign changes at fixed entropy at "
        f"{n_change} of {len(sectional['levels'])} levels."
    )
    sweep.add_counts(points, sectional_points)
    for g in geo_rows:
        for kind in ("step", "same_key"):
            c = g[kind]
            points["total"] += c["pairs"]
            points["float64"] += c["converged"]
            points["undefined"] += c["pairs"] - c["converged"]
    thresholds.append(Threshold("GEODESIC_STEP", GEODESIC_STEP, "step pairs: x and x + value * u (|u| = 1, Euclidean in query space)"))
    thresholds.append(Threshold("GEODESIC_H_MIN", GEODESIC_H_MIN, "geodesic distances are measured from H = RAY_H_MAX down to H = value"))
    thresholds.append(Threshold("SAME_KEY_ANGLE", SAME_KEY_ANGLE, "same-key pairs: t v and t v' with angle(v, v') = value rad, same argmax key"))
    thresholds.append(Threshold("SECTIONAL_SIGN_ERROR_MAX", SECTIONAL_SIGN_ERROR_MAX,
                                "a plane's sectional-curvature sign counts if converged with relative error estimate < value"))
    return Result(verdict, thresholds, dict(rays=rows, geodesics=geo_rows, sectional=sectional,
                                            simplex_pairs=dict(n=n, pairs=4000, max_distance=float(d.max()), within_diameter=within)),
                  figs, points, summary)


def _points_at_entropy(fam, rng, h, k):
    """``k`` points ``t v`` (``v`` random unit directions) with ``H(t v) = h`` to SECTIONAL_H_RTOL: the first
    crossing of ``h`` on T_GRID, then bisection in ``log t`` (directions whose ray never reaches ``h`` are redrawn)."""
    out = []
    for _ in range(50 * k):
        if len(out) == k:
            break
        v = _ray_direction(rng, fam)
        hs = sweep.entropy(fam, T_GRID[:, None] * v)
        below = np.flatnonzero(hs <= h)
        if not below.size or below[0] == 0:
            continue
        lo, hi = np.log(T_GRID[below[0] - 1]), np.log(T_GRID[below[0]])
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if sweep.entropy(fam, np.exp(mid) * v[None, :])[0] > h else (lo, mid)
        x = np.exp(0.5 * (lo + hi)) * v
        if abs(sweep.entropy(fam, x[None, :])[0] - h) <= SECTIONAL_H_RTOL * h:
            out.append(x)
    return np.array(out)


def _sectional_at_fixed_entropy(ctx):
    r"""Sectional curvature :math:`K(u, v)` (``geometry.sectional_curvature``; the round sphere is positive) of
    ``attention(K)``, ``K`` of shape SECTIONAL_SHAPE, on random planes through points of each fixed entropy.

    Returns the per-level counts of determined signs (converged, relative error estimate below
    SECTIONAL_SIGN_ERROR_MAX), ``sign_changes`` (both signs among the determined planes of one level) and
    the engine's point counts.
    """
    rng = ctx.rng(700)
    fam = geometry.attention(rng.normal(size=SECTIONAL_SHAPE))
    npts = SECTIONAL_POINTS_QUICK if ctx.quick else SECTIONAL_POINTS
    planes = SECTIONAL_PLANES_QUICK if ctx.quick else SECTIONAL_PLANES
    levels, points = [], {}
    for h in SECTIONAL_H_LEVELS:
        x = np.repeat(_points_at_entropy(fam, rng, h, npts), planes, axis=0)
        u, w = rng.normal(size=x.shape), rng.normal(size=x.shape)
        k, info = geometry.sectional_curvature(fam, x, u, w, return_info=True)
        k = np.asarray(k, float)
        det = (np.asarray(info.status) == 0) & (np.asarray(info.error_estimate) < SECTIONAL_SIGN_ERROR_MAX)
        sweep.add_counts(points, info.counts())
        pos, neg = int(np.sum(det & (k > 0))), int(np.sum(det & (k < 0)))
        levels.append(dict(H=h, points=int(len(x) // planes), planes=int(k.size), determined=det.tolist(),
                           n_determined=int(det.sum()), positive=pos, negative=neg, K=k.tolist(),
                           K_min=float(np.min(k[det])) if det.any() else None,
                           K_max=float(np.max(k[det])) if det.any() else None, sign_changes=bool(pos and neg)))
    return dict(family=fam.name, shape=list(SECTIONAL_SHAPE), levels=levels), points


def _same_key_direction(fam, v, angle):
    """``v`` rotated by ``angle`` in a plane through a random direction, keeping the argmax key of every head."""
    keys = [np.asarray(h.keys) for h in fam.heads]
    e = np.eye(fam.dim)[np.argmin(np.abs(v))]
    e = e - (e @ v) * v
    e /= np.linalg.norm(e)
    for a in (angle, -angle, angle / 2, -angle / 2):
        w = np.cos(a) * v + np.sin(a) * e
        if all(np.argmax(k @ w) == np.argmax(k @ v) for k in keys):
            return w
    return None


def _growth(h, d, conv):
    """The distance at the largest and at the smallest entropy where it converged, and the blow-up test."""
    ok = np.flatnonzero(conv & np.isfinite(d))
    out = dict(pairs=int(d.size), converged=int(ok.size), H=h.tolist(), distance=d.tolist())
    if ok.size < 2:
        return dict(out, d_ref=float("nan"), d_far=float("nan"), H_ref=float("nan"), H_far=float("nan"), blow_up=None)
    i, j = ok[0], ok[-1]
    return dict(out, d_ref=float(d[i]), d_far=float(d[j]), H_ref=float(h[i]), H_far=float(h[j]),
                blow_up=verdicts.distances_blow_up(float(d[i]), float(d[j])))


def _geodesic_distances(ctx, rs):
    """True Fisher--Rao distances along each ray: to a point GEODESIC_STEP away, and to a same-key query."""
    want = GEODESIC_FAMILIES_QUICK if ctx.quick else GEODESIC_FAMILIES
    rows, plot = [], []
    for s, v, t in rs:
        if s.name not in want:
            continue
        fam = s.family
        rng = ctx.rng(700 + len(rows))
        u = rng.normal(size=fam.dim)
        u /= np.linalg.norm(u)
        w = _same_key_direction(fam, v, SAME_KEY_ANGLE)
        h_grid = sweep.entropy(fam, T_GRID[:, None] * v)
        targets = np.geomspace(RAY_H_MAX, GEODESIC_H_MIN, GEODESIC_POINTS_QUICK if ctx.quick else GEODESIC_POINTS)
        with np.errstate(divide="ignore"):
            t = np.interp(np.log(targets), np.log(h_grid[::-1]), T_GRID[::-1])
        x = t[:, None] * v
        a = np.concatenate([x, x])
        b = np.concatenate([x + GEODESIC_STEP * u, t[:, None] * (w if w is not None else v)])
        d, info = geometry.geodesic_distance(fam, a, b, return_info=True)
        h = sweep.entropy(fam, x)
        k = len(t)
        conv = info.status == 0
        step, same = _growth(h, d[:k], conv[:k]), _growth(h, d[k:], conv[k:])
        reasons = sorted({r.split(":")[0] for r in info.reasons.values()})
        rows.append(dict(family=s.name, step=step, same_key=same, undefined_reasons=reasons))
        plot.append(dict(label=s.name, H=h, step=d[:k], same_key=d[k:], step_size=GEODESIC_STEP))
    return rows, plot
