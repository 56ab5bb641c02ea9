"""Fisher geometry of probability families: metrics and curvature, correct at any entropy.

Conventions (sign, indices, units) are stated once in :mod:`geometry._src.tensors`:
the round sphere has positive scalar curvature; derivative indices come last;
``christoffel[..., k, i, j] = Gamma^k_ij``; entropies are in nats.
"""

from ._src import mathns as _mathns  # enables float64 before anything else touches JAX
from ._src.api import (
    CurvatureInfo as CurvatureInfo,
    STATUS_NAMES as STATUS_NAMES,
    UndefinedCurvatureWarning as UndefinedCurvatureWarning,
    christoffel as christoffel,
    entropy as entropy,
    fisher_metric as fisher_metric,
    ricci as ricci,
    riemann as riemann,
    scalar_curvature as scalar_curvature,
    scalar_curvature_mp as scalar_curvature_mp,
)
from ._src.families import (
    DensityFamily as DensityFamily,
    DiscreteFamily as DiscreteFamily,
    ExponentialFamily as ExponentialFamily,
    Family as Family,
    Head as Head,
    SoftmaxLinear as SoftmaxLinear,
    attention as attention,
    categorical as categorical,
    density_family as density_family,
    discrete_family as discrete_family,
    exponential_family as exponential_family,
    gaussian as gaussian,
    multihead_attention as multihead_attention,
    project_keys as project_keys,
    RegressionFamily as RegressionFamily,
    regression_family as regression_family,
)
from ._src.geodesics import (
    GeodesicInfo as GeodesicInfo,
    UndefinedGeodesicWarning as UndefinedGeodesicWarning,
    exp_map as exp_map,
    geodesic as geodesic,
    geodesic_distance as geodesic_distance,
    log_map as log_map,
    sectional_curvature as sectional_curvature,
)
from ._src.mathns import JAX as JAX, MPMATH as MPMATH, SYMPY as SYMPY
from ._src.sweep import SweepOutput as SweepOutput, SweepStats as SweepStats, open_sweep as open_sweep, sweep as sweep

__all__ = [
    "CurvatureInfo", "DensityFamily", "DiscreteFamily", "RegressionFamily", "ExponentialFamily", "Family", "Head", "SoftmaxLinear", "JAX", "MPMATH", "STATUS_NAMES", "SYMPY", "UndefinedCurvatureWarning",
    "attention", "categorical", "christoffel", "density_family", "discrete_family", "entropy", "exponential_family",
    "fisher_metric", "gaussian", "multihead_attention", "project_keys", "regression_family", "ricci", "riemann",
    "scalar_curvature", "scalar_curvature_mp", "SweepOutput", "SweepStats", "open_sweep", "sweep",
    "GeodesicInfo", "UndefinedGeodesicWarning", "exp_map", "geodesic", "geodesic_distance", "log_map", "sectional_curvature",
]
