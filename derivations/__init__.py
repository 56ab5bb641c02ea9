"""Exact Fisher geometry with sympy, from the same family definitions as :mod:`geometry`.

``python -m derivations [--out DIR]`` runs every derivation and writes one Markdown
document each plus ``index.md`` (default ``report/derivations/``).

Conventions (indices, signs) are those of :mod:`geometry._src.tensors`; the
symbolic tensors live in :mod:`derivations._src.tensors`, the exact formulations of
the families in :mod:`derivations._src.formulate`.
"""

import numpy as np

import geometry as _geometry

from ._src.algebra import Algebra as Algebra, ExprAlgebra as ExprAlgebra, RationalAlgebra as RationalAlgebra
from ._src.formulate import Formulation as Formulation, exact_rational as exact_rational, formulate as formulate
from ._src.report import (
    math_delimiters_balanced as math_delimiters_balanced,
    render as render,
    write_documents as write_documents,
)
from ._src.tensors import (
    Curvature as Curvature,
    christoffel as christoffel,
    curvature as curvature,
    hessian_scalar as hessian_scalar,
    inverse as inverse,
    ricci as ricci,
    riemann as riemann,
    scalar as scalar,
)
from ._src.theorems import (
    DERIVATIONS as DERIVATIONS,
    NUMERIC_POINTS as NUMERIC_POINTS,
    NUMERIC_RTOL as NUMERIC_RTOL,
    Derivation as Derivation,
    run_all as run_all,
    where_lemma_fails as where_lemma_fails,
)

#: Arbitrary-precision (mpmath) scalar curvature at one point, ``dps`` digits: the evaluator of
#: ``geometry/_src/highprec.py`` (the high-precision fallback of ``geometry.scalar_curvature``),
#: re-exported so that there is exactly one implementation.
mp_scalar_curvature = _geometry.scalar_curvature_mp


def mp_metric(family, x, dps: int = 50):
    """Fisher metric at ``x`` as an ``mpmath.matrix`` with ``dps`` digits, from the exact symbolic form."""
    from geometry._src.engine import as_rows, block_checker, check_family

    fam = check_family(family)
    rows, _ = as_rows(fam, x, name="x")
    flat = block_checker(fam, name="x")(rows, 0)
    if flat.shape[0] != 1:
        raise ValueError(f"x must be one point of shape ({family.dim},), got shape {np.shape(x)}")
    if isinstance(dps, bool) or not isinstance(dps, (int, np.integer)) or dps < 10:
        raise ValueError(f"dps must be an integer >= 10 (decimal digits), got {dps!r}")
    return formulate(family).metric_mp(flat[0].tolist(), int(dps))


__all__ = [
    "Algebra", "Curvature", "DERIVATIONS", "Derivation", "ExprAlgebra", "Formulation", "NUMERIC_POINTS", "NUMERIC_RTOL",
    "RationalAlgebra", "christoffel", "curvature", "exact_rational", "formulate", "hessian_scalar", "inverse",
    "math_delimiters_balanced", "mp_metric", "mp_scalar_curvature", "render", "ricci", "riemann", "run_all", "scalar",
    "where_lemma_fails", "write_documents",
]
