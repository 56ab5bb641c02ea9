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

from .linalg import EPS

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
    name: str = "float64"
    status: int = FLOAT64
    eps: float = EPS

    def supports(self, family) -> bool:
        return True

    def evaluate(self, family, rows, rtol, clock, mapper, prepare=None, progress=None) -> Outcome:
        prepare = prepare or (lambda block, start: np.asarray(block, np.float64))
        r, est, definite = mapper.map(self.kernel, family, rows, prepare, progress, self.chunk)
        with np.errstate(invalid="ignore"):
            est = np.where(np.isfinite(est) & np.isfinite(r), est, np.inf)
        return Outcome(np.asarray(r, np.float64), est, np.zeros(r.shape[0], np.int32), extra=(definite,))
