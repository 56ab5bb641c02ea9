"""Small statistics used by the fix experiment: expected calibration error and t-intervals over seeds."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

#: Number of equal-width confidence bins of the expected calibration error.
ECE_BINS = 15


def expected_calibration_error(probs, targets, n_bins: int = ECE_BINS) -> float:
    r"""ECE of the top-1 prediction with equal-width confidence bins.

    .. math:: \mathrm{ECE} = \sum_b \frac{|B_b|}{N}\,\bigl|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\bigr|

    (Guo, Pleiss, Sun & Weinberger 2017, "On calibration of modern neural
    networks", eq. 3).  ``probs`` is ``(N, K)`` (rows sum to 1), ``targets`` ``(N,)``.
    """
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2 or targets.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, K) and targets (N,), got {probs.shape} and {targets.shape}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def mean_ci(x, level: float = 0.95):
    """``(mean, low, high)`` of the Student-t interval for the mean of ``x`` (NaN bounds for one value)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x must be a non-empty 1-d array of per-seed values, got shape {x.shape}")
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    half = float(_st.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half
