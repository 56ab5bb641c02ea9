"""Verdict logic: pure functions of measurements and named thresholds.

Every threshold that decides a verdict is a module-level constant here, defined
before any measurement; the checks print each one next to the value it was
compared with.  Tests feed synthetic measurements through these functions.
"""

from __future__ import annotations

import math

import numpy as np

from .fit import LinearFit
from .registry import FAILS, HOLDS, PARTIAL, UNDEFINED, Threshold

# --- linear-law (per family): R = C (alpha - H) -----------------------------------------
#: The line must explain at least this fraction of the variance of R.
LAW_R2_MIN = 0.95
#: R must be (nearly) a function of H at all: correlation ratio of rank(R) on H-bins.
LAW_DEPENDENCE_MIN = 0.90
#: C > 0 must be significant: the upper end of the 95% Theil-Sen slope interval must be < this.
LAW_SLOPE_HIGH_MAX = 0.0
#: alpha = -a/b must be positive.
LAW_ALPHA_MIN = 0.0

# --- decreasing-in-entropy --------------------------------------------------------------
#: dR/dH counts as negative on a step only below -DRDH_FLAT_RTOL * (|R| scale) (flat = 0 is not < 0).
DRDH_FLAT_RTOL = 1e-6
#: a path "holds" when dR/dH < 0 on at least this fraction of its steps.
PATH_NEGATIVE_MIN = 0.99

# --- low-entropy-limit ------------------------------------------------------------------
#: |R| ~ H^k: the limit is finite when |k| <= this.
GROWTH_EXPONENT_MAX = 0.05
#: the claim is R -> C alpha > 0: the limit must be positive.

# --- high-entropy-negative --------------------------------------------------------------
#: in the top entropy decile, at least this fraction of points must have R < 0.
TOP_DECILE_NEGATIVE_MIN = 0.90

# --- distances-blow-up ------------------------------------------------------------------
#: the distance from a reference point to the ray's far end must grow by this factor from
#: H = 1e-3 down to the smallest H for "blow up".
DISTANCE_GROWTH_MIN = 10.0
#: Fisher-Rao diameter of the probability simplex (sqrt-embedding on the sphere of radius 2).
SIMPLEX_DIAMETER = math.pi

# --- temperature-invariance / metric-is-fisher -------------------------------------------
#: relative agreement required for an identity between two computations (rtol 1e-8 each).
IDENTITY_RTOL = 1e-7


def aggregate(n_hold: int, n_total: int) -> str:
    """``holds`` if every case holds, ``fails`` if none, ``partial`` otherwise; ``undefined`` if no case."""
    if n_total == 0:
        return UNDEFINED
    if n_hold == n_total:
        return HOLDS
    if n_hold == 0:
        return FAILS
    return PARTIAL


def law_thresholds() -> list:
    return [
        Threshold("LAW_R2_MIN", LAW_R2_MIN, "per family: holds only if OLS R^2 >= value"),
        Threshold("LAW_DEPENDENCE_MIN", LAW_DEPENDENCE_MIN, "per family: holds only if eta^2(rank R | H bins) >= value"),
        Threshold("LAW_SLOPE_HIGH_MAX", LAW_SLOPE_HIGH_MAX, "per family: holds only if upper 95% Theil-Sen slope < value (C > 0 significant)"),
        Threshold("LAW_ALPHA_MIN", LAW_ALPHA_MIN, "per family: holds only if alpha = -a/b > value"),
    ]


def law_family(fit: LinearFit, eta2: float) -> tuple[bool, list[str]]:
    """Does one family follow ``R = C (alpha - H)`` with ``C, alpha > 0``?  Returns (holds, failed reasons)."""
    why = []
    if fit.constant:
        why.append(f"R is constant ({fit.intercept:.6g}): C = 0")
    if not fit.r2 >= LAW_R2_MIN or fit.constant:
        why.append(f"R^2 = {fit.r2:.4f} (LAW_R2_MIN = {LAW_R2_MIN})" if not fit.constant else "R^2 meaningless for constant R")
    if not eta2 >= LAW_DEPENDENCE_MIN:
        why.append(f"eta^2 = {eta2:.4f} < LAW_DEPENDENCE_MIN = {LAW_DEPENDENCE_MIN}: R is not a function of H")
    if not fit.ts_slope_high < LAW_SLOPE_HIGH_MAX:
        why.append(f"Theil-Sen slope interval upper end {fit.ts_slope_high:.4g} >= {LAW_SLOPE_HIGH_MAX}: C > 0 not established")
    if not (fit.slope != 0 and fit.alpha > LAW_ALPHA_MIN):
        why.append(f"alpha = {fit.alpha:.4g} not > {LAW_ALPHA_MIN}")
    return (not why), why


def finite_pairs(h, r):
    """The ``(H, R)`` pairs where both are finite, as float arrays (NaN marks a point not computed)."""
    h = np.asarray(h, float)
    r = np.asarray(r, float)
    ok = np.isfinite(h) & np.isfinite(r)
    return h[ok], r[ok]


def path_decreasing(h, r) -> tuple[float, bool]:
    """Fraction of steps of a path (sorted by H) on which dR/dH < 0, and whether the path holds.

    A step is negative when ``Delta R / Delta H < 0`` and ``|Delta R| > DRDH_FLAT_RTOL * max|R|``
    (a constant R, dR/dH = 0, is *not* decreasing).
    """
    h, r = finite_pairs(h, r)
    if h.size < 2:
        return float("nan"), False
    order = np.argsort(h, kind="stable")
    h, r = h[order], r[order]
    dh, dr = np.diff(h), np.diff(r)
    use = dh > 0
    if not use.any():
        return float("nan"), False
    scale = max(float(np.max(np.abs(r))), np.finfo(float).tiny)
    neg = (dr[use] < -DRDH_FLAT_RTOL * scale)
    frac = float(np.mean(neg))
    return frac, frac >= PATH_NEGATIVE_MIN


def growth_exponent(h, r) -> float:
    """Least-squares slope k of ``log|R|`` against ``log H`` (``|R| ~ H^k``)."""
    h = np.asarray(h, float)
    r = np.asarray(r, float)
    ok = np.isfinite(h) & np.isfinite(r) & (h > 0) & (r != 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(h[ok]), np.log(np.abs(r[ok])), 1)[0])


def limit_family(exponent: float, r_last: float) -> tuple[bool, list[str]]:
    """The claimed limit: finite (|k| <= GROWTH_EXPONENT_MAX) and positive."""
    why = []
    if not abs(exponent) <= GROWTH_EXPONENT_MAX:
        why.append(f"|R| ~ H^{exponent:.3f}: |exponent| > GROWTH_EXPONENT_MAX = {GROWTH_EXPONENT_MAX} (R diverges)")
    if not r_last > 0:
        why.append(f"R at the smallest H is {r_last:.4g} <= 0 (claimed C alpha > 0)")
    return (not why), why


def top_decile_negative(h, r) -> tuple[float, bool]:
    """Fraction of points with R < 0 among the top 10% entropies, and whether it reaches the threshold."""
    h, r = finite_pairs(h, r)
    if h.size < 10:
        return float("nan"), False
    cut = np.quantile(h, 0.9)
    frac = float(np.mean(r[h >= cut] < 0))
    return frac, frac >= TOP_DECILE_NEGATIVE_MIN


def distances_blow_up(d_ref: float, d_far: float) -> bool:
    """Blow-up: the distance grows by DISTANCE_GROWTH_MIN between the reference and the far end."""
    return bool(d_far >= DISTANCE_GROWTH_MIN * d_ref)


def identity_holds(rel_err: float) -> bool:
    return bool(rel_err <= IDENTITY_RTOL)
