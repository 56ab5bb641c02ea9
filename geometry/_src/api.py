"""Public, batched entry points: metric, entropy, connection, curvature with precision control."""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

from . import curvature as _curv
from . import fisher as _fisher
from . import ddouble, highprec
from .families import Family
from .mathns import JAX
from .points import as_points, check_family, default_chunk, map_points, unflatten

EPS = float(np.finfo(np.float64).eps)
#: Safety factor between the first-order error model ``eps * cancellation * kappa`` and the
#: error actually observed against the mpmath oracle (tests/test_precision.py measures it).
SAFETY = 64.0
DEFAULT_RTOL = 1e-8
#: Points per compiled call of the double-double tier (one shape: it compiles once per key shape).
DD_CHUNK = 256


def error_estimate(cancel, kappa, eps=EPS):
    r"""The error model of every curvature route: :math:`64\,\varepsilon\,c\,\max(\kappa, 1)`
    (``cancel`` = :math:`c`, ``kappa`` from :func:`geometry._src.curvature.scaled_condition`, numpy or
    JAX arrays; ``eps`` is the unit roundoff of the arithmetic used)."""
    return SAFETY * eps * cancel * kappa.clip(1.0)

FLOAT64, HIGH_PRECISION, UNDEFINED, BUDGET, UNTRUSTED = 0, 1, 2, 3, 4
STATUS_NAMES = {
    FLOAT64: "float64",
    HIGH_PRECISION: "high_precision",
    UNDEFINED: "undefined",
    BUDGET: "not_computed_budget",
    UNTRUSTED: "untrusted",
}


class UndefinedCurvatureWarning(UserWarning):
    """Some points have no trustworthy curvature (see ``info.status`` and ``info.reasons``)."""


@dataclasses.dataclass(frozen=True)
class CurvatureInfo:
    """Per-point precision record of :func:`scalar_curvature` (arrays have the leading shape of ``theta``).

    ``rel_error``: estimated relative error of the returned value.
    ``digits``: estimated correct significant digits, ``-log10(rel_error)`` (capped at 16).
    ``status``: 0 float64, 1 recomputed in high precision, 2 undefined, 3 not computed
    (high-precision time budget exhausted), 4 untrusted (float64 not accurate enough and the
    family cannot be lowered to mpmath).
    ``recomputed``: ``status == 1``.  ``dps``: decimal digits of the recomputation: 0 for
    float64 points, 32 for the double-double tier (softmax families), else the mpmath working
    precision.
    ``reasons``: ``{flat index: reason}`` for undefined / budget / untrusted points.
    ``route``: the float64 route used first.
    """

    rel_error: np.ndarray
    status: np.ndarray
    dps: np.ndarray
    reasons: dict
    route: str
    rtol: float

    @property
    def recomputed(self):
        return self.status == HIGH_PRECISION

    @property
    def digits(self):
        with np.errstate(divide="ignore"):
            return np.minimum(16.0, -np.log10(np.maximum(self.rel_error, 1e-300)))

    def counts(self) -> dict:
        """``{"total", "float64", "high_precision", "undefined", "not_computed_budget", "untrusted"}``."""
        out = {"total": int(self.status.size)}
        for code, name in STATUS_NAMES.items():
            out[name] = int(np.sum(self.status == code))
        return out


# --------------------------------------------------------------------------- simple quantities


def _kernel_metric(method):
    def kernel(family, theta):
        return _fisher.metric(family, theta, method)

    kernel.__name__ = f"metric_{method}"
    return kernel


_METRIC_KERNELS = {m: _kernel_metric(m) for m in (None, "covariance", "hessian", "score")}


def _controlled_metric_kernel(family, theta):
    r"""Default metric plus its construction amplification and definiteness.

    For a family given through a chart, :math:`g = J^\top H J` can cancel
    catastrophically (a narrow Gaussian far from 0 loses :math:`(\mu/\sigma)^2`);
    the amplification :math:`\max(|J|^\top|H||J|)/\max|g|` measures it.
    """
    g = _fisher.metric(family, theta)
    if family.kind == "exponential" and family.natural is not None:
        eta = _fisher.natural_chart(family, theta)
        h = jax.hessian(lambda e: family.log_partition(e, JAX))(eta)
        jac = jax.jacfwd(lambda t: _fisher.natural_chart(family, t))(theta)
        amp = jnp.max(jnp.abs(jac).T @ jnp.abs(h) @ jnp.abs(jac)) / jnp.max(jnp.abs(g))
    else:
        amp = jnp.ones(())
    lam = jnp.linalg.eigvalsh(0.5 * (g + g.T))
    return g, amp, lam[0] / jnp.max(jnp.abs(lam))


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or a positive integer (points per compiled batch), got {chunk_size!r}")
    return int(chunk_size)


def _entropy_kernel(family, theta):
    return _fisher.entropy(family, theta)


def _christoffel_kernel(family, theta):
    return _curv.christoffel(family, theta)


def _riemann_kernel(family, theta):
    return _curv.riemann(family, theta)


def _ricci_kernel(family, theta):
    return _curv.ricci(family, theta)


def _batched(kernel, family, theta, chunk_size=None, what=None):
    family = check_family(family)
    chunk_size = _check_chunk_size(chunk_size)
    flat, lead = as_points(family, theta)
    _validate_user_family(family, flat, chunk_size)
    out = map_points(kernel, family, flat, chunk_size)
    if what is not None and out.size:
        bad = ~np.isfinite(out.reshape(out.shape[0], -1)).all(axis=1)
        if bad.any():
            warnings.warn(
                f"{what}: {int(bad.sum())} of {flat.shape[0]} points are NaN/inf in float64 (first: theta[{int(np.flatnonzero(bad)[0])}]); "
                "at such low entropy the float64 metric underflows or is numerically singular and this tensor has no "
                "precision control. geometry.scalar_curvature(..., return_info=True) gives precision-controlled curvature.",
                UndefinedCurvatureWarning,
                stacklevel=3,
            )
    return unflatten(out, lead)


def _user_check_kernel(family, theta):
    """Finite metric, and (discrete families) normalised log-probabilities: ``|logsumexp| `` and finiteness."""
    g = _fisher.metric(family, theta)
    if family.kind == "discrete":
        lp = family.log_probs(theta, JAX)
        return jnp.all(jnp.isfinite(g)) & ~jnp.any(jnp.isnan(lp)), jnp.abs(jax.nn.logsumexp(lp))
    value = family.log_partition(_fisher.natural_chart(family, theta), JAX)
    return jnp.all(jnp.isfinite(g)) & jnp.isfinite(value), jnp.zeros(())


def _validate_user_family(fam, flat, chunk_size=None):
    """User-defined functions: right output shapes, finite values, normalised probabilities; else ValueError."""
    if fam.kind == "softmax-linear" or flat.shape[0] == 0:
        return
    probe = jax.ShapeDtypeStruct((fam.dim,), jnp.float64)
    if fam.kind == "exponential":
        eta = jax.eval_shape(lambda t: _fisher.natural_chart(fam, t), probe)
        out = jax.eval_shape(lambda e: fam.log_partition(e, JAX), eta)
        if out.shape != ():
            raise ValueError(
                f"log_partition of {fam.name} must return a scalar for an input of shape {eta.shape}, "
                f"got shape {out.shape}; reduce it (e.g. sum) or fix the indexing"
            )
    else:
        out = jax.eval_shape(lambda t: fam.log_probs(t, JAX), probe)
        if len(out.shape) != 1 or out.shape[0] < 2:
            raise ValueError(
                f"log_probs of {fam.name} must return a 1-d vector of log-probabilities (one per outcome, at least 2) "
                f"for theta of shape ({fam.dim},), got shape {out.shape}"
            )
    finite, norm = map_points(_user_check_kernel, fam, flat, chunk_size)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        what = "log_partition" if fam.kind == "exponential" else "log_probs"
        raise ValueError(
            f"the Fisher metric of {fam.name} is not finite at theta[{i}] = {flat[i].tolist()} "
            f"({int((~finite).sum())} of {flat.shape[0]} points): {what} returns NaN/inf there or is not twice "
            "differentiable; check its domain (e.g. log of a negative number)"
        )
    if fam.kind == "exponential" and fam.entropy_fn is not None:
        out = jax.eval_shape(lambda t: fam.entropy_fn(t, JAX), probe)
        if out.shape != ():
            raise ValueError(f"entropy of {fam.name} must return a scalar (nats) for theta of shape ({fam.dim},), got shape {out.shape}")
    if fam.kind == "discrete" and norm.max() > 1e-9:
        i = int(np.argmax(norm))
        raise ValueError(
            f"log_probs of {fam.name} is not normalised at theta[{i}] = {flat[i].tolist()}: "
            f"log sum p = {norm[i]:.3e}; return xp.log_softmax(logits) instead of raw logits"
        )


def fisher_metric(family: Family, theta, method: str | None = None, chunk_size: int | None = None):
    r"""Fisher information metric :math:`g_{ij}(\theta) = E_\theta[\partial_i\log p\,\partial_j\log p]`.

    Returns an array of shape ``theta.shape + (dim,)``: ``g[..., i, j] = g_ij``.

    ``method``: ``"hessian"`` (:math:`J^\top\nabla^2\psi J`, autodiff of the log-partition),
    ``"score"`` (:math:`E[s\otimes s]`: exact finite sum for discrete/softmax families,
    20-node Gauss-Hermite quadrature, exact here, for the Gaussian), ``"covariance"``
    (softmax-linear: :math:`s^2\mathrm{Cov}_p(k)` with dominant-key centring), or
    ``None`` for the most accurate available.
    """
    if method not in _METRIC_KERNELS:
        raise ValueError(f"method must be None, 'covariance', 'hessian' or 'score', got {method!r}")
    fam = check_family(family)
    if method == "hessian" and not fam.is_hessian_metric:
        raise ValueError(f"method='hessian' needs an exponential family; {fam.name} is {fam.kind}")
    if method == "covariance" and fam.kind != "softmax-linear":
        raise ValueError(f"method='covariance' needs a softmax-linear family; {fam.name} is {fam.kind}")
    if method == "score" and fam.kind == "exponential" and fam.log_density is None:
        raise ValueError(f"{fam.name} has only a log-partition: the score construction needs a density; use method='hessian'")
    if method is not None or fam.kind == "softmax-linear":
        # softmax: s^2 Cov_p(k) is a sum of positive semi-definite terms with dominant-key centring
        return _batched(_METRIC_KERNELS[method], fam, theta, chunk_size)
    chunk_size = _check_chunk_size(chunk_size)
    flat, lead = as_points(fam, theta)
    _validate_user_family(fam, flat, chunk_size)
    g, amp, lam_rel = map_points(_controlled_metric_kernel, fam, flat, chunk_size)
    suspect = np.flatnonzero(~(SAFETY * EPS * amp <= 1e-10) | ~(lam_rel > -1e-12))
    if suspect.size and fam.lowerable:
        for i in suspect:
            gm = highprec.metric(fam, flat[i])
            definite, lam = highprec.is_positive_definite(gm)
            if not definite:
                _raise_if_indefinite(fam, flat, np.where(np.arange(len(flat)) == i, -1.0, 1.0), lam_override=lam)
            g[i] = np.array(gm.tolist(), dtype=np.float64)
    elif suspect.size:
        _raise_if_indefinite(fam, flat, lam_rel)
        warnings.warn(
            f"fisher_metric of {fam.name}: {suspect.size} points lose more than 6 digits in J^T (hess psi) J and "
            "the family is a plain JAX function, so they cannot be recomputed in high precision",
            UndefinedCurvatureWarning,
            stacklevel=2,
        )
    return unflatten(g, lead)


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
    return _batched(_entropy_kernel, fam, theta, chunk_size, what="entropy")


def christoffel(family: Family, theta, chunk_size: int | None = None):
    r"""Christoffel symbols :math:`\Gamma^k_{ij}` as ``out[..., k, i, j]`` (float64 autodiff).

    :math:`\Gamma^k_{ij} = \tfrac12 g^{kl}(\partial_i g_{jl} + \partial_j g_{il} - \partial_l g_{ij})`.
    """
    return _batched(_christoffel_kernel, family, theta, chunk_size, what="christoffel")


def riemann(family: Family, theta, chunk_size: int | None = None):
    r"""Riemann tensor :math:`R^\rho{}_{\sigma\mu\nu}` as ``out[..., rho, sigma, mu, nu]`` (float64 autodiff).

    :math:`R^\rho{}_{\sigma\mu\nu} = \partial_\mu\Gamma^\rho_{\nu\sigma} - \partial_\nu\Gamma^\rho_{\mu\sigma}
    + \Gamma^\rho_{\mu\lambda}\Gamma^\lambda_{\nu\sigma} - \Gamma^\rho_{\nu\lambda}\Gamma^\lambda_{\mu\sigma}`;
    the round sphere has positive sectional curvature
    :math:`R_{\rho\sigma\mu\nu}X^\rho Y^\sigma X^\mu Y^\nu`... with ``R_{1212} > 0``.
    """
    return _batched(_riemann_kernel, family, theta, chunk_size, what="riemann")


def ricci(family: Family, theta, chunk_size: int | None = None):
    r"""Ricci tensor :math:`R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}` as ``out[..., sigma, nu]``."""
    return _batched(_ricci_kernel, family, theta, chunk_size, what="ricci")


# --------------------------------------------------------------------------- scalar curvature


def _route_kernel(route, cross_check=False):
    r"""Kernel returning ``(R, estimated relative error, definiteness)``; the last is ``1/kappa`` (a lower
    bound of the scaled metric's smallest over largest eigenvalue) where the route's Cholesky factor
    exists and NaN where it does not (:func:`_raise_if_indefinite` then computes the eigenvalues).

    The error model is :math:`64\,\varepsilon\,\kappa(H)\,c` (:func:`error_estimate`) with ``c`` the route's
    cancellation factor.  That model does not see error made while *building* the
    metric (e.g. ``J^T (hess psi) J`` for a narrow Gaussian far from the origin), so
    for exponential families the precision-controlled default (``cross_check``)
    also evaluates the other autodiff route and takes the discrepancy between the
    two, times the same safety factor, as a second estimate.
    """
    fn = _curv.ROUTES[route]

    def kernel(family, theta):
        r, cancel, kappa = fn(family, theta)
        est = error_estimate(cancel, kappa)
        if cross_check and family.kind == "exponential":
            other = "hessian" if route == "levi-civita" else "levi-civita"
            r2 = _curv.ROUTES[other](family, theta)[0]
            est = jnp.maximum(est, SAFETY * jnp.abs(r - r2) / jnp.abs(r))
        est = jnp.where(est >= 0, est, jnp.inf)  # a negative or NaN estimate means garbage: recompute
        if family.kind == "softmax-linear":  # definite by construction (centred keys have rank m)
            return r, est, jnp.ones_like(r)
        # the route's Cholesky factor exists (kappa finite): the float64 metric is positive definite,
        # and 1/kappa <= lambda_min / lambda_max of the scaled metric; NaN: _raise_if_indefinite looks
        return r, est, jnp.where(kappa >= 1.0, 1.0 / kappa, jnp.nan)

    kernel.__name__ = f"scalar_{route}{'_checked' if cross_check else ''}"
    return kernel


_ROUTE_KERNELS = {route: _route_kernel(route) for route in _curv.ROUTES}
_CONTROLLED_KERNELS = {route: _route_kernel(route, cross_check=True) for route in _curv.ROUTES}


def _check_route(family, method):
    if method not in (None, *_curv.ROUTES):
        raise ValueError(f"method must be None, 'cumulant', 'hessian' or 'levi-civita', got {method!r}")
    route = method or _curv.default_route(family)
    if route == "cumulant" and family.kind != "softmax-linear":
        raise ValueError(f"method='cumulant' needs a softmax-linear family (categorical/attention); {family.name} is {family.kind}")
    if route == "hessian" and not family.is_hessian_metric:
        raise ValueError(f"method='hessian' needs an exponential family (a Hessian metric); {family.name} is {family.kind}")
    return route


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
    families, ``levi-civita`` otherwise) also returns a per-point error estimate
    :math:`64\,\varepsilon\,\kappa(H)\,(|T|^2+|\tau|^2)/|R|` (:math:`\kappa(H)` bounds the
    condition number of the Jacobi-scaled metric, :func:`geometry._src.curvature.scaled_condition`);
    every point whose estimate exceeds ``rtol`` is recomputed: for single-head softmax families first by the same
    formula in double-double arithmetic (about 32 digits, vectorised,
    :mod:`geometry._src.ddouble`), and where that is still not enough in arbitrary
    precision (mpmath) with
    enough digits for the measured loss.  ``method="cumulant" | "hessian" |
    "levi-civita"`` forces a raw float64 route with no fallback.

    Points whose curvature cannot be delivered (singular metric; high-precision
    budget ``time_budget`` seconds exhausted; a plain-JAX user family that cannot
    be lowered) are NaN *and* reported: in ``info.status``/``info.reasons`` with
    ``return_info=True``, otherwise by an :class:`UndefinedCurvatureWarning`.
    One-dimensional families have :math:`R = 0` identically.
    """
    fam = check_family(family)
    route = _check_route(fam, method)
    flat, lead = as_points(fam, theta)
    if not (isinstance(rtol, (float, int)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a relative tolerance in (0, 1), got {rtol!r}")
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and time_budget >= 0):
        raise ValueError(f"time_budget must be None (no limit) or a number of seconds >= 0, got {time_budget!r}")
    chunk_size = _check_chunk_size(chunk_size)
    n = flat.shape[0]
    status = np.zeros(n, np.int8)
    dps = np.zeros(n, np.int32)
    reasons: dict = {}

    _validate_user_family(fam, flat, chunk_size)  # no-op for softmax families and empty batches
    if fam.dim == 1:
        r = np.zeros(n)
        rel = np.zeros(n)
        if fam.kind != "softmax-linear" and n:
            _check_positive_definite(fam, flat, chunk_size)
    else:
        kernels = _CONTROLLED_KERNELS if method is None else _ROUTE_KERNELS
        if chunk_size is None and route == "cumulant":
            chunk_size = default_chunk(fam, route)
        r, rel, lam_rel = map_points(kernels[route], fam, flat, chunk_size, progress)
        if fam.kind != "softmax-linear":
            looked = _raise_if_indefinite(fam, flat, lam_rel)
            rel[looked] = np.inf  # the float64 metric was wrong there: recompute
        rel = np.where(np.isfinite(rel) & np.isfinite(r), rel, np.inf)
        if method is None:
            bad = np.flatnonzero(~(rel <= rtol))
            if bad.size:
                _high_precision(fam, flat, bad, r, rel, status, dps, reasons, rtol, time_budget)
        else:
            bad = np.flatnonzero(~np.isfinite(r))
            for i in bad:
                status[i], reasons[int(i)] = UNDEFINED, f"raw {route} route gave a non-finite value (singular or overflowing metric in float64)"
                r[i] = np.nan

    info = CurvatureInfo(rel.reshape(lead), status.reshape(lead), dps.reshape(lead), reasons, route, rtol)
    out = np.asarray(r, np.float64).reshape(lead)
    if not return_info:
        if reasons:
            first = next(iter(reasons.items()))
            warnings.warn(
                f"{len(reasons)} of {n} points have no trustworthy curvature (NaN); first: point {first[0]}: "
                f"{first[1]}. Call scalar_curvature(..., return_info=True) for the per-point status.",
                UndefinedCurvatureWarning,
                stacklevel=2,
            )
        return out
    return out, info


def _double_double(fam, flat, idx, r, rel, status, dps, rtol):
    r"""First recomputation tier for softmax families: the cumulant route in double-double.

    Same error model with :math:`\varepsilon_{dd} = 2^{-103}`; points whose estimate is at
    most ``rtol`` are accepted (``dps = 32``); the indices of the others are returned for mpmath.
    """
    if idx.size == 0 or not ddouble.supported(fam):
        return idx
    val, cancel, kappa, ok = ddouble.evaluate(fam, np.asarray(flat[idx], np.float64), DD_CHUNK)
    with np.errstate(invalid="ignore", over="ignore"):
        est = error_estimate(cancel, kappa, ddouble.EPS_DD)
    good = ok & (est >= 0) & (est <= rtol)
    done = idx[good]
    r[done], rel[done], status[done], dps[done] = val[good], est[good], HIGH_PRECISION, 32
    return idx[~good]


def _high_precision(fam, flat, idx, r, rel, status, dps, reasons, rtol, time_budget):
    idx = _double_double(fam, flat, idx, r, rel, status, dps, rtol)
    if not fam.lowerable:
        for i in idx:
            status[i] = UNTRUSTED
            reasons[int(i)] = (
                f"float64 estimate of relative error {rel[i]:.1e} exceeds rtol={rtol:g} and {fam.name} is a "
                "plain JAX function that cannot be lowered to mpmath; write it as f(theta, xp) to enable the fallback"
            )
            r[i] = np.nan
        return
    start = time.perf_counter()
    for i in idx:
        if time_budget is not None and time.perf_counter() - start > time_budget:
            status[i] = BUDGET
            reasons[int(i)] = f"not computed: high-precision time budget of {time_budget:g} s exhausted"
            r[i] = np.nan
            continue
        try:
            val, err, used = highprec.curvature(fam, flat[i], rtol=rtol / 10)
        except highprec.SingularMetric as exc:
            status[i], reasons[int(i)], r[i] = UNDEFINED, f"undefined: {exc}", np.nan
            continue
        except highprec.PrecisionExhausted as exc:
            status[i], reasons[int(i)], r[i] = UNDEFINED, f"not computable to rtol={rtol:g}: {exc}", np.nan
            rel[i] = np.inf
            continue
        r[i] = float(val)
        rel[i] = err
        status[i] = HIGH_PRECISION
        dps[i] = used


def _check_positive_definite(fam, flat, chunk_size):
    g = map_points(_METRIC_KERNELS[None], fam, flat, chunk_size)
    lam = np.linalg.eigvalsh(g)
    _raise_if_indefinite(fam, flat, lam[:, 0] / np.max(np.abs(lam), axis=1))


def _raise_if_indefinite(fam, flat, lam_rel, lam_override=None):
    """Raise for points whose metric is not positive definite; return points that only *looked* indefinite.

    A float64 metric built with cancellation (a narrow Gaussian far from 0) can look
    indefinite while the true metric is definite, so for families that lower to
    mpmath the verdict is confirmed in high precision first.  Returns the indices
    whose float64 metric was wrong but whose true metric is definite.
    """
    unknown = np.flatnonzero(np.isnan(lam_rel))  # the route's Cholesky factorisation failed there
    if unknown.size:
        lam = np.linalg.eigvalsh(map_points(_METRIC_KERNELS[None], fam, np.asarray(flat[unknown], np.float64)))
        lam_rel = np.array(lam_rel, dtype=np.float64)
        lam_rel[unknown] = lam[:, 0] / np.max(np.abs(lam), axis=1)
    bad = np.flatnonzero(~(lam_rel > -1e-12))
    looked = []
    for i in bad:
        i = int(i)
        if lam_override is None and fam.lowerable:
            try:
                definite, lam0 = highprec.is_positive_definite(highprec.metric(fam, flat[i]))
            except highprec.PrecisionExhausted:
                definite, lam0 = False, float("nan")
            if definite:
                looked.append(i)
                continue
        else:
            lam0 = lam_override if lam_override is not None else float(np.linalg.eigvalsh(np.asarray(_fisher.metric(fam, jnp.asarray(flat[i]))))[0])
        what = "the log-partition must be strictly convex" if fam.kind == "exponential" else "the score vectors must span R^dim"
        raise ValueError(
            f"the Fisher metric of {fam.name} is not positive definite at theta[{i}] = {flat[i].tolist()}: smallest "
            f"eigenvalue {lam0:.3e}; {bad.size} of {flat.shape[0]} points looked indefinite in float64. "
            f"For this family {what}; check its sign and domain (log_partition / log_probs)."
        )
    return np.asarray(looked, dtype=int)


def scalar_curvature_mp(family: Family, theta, dps: int = 50, rtol: float = 1e-20):
    """Scalar curvature at one point as an ``mpmath.mpf``, verified to relative tolerance ``rtol``.

    The oracle used by the tests.  Starts at ``dps`` digits and raises the working
    precision until the error estimate of :func:`geometry._src.highprec.curvature`
    is below ``rtol``; raises ``ValueError`` when the point is singular or would
    need more than ``highprec.MAX_DPS`` digits.
    """
    fam = check_family(family)
    if isinstance(dps, bool) or not isinstance(dps, (int, np.integer)) or dps < 10:
        raise ValueError(f"dps must be an integer >= 10 (decimal digits of working precision), got {dps!r}")
    if not (isinstance(rtol, (float, int)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a relative tolerance in (0, 1), got {rtol!r}")
    flat, _ = as_points(fam, theta)
    if flat.shape[0] != 1:
        raise ValueError(f"theta must be one point of shape ({fam.dim},), got {np.shape(theta)}")
    _validate_user_family(fam, flat)
    if fam.dim > 1 and fam.kind != "softmax-linear":
        _raise_if_indefinite(fam, flat, map_points(_controlled_metric_kernel, fam, flat)[2])
    try:
        val, _, _ = highprec.curvature(fam, flat[0], rtol=rtol, dps=int(dps))
    except highprec.SingularMetric as exc:
        raise ValueError(f"the curvature of {fam.name} at theta = {flat[0].tolist()} is undefined: {exc}") from None
    except highprec.PrecisionExhausted as exc:
        raise ValueError(f"the curvature of {fam.name} at theta = {flat[0].tolist()} cannot be computed: {exc}") from None
    return val
