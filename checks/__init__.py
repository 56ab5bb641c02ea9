"""Checks of the 'attention curvature law' claims: registry, sweeps, report.

Run ``python -m checks`` (see ``python -m checks --help``).  Add a family to every
sweep-based check with :func:`register_family`; add a check with :func:`register`.
"""

from ._src.registry import (
    FAILS as FAILS,
    HOLDS as HOLDS,
    PARTIAL as PARTIAL,
    UNDEFINED as UNDEFINED,
    Check as Check,
    Context as Context,
    Result as Result,
    Threshold as Threshold,
    all_checks as all_checks,
    register as register,
)
from ._src.report import run_checks as run_checks
from ._src.sweep import (
    register_family as register_family,
    unregister_family as unregister_family,
    user_families as user_families,
)

__all__ = [
    "FAILS", "HOLDS", "PARTIAL", "UNDEFINED", "Check", "Context", "Result", "Threshold", "all_checks",
    "register", "register_family", "run_checks", "unregister_family", "user_families",
]
