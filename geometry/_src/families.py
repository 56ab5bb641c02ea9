"""Probability families: a family is defined once and lowered to JAX, sympy and mpmath.

A :class:`Family` is a small immutable value.  It holds its parameters and one
defining function; every geometric quantity (metric, entropy, curvature) is a
pure function of it elsewhere in the package.  There are three kinds:

``"softmax-linear"``
    ``p(x) = softmax(s_h K_h x)`` for one or several independent heads
    ``(K_h, s_h)``.  The categorical family (``K = [I; 0]``, ``s = 1/T``),
    single-head and multi-head attention are all of this kind.  It is an
    exponential family with log-partition ``psi(x) = sum_h logsumexp(s_h K_h x)``,
    and its moments give a closed form for the curvature (the ``cumulant`` route).
``"exponential"``
    an exponential family given by its log-partition ``psi(eta)`` in natural
    coordinates, optionally through a chart ``eta = natural(theta)`` (the
    Gaussian in ``(mu, sigma)``).  The Fisher metric is ``J^T (hess psi) J``.
``"discrete"``
    any smooth ``theta -> log p_theta`` over a finite support.

Defining functions take ``(theta, xp)`` where ``xp`` is one of the namespaces in
:mod:`geometry._src.mathns`; user functions of ``theta`` alone are accepted too
(they are JAX-only: the high-precision fallback cannot re-evaluate them).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable

import numpy as np

from . import mathns

__all__ = [
    "Family",
    "Head",
    "categorical",
    "attention",
    "multihead_attention",
    "gaussian",
    "exponential_family",
    "discrete_family",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Head:
    """One softmax head: logits ``scale * keys @ x``; ``keys`` is ``(n, m)`` float64."""

    keys: np.ndarray
    scale: float


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """A smooth family of probability distributions with coordinates in ``R^dim``.

    Construct it with :func:`categorical`, :func:`attention`,
    :func:`multihead_attention`, :func:`gaussian`, :func:`exponential_family`
    or :func:`discrete_family`.  Families compare by identity and are hashable,
    so they can be static arguments of ``jax.jit``.
    """

    name: str
    dim: int
    kind: str  # "softmax-linear" | "exponential" | "discrete"
    heads: tuple = ()
    log_partition: Callable | None = None  # (eta, xp) -> scalar, natural coordinates
    natural: Callable | None = None  # (theta, xp) -> eta; None = identity chart
    log_probs: Callable | None = None  # (theta, xp) -> (k,) log-probabilities
    entropy_fn: Callable | None = None  # (theta, xp) -> scalar (nats)
    log_density: Callable | None = None  # (theta, x, xp) for the score route (continuous)
    quadrature: Any = None  # (nodes_fn(theta) -> x, weights) for log_density expectations
    lowerable: bool = True  # defining functions accept any xp namespace
    domain: Callable | None = None  # (theta: np.ndarray (N, dim)) -> message or None
    description: str = ""

    def __post_init__(self):
        if self.kind not in ("softmax-linear", "exponential", "discrete"):
            raise ValueError(f"Family kind must be softmax-linear, exponential or discrete, got {self.kind!r}")
        if not (isinstance(self.dim, (int, np.integer)) and self.dim >= 1):
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")

    @property
    def is_hessian_metric(self) -> bool:
        """True when the metric is the Hessian of a potential in *some* affine chart."""
        return self.kind in ("softmax-linear", "exponential")

    @property
    def has_entropy(self) -> bool:
        return self.kind in ("softmax-linear", "discrete") or self.entropy_fn is not None

    @property
    def num_outcomes(self) -> int | None:
        if self.kind == "softmax-linear":
            return int(np.prod([h.keys.shape[0] for h in self.heads]))
        return None

    def __repr__(self):
        return f"Family({self.name!r}, dim={self.dim}, kind={self.kind!r})"


# --------------------------------------------------------------------------- helpers


def _positive_scalar(value, name, fix):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}. {fix}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}. {fix}")
    return v


def as_real_array(value, name: str, what: str) -> np.ndarray:
    """``value`` as a float64 array, or ``TypeError`` naming ``name`` (``what`` describes the expected shape)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be {what}, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    return arr.astype(np.float64)


def _as_keys(keys, name="keys"):
    arr = as_real_array(keys, name, "an (n, m) array of real numbers")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-d (n, m) array (n keys in R^m), got shape {arr.shape}. "
            "Reshape it, e.g. keys.reshape(n, m)."
        )
    n, m = arr.shape
    if n < 2 or m < 1:
        raise ValueError(f"{name} needs at least 2 keys and 1 query dimension, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(bad)}); pass finite keys")
    return arr


def _check_head_rank(keys, name):
    """The pullback metric K_c^T diag(p) K_c is definite iff the centred keys have rank m."""
    n, m = keys.shape
    if m > n - 1:
        raise ValueError(
            f"{name} has shape ({n}, {m}): the query space has m = {m} dimensions but {n} keys "
            f"span at most n - 1 = {n - 1} directions of the simplex, so the Fisher metric is "
            "singular and the scalar curvature is undefined. Project the query onto the span of "
            "the centred keys (e.g. geometry.project_keys(keys)) or use more keys."
        )
    centred = keys - keys.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    tol = max(n, m) * np.finfo(np.float64).eps * (sv[0] if sv.size and sv[0] > 0 else 1.0)
    rank = int(np.sum(sv > tol))
    if rank < m:
        raise ValueError(
            f"{name} has centred rank {rank} < m = {m}: the query space has more dimensions than "
            "the keys can see (moving the query along the null directions does not change p), so "
            "the Fisher metric is singular and the scalar curvature is undefined. Project the "
            "query onto the span of the centred keys (geometry.project_keys(keys) returns "
            "projected keys of full rank) or remove duplicate/collinear keys."
        )


def project_keys(keys):
    """Keys expressed in an orthonormal basis of the span of the centred keys.

    Returns ``(keys_proj, basis)`` with ``keys_proj = keys @ basis`` of shape
    ``(n, r)``, ``r`` the centred rank.  For a query ``x``, ``softmax(s K x)`` equals
    ``softmax(s K_proj (basis^T x))`` up to the common shift, so the attention
    family restricted to ``basis^T x`` is the non-degenerate quotient.
    """
    keys = _as_keys(keys)
    centred = keys - keys.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    tol = max(keys.shape) * np.finfo(np.float64).eps * (sv[0] if sv[0] > 0 else 1.0)
    basis = vt[sv > tol].T
    return keys @ basis, basis


def _softmax_log_probs(heads):
    def log_probs(x, xp):
        if len(heads) != 1:
            raise ValueError("log_probs of a multi-head family: use the per-head distributions")
        h = heads[0]
        return xp.log_softmax(xp.matvec(h.keys * h.scale, x))

    return log_probs


def _softmax_log_partition(heads):
    def log_partition(x, xp):
        return xp.sum([xp.logsumexp(xp.matvec(h.keys * h.scale, x)) for h in heads])

    return log_partition


def _logit_bound(heads, theta) -> float:
    r"""An upper bound on every :math:`|z_i| = s\,|k_i\cdot\theta|`: :math:`s\,\max_i\|k_i\|_1\,\max|\theta|`."""
    tmax = max(float(np.max(theta)), -float(np.min(theta)))
    return max(float(h.scale) * float(np.max(np.sum(np.abs(h.keys), axis=1))) * tmax for h in heads)


def _logits_domain(heads):
    def domain(theta):
        # Fast path: when the bound is below 1e300 no logit spread can overflow, and the (N, n)
        # product below (as costly as the curvature kernel itself) is not needed.
        if theta.size == 0 or _logit_bound(heads, theta) < 1e300:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            for k, h in enumerate(heads):
                z = h.scale * (theta @ h.keys.T)
                spread = np.max(z, axis=-1) - np.min(z, axis=-1)
                bad = ~np.isfinite(spread)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    return (
                        f"theta[{i}] gives logits (head {k}) whose differences overflow float64 (> 1.8e308); "
                        "such a point is a vertex of the simplex to any precision. Rescale theta."
                    )
        return None

    return domain


def _softmax_family(heads, name, description):
    dim = heads[0].keys.shape[1]
    return Family(
        name=name,
        dim=dim,
        kind="softmax-linear",
        heads=tuple(heads),
        log_partition=_softmax_log_partition(heads),
        log_probs=_softmax_log_probs(heads) if len(heads) == 1 else None,
        domain=_logits_domain(heads),
        description=description,
    )


# --------------------------------------------------------------------------- shipped families


def categorical(n: int, temperature: float = 1.0) -> Family:
    r"""The full softmax family on ``n`` outcomes.

    Coordinates are the first ``n - 1`` logits ``theta``, the last logit fixed at 0,
    and ``p = softmax((theta, 0) / T)``.  The Fisher metric is the Hessian of
    :math:`\psi(\theta) = \log\sum_i e^{\theta_i/T}`:
    :math:`g = T^{-2}(\operatorname{diag} p' - p' p'^\top)` with :math:`p'` the
    first ``n - 1`` probabilities.  Its scalar curvature is :math:`(n-1)(n-2)/4`
    at every point (the simplex is isometric to a piece of the sphere of radius 2
    via :math:`p \mapsto 2\sqrt{p}`; Amari & Nagaoka 2000, sec. 2.5); the
    temperature only rescales coordinates, so it does not change the curvature.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (number of outcomes), got {n!r}")
    t = _positive_scalar(temperature, "temperature", "Use a temperature > 0 (T = 1 is the plain softmax).")
    if not math.isfinite(1.0 / t) or 1.0 / t > 1e300:
        raise ValueError(f"temperature={temperature!r} is so small that 1/temperature overflows float64; use a temperature >= 1e-300")
    keys = np.vstack([np.eye(n - 1), np.zeros((1, n - 1))])
    name = f"categorical(n={n})" if t == 1.0 else f"categorical(n={n}, T={t:g})"
    return _softmax_family([Head(keys, 1.0 / t)], name, "softmax over n outcomes, last logit fixed at 0")


def attention(keys, scale: float | None = None) -> Family:
    r"""Attention distribution of one query: ``p(x) = softmax(scale * keys @ x)``.

    ``keys`` is ``(n, m)``; the query ``x`` lives in ``R^m``; default
    ``scale = 1/sqrt(m)``.  The Fisher metric is the pullback of the categorical
    Fisher metric through :math:`x \mapsto s K x`:
    :math:`g(x) = s^2 K^\top(\operatorname{diag} p - p p^\top) K = s^2\,\mathrm{Cov}_p(k)`,
    which is definite iff the centred keys have rank ``m`` (checked here).
    """
    keys = _as_keys(keys)
    n, m = keys.shape
    s = 1.0 / math.sqrt(m) if scale is None else _positive_scalar(scale, "scale", "Use scale > 0, e.g. 1/sqrt(m).")
    if not np.all(np.isfinite(keys * s)):
        raise ValueError(f"scale * keys overflows float64 (scale={s!r}); use a smaller scale or smaller keys")
    _check_head_rank(keys, "keys")
    return _softmax_family([Head(keys, s)], f"attention(n={n}, m={m})", "single-head attention of one query")


def multihead_attention(keys_list, scale: float | None = None) -> Family:
    r"""Independent heads reading the same query ``x in R^m``.

    The joint distribution is the product of the heads' softmaxes, so the Fisher
    metric and the entropy are sums over heads, and so are the third cumulants.
    Each head alone may be degenerate; the sum must be definite (checked).
    """
    if isinstance(keys_list, np.ndarray) and keys_list.ndim == 3:
        keys_list = list(keys_list)
    if not isinstance(keys_list, (list, tuple)) or len(keys_list) == 0:
        raise ValueError("keys_list must be a non-empty list of (n_h, m) key arrays, one per head")
    heads = [_as_keys(k, f"keys_list[{i}]") for i, k in enumerate(keys_list)]
    m = heads[0].shape[1]
    for i, k in enumerate(heads):
        if k.shape[1] != m:
            raise ValueError(
                f"keys_list[{i}] has query dimension {k.shape[1]} but keys_list[0] has {m}: "
                "all heads must read the same query space"
            )
    s = 1.0 / math.sqrt(m) if scale is None else _positive_scalar(scale, "scale", "Use scale > 0.")
    stacked = np.vstack([k - k.mean(axis=0) for k in heads])
    if np.linalg.matrix_rank(stacked) < m:
        raise ValueError(
            f"the heads' centred keys together have rank {np.linalg.matrix_rank(stacked)} < m = {m}: "
            "the query space has more dimensions than the keys can see; project the query "
            "(geometry.project_keys on the stacked keys) or add heads"
        )
    name = f"multihead(h={len(heads)}, n={'/'.join(str(k.shape[0]) for k in heads)}, m={m})"
    return _softmax_family([Head(k, s) for k in heads], name, "independent attention heads, same query")


def _gauss_log_partition(eta, xp):
    return -eta[0] ** 2 / (4 * eta[1]) - xp.log(-2 * eta[1]) / 2


def _gauss_natural(theta, xp):
    mu, sigma = theta[0], theta[1]
    return xp.vector([mu / sigma**2, -1 / (2 * sigma**2)])


def _gauss_entropy(theta, xp):
    return (1 + xp.log(2 * xp.pi)) / 2 + xp.log(theta[1])


def _gauss_log_density(theta, x, xp):
    mu, sigma = theta[0], theta[1]
    return -((x - mu) ** 2) / (2 * sigma**2) - xp.log(sigma) - xp.log(2 * xp.pi) / 2


def _gauss_quadrature():
    t, w = np.polynomial.hermite.hermgauss(20)  # exact for polynomials of degree <= 39

    def nodes(theta):
        return theta[0] + np.sqrt(2.0) * theta[1] * t

    return nodes, w / np.sqrt(np.pi)


def _gauss_domain(theta):
    if np.any(theta[..., 1] <= 0):
        idx = np.argwhere(theta[..., 1] <= 0)[0]
        return f"sigma = theta[..., 1] must be > 0 (first offending point at index {tuple(idx)})"
    return None


def gaussian() -> Family:
    r"""Univariate normal :math:`N(\mu, \sigma^2)` in coordinates ``theta = (mu, sigma)``.

    An exponential family with natural parameters
    :math:`\eta = (\mu/\sigma^2, -1/(2\sigma^2))` and
    :math:`\psi(\eta) = -\eta_1^2/(4\eta_2) - \tfrac12\log(-2\eta_2)`.
    Fisher metric :math:`g = \operatorname{diag}(1/\sigma^2, 2/\sigma^2)`: a
    hyperbolic plane of constant scalar curvature :math:`-1`.
    Entropy :math:`\tfrac12\log(2\pi e\sigma^2)`.
    """
    return Family(
        name="gaussian(mu, sigma)",
        dim=2,
        kind="exponential",
        log_partition=_gauss_log_partition,
        natural=_gauss_natural,
        entropy_fn=_gauss_entropy,
        log_density=_gauss_log_density,
        quadrature=_gauss_quadrature(),
        domain=_gauss_domain,
        description="univariate normal in (mu, sigma)",
    )


# --------------------------------------------------------------------------- user families


def _default_name(fn, fallback):
    name = getattr(fn, "__name__", "")
    return fallback if not name or name == "<lambda>" else name


def _accepts_xp(fn) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def _lift(fn, name):
    """Accept ``fn(theta, xp)`` (lowerable) or ``fn(theta)`` (JAX only)."""
    if fn is None:
        return None, True
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if _accepts_xp(fn):
        return fn, True

    def jax_only(theta, xp):
        if xp is not mathns.JAX:
            raise NotImplementedError(f"{name} was given as a plain JAX function; it cannot be lowered to {xp.name}")
        return fn(theta)

    return jax_only, False


def exponential_family(log_partition, dim: int, entropy=None, name: str | None = None) -> Family:
    r"""An exponential family :math:`p_\eta(x) = h(x)\exp(\eta\cdot t(x) - \psi(\eta))` from its log-partition.

    ``log_partition(eta, xp)`` (or ``log_partition(eta)`` for a JAX-only
    definition) maps natural parameters ``eta`` of shape ``(dim,)`` to
    :math:`\psi(\eta)`.  The Fisher metric is :math:`\nabla^2\psi`.  ``entropy``
    (same calling convention) is optional: the entropy depends on the base
    measure ``h``, which ``psi`` does not determine.

    Example, the exponential distribution :math:`\lambda e^{-\lambda x}` with
    :math:`\eta = -\lambda`, :math:`\psi = -\log(-\eta)`::

        fam = geometry.exponential_family(lambda eta, xp: -xp.log(-eta[0]), dim=1,
                                          entropy=lambda eta, xp: 1 - xp.log(-eta[0]),
                                          name="exponential")
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer (number of natural parameters), got {dim!r}")
    psi, low1 = _lift(log_partition, "log_partition")
    if psi is None:
        raise TypeError("log_partition must be a function eta -> psi(eta)")
    ent, low2 = _lift(entropy, "entropy")
    return Family(
        name=name or _default_name(log_partition, "user exponential family"),
        dim=int(dim),
        kind="exponential",
        log_partition=psi,
        entropy_fn=ent,
        lowerable=low1 and low2,
        description="user-defined exponential family",
    )


def discrete_family(log_probs, dim: int, name: str | None = None) -> Family:
    r"""A family over a finite support from ``theta -> log p_theta`` (a ``(k,)`` vector).

    ``log_probs(theta, xp)`` (or a JAX-only ``log_probs(theta)``) must return
    normalised log-probabilities; use ``xp.log_softmax`` for a softmax
    parametrisation.  The Fisher metric is the exact finite sum
    :math:`g_{ij} = \sum_x p(x)\,\partial_i\log p(x)\,\partial_j\log p(x)` and the
    entropy :math:`-\sum_x p\log p`.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer (number of coordinates), got {dim!r}")
    lp, low = _lift(log_probs, "log_probs")
    if lp is None:
        raise TypeError("log_probs must be a function theta -> log-probabilities")
    return Family(
        name=name or _default_name(log_probs, "user discrete family"),
        dim=int(dim),
        kind="discrete",
        log_probs=lp,
        lowerable=low,
        description="user-defined family on a finite support",
    )
