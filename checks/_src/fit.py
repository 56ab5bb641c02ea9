r"""Fitting R against H: linear fits, a model-free dependence test and a certificate.

Everything here is a pure function of arrays (no geometry), so the verdict logic
built on it can be tested on synthetic data where the answer is known.

The claim under test is :math:`R = C(\alpha - H)` with :math:`C, \alpha > 0`.
Writing :math:`R = a + bH` gives :math:`C = -b`, :math:`\alpha = -a/b`.

* :func:`linear_fit`: ordinary least squares (:math:`R^2`, residual spread) and
  the Theil--Sen median-of-slopes estimator with its 95% confidence interval
  (Sen 1968, JASA 63:1379; ``scipy.stats.theilslopes``), robust to the heavy
  tails of R near low entropy.
* :func:`dependence`: how much of R is a function of H *at all*, without
  assuming linearity: the correlation ratio
  :math:`\eta^2 = 1 - E[\operatorname{Var}(R\mid H\text{-bin})]/\operatorname{Var}(R)`
  over equal-count bins of H (Pearson 1905; Fisher's "correlation ratio"),
  computed on the ranks of R so that a few huge values cannot decide it.
  If R = f(H) for any monotone or smooth f, :math:`\eta^2 \to 1` as bins shrink.
* :func:`certificate`: the pair of points with nearly equal H and the most
  different R -- a direct witness that R is not a function of H.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.stats

#: Theil--Sen costs O(N^2) memory; larger samples are subsampled (seeded) to this size.
THEILSEN_MAX_POINTS = 1500
#: Equal-count bins of H for the correlation ratio.
DEPENDENCE_BINS = 20
#: R is "constant" when its spread is below this fraction of its magnitude (C = 0 exactly).
CONSTANT_RTOL = 1e-7


@dataclasses.dataclass(frozen=True)
class LinearFit:
    n: int
    intercept: float  # a in R = a + b H (OLS)
    slope: float  # b (OLS)
    r2: float  # OLS coefficient of determination (1.0 when R is constant)
    resid_std: float  # standard deviation of OLS residuals
    r_std: float  # standard deviation of R
    ts_slope: float  # Theil-Sen slope
    ts_intercept: float
    ts_slope_low: float  # 95% confidence interval of the Theil-Sen slope
    ts_slope_high: float
    constant: bool  # R constant to CONSTANT_RTOL: slope exactly 0

    @property
    def C(self) -> float:
        """:math:`C = -b` (OLS)."""
        return -self.slope

    @property
    def alpha(self) -> float:
        """:math:`\\alpha = -a/b` (OLS); NaN when the slope is zero."""
        return -self.intercept / self.slope if self.slope != 0 else float("nan")

    @property
    def C_ts(self) -> float:
        return -self.ts_slope

    @property
    def alpha_ts(self) -> float:
        return -self.ts_intercept / self.ts_slope if self.ts_slope != 0 else float("nan")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(C=self.C, alpha=self.alpha, C_theil_sen=self.C_ts, alpha_theil_sen=self.alpha_ts)
        return d


def _finite_pairs(h, r):
    h = np.asarray(h, np.float64).ravel()
    r = np.asarray(r, np.float64).ravel()
    if h.shape != r.shape:
        raise ValueError(f"H and R must have the same number of points, got {h.size} and {r.size}")
    ok = np.isfinite(h) & np.isfinite(r)
    return h[ok], r[ok]


def linear_fit(h, r, seed: int = 0) -> LinearFit:
    """OLS and Theil--Sen fits of ``R = a + b H`` on the finite pairs of ``(h, r)``."""
    h, r = _finite_pairs(h, r)
    if h.size < 3:
        raise ValueError(f"need at least 3 finite (H, R) points to fit a line, got {h.size}")
    if np.ptp(h) == 0:
        raise ValueError("H takes a single value: a slope dR/dH cannot be fitted; sample a range of entropies")
    scale = max(np.max(np.abs(r)), np.finfo(float).tiny)
    r_std = float(np.std(r))
    if np.ptp(r) <= CONSTANT_RTOL * scale:
        a = float(np.mean(r))
        return LinearFit(h.size, a, 0.0, 1.0, r_std, r_std, 0.0, a, 0.0, 0.0, True)
    b, a = np.polyfit(h, r, 1)
    resid = r - (a + b * h)
    r2 = 1.0 - float(np.sum(resid**2) / np.sum((r - r.mean()) ** 2))
    hs, rs = h, r
    if h.size > THEILSEN_MAX_POINTS:
        idx = np.random.default_rng(seed).choice(h.size, THEILSEN_MAX_POINTS, replace=False)
        hs, rs = h[idx], r[idx]
    ts = scipy.stats.theilslopes(rs, hs, alpha=0.95)
    return LinearFit(
        h.size, float(a), float(b), r2, float(np.std(resid)), r_std,
        float(ts.slope), float(ts.intercept), float(ts.low_slope), float(ts.high_slope), False,
    )


def dependence(h, r, bins: int = DEPENDENCE_BINS) -> float:
    r"""Correlation ratio :math:`\eta^2` of rank(R) on equal-count bins of H, in [0, 1].

    1 means R is (up to the bin width) a function of H; 0 means knowing H tells
    nothing about R.  A constant R is a function of H: returns 1.
    """
    h, r = _finite_pairs(h, r)
    if h.size < 2 * bins:
        raise ValueError(f"need at least 2*bins = {2 * bins} finite points for the dependence test, got {h.size}")
    if np.ptp(r) <= CONSTANT_RTOL * max(np.max(np.abs(r)), np.finfo(float).tiny):
        return 1.0
    y = scipy.stats.rankdata(r)
    order = np.argsort(h, kind="stable")
    groups = np.array_split(y[order], bins)
    within = sum(float(np.sum((g - g.mean()) ** 2)) for g in groups)
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - within / total


@dataclasses.dataclass(frozen=True)
class Certificate:
    """Two points with ``|H1 - H2| <= dh`` and the largest ``|R1 - R2|`` among such pairs."""

    h1: float
    h2: float
    r1: float
    r2: float
    dh_tol: float

    @property
    def dr(self) -> float:
        return abs(self.r1 - self.r2)

    def as_dict(self) -> dict:
        return dict(H1=self.h1, H2=self.h2, R1=self.r1, R2=self.r2, dH=abs(self.h1 - self.h2), dR=self.dr, dH_tol=self.dh_tol)


def certificate(h, r, rel_dh: float = 1e-3, window: int = 8) -> Certificate | None:
    """Nearly-equal-entropy pair with the most different curvature.

    Candidates are pairs within ``window`` places of each other in H order with
    ``|dH| <= rel_dh * (max H - min H)``.  ``None`` if there is no candidate.
    """
    h, r = _finite_pairs(h, r)
    if h.size < 2:
        return None
    order = np.argsort(h, kind="stable")
    hs, rs = h[order], r[order]
    tol = rel_dh * float(np.ptp(hs))
    best, best_dr = None, -1.0
    for k in range(1, min(window, hs.size - 1) + 1):
        dh = hs[k:] - hs[:-k]
        dr = np.abs(rs[k:] - rs[:-k])
        dr = np.where(dh <= tol, dr, -1.0)
        i = int(np.argmax(dr))
        if dr[i] > best_dr:
            best_dr, best = dr[i], (i, i + k)
    if best is None or best_dr < 0:
        return None
    i, j = best
    return Certificate(float(hs[i]), float(hs[j]), float(rs[i]), float(rs[j]), tol)
