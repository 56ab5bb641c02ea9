r"""Precision tiers (layer 8): one contract, so the engine loops over tiers without knowing any.

A tier is a small value with

``name``, ``status``, ``eps``
    what it is called, the status code its accepted points get
    (:data:`FLOAT64` or :data:`HIGH_PRECISION`) and its unit roundoff;
``supports(family) -> bool``
    whether it can evaluate this family at all;
``evaluate(family, rows, rtol, clock, mapper) -> Outcome``
    values for the rows ``(k, dim)`` (numpy float64) with a per-point error
    estimate; ``Outcome.settled`` holds points the tier *decided* cannot be computed
    (undefined with a reason, or the time budget exhausted: ``clock.expired()``).

The engine accepts a point from a tier when its estimate is at most ``rtol`` and
hands the rest to the next tier that supports the family.  Tiers in order:
:class:`Float64` (a route through the mapper), double-double
(:mod:`geometry._src.ddouble`), mpmath (:mod:`geometry._src.highprec`).  A new
tier (a faster high-precision method) is one new module with one such value.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .linalg import EPS, error_estimate
from .routes import CUMULANT, POSTERIORI_MAX_GAIN, gram_batch_ok

FLOAT64, HIGH_PRECISION, UNDEFINED, BUDGET, UNTRUSTED = 0, 1, 2, 3, 4
STATUS_NAMES = {
    FLOAT64: "float64",
    HIGH_PRECISION: "high_precision",
    UNDEFINED: "undefined",
    BUDGET: "not_computed_budget",
    UNTRUSTED: "untrusted",
}


@dataclasses.dataclass
class Outcome:
    """What a tier returns for ``k`` rows: ``value``, ``rel_error`` (``inf``: not trusted),
    ``dps`` (digits marker for ``CurvatureInfo.dps``) and ``settled = {row: (status, reason)}``."""

    value: np.ndarray
    rel_error: np.ndarray
    dps: np.ndarray
    settled: dict = dataclasses.field(default_factory=dict)
    extra: tuple = ()  # further per-point outputs a tier passes to the engine (the float64 definiteness)

    @classmethod
    def empty(cls, k: int):
        return cls(np.full(k, np.nan), np.full(k, np.inf), np.zeros(k, np.int32))


class Clock:
    """The high-precision time budget (``None``: none), shared by the tiers of one call and
    checked by them *within* a point as well as between points."""

    def __init__(self, budget: float | None):
        self.budget = budget
        self.start = time.perf_counter()

    def expired(self) -> bool:
        return self.budget is not None and time.perf_counter() - self.start > self.budget

    def remaining(self) -> float:
        return float("inf") if self.budget is None else self.budget - (time.perf_counter() - self.start)


@dataclasses.dataclass(frozen=True)
class Float64:
    """The float64 tier: a route kernel (:func:`geometry._src.routes.route_kernel`) through the mapper.

    ``extra`` of its outcome is the definiteness screen of the kernel (``1/kappa`` or NaN).
    """

    kernel: object
    chunk: int
    workers: int = 1
    name: str = "float64"
    status: int = FLOAT64
    eps: float = EPS

    def supports(self, family) -> bool:
        return True

    def evaluate(self, family, rows, rtol, clock, mapper, prepare=None, progress=None) -> Outcome:
        prepare = prepare or (lambda block, start: np.asarray(block, np.float64))
        r, est, definite = mapper.map(self.kernel, family, rows, prepare, progress, self.chunk, workers=self.workers)
        with np.errstate(invalid="ignore"):
            est = np.where(np.isfinite(est) & np.isfinite(r), est, np.inf)
        return Outcome(np.asarray(r, np.float64), est, np.zeros(r.shape[0], np.int32), extra=(definite,))


@dataclasses.dataclass(frozen=True)
class Rotated:
    r"""A second float64 opinion for large softmax heads: the same value, a sharper estimate (contract above).

    For the rows the float64 tier could not certify, it evaluates the curvature once more in
    rotated coordinates (:func:`geometry._src.routes.rotated_cumulant`, through the mapper) and
    keeps the float64 value ``R`` (``prior``, passed by the engine) with the estimate

    .. math:: \mathrm{est} = \min\Big(e_0,\; \max\big(\mathrm{err}(\max(|R - R_Q|,\ \varepsilon M (s + 4))),\; e_0/G\big)\Big),

    :math:`e_0` the a-priori estimate of the float64 tier (``prior_error``), ``err`` the one error
    model (:func:`geometry._src.linalg.error_estimate`, with its ``SAFETY`` factor),
    :math:`M = |T|^2 + |\tau|^2`, ``s`` the logit spread and ``G = POSTERIORI_MAX_GAIN``: the
    disagreement of two independent roundings estimates the error, and the cap keeps a point
    whose a-priori bound is far above ``rtol`` from being certified by a chance agreement.  The
    a-priori estimate is a worst case that over-estimated the error observed against the mpmath
    oracle by 1e4 to 1e6 on heads with n = 40-128 keys in m = 8-64 dimensions, sending most real
    attention rows to the slow tiers for nothing; this tier costs one more float64 evaluation
    of those rows only.  Its accepted points are float64 values (status :data:`FLOAT64`).
    """

    kernel: object
    chunk: int
    name: str = "float64, rotated"
    status: int = FLOAT64
    eps: float = EPS
    uses_prior: bool = True

    def supports(self, family) -> bool:
        return gram_batch_ok(family)

    def evaluate(self, family, rows, rtol, clock, mapper, prior=None, prior_error=None) -> Outcome:
        r_q, cancel, spread = (np.asarray(a, np.float64) for a in
                               mapper.map(self.kernel, family, rows, lambda block, start: np.asarray(block, np.float64), None,
                                          self.chunk, workers=CUMULANT.workers(family)))
        r = np.asarray(prior, np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mag = cancel * np.abs(r_q)
            kappa = np.maximum(np.abs(r - r_q) / (EPS * mag), spread + 4.0)
            post = np.maximum(error_estimate(cancel, kappa), prior_error / POSTERIORI_MAX_GAIN)
            est = np.minimum(prior_error, np.where(np.isfinite(post) & (post >= 0), post, np.inf))
        return Outcome(r, np.where(np.isfinite(r), est, np.inf), np.zeros(r.shape[0], np.int32))
