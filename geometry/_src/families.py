r"""Probability families (layer 2): each kind is one small immutable class that is a JAX pytree.

A family holds its parameters and one defining function; every geometric quantity
(metric, entropy, curvature) is computed from it by the layers above.  Array
parameters (keys, scales) are pytree *leaves*: ``geometry.attention(K)`` accepts a
traced ``K``, and a stack of families of one shape can be ``jax.vmap``-ed.  Names,
dimensions and user functions are *static* fields (part of the tree structure).

The contract of a kind (:class:`Family`) is a handful of methods; the routes, the
precision tiers and the engine use nothing else, so a new kind is one new subclass:

``metric(theta)``
    the Fisher metric ``g[i, j]`` at one point, float64 JAX, twice differentiable
    (the ``levi-civita`` route and :func:`geometry.christoffel` differentiate it).
``metric_constructions()``
    ``{name: fn(theta)}`` of the constructions :func:`geometry.fisher_metric` offers
    (``"score"``, ``"hessian"``, ``"covariance"``); ``metric`` is the most accurate one.
``entropy(theta)`` / ``has_entropy``
    Shannon entropy in nats, when the family determines it.
``potential()``
    ``(psi(eta, xp), chart(theta, xp))`` when the metric is the Hessian of a
    log-partition in the chart ``eta = chart(theta)`` (enables the ``hessian`` route).
``softmax_heads()``
    the heads ``(keys, scale)`` of a softmax-linear family (enables the ``cumulant``
    route and the double-double tier).
``lower_metric(coords, xp)``
    the metric as nested lists of expressions in namespace ``xp`` (sympy: the
    mpmath tier differentiates it exactly); ``lowerable`` says whether it exists.
``domain_error(flat)`` / ``point_checks(theta)`` / ``output_errors()``
    host-side domain test of an ``(N, dim)`` numpy batch, a per-point JAX check of
    user functions (finite metric, normalisation), and output-shape errors of user
    functions; the engine raises the messages.

Defining functions take ``(theta, xp)`` where ``xp`` is one of the namespaces in
:mod:`geometry._src.mathns`; user functions of ``theta`` alone are accepted too
(JAX only: the high-precision tier cannot re-evaluate them).

Index convention: ``g[i, j] = g_{ij}``; derivative indices come last.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy

from . import mathns
from .mathns import JAX, stable_log_softmax

__all__ = [
    "Family",
    "Head",
    "SoftmaxLinear",
    "ExponentialFamily",
    "DiscreteFamily",
    "categorical",
    "attention",
    "multihead_attention",
    "gaussian",
    "exponential_family",
    "discrete_family",
    "project_keys",
]


def is_traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer (inside ``jit``/``vmap``/``grad``)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


# --------------------------------------------------------------------------- the contract


class Family(eqx.Module):
    """A smooth family of probability distributions with coordinates in ``R^dim`` (abstract base).

    Construct one with :func:`categorical`, :func:`attention`,
    :func:`multihead_attention`, :func:`gaussian`, :func:`exponential_family` or
    :func:`discrete_family`, or subclass it (the module docstring lists the
    contract; only ``name``, ``dim`` and ``metric`` are required).  Families are
    immutable pytrees: array parameters are leaves, everything else is static.
    """

    #: descriptive label of the kind (reports print it; no code branches on it)
    kind: ClassVar[str] = "abstract"
    #: what the user wrote, for error messages ("log_partition", "log_probs", ...)
    defined_by: ClassVar[str] = "metric"
    #: what positive definiteness requires of that definition, for error messages
    definiteness_requirement: ClassVar[str] = "the metric must be positive definite"

    # ``name: str`` and ``dim: int`` are static fields of every concrete kind.

    def metric(self, theta):
        raise NotImplementedError(f"{type(self).__name__} must define metric(theta)")

    def metric_constructions(self) -> dict:
        return {"default": self.metric}

    @property
    def has_entropy(self) -> bool:
        return False

    def entropy(self, theta):
        raise ValueError(f"{self.name} has no entropy function")

    def potential(self):
        return None

    def softmax_heads(self):
        return None

    @property
    def lowerable(self) -> bool:
        return False

    def lower_metric(self, coords, xp):
        raise NotImplementedError(f"{self.name} cannot be lowered to {xp.name}")

    def domain_error(self, flat: np.ndarray) -> str | None:
        return None

    def unrepresentable(self, flat: np.ndarray):
        """``(mask, reason)`` for the points of an ``(N, dim)`` numpy batch that are valid but beyond what
        float64 can represent (the engine reports them undefined and computes the others), or ``None``."""
        return None

    def smallest_log_prob(self, theta):
        """``min_x log p(x)`` at one point for families with a finite support the autodiff routes
        sum over (``None``: no such gate).  Below :data:`geometry._src.routes.LOG_PRODUCT_FLOOR`
        products of two probabilities underflow float64 and the float64 tier hands the point on."""
        return None

    def point_checks(self, theta):
        """``(ok, normalisation error)`` at one point: the default metric is finite."""
        return jnp.all(jnp.isfinite(self.metric(theta))), jnp.zeros(())

    def output_errors(self) -> str | None:
        return None

    def defining_values(self, theta, xp):
        """The defining function's values at ``theta`` in namespace ``xp`` (a list: the log-partition, or the
        log-probabilities), or ``None``.  Where the float64 metric is not finite but these are real and
        the mpmath metric is finite, the point is beyond float64's range, not bad input."""
        return None

    @property
    def definite_by_construction(self) -> bool:
        """True when the metric is positive definite at every point (checked at construction)."""
        return False

    @property
    def is_hessian_metric(self) -> bool:
        """True when the metric is the Hessian of a potential in *some* affine chart."""
        return self.potential() is not None

    @property
    def heads(self) -> tuple:
        return ()

    @property
    def num_outcomes(self) -> int | None:
        return None

    def __repr__(self):
        return f"Family({self.name!r}, dim={self.dim}, kind={self.kind!r})"


# --------------------------------------------------------------------------- shared constructions


def score_metric(log_probs: Callable, theta):
    r""":math:`g_{ij} = \sum_x p(x)\,\partial_i\log p(x)\,\partial_j\log p(x)` (finite support; ``jacfwd`` scores)."""
    lp = log_probs(theta)
    score = jax.jacfwd(log_probs)(theta)  # (k, dim): d log p(x) / d theta
    return jnp.einsum("x,xi,xj->ij", jnp.exp(lp), score, score)


def entropy_of_log_probs(lp):
    """:math:`-\\sum_x p\\log p` with ``0 log 0 = 0``: every term is >= 0, so there is no cancellation."""
    p = jnp.exp(lp)
    return -jnp.sum(jnp.where(p > 0, p * lp, 0.0))


def hessian_metric(psi: Callable, chart: Callable | None, theta):
    r""":math:`g_\theta = J^\top\,\nabla^2\psi(\eta(\theta))\,J`, :math:`J = \partial\eta/\partial\theta` (autodiff)."""
    eta = theta if chart is None else chart(theta)
    h = jax.hessian(psi)(eta)
    if chart is None:
        return h
    jac = jax.jacfwd(chart)(theta)
    return jac.T @ h @ jac


def _positive_scalar(value, name, fix):
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise TypeError(f"{name} must be a real number, got {value!r}. {fix}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}. {fix}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}. {fix}")
    return v


def as_real_array(value, name: str, what: str) -> np.ndarray:
    """``value`` as a float64 array, or ``TypeError``/``ValueError`` naming ``name`` (``what`` describes the shape)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError(f"{name} must be {what}; it is ragged (rows of different lengths). Pass a rectangular array.") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be {what}, got dtype object (ragged or non-numeric entries)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be {what}, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    return arr.astype(np.float64)


# --------------------------------------------------------------------------- softmax-linear kind


class Head(eqx.Module):
    """One softmax head: logits ``scale * keys @ x``; ``keys`` ``(n, m)`` and ``scale`` are leaves."""

    keys: jax.Array | np.ndarray
    scale: jax.Array | np.ndarray

    def __check_init__(self):
        # invariants of the leaves, checked whenever they are concrete (traced leaves are checked by
        # the constructor that made them concrete, or not at all inside a transformation)
        if is_traced((self.keys, self.scale)):
            return
        keys, scale = np.asarray(self.keys), np.asarray(self.scale)
        if keys.ndim != 2 or not np.all(np.isfinite(keys)):
            raise ValueError(f"Head keys must be a finite (n, m) array, got shape {keys.shape} with non-finite entries "
                             f"{int(np.sum(~np.isfinite(keys)))}; pass finite keys")
        if scale.shape != () or not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"Head scale must be a finite number > 0, got {scale!r}; use e.g. 1/sqrt(m)")


def _as_keys(keys, name="keys"):
    if isinstance(keys, jax.core.Tracer):
        if keys.ndim != 2:
            raise ValueError(f"{name} must be a 2-d (n, m) array (n keys in R^m), got shape {keys.shape}")
        return jnp.asarray(keys, jnp.float64)
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


def _centred_rank(centred) -> int:
    """Numerical rank of centred keys, invariant under rescaling query coordinates by powers of two:
    columns are equilibrated (scaled to unit max-norm by a power of two) before the SVD."""
    col = np.max(np.abs(centred), axis=0)
    if not np.any(col > 0):
        return 0
    exps = np.where(col > 0, np.frexp(np.where(col > 0, col, 1.0))[1], 0)
    scaled = np.ldexp(centred, -exps[None, :])
    sv = np.linalg.svd(scaled, compute_uv=False)
    tol = max(scaled.shape) * np.finfo(np.float64).eps * sv[0]
    return int(np.sum(sv > tol))


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
    rank = _centred_rank(keys - keys.mean(axis=0))
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


def softmax_atoms(heads, x):
    r"""Weights and centred, scaled key vectors of a softmax-linear family at query ``x``.

    For each head with keys :math:`k_i` and scale ``s``, returns :math:`w_i = p_i` and
    :math:`u_i = s\,(k_i - \bar k)`, :math:`\bar k = \sum_j p_j k_j`, stacked over heads.
    Then :math:`g = \sum_i w_i u_i u_i^\top` and the third cumulant is
    :math:`T = \sum_i w_i u_i^{\otimes 3}` (cumulants of independent heads add).

    Precision: :math:`k_i - \bar k` cancels catastrophically when :math:`p` is
    concentrated on one key (then :math:`\bar k \approx k_a`).  We centre at the
    dominant key first: :math:`d_i = k_i - k_a` is exact-ish and
    :math:`\bar d = \sum_j p_j d_j` is a sum of small terms, so
    :math:`d_i - \bar d` is accurate to relative precision for every ``i``.
    """
    ws, us = [], []
    for h in heads:
        keys = jnp.asarray(h.keys)
        logp = stable_log_softmax(h.scale * (keys @ x))
        p = jnp.exp(logp)
        a = jnp.argmax(logp)
        d = keys - keys[a]
        ws.append(p)
        us.append(h.scale * (d - p @ d))
    return jnp.concatenate(ws), jnp.concatenate(us, axis=0)


def equilibration(heads, with_scale: bool = True):
    r"""Per-coordinate powers of two :math:`D_j` that bring the largest key difference of column ``j`` into [1/2, 1).

    :math:`D_j = 2^{-e_j}` with :math:`e_j` the binary exponent of :math:`\max_{h,i}|c_h(k_{hij} - k_{h0j})|`
    (:math:`c_h = s_h`, or 1 without ``with_scale``).  The scalar curvature is a coordinate
    invariant, so the curvature routes may express the atoms in the coordinates ``D x``:
    :math:`u 	o Du` changes :math:`g, T` covariantly and leaves :math:`|T|^2_g`, :math:`|	au|^2_g`
    and ``R`` unchanged.  Scaling by a power of two is exact, so the values are bit for bit
    those of the unscaled atoms wherever those are representable; where keys or scales are
    extreme (keys times 2^-490, a temperature of 1e145) it keeps the third moments
    :math:`\sum w u^{\otimes 3}` from underflowing (XLA on the CPU flushes subnormals to zero).
    Piecewise constant in the keys: it contributes nothing to derivatives.
    """
    col = None
    for h in heads:
        keys = jax.lax.stop_gradient(jnp.asarray(h.keys))
        c = jax.lax.stop_gradient(jnp.asarray(h.scale)) if with_scale else 1.0
        spread = jnp.max(jnp.abs(c * (keys - keys[0])), axis=0)
        col = spread if col is None else jnp.maximum(col, spread)
    _, e = jnp.frexp(jnp.where(col > 0, col, 1.0))
    return jnp.ldexp(jnp.ones_like(col), -e)


def _logit_bound(heads, theta) -> float:
    r"""An upper bound on every :math:`|z_i| = s\,|k_i\cdot\theta|`: :math:`s\,\max_i\|k_i\|_1\,\max|\theta|`."""
    tmax = max(float(np.max(theta)), -float(np.min(theta)))
    return max(float(h.scale) * float(np.max(np.sum(np.abs(h.keys), axis=1))) * tmax for h in heads)


class SoftmaxLinear(Family):
    r"""``p(x) = prod_h softmax(s_h K_h x)``: one or several independent softmax heads reading ``x in R^m``.

    The categorical family (``K = [I; 0]``, ``s = 1/T``), single- and multi-head
    attention are of this kind.  It is an exponential family with log-partition
    :math:`\psi(x) = \sum_h \operatorname{logsumexp}(s_h K_h x)`; its metric is
    :math:`g = \sum_h s_h^2\,\mathrm{Cov}_{p_h}(k)` and its moments give the
    curvature in closed form (the ``cumulant`` route).
    """

    kind: ClassVar[str] = "softmax-linear"
    defined_by: ClassVar[str] = "keys"
    heads_: tuple  # of Head (leaves: keys, scale)
    name: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    description: str = eqx.field(static=True, default="")

    @property
    def heads(self) -> tuple:
        return self.heads_

    def softmax_heads(self):
        return self.heads_

    @property
    def definite_by_construction(self) -> bool:
        return True  # the centred keys have rank m (checked by the constructors)

    @property
    def num_outcomes(self) -> int | None:
        return int(np.prod([h.keys.shape[0] for h in self.heads_]))

    #: softmax families are given in their natural coordinates
    natural: ClassVar[None] = None

    def _logits(self, h, x, xp):
        if xp is JAX:  # keys and scale may be traced
            return h.scale * (jnp.asarray(h.keys) @ x)
        return xp.matvec(np.asarray(h.keys) * float(h.scale), x)

    def log_partition(self, x, xp):
        r""":math:`\psi(x) = \sum_h \operatorname{logsumexp}(s_h K_h x)` in namespace ``xp``."""
        return xp.sum([xp.logsumexp(self._logits(h, x, xp)) for h in self.heads_])

    def log_probs(self, x, xp):
        if len(self.heads_) != 1:
            raise ValueError("log_probs of a multi-head family: use the per-head distributions")
        return xp.log_softmax(self._logits(self.heads_[0], x, xp))

    def metric(self, theta):
        w, u = softmax_atoms(self.heads_, theta)
        return jnp.einsum("a,ai,aj->ij", w, u, u)

    def _score(self, theta):
        g = 0.0
        for h in self.heads_:
            keys = jnp.asarray(h.keys)
            g = g + score_metric(lambda t, h=h, keys=keys: stable_log_softmax(h.scale * (keys @ t)), theta)
        return g

    def _hessian(self, theta):
        return hessian_metric(lambda x: self.log_partition(x, JAX), None, theta)

    def metric_constructions(self) -> dict:
        return {"covariance": self.metric, "score": self._score, "hessian": self._hessian}

    @property
    def has_entropy(self) -> bool:
        return True

    def entropy(self, theta):
        # -p log p >= 0 termwise: no cancellation, and log p_max is accurate (log1p form).
        return sum(entropy_of_log_probs(stable_log_softmax(h.scale * (jnp.asarray(h.keys) @ theta))) for h in self.heads_)

    def potential(self):
        return (self.log_partition, None)

    @property
    def lowerable(self) -> bool:
        return True

    def lower_metric(self, coords, xp):
        raise NotImplementedError("softmax families use the cumulant formula in high precision")

    def point_checks(self, theta):
        return jnp.ones((), bool), jnp.zeros(())  # definite and finite by construction

    def unrepresentable(self, flat: np.ndarray):
        # Fast path: when the bound is below 1e300 no logit spread can overflow, and the (N, n)
        # product below (as costly as the curvature kernel itself) is not needed.
        if flat.size == 0 or _logit_bound(self.heads_, flat) < 1e300:
            return None
        mask = np.zeros(flat.shape[0], bool)
        with np.errstate(over="ignore", invalid="ignore"):
            for h in self.heads_:
                z = float(h.scale) * (flat @ np.asarray(h.keys).T)
                mask |= ~np.isfinite(np.max(z, axis=-1) - np.min(z, axis=-1))
        reason = ("undefined: the logits' differences overflow float64 (> 1.8e308); such a point is a vertex "
                  "of the simplex to any precision. Rescale theta.")
        return (mask, reason) if mask.any() else None


def _softmax(keys_list, scales, name, description):
    if is_traced(keys_list) or is_traced(scales):
        heads = tuple(Head(jnp.asarray(k, jnp.float64), jnp.asarray(s, jnp.float64)) for k, s in zip(keys_list, scales))
    else:
        heads = tuple(Head(np.asarray(k, np.float64), np.asarray(s, np.float64)) for k, s in zip(keys_list, scales))
    return SoftmaxLinear(heads, name=name, dim=int(heads[0].keys.shape[1]), description=description)


def _scale_for(scale, m, fix):
    if scale is None:
        return 1.0 / math.sqrt(m)
    if isinstance(scale, jax.core.Tracer):
        return scale
    return _positive_scalar(scale, "scale", fix)


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
    return _softmax([keys], [1.0 / t], name, "softmax over n outcomes, last logit fixed at 0")


def attention(keys, scale: float | None = None) -> Family:
    r"""Attention distribution of one query: ``p(x) = softmax(scale * keys @ x)``.

    ``keys`` is ``(n, m)`` (a traced array is accepted: the family is a pytree whose
    leaves are ``keys`` and ``scale``); the query ``x`` lives in ``R^m``; default
    ``scale = 1/sqrt(m)``.  The Fisher metric is the pullback of the categorical
    Fisher metric through :math:`x \mapsto s K x`:
    :math:`g(x) = s^2 K^\top(\operatorname{diag} p - p p^\top) K = s^2\,\mathrm{Cov}_p(k)`,
    which is definite iff the centred keys have rank ``m`` (checked here for
    concrete keys; the rank test equilibrates columns, so it is invariant under
    rescaling query coordinates).
    """
    keys = _as_keys(keys)
    n, m = keys.shape
    s = _scale_for(scale, m, "Use scale > 0, e.g. 1/sqrt(m).")
    if not is_traced((keys, s)):
        if not np.all(np.isfinite(keys * s)):
            raise ValueError(f"scale * keys overflows float64 (scale={s!r}); use a smaller scale or smaller keys")
        _check_head_rank(keys, "keys")
    return _softmax([keys], [s], f"attention(n={n}, m={m})", "single-head attention of one query")


def multihead_attention(keys_list, scale: float | None = None) -> Family:
    r"""Independent heads reading the same query ``x in R^m``.

    The joint distribution is the product of the heads' softmaxes, so the Fisher
    metric and the entropy are sums over heads, and so are the third cumulants.
    Each head alone may be degenerate; the sum must be definite (checked).
    """
    if isinstance(keys_list, (np.ndarray, jax.Array)) and keys_list.ndim == 3:
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
    s = _scale_for(scale, m, "Use scale > 0.")
    if not is_traced((heads, s)):
        rank = _centred_rank(np.vstack([k - k.mean(axis=0) for k in heads]))
        if rank < m:
            raise ValueError(
                f"the heads' centred keys together have rank {rank} < m = {m}: "
                "the query space has more dimensions than the keys can see; project the query "
                "(geometry.project_keys on the stacked keys) or add heads"
            )
    name = f"multihead(h={len(heads)}, n={'/'.join(str(k.shape[0]) for k in heads)}, m={m})"
    return _softmax(heads, [s] * len(heads), name, "independent attention heads, same query")


# --------------------------------------------------------------------------- exponential kind


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


class _JaxOnly:
    """A user function of ``theta`` alone, callable as ``fn(theta, xp)`` with ``xp = JAX`` only."""

    def __init__(self, fn, name):
        self.fn, self.name = fn, name

    def __call__(self, theta, xp):
        if xp is not mathns.JAX:
            raise NotImplementedError(f"{self.name} was given as a plain JAX function; it cannot be lowered to {xp.name}")
        return self.fn(theta)


def _lift(fn, name):
    """Accept ``fn(theta, xp)`` (lowerable) or ``fn(theta)`` (JAX only): ``(fn(theta, xp), lowerable)``."""
    if fn is None:
        return None, True
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if _accepts_xp(fn):
        return fn, True
    return _JaxOnly(fn, name), False


class ExponentialFamily(Family):
    r"""An exponential family :math:`p_\eta(x) = h(x)\exp(\eta\cdot t(x) - \psi(\eta))` from its log-partition.

    ``log_partition(eta, xp)``; ``natural(theta, xp)`` is the chart
    ``eta = eta(theta)`` (``None``: ``theta`` are the natural parameters).  The Fisher
    metric is :math:`J^\top(\nabla^2\psi)J`.
    """

    kind: ClassVar[str] = "exponential"
    defined_by: ClassVar[str] = "log_partition"
    definiteness_requirement: ClassVar[str] = "the log-partition must be strictly convex"
    name: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    log_partition: Callable = eqx.field(static=True)
    natural: Callable | None = eqx.field(static=True, default=None)
    entropy_fn: Callable | None = eqx.field(static=True, default=None)
    log_density: Callable | None = eqx.field(static=True, default=None)  # (theta, x, xp), for the score construction
    quadrature: Callable | None = eqx.field(static=True, default=None)  # theta -> (nodes, weights) (numpy weights)
    domain: Callable | None = eqx.field(static=True, default=None)  # (N, dim) numpy -> message or None
    is_lowerable: bool = eqx.field(static=True, default=True)
    description: str = eqx.field(static=True, default="")

    def chart(self, theta):
        return theta if self.natural is None else self.natural(theta, JAX)

    def metric(self, theta):
        chart = None if self.natural is None else (lambda t: self.natural(t, JAX))
        return hessian_metric(lambda e: self.log_partition(e, JAX), chart, theta)

    def _score(self, theta):
        xs, weights = self.quadrature(theta)
        score = jax.vmap(lambda x: jax.grad(lambda t: self.log_density(t, x, JAX))(theta))(xs)
        return jnp.einsum("x,xi,xj->ij", jnp.asarray(weights), score, score)

    def metric_constructions(self) -> dict:
        out = {"hessian": self.metric}
        if self.log_density is not None and self.quadrature is not None:
            out["score"] = self._score
        return out

    @property
    def has_entropy(self) -> bool:
        return self.entropy_fn is not None

    def entropy(self, theta):
        if self.entropy_fn is None:
            return super().entropy(theta)
        return self.entropy_fn(theta, JAX)

    def potential(self):
        return (self.log_partition, self.natural)

    @property
    def lowerable(self) -> bool:
        return self.is_lowerable

    def lower_metric(self, coords, xp):
        raise NotImplementedError("exponential families use the exact Hessian of psi in high precision")

    def domain_error(self, flat):
        return None if self.domain is None else self.domain(flat)

    def defining_values(self, theta, xp):
        eta = list(theta) if self.natural is None else self.natural(list(theta), xp)
        return [self.log_partition(eta, xp)]

    def point_checks(self, theta):
        g = self.metric(theta)
        value = self.log_partition(self.chart(theta), JAX)
        return jnp.all(jnp.isfinite(g)) & jnp.isfinite(value), jnp.zeros(())

    def output_errors(self) -> str | None:
        probe = jax.ShapeDtypeStruct((self.dim,), jnp.float64)
        out = jax.eval_shape(lambda t: self.log_partition(self.chart(t), JAX), probe)
        msg = _shape_error(out.shape, f"log_partition of {self.name}", self.dim, scalar=True)
        if msg is None and self.entropy_fn is not None:
            out = jax.eval_shape(lambda t: self.entropy_fn(t, JAX), probe)
            msg = _shape_error(out.shape, f"entropy of {self.name}", self.dim, scalar=True)
        return msg


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


_HERMITE_T, _HERMITE_W = np.polynomial.hermite.hermgauss(20)  # exact for polynomials of degree <= 39


def _gauss_quadrature(theta):
    return theta[0] + np.sqrt(2.0) * theta[1] * _HERMITE_T, _HERMITE_W / np.sqrt(np.pi)


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
    return _GAUSSIAN


_GAUSSIAN = ExponentialFamily(
    name="gaussian(mu, sigma)",
    dim=2,
    log_partition=_gauss_log_partition,
    natural=_gauss_natural,
    entropy_fn=_gauss_entropy,
    log_density=_gauss_log_density,
    quadrature=_gauss_quadrature,
    domain=_gauss_domain,
    description="univariate normal in (mu, sigma)",
)


def _default_name(fn, fallback):
    name = getattr(fn, "__name__", "")
    return fallback if not name or name == "<lambda>" else name


def _check_dim(dim, what):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer ({what}), got {dim!r}")
    return int(dim)


def _shape_error(shape, what: str, dim: int, scalar: bool) -> str | None:
    """The output-shape rule of user functions: a scalar (log-partition, entropy) or a vector of at
    least two log-probabilities, for an input of shape ``(dim,)``; the message, or ``None``."""
    if scalar and shape != ():
        return f"{what} must return a scalar for an input of shape ({dim},), got shape {shape}; reduce it (e.g. sum) or fix the indexing"
    if not scalar and (len(shape) != 1 or shape[0] < 2):
        return (f"{what} must return a 1-d vector of log-probabilities (one per outcome, at least 2) for theta of "
                f"shape ({dim},), got shape {shape}")
    return None


def _probe(fn, dim: int, what: str, lowerable: bool, scalar: bool):
    """Call a user function once in every namespace it will be lowered to (JAX by shape, sympy on
    symbols), at construction, so that a wrong namespace, a wrong ``dim`` or a wrong return type is
    refused here with the fix instead of a raw traceback at first use."""
    probe = jax.ShapeDtypeStruct((dim,), jnp.float64)
    try:
        out = jax.eval_shape(lambda t: fn(t, JAX), probe)
    except IndexError:
        raise ValueError(
            f"{what} indexes its argument beyond dim={dim} (coordinates 0..{dim - 1}); pass the dim it uses"
        ) from None
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError) as exc:
        raise TypeError(
            f"{what} failed on JAX arrays ({type(exc).__name__}): write it with the namespace it receives, "
            "xp.log / xp.exp / xp.vector / xp.logsumexp ..., not np.* or jnp.* (and no Python if on its "
            "argument), so it lowers to JAX, sympy and mpmath alike"
        ) from None
    if isinstance(out, (list, tuple)):
        raise TypeError(f"{what} returns a {type(out).__name__}; return xp.vector([...]) (a JAX array for xp = JAX)")
    msg = _shape_error(out.shape, what, dim, scalar)
    if msg:
        raise ValueError(msg)
    if lowerable:
        syms = list(sympy.symbols(f"t0:{dim}", real=True))
        try:
            fn(syms, mathns.SYMPY)
        except IndexError:  # JAX clamps out-of-range indices; a list of symbols does not
            raise ValueError(
                f"{what} indexes its argument beyond dim={dim} (coordinates 0..{dim - 1}); pass the dim it uses"
            ) from None
        except Exception as exc:  # noqa: BLE001 (any failure here is the user function's, reported with the fix)
            raise TypeError(
                f"{what} cannot be lowered to sympy ({type(exc).__name__}: {exc}); write it with the namespace "
                "it receives (xp.log, xp.exp, xp.vector, ...; no np.*, jnp.* or Python if on its argument), or "
                "pass a function of theta alone for a JAX-only family (no high-precision fallback)"
            ) from None


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
    dim = _check_dim(dim, "number of natural parameters")
    psi, low1 = _lift(log_partition, "log_partition")
    if psi is None:
        raise TypeError("log_partition must be a function eta -> psi(eta)")
    ent, low2 = _lift(entropy, "entropy")
    name = name or _default_name(log_partition, "user exponential family")
    _probe(psi, dim, f"log_partition of {name}", low1, scalar=True)
    if ent is not None:
        _probe(ent, dim, f"entropy of {name}", low2, scalar=True)
    return ExponentialFamily(
        name=name,
        dim=dim,
        log_partition=psi,
        entropy_fn=ent,
        is_lowerable=low1 and low2,
        description="user-defined exponential family",
    )


# --------------------------------------------------------------------------- finite-support kind


class DiscreteFamily(Family):
    r"""A family over a finite support from ``theta -> log p_theta`` (a ``(k,)`` vector).

    Fisher metric: the exact finite sum
    :math:`g_{ij} = \sum_x p(x)\,\partial_i\log p(x)\,\partial_j\log p(x)`; entropy
    :math:`-\sum_x p\log p`.
    """

    kind: ClassVar[str] = "discrete"
    defined_by: ClassVar[str] = "log_probs"
    definiteness_requirement: ClassVar[str] = "the score vectors must span R^dim"
    name: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    log_probs: Callable = eqx.field(static=True)
    is_lowerable: bool = eqx.field(static=True, default=True)
    description: str = eqx.field(static=True, default="")

    def metric(self, theta):
        return score_metric(lambda t: self.log_probs(t, JAX), theta)

    def metric_constructions(self) -> dict:
        return {"score": self.metric}

    def smallest_log_prob(self, theta):
        return jnp.min(self.log_probs(theta, JAX))

    @property
    def has_entropy(self) -> bool:
        return True

    def entropy(self, theta):
        return entropy_of_log_probs(self.log_probs(theta, JAX))

    @property
    def lowerable(self) -> bool:
        return self.is_lowerable

    def lower_metric(self, coords, xp):
        lp = self.log_probs(list(coords), xp)
        d = self.dim
        return [[xp.sum([xp.exp(l) * xp.diff(l, coords[i]) * xp.diff(l, coords[j]) for l in lp]) for j in range(d)] for i in range(d)]

    def defining_values(self, theta, xp):
        return list(self.log_probs(list(theta), xp))

    def point_checks(self, theta):
        g = self.metric(theta)
        lp = self.log_probs(theta, JAX)
        return jnp.all(jnp.isfinite(g)) & ~jnp.any(jnp.isnan(lp)), jnp.abs(jax.nn.logsumexp(lp))

    def output_errors(self) -> str | None:
        out = jax.eval_shape(lambda t: self.log_probs(t, JAX), jax.ShapeDtypeStruct((self.dim,), jnp.float64))
        return _shape_error(out.shape, f"log_probs of {self.name}", self.dim, scalar=False)


def discrete_family(log_probs, dim: int, name: str | None = None) -> Family:
    r"""A family over a finite support from ``theta -> log p_theta`` (a ``(k,)`` vector).

    ``log_probs(theta, xp)`` (or a JAX-only ``log_probs(theta)``) must return
    normalised log-probabilities; use ``xp.log_softmax`` for a softmax
    parametrisation.  The Fisher metric is the exact finite sum
    :math:`g_{ij} = \sum_x p(x)\,\partial_i\log p(x)\,\partial_j\log p(x)` and the
    entropy :math:`-\sum_x p\log p`.
    """
    dim = _check_dim(dim, "number of coordinates")
    lp, low = _lift(log_probs, "log_probs")
    if lp is None:
        raise TypeError("log_probs must be a function theta -> log-probabilities")
    name = name or _default_name(log_probs, "user discrete family")
    _probe(lp, dim, f"log_probs of {name}", low, scalar=False)
    return DiscreteFamily(
        name=name,
        dim=dim,
        log_probs=lp,
        is_lowerable=low,
        description="user-defined family on a finite support",
    )
