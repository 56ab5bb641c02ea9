r"""The analysis plan of the fix experiment, fixed in code before any run.

Effect.  For an arm ``a`` (a reading of the schedule, or the curvature penalty) and
a metric ``f`` the effect of seed ``s`` is the paired difference

.. math:: d_s = f(\text{arm } a, s) - f(\text{baseline}, s),

the two runs sharing the initial parameters, every training batch and the
evaluation sequences.  The estimate is :math:`\bar d` with the Student-t interval
:math:`\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt n` over the ``n`` seeds
(:func:`.stats.mean_ci`); its half-width is :func:`half_width`.

Decision rule (:func:`classify`), per (optimizer, arm), for a claimed direction
(``+1``: the claim is that ``f`` goes up) and a claimed or minimally relevant size
``m``:

* ``rejects``      -- the interval lies entirely below ``m`` (in the claimed direction):
  an effect of the claimed size is excluded;
* ``supports``     -- otherwise, if the interval excludes 0 in the claimed direction;
* ``inconclusive`` -- neither.

Verdict of a check (:func:`combine`) over the combinations it judges: ``holds``
when every combination supports the claim, ``partial`` when some but not all do,
``fails`` when none does and at least one met its power target, ``undefined``
only when nothing could be decided (no combination has a finite interval, or none
met its power target and none was decided).

Power (:data:`POWER_TARGETS`).  The default run is sized so that the half-width
of the OOD-accuracy effect is at most 0.01 and that of the OOD ECE effect at most
0.005, so that the claimed +0.02 OOD gain is either confirmed or excluded, and an
ECE reduction of 0.005 likewise.  Before the main runs a pilot on separate seeds
measures the standard deviation of every paired effect; :func:`power_lines` turns
its upper confidence limit (:data:`PLANNING_CONFIDENCE`) into the number of seeds
each target needs (:func:`seeds_needed`), and :func:`plan_seeds` gives every
optimizer the seeds its arms need, between the configuration's minimum and
maximum.  A configuration that cannot reach a target within its maximum is
reported before training, with the seeds it would need (:class:`UnderpoweredError`
when the configuration asks to be strict); after the runs the achieved half-widths
are printed next to the targets, and a miss is stated in the verdict's summary.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as _st

from ..registry import FAILS, HOLDS, PARTIAL, UNDEFINED

CI_LEVEL = 0.95
#: Largest acceptable 95 % half-width of the paired effect, per metric (default run).
POWER_TARGETS = {"ood_acc": 0.01, "ood_ece": 0.005}
#: The post's promised out-of-distribution accuracy gain ("~2 %").
OOD_GAIN_CLAIMED = 0.02
#: Smallest ECE reduction that counts as "better calibration" (absolute, on [0, 1]).
ECE_GAIN_RELEVANT = 0.005
#: Smallest final attention-entropy gain (nats) of the sharpest head that counts as "keeping entropy up".
ENTROPY_GAIN_RELEVANT = 0.05
#: The pilot's standard deviation is replaced by its one-sided upper confidence limit at this level before
#: the seeds are planned (Browne 1995, "On the use of a pilot sample for sample size determination"): a
#: pilot of 16 seeds underestimates the standard deviation by 20 % or more one time in five.
PLANNING_CONFIDENCE = 0.8
#: A seed has learned the ID task when its ID accuracy closes at least this fraction of the gap from
#: chance (1 / n_content) to the Bayes-optimal accuracy on the same sequences.
LEARNED_FRACTION = 0.9

SUPPORTS, REJECTS, INCONCLUSIVE = "supports", "rejects", "inconclusive"


class UnderpoweredError(ValueError):
    """The configured number of seeds cannot reach a power target for the pilot's measured variance."""


def _t(n: int, level: float = CI_LEVEL) -> float:
    return float(_st.t.ppf(0.5 + level / 2, n - 1))


def half_width(sd: float, n: int, level: float = CI_LEVEL) -> float:
    r"""Half-width :math:`t_{(1+\mathrm{level})/2,\,n-1}\, s / \sqrt n` of the interval for a mean of ``n`` values."""
    if n < 2:
        return math.inf
    return _t(n, level) * sd / math.sqrt(n)


def seeds_needed(sd: float, target: float, level: float = CI_LEVEL, n_max: int = 1_000_000) -> int:
    """Smallest ``n >= 2`` with ``half_width(sd, n) <= target`` (``n_max + 1`` if none up to ``n_max``)."""
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target half-width must be finite and > 0, got {target!r}")
    if not math.isfinite(sd):
        return n_max + 1
    if sd == 0:
        return 2
    lo = max(2, int(math.floor((1.959963984540054 * sd / target) ** 2)))  # t >= z: the answer is >= this
    if half_width(sd, lo, level) <= target:
        return lo
    hi = lo
    while half_width(sd, hi, level) > target:
        if hi > n_max:
            return n_max + 1
        hi *= 2
    while hi - lo > 1:  # half_width decreases in n
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if half_width(sd, mid, level) <= target else (mid, hi)
    return hi


def planning_sd(sd: float, n_pilot: int, confidence: float = PLANNING_CONFIDENCE) -> float:
    r"""One-sided upper confidence limit of a standard deviation from ``n_pilot`` values:
    :math:`s\,\sqrt{(n-1)/\chi^2_{1-c,\,n-1}}`."""
    if n_pilot < 2 or not math.isfinite(sd):
        return math.inf
    return sd * math.sqrt((n_pilot - 1) / float(_st.chi2.ppf(1 - confidence, n_pilot - 1)))


@dataclasses.dataclass(frozen=True)
class PowerLine:
    """The power plan of one (optimizer, arm, metric): what the pilot measured and what it needs."""

    optimizer: str
    arm: str
    metric: str
    target: float
    pilot_sd: float
    pilot_seeds: int
    planning_sd: float
    seeds_needed: int  # smallest n whose half-width with the planning sd is <= target

    def predicted_half_width(self, n: int) -> float:
        return half_width(self.pilot_sd, n)

    def describe(self, n: int | None = None) -> str:
        text = (f"{self.optimizer}/{self.arm} {self.metric}: pilot sd {self.pilot_sd:.3g} over {self.pilot_seeds} "
                f"seeds (planning sd {self.planning_sd:.3g}) needs {self.seeds_needed} seeds for half-width <= "
                f"{self.target:g}")
        if n is not None:
            text += f"; {n} seeds predict {self.predicted_half_width(n):.3g}"
        return text


def power_lines(pilot_diffs: dict, targets: dict = POWER_TARGETS) -> list:
    """``pilot_diffs[(optimizer, arm, metric)]``: the pilot's per-seed paired effects; one line per key with a target."""
    lines = []
    for (opt, arm, metric), d in pilot_diffs.items():
        if metric not in targets:
            continue
        d = np.asarray(d, np.float64)
        sd = float(np.std(d, ddof=1)) if d.size >= 2 and np.all(np.isfinite(d)) else math.inf
        psd = planning_sd(sd, int(d.size))
        lines.append(PowerLine(opt, arm, metric, targets[metric], sd, int(d.size), psd,
                               seeds_needed(psd, targets[metric])))
    return lines


def plan_seeds(lines, n_min: int, n_max: int, step: int = 1) -> dict:
    """Seeds per optimizer: the most any of its lines needs, rounded up to a multiple of ``step`` and clipped
    to ``[n_min, n_max]``; ``{optimizer: (n, needed)}``."""
    if not 2 <= n_min <= n_max:
        raise ValueError(f"need 2 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    out = {}
    for opt in dict.fromkeys(ln.optimizer for ln in lines):
        need = max(ln.seeds_needed for ln in lines if ln.optimizer == opt)
        n = min(n_max, max(n_min, -(-need // step) * step))
        out[opt] = (n, need)
    return out


def check_plan(lines, seeds: dict, strict: bool) -> list:
    """The lines whose optimizer's planned seeds (``seeds[opt] = (n, needed)``) miss their need; raises
    :class:`UnderpoweredError` naming them and the seeds they need when ``strict``."""
    missed = [ln for ln in lines if seeds[ln.optimizer][0] < ln.seeds_needed]
    if missed and strict:
        need = max(ln.seeds_needed for ln in missed)
        raise UnderpoweredError(
            "the configured seeds cannot reach the power target: "
            + "; ".join(ln.describe(seeds[ln.optimizer][0]) for ln in missed)
            + f". Use at least {need} seeds per arm (or accept a provisional, underpowered run)."
        )
    return missed


def classify(low: float, high: float, claimed_min: float, direction: int = +1) -> str:
    """Classify a CI ``[low, high]`` of an effect whose claimed sign is ``direction`` (+1 up, -1 down).

    ``rejects`` if the interval lies entirely below ``claimed_min`` (in the claimed
    direction), else ``supports`` if it excludes 0, else ``inconclusive``.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    lo, hi = (low, high) if direction > 0 else (-high, -low)
    if hi < claimed_min:
        return REJECTS
    if lo > 0:
        return SUPPORTS
    return INCONCLUSIVE


def combine(classes: dict, powered: dict | None = None) -> str:
    """The check's verdict from ``classes[combination]`` and ``powered[combination]``: whether that
    combination's interval is finite and met its power target (missing: not powered)."""
    vals = list(classes.values())
    if not vals:
        return UNDEFINED
    if all(v == SUPPORTS for v in vals):
        return HOLDS
    if any(v == SUPPORTS for v in vals):
        return PARTIAL
    powered = powered or {}
    decided = [k for k, v in classes.items() if v == REJECTS]
    if decided or any(powered.get(k, False) for k in classes):
        return FAILS
    return UNDEFINED
