"""Public functions (layer 10): thin compositions of the engine with a route, tiers and a mapper.

Each function validates nothing itself: :mod:`geometry._src.engine` does, in one place.
Conventions (signs, index order) are stated once in :mod:`geometry._src.tensors`.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from . import engine, fisher, highprec, routes, tensors
from .engine import DEFAULT_RTOL, CurvatureInfo, UndefinedCurvatureWarning, check_family, tracing
from .families import Family
from .tiers import STATUS_NAMES

__all__ = [
    "CurvatureInfo", "DEFAULT_RTOL", "STATUS_NAMES", "UndefinedCurvatureWarning", "christoffel", "entropy",
    "fisher_metric", "ricci", "riemann", "scalar_curvature", "scalar_curvature_mp",
]


def _metric_kernel(method):
    def kernel(family, theta):
        return fisher.metric(family, theta, method)

    kernel.__name__ = f"metric_{method}"
    return kernel


_METRIC_KERNELS = {m: _metric_kernel(m) for m in fisher.METHODS if m is not None} | {None: engine.metric_kernel}


def fisher_metric(family: Family, theta, method: str | None = None, chunk_size: int | None = None):
    r"""Fisher information metric :math:`g_{ij}(\theta) = E_\theta[\partial_i\log p\,\partial_j\log p]`.

    Returns an array of shape ``theta.shape + (dim,)``: ``g[..., i, j] = g_ij``.

    ``method``: ``"hessian"`` (:math:`J^\top\nabla^2\psi J`, autodiff of the log-partition),
    ``"score"`` (:math:`E[s\otimes s]`: exact finite sum for discrete/softmax families,
    20-node Gauss-Hermite quadrature, exact here, for the Gaussian), ``"covariance"``
    (softmax-linear: :math:`s^2\mathrm{Cov}_p(k)` with dominant-key centring), or
    ``None`` for the most accurate available (families built through a chart have the
    points whose construction loses more than 6 digits recomputed in mpmath).
    Works under ``jax.jit``/``vmap``/``grad`` (then without the mpmath recomputation).
    """
    fam = check_family(family)
    fisher.check_method(fam, method)
    if method is not None or fam.definite_by_construction:
        # softmax: s^2 Cov_p(k) is a sum of positive semi-definite terms with dominant-key centring
        return engine.pointwise(_METRIC_KERNELS[method], fam, theta, chunk_size, what="fisher_metric")
    return engine.controlled_metric(fam, theta, chunk_size)


def _entropy_kernel(family, theta):
    return fisher.entropy(family, theta)


def entropy(family: Family, theta, chunk_size: int | None = None):
    r"""Entropy :math:`H(p_\theta) = -\sum_x p\log p` in nats, shape ``theta.shape[:-1]``.

    For softmax families every term is computed to full relative precision
    (including :math:`\log p_{\max} = -\operatorname{log1p}(\cdot)`), so entropies down
    to ~1e-300 are accurate.
    """
    fam = check_family(family)
    if not fam.has_entropy:
        raise ValueError(
            f"{fam.name} has no entropy function: the entropy of an exponential family depends on its base "
            "measure, which the log-partition does not fix. Pass entropy=... to geometry.exponential_family."
        )
    return engine.pointwise(_entropy_kernel, fam, theta, chunk_size, what="entropy")


def christoffel(family: Family, theta, chunk_size: int | None = None):
    r"""Christoffel symbols :math:`\Gamma^k_{ij}` as ``out[..., k, i, j]`` (float64 autodiff).

    :math:`\Gamma^k_{ij} = \tfrac12 g^{kl}(\partial_i g_{jl} + \partial_j g_{il} - \partial_l g_{ij})`.
    """
    return engine.pointwise(tensors.christoffel, family, theta, chunk_size, what="christoffel")


def riemann(family: Family, theta, chunk_size: int | None = None):
    r"""Riemann tensor :math:`R^\rho{}_{\sigma\mu\nu}` as ``out[..., rho, sigma, mu, nu]`` (float64 autodiff).

    :math:`R^\rho{}_{\sigma\mu\nu} = \partial_\mu\Gamma^\rho_{\nu\sigma} - \partial_\nu\Gamma^\rho_{\mu\sigma}
    + \Gamma^\rho_{\mu\lambda}\Gamma^\lambda_{\nu\sigma} - \Gamma^\rho_{\nu\lambda}\Gamma^\lambda_{\mu\sigma}`;
    the round sphere has positive sectional curvature, :math:`R_{1212} > 0`.
    """
    return engine.pointwise(tensors.riemann, family, theta, chunk_size, what="riemann")


def ricci(family: Family, theta, chunk_size: int | None = None):
    r"""Ricci tensor :math:`R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}` as ``out[..., sigma, nu]``."""
    return engine.pointwise(tensors.ricci, family, theta, chunk_size, what="ricci")


def _traced_curvature(fam, theta, method, return_info):
    if method is None:
        raise TypeError(
            "scalar_curvature(method=None) is the precision-controlled default, a host-side engine, and cannot "
            "run on traced values (inside jax.jit / vmap / grad). Pass method='cumulant', 'hessian' or "
            "'levi-civita' for a traceable float64 route, or call scalar_curvature outside the transformation."
        )
    if return_info:
        raise TypeError("return_info=True is host-side bookkeeping; inside jax.jit / vmap / grad call it with return_info=False")
    route = routes.select(fam, method)
    if fam.dim == 1:
        return engine.traced_map(lambda f, t: jnp.zeros(()), fam, theta)
    r = engine.traced_map(lambda f, t: route.fn(f, t)[0], fam, theta)
    return jnp.where(jnp.isfinite(r), r, jnp.nan)


def scalar_curvature(
    family: Family,
    theta,
    method: str | None = None,
    return_info: bool = False,
    rtol: float = DEFAULT_RTOL,
    chunk_size: int | None = None,
    time_budget: float | None = None,
    progress: Callable[[int], None] | None = None,
):
    r"""Scalar curvature :math:`R = g^{\sigma\nu}R^\rho{}_{\sigma\rho\nu}` of the Fisher metric.

    ``theta`` has shape ``(..., dim)``; the result is float64 with shape
    ``theta.shape[:-1]`` (a ``(dim,)`` input gives a 0-d array).  Sign: the round
    sphere is positive; the categorical simplex on ``n`` outcomes has
    :math:`(n-1)(n-2)/4`, the Gaussian in :math:`(\mu,\sigma)` has :math:`-1`.

    ``method=None`` (default) is precision-controlled: the fastest float64 route
    for the family (``cumulant`` for softmax families, ``hessian`` for exponential
    families in natural coordinates, ``levi-civita`` otherwise, including families given
    through a chart such as the Gaussian in ``(mu, sigma)``) also returns a per-point error estimate
    :math:`64\,\varepsilon\,\kappa(H)\,(|T|^2+|\tau|^2)/|R|` (:math:`\kappa(H)` bounds the
    condition number of the Jacobi-scaled metric, :func:`geometry._src.linalg.scaled_condition`);
    every point whose estimate exceeds ``rtol`` is recomputed by the precision tiers in
    turn: for single-head softmax families first by the same formula in double-double
    arithmetic (about 32 digits, :mod:`geometry._src.ddouble`), then in arbitrary
    precision (mpmath) with enough digits for the measured loss.

    ``method="cumulant" | "hessian" | "levi-civita"`` forces a raw float64 route with no
    fallback.  Those routes are pure JAX: ``scalar_curvature(fam, x, method=...)`` works
    under ``jax.jit``, ``jax.vmap``, ``jax.grad`` and ``jax.jacfwd``, with respect to ``x``
    and to the family's array leaves (``jax.grad(lambda K: scalar_curvature(attention(K), x,
    method="cumulant"))(K)``), and returns what the eager call returns.  The default is a
    host-side engine and raises ``TypeError`` on traced values.

    Points whose curvature cannot be delivered (singular metric; high-precision
    budget ``time_budget`` seconds exhausted; a plain-JAX user family that cannot
    be lowered; a value beyond the float64 range) are NaN *and* reported: in
    ``info.status``/``info.reasons`` with ``return_info=True``, otherwise by an
    :class:`UndefinedCurvatureWarning`.  One-dimensional families have :math:`R = 0`.
    """
    fam = check_family(family)
    if tracing(fam, theta):
        return _traced_curvature(fam, theta, method, return_info)
    r, info, _ = engine.curvature(fam, theta, method=method, rtol=rtol, chunk_size=chunk_size,
                                  time_budget=time_budget, progress=progress)
    if return_info:
        return r, info
    engine.warn_undefined(info, "scalar_curvature", stacklevel=2)
    return r


def scalar_curvature_mp(family: Family, theta, dps: int = 50, rtol: float = 1e-20):
    """Scalar curvature at one point as an ``mpmath.mpf``, verified to relative tolerance ``rtol``.

    The oracle used by the tests.  Starts at ``dps`` digits and raises the working
    precision until the error estimate of :func:`geometry._src.highprec.curvature`
    is below ``rtol``; raises ``ValueError`` when the point is singular or would
    need more than ``highprec.MAX_DPS`` digits.  Thread-safe (:data:`highprec.LOCK`).
    """
    fam = check_family(family)
    if isinstance(dps, bool) or not isinstance(dps, (int, np.integer)) or dps < 10:
        raise ValueError(f"dps must be an integer >= 10 (decimal digits of working precision), got {dps!r}")
    rtol = engine.check_rtol(rtol)
    rows, _ = engine.as_rows(fam, theta)
    if rows.shape[0] != 1:
        raise ValueError(f"theta must be one point of shape ({fam.dim},), got {np.shape(theta)}")
    engine.check_outputs(fam)
    flat = engine.block_checker(fam)(rows, 0)
    if fam.dim > 1 and not fam.definite_by_construction:
        engine.raise_if_indefinite(fam, flat, engine.LocalMapper().map(fisher.metric_diagnostics, fam, flat, lambda b, s: b)[2])
    try:
        val, _, _ = highprec.curvature(fam, flat[0], rtol=rtol, dps=int(dps))
    except highprec.SingularMetric as exc:
        raise ValueError(f"the curvature of {fam.name} at theta = {flat[0].tolist()} is undefined: {exc}") from None
    except highprec.PrecisionExhausted as exc:
        raise ValueError(f"the curvature of {fam.name} at theta = {flat[0].tolist()} cannot be computed: {exc}") from None
    return val
