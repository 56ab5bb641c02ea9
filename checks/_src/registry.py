"""The checks registry: every claim of the post is one :class:`Check` with an id.

A check is a function ``run(ctx: Context) -> Result``.  It measures, compares the
measurement with thresholds that are fixed in code *before* the measurement
(named, with their values, and printed in the report next to the measured
value), and returns a verdict.  Register with :func:`register`; modules holding
checks are listed in :mod:`checks._src.catalog`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from . import post, sentence

HOLDS, FAILS, PARTIAL, UNDEFINED = "holds", "fails", "partial", "undefined"
VERDICTS = (HOLDS, FAILS, PARTIAL, UNDEFINED)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A pre-registered decision threshold: ``name`` compared with a measurement by ``rule``."""

    name: str
    value: float
    rule: str  # human-readable, e.g. "holds if R^2 >= value"


@dataclasses.dataclass
class Result:
    verdict: str
    thresholds: list  # list[Threshold]
    measurements: dict  # JSON-serialisable numbers/lists/strings
    figures: list = dataclasses.field(default_factory=list)  # file names relative to the output dir
    points: dict = dataclasses.field(default_factory=dict)  # {"total","float64","high_precision","undefined",...}
    summary: str = ""  # one or two sentences: what decided the verdict, with the numbers

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclasses.dataclass
class Context:
    """What a check gets: the seed, the mode, where to write figures, and a progress factory."""

    seed: int
    quick: bool
    out_dir: str
    progress: Callable[..., Any] | None = None  # progress(total=..., desc=...) -> tqdm-like

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator that depends only on (seed, salt): reproducible and independent per use."""
        return np.random.default_rng([self.seed, salt])

    def figure_path(self, name: str) -> str:
        os.makedirs(self.out_dir, exist_ok=True)
        return os.path.join(self.out_dir, name)

    def bar(self, total: int, desc: str):
        if self.progress is None:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, leave=False, disable=None)
        return self.progress(total=total, desc=desc)


@dataclasses.dataclass(frozen=True)
class Check:
    """A registered check.

    ``claim``: what is tested, in one line.  ``quote``: the post's own words for it, word for
    word from :data:`checks._src.post.TEXT` (passages may be joined by " … "); ``None`` for a
    check of the toolkit itself, which the report lists apart from the post's claims.
    ``measured``: a one-line template of what was measured, filled in from the returned
    measurements and thresholds (syntax: :mod:`checks._src.sentence`); without it the report
    uses the first sentence of the summary.
    """

    id: str
    claim: str
    run: Callable[[Context], Result]
    order: int = 100
    quote: str | None = None
    measured: str | None = None

    def __post_init__(self):
        if self.quote is not None:
            missing = post.missing_passages(self.quote)
            if missing or not self.quote.strip():
                raise ValueError(f"check {self.id!r}: quote must be the post's words verbatim; not in the post: {missing}")
        if self.measured is not None:
            sentence.check_syntax(self.measured)


REGISTRY: dict[str, Check] = {}


def register(id: str, claim: str, order: int = 100, quote: str | None = None, measured: str | None = None):
    """Decorator: ``@register("linear-law", "R(d) = C (alpha - H) ...")`` on ``run(ctx) -> Result``.

    ``quote`` and ``measured``: see :class:`Check` (both optional, checked here).
    """

    def deco(fn):
        if id in REGISTRY:
            raise ValueError(f"check id {id!r} registered twice")
        REGISTRY[id] = Check(id=id, claim=claim, run=fn, order=order, quote=quote, measured=measured)
        return fn

    return deco


def all_checks() -> list[Check]:
    from . import catalog  # noqa: F401  (imports every module that registers checks)

    return sorted(REGISTRY.values(), key=lambda c: (c.order, c.id))
