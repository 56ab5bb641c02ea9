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

from . import mathns, quadrature
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
    "DensityFamily",
    "RegressionFamily",
    "density_family",
    "regression_family",
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
    #: how to fix a definition that is not normalised (:meth:`point_checks`), for error messages
    normalisation_fix: ClassVar[str] = "return xp.log_softmax(logits) instead of raw logits"

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

    def density(self):
        """``(log_density(theta, x, xp), (lo, hi))`` when the metric is an integral over a real support
        (the mpmath tier then integrates with ``mpmath.quad``), else ``None``."""
        return None

    def rounding_floor(self, theta):
        """Relative error of the family's own float64 construction that no route can see (a numerical rule's
        rounded nodes), added to the estimate with :meth:`coarse`; ``0`` by default."""
        return jnp.zeros(())

    def coarse(self):
        """The same family with a coarser numerical rule (``None``: the metric is exact up to rounding).
        The precision-controlled default takes the difference of the two curvatures as the error of
        the rule, added to the rounding error model."""
        return None

    @property
    def singular_is_undefined(self) -> bool:
        """True when the metric is semi-definite by construction and may be singular (non-identifiable
        parameters): a singular point is reported undefined with the reason instead of refused."""
        return False

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
    r"""One softmax head: logits :math:`z = s\,K x + b`; ``keys`` ``(n, m)``, ``scale`` and ``offset`` are leaves.

    ``offset`` (``(n,)`` or ``None`` for none) is a per-key logit offset, such as the relative
    position bias of MPNet or T5.  It changes ``p`` only: the metric and the cumulants are still
    the moments of the scaled keys :math:`s k_i` under ``p``, so every route and tier treats an
    offset head like any other (with ``offset=None`` no addition is made at all, so the values
    are those of the plain head bit for bit).
    """

    keys: jax.Array | np.ndarray
    scale: jax.Array | np.ndarray
    offset: jax.Array | np.ndarray | None = None

    def __check_init__(self):
        # invariants of the leaves, checked whenever they are concrete (traced leaves are checked by
        # the constructor that made them concrete, or not at all inside a transformation)
        if is_traced((self.keys, self.scale, self.offset)):
            return
        keys, scale = np.asarray(self.keys), np.asarray(self.scale)
        if keys.ndim != 2 or not np.all(np.isfinite(keys)):
            raise ValueError(f"Head keys must be a finite (n, m) array, got shape {keys.shape} with non-finite entries "
                             f"{int(np.sum(~np.isfinite(keys)))}; pass finite keys")
        if scale.shape != () or not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"Head scale must be a finite number > 0, got {scale!r}; use e.g. 1/sqrt(m)")
        if self.offset is not None:
            off = np.asarray(self.offset)
            if off.shape != (keys.shape[0],) or not np.all(np.isfinite(off)):
                raise ValueError(f"Head offset must be a finite ({keys.shape[0]},) array (one logit offset per key), "
                                 f"got shape {off.shape}; pass offset=None for no offset")

    def logits(self, x):
        r""":math:`z = s\,K x + b` in JAX for ``x`` of shape ``(..., m)`` (the leaves may be traced)."""
        z = self.scale * jnp.einsum("nm,...m->...n", jnp.asarray(self.keys), x)
        return z if self.offset is None else z + jnp.asarray(self.offset)


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
        logp = stable_log_softmax(h.logits(x))
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
    r"""An upper bound on every :math:`|z_i| = |s\,k_i\cdot\theta + b_i|`: :math:`s\,\max_i\|k_i\|_1\,\max|\theta| + \max|b|`."""
    tmax = max(float(np.max(theta)), -float(np.min(theta)))
    return max(float(h.scale) * float(np.max(np.sum(np.abs(h.keys), axis=1))) * tmax
               + (0.0 if h.offset is None else float(np.max(np.abs(h.offset)))) for h in heads)


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
            return h.logits(x)
        if h.offset is None:
            return xp.matvec(np.asarray(h.keys) * float(h.scale), x)
        # the offset as one more column against a constant coordinate 1: exact in every namespace
        return xp.matvec(np.hstack([np.asarray(h.keys) * float(h.scale), np.asarray(h.offset)[:, None]]), list(x) + [1])

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
            g = g + score_metric(lambda t, h=h: stable_log_softmax(h.logits(t)), theta)
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
        return sum(entropy_of_log_probs(stable_log_softmax(h.logits(theta))) for h in self.heads_)

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
                if h.offset is not None:
                    z = z + np.asarray(h.offset)[None, :]
                mask |= ~np.isfinite(np.max(z, axis=-1) - np.min(z, axis=-1))
        reason = ("undefined: the logits' differences overflow float64 (> 1.8e308); such a point is a vertex "
                  "of the simplex to any precision. Rescale theta.")
        return (mask, reason) if mask.any() else None


def _softmax(keys_list, scales, name, description, offsets=None):
    offsets = [None] * len(keys_list) if offsets is None else offsets
    if is_traced(keys_list) or is_traced(scales) or is_traced(offsets):
        arr = lambda v: None if v is None else jnp.asarray(v, jnp.float64)  # noqa: E731
    else:
        arr = lambda v: None if v is None else np.asarray(v, np.float64)  # noqa: E731
    heads = tuple(Head(arr(k), arr(s), arr(b)) for k, s, b in zip(keys_list, scales, offsets))
    return SoftmaxLinear(heads, name=name, dim=int(heads[0].keys.shape[1]), description=description)


def _as_offset(offset, n: int, name: str):
    """``None``, or a finite ``(n,)`` float64 array of logit offsets (a traced array passes unchecked)."""
    if offset is None or isinstance(offset, jax.core.Tracer):
        if offset is not None and offset.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) (one logit offset per key), got {offset.shape}")
        return offset
    arr = as_real_array(offset, name, f"a ({n},) array of real logit offsets, one per key")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one logit offset per key), got {arr.shape}; "
                         "pass offset=None for no offset")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf (first at index {int(np.argmax(~np.isfinite(arr)))}); pass finite offsets")
    return arr


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


def attention(keys, scale: float | None = None, offset=None) -> Family:
    r"""Attention distribution of one query: ``p(x) = softmax(scale * keys @ x + offset)``.

    ``keys`` is ``(n, m)`` (a traced array is accepted: the family is a pytree whose
    leaves are ``keys`` and ``scale``); the query ``x`` lives in ``R^m``; default
    ``scale = 1/sqrt(m)``.  The Fisher metric is the pullback of the categorical
    Fisher metric through :math:`x \mapsto s K x`:
    :math:`g(x) = s^2 K^\top(\operatorname{diag} p - p p^\top) K = s^2\,\mathrm{Cov}_p(k)`,
    which is definite iff the centred keys have rank ``m`` (checked here for
    concrete keys; the rank test equilibrates columns, so it is invariant under
    rescaling query coordinates).

    ``offset`` (``(n,)``, default none) is added to the logits: a per-key bias such as
    MPNet's relative position bias, :math:`p = \operatorname{softmax}(s K x + b)`.  It moves
    ``p`` and nothing else: the metric is still :math:`s^2\,\mathrm{Cov}_p(k)` and the
    curvature the same function of the moments of :math:`s k` under ``p`` (every route, tier
    and the mpmath oracle add it to the logits exactly).
    """
    keys = _as_keys(keys)
    n, m = keys.shape
    s = _scale_for(scale, m, "Use scale > 0, e.g. 1/sqrt(m).")
    offset = _as_offset(offset, n, "offset")
    if not is_traced((keys, s)):
        if not np.all(np.isfinite(keys * s)):
            raise ValueError(f"scale * keys overflows float64 (scale={s!r}); use a smaller scale or smaller keys")
        _check_head_rank(keys, "keys")
    name = f"attention(n={n}, m={m})" if offset is None else f"attention(n={n}, m={m}, offset)"
    return _softmax([keys], [s], name, "single-head attention of one query", [offset])


def multihead_attention(keys_list, scale: float | None = None, offsets=None) -> Family:
    r"""Independent heads reading the same query ``x in R^m``.

    The joint distribution is the product of the heads' softmaxes, so the Fisher
    metric and the entropy are sums over heads, and so are the third cumulants.
    Each head alone may be degenerate; the sum must be definite (checked).
    ``offsets``: ``None`` or one ``(n_h,)`` logit offset (or ``None``) per head, as in
    :func:`attention`.
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
    if offsets is not None:
        if not isinstance(offsets, (list, tuple)) or len(offsets) != len(heads):
            raise ValueError(f"offsets must be None or a list of {len(heads)} entries (an (n_h,) array or None per head), "
                             f"got {type(offsets).__name__} of length {len(offsets) if hasattr(offsets, '__len__') else '?'}")
        offsets = [_as_offset(b, k.shape[0], f"offsets[{i}]") for i, (b, k) in enumerate(zip(offsets, heads))]
    name = f"multihead(h={len(heads)}, n={'/'.join(str(k.shape[0]) for k in heads)}, m={m})"
    return _softmax(heads, [s] * len(heads), name, "independent attention heads, same query", offsets)


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
    check_chart: bool = eqx.field(static=True, default=False)  # a user chart: refuse points where it is singular

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
        msg = None if self.domain is None else self.domain(flat)
        if msg is None and self.check_chart and flat.shape[0]:
            msg = _chart_singularity(self, flat)
        return msg

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


#: A chart whose Jacobian has smallest over largest singular value below this is singular at the point.
CHART_SINGULAR_RTOL = 1e-13


@jax.jit
def _chart_jacobians(family, flat):
    return jax.vmap(jax.jacfwd(family.chart))(flat)


def _chart_singularity(family, flat) -> str | None:
    jac = np.asarray(_chart_jacobians(family, jnp.asarray(flat)))
    with np.errstate(invalid="ignore", divide="ignore"):
        sv = np.linalg.svd(jac, compute_uv=False)
        ratio = sv[:, -1] / sv[:, 0]
    bad = np.flatnonzero(~(ratio > CHART_SINGULAR_RTOL))
    if not bad.size:
        return None
    i = int(bad[0])
    return (f"the chart natural(theta) has a singular Jacobian at point {i} = {flat[i].tolist()} (smallest over largest "
            f"singular value {ratio[i]:.1e} <= CHART_SINGULAR_RTOL = {CHART_SINGULAR_RTOL:g}; {bad.size} of {flat.shape[0]} "
            "points): it is not a coordinate chart there. Use coordinates in which theta -> eta is invertible, or "
            "leave those points out")


def exponential_family(log_partition, dim: int, entropy=None, name: str | None = None, natural=None) -> Family:
    r"""An exponential family :math:`p_\eta(x) = h(x)\exp(\eta\cdot t(x) - \psi(\eta))` from its log-partition.

    ``log_partition(eta, xp)`` (or ``log_partition(eta)`` for a JAX-only
    definition) maps natural parameters ``eta`` of shape ``(dim,)`` to
    :math:`\psi(\eta)`.  The Fisher metric is :math:`\nabla^2\psi`.  ``entropy``
    (same calling convention) is optional: the entropy depends on the base
    measure ``h``, which ``psi`` does not determine.

    ``natural(theta, xp)`` (optional) is a chart: the family is then written in coordinates
    ``theta`` (``dim`` of them) with natural parameters ``eta = natural(theta)`` (``dim`` of them),
    the metric is :math:`J^\top\nabla^2\psi(\eta(\theta))J` with :math:`J = \partial\eta/\partial\theta`, and
    ``entropy`` takes ``theta``.  Points where ``J`` is singular are refused with the reason.

    Example, the exponential distribution :math:`\lambda e^{-\lambda x}` with
    :math:`\eta = -\lambda`, :math:`\psi = -\log(-\eta)`::

        fam = geometry.exponential_family(lambda eta, xp: -xp.log(-eta[0]), dim=1,
                                          entropy=lambda eta, xp: 1 - xp.log(-eta[0]),
                                          name="exponential")

    and the gamma family in shape ``k`` and scale ``th`` (:math:`\eta = (k - 1, -1/\vartheta)`)::

        fam = geometry.exponential_family(lambda e, xp: xp.lgamma(e[0] + 1) - (e[0] + 1) * xp.log(-e[1]), dim=2,
                                          natural=lambda t, xp: xp.vector([t[0] - 1, -1 / t[1]]), name="gamma(k, th)")
    """
    dim = _check_dim(dim, "number of natural parameters")
    psi, low1 = _lift(log_partition, "log_partition")
    if psi is None:
        raise TypeError("log_partition must be a function eta -> psi(eta)")
    ent, low2 = _lift(entropy, "entropy")
    chart, low3 = _lift(natural, "natural")
    name = name or _default_name(log_partition, "user exponential family")
    _probe(psi, dim, f"log_partition of {name}", low1, scalar=True)
    if chart is not None:
        _probe_chart(chart, dim, f"natural (the chart) of {name}", low3)
        _probe(lambda t, xp: psi(chart(t, xp), xp), dim, f"log_partition(natural(theta)) of {name}", low1 and low3, scalar=True)
    if ent is not None:
        _probe(ent, dim, f"entropy of {name}", low2, scalar=True)
    return ExponentialFamily(
        name=name,
        dim=dim,
        log_partition=psi,
        natural=chart,
        entropy_fn=ent,
        is_lowerable=low1 and low2 and low3,
        description="user-defined exponential family" + (" in a chart" if chart is not None else ""),
        check_chart=chart is not None,
    )


def _probe_chart(fn, dim: int, what: str, lowerable: bool):
    """A chart ``theta -> eta`` returns ``dim`` natural parameters (checked in JAX by shape and in sympy)."""
    try:
        out = jax.eval_shape(lambda t: fn(t, JAX), jax.ShapeDtypeStruct((dim,), jnp.float64))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError, IndexError) as exc:
        raise TypeError(f"{what} failed on JAX arrays ({type(exc).__name__}): write it with the namespace it receives and "
                        "return xp.vector([...]) of the natural parameters") from None
    if isinstance(out, (list, tuple)) or out.shape != (dim,):
        raise ValueError(f"{what} must return xp.vector([...]) of {dim} natural parameters for theta of shape ({dim},), "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    if lowerable:
        try:
            res = fn(list(sympy.symbols(f"t0:{dim}", real=True)), mathns.SYMPY)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{what} cannot be lowered to sympy ({type(exc).__name__}: {exc}); write it with the namespace "
                            "it receives (xp.vector, xp.log, ...)") from None
        if len(list(res)) != dim:
            raise ValueError(f"{what} returns {len(list(res))} natural parameters in sympy, expected {dim}")


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


# --------------------------------------------------------------------------- density kind


class DensityFamily(Family):
    r"""A family of densities :math:`p_\theta(x)` on an interval of the real line, from ``log_density``.

    Fisher metric :math:`g_{ij} = \int p\,\partial_i\log p\,\partial_j\log p\,dx` (the score form:
    positive semi-definite by construction) and entropy :math:`-\int p\log p\,dx`, both by the
    adaptive double-exponential rule of :mod:`geometry._src.quadrature` at ``level``
    (``coarse()`` is the same family at ``level - 1``: the precision-controlled default takes the
    difference of the two as the quadrature's error).  A metric that is singular at a point
    (non-identifiable parameters) makes the curvature there undefined, with the reason.
    """

    kind: ClassVar[str] = "density"
    defined_by: ClassVar[str] = "log_density"
    definiteness_requirement: ClassVar[str] = "the scores d log p / d theta_i must be linearly independent functions of x"
    normalisation_fix: ClassVar[str] = (
        "log_density must be normalised over the support (subtract the log of its normalising constant); "
        "see geometry._src.quadrature for where the rule loses mass (a singular endpoint other than 0)")
    name: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    log_density: Callable = eqx.field(static=True)  # (theta, x, xp) -> log p_theta(x)
    support: tuple = eqx.field(static=True)
    entropy_fn: Callable | None = eqx.field(static=True, default=None)
    level: int = eqx.field(static=True, default=quadrature.LEVEL)
    is_lowerable: bool = eqx.field(static=True, default=True)
    description: str = eqx.field(static=True, default="")

    def _nodes(self, theta):
        """Nodes, log weights ``log(w_k p(x_k))`` and the mask of nodes inside the support."""
        c, s = quadrature.adapted_points(lambda x: self.log_density(theta, x, JAX), self.support, self.level)
        x, _, logw, inside = quadrature.points(c, s, self.support, self.level)
        x = jnp.where(inside, x, quadrature._interior(self.support))
        lp = jax.vmap(lambda xk: self.log_density(theta, xk, JAX))(x)
        logq = jnp.where(inside, logw + lp, -jnp.inf)
        # nodes below e^-140 of the largest weight change no digit of the integrals, but a user function's
        # derivatives may overflow there (x^k at x = 1e-161), and 1e-271 * inf is not 0: drop them
        top = jax.lax.stop_gradient(jnp.max(jnp.where(jnp.isnan(logq), -jnp.inf, logq)))
        keep = jax.lax.stop_gradient(logq > top - quadrature.LOG_WEIGHT_FLOOR)
        return x, jnp.where(keep, logq, -jnp.inf), lp, inside

    def metric(self, theta):
        x, logq, _, _ = self._nodes(theta)
        return self._metric_at(theta, x, logq)

    def _metric_at(self, theta, x, logq):
        r""":math:`\sum_k q_k\,s_k s_k^\top` over the nodes ``x`` with log weights ``logq`` (scores ``s_k`` by autodiff)."""
        score = jax.vmap(lambda xk: jax.grad(lambda t: self.log_density(t, xk, JAX))(theta))(x)
        q = jnp.exp(logq)
        # dropped nodes carry no weight; 0 * inf must not turn into NaN there
        terms = jnp.where((logq > -jnp.inf)[:, None, None], q[:, None, None] * score[:, :, None] * score[:, None, :], 0.0)
        return jnp.sum(terms, axis=0)

    def metric_constructions(self) -> dict:
        return {"score": self.metric}

    def rounding_floor(self, theta):
        c, s = quadrature.adapted_points(lambda x: self.log_density(theta, x, JAX), self.support, self.level)
        return quadrature.node_rounding(c, s, self.support)

    def coarse(self):
        return DensityFamily(self.name, self.dim, self.log_density, self.support, self.entropy_fn, self.level - 1,
                             self.is_lowerable, self.description)

    def density(self):
        return (self.log_density, self.support)

    @property
    def has_entropy(self) -> bool:
        return True

    def entropy(self, theta):
        if self.entropy_fn is not None:
            return self.entropy_fn(theta, JAX)
        _, logq, lp, _ = self._nodes(theta)
        q = jnp.exp(logq)
        return -jnp.sum(jnp.where(q > 0, q * lp, 0.0))

    @property
    def lowerable(self) -> bool:
        return self.is_lowerable

    @property
    def singular_is_undefined(self) -> bool:
        return True

    def point_checks(self, theta):
        x, logq, lp, inside = self._nodes(theta)
        # values at |x| > UNCHECKED_ABS_X are not checked: float64 powers of such x overflow (inf - inf),
        # and the weight of those nodes is dropped either way
        checked = inside & (jnp.abs(x) < quadrature.UNCHECKED_ABS_X)
        bad_value = jnp.any(checked & (jnp.isnan(lp) | (lp == jnp.inf)))
        total = jnp.sum(jnp.exp(logq))
        return jnp.all(jnp.isfinite(self._metric_at(theta, x, logq))) & ~bad_value, jnp.abs(total - 1.0)

    def output_errors(self) -> str | None:
        out = jax.eval_shape(lambda t, x: self.log_density(t, x, JAX), jax.ShapeDtypeStruct((self.dim,), jnp.float64),
                             jax.ShapeDtypeStruct((), jnp.float64))
        return _shape_error(out.shape, f"log_density of {self.name}", self.dim, scalar=True)


def _check_support(support):
    if not isinstance(support, (tuple, list)) or len(support) != 2:
        raise TypeError(f"support must be a pair (lo, hi) of numbers (use -math.inf / math.inf for unbounded), got {support!r}")
    try:
        lo, hi = float(support[0]), float(support[1])
    except (TypeError, ValueError):
        raise TypeError(f"support must be a pair (lo, hi) of numbers, got {support!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(f"support=(lo, hi) needs lo < hi, got ({lo!r}, {hi!r}); e.g. (0, math.inf) for a positive variable")
    return lo, hi


def _probe_density(fn, dim: int, what: str, lowerable: bool):
    """:func:`_probe` for ``log_density(theta, x, xp)``: one JAX shape pass and one sympy call, at construction."""
    try:
        out = jax.eval_shape(lambda t, x: fn(t, x, JAX), jax.ShapeDtypeStruct((dim,), jnp.float64),
                             jax.ShapeDtypeStruct((), jnp.float64))
    except IndexError:
        raise ValueError(f"{what} indexes theta beyond dim={dim} (coordinates 0..{dim - 1}); pass the dim it uses") from None
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError) as exc:
        raise TypeError(
            f"{what} failed on JAX arrays ({type(exc).__name__}): write it with the namespace it receives "
            "(xp.log, xp.exp, xp.lgamma, ...; not np.* or jnp.*, and no Python if on theta or x)"
        ) from None
    if isinstance(out, (list, tuple)) or out.shape != ():
        raise ValueError(f"{what} must return a scalar log p_theta(x) for theta of shape ({dim},) and a scalar x, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    if lowerable:
        syms = list(sympy.symbols(f"t0:{dim}", real=True))
        try:
            fn(syms, sympy.Symbol("x", real=True), mathns.SYMPY)
        except IndexError:
            raise ValueError(f"{what} indexes theta beyond dim={dim}; pass the dim it uses") from None
        except Exception as exc:  # noqa: BLE001 (the user function's failure, reported with the fix)
            raise TypeError(
                f"{what} cannot be lowered to sympy ({type(exc).__name__}: {exc}); write it with the namespace it "
                "receives (xp.log, xp.exp, ...), or pass log_density(theta, x) for a JAX-only family (no high-precision fallback)"
            ) from None


def density_family(log_density, dim: int, support, name: str | None = None, entropy=None) -> Family:
    r"""A family of densities on an interval of the real line from its log-density.

    ``log_density(theta, x, xp)`` returns :math:`\log p_\theta(x)` for one parameter vector
    ``theta`` of shape ``(dim,)`` and one scalar ``x`` (the toolkit vectorises); a function
    ``log_density(theta, x)`` is accepted as a JAX-only family (no high-precision fallback).
    ``support=(lo, hi)``, either end possibly infinite.  ``entropy(theta, xp)`` is optional
    (by quadrature otherwise).

    The Fisher metric :math:`\int p\,\partial_i\log p\,\partial_j\log p\,dx` is computed by the
    double-exponential rule of :mod:`geometry._src.quadrature` (577 nodes placed by the density
    itself; relative error near 1e-14 for smooth densities, estimated from the rule at half the
    nodes), differentiable through the rule, and lowered to ``mpmath.quad`` for the
    high-precision tier and :func:`geometry.scalar_curvature_mp`.

    Example, the Weibull family in (shape k, scale lam) on x > 0::

        def weibull(theta, x, xp):
            k, lam = theta[0], theta[1]
            return xp.log(k / lam) + (k - 1) * xp.log(x / lam) - (x / lam) ** k

        fam = geometry.density_family(weibull, dim=2, support=(0, math.inf), name="weibull")
    """
    dim = _check_dim(dim, "number of parameters")
    lo, hi = _check_support(support)
    if not callable(log_density):
        raise TypeError(f"log_density must be callable as log_density(theta, x, xp), got {type(log_density).__name__}")
    lowerable = _accepts_n_args(log_density, 3)
    fn = log_density if lowerable else _JaxOnly2(log_density, "log_density")
    ent, low2 = _lift(entropy, "entropy")
    name = name or _default_name(log_density, "user density family")
    _probe_density(fn, dim, f"log_density of {name}", lowerable)
    if ent is not None:
        _probe(ent, dim, f"entropy of {name}", low2, scalar=True)
    return DensityFamily(name=name, dim=dim, log_density=fn, support=(lo, hi), entropy_fn=ent,
                         is_lowerable=lowerable and low2, description=f"user density family on ({lo:g}, {hi:g})")


def _accepts_n_args(fn, n: int) -> bool:
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= n


class _JaxOnly2(_JaxOnly):
    """A user function of ``(theta, x)`` without ``xp``: JAX only."""

    def __call__(self, theta, x, xp):
        if xp is not mathns.JAX:
            raise NotImplementedError(f"{self.name} was given as a plain JAX function; it cannot be lowered to {xp.name}")
        return self.fn(theta, x)


# --------------------------------------------------------------------------- regression kind


class RegressionFamily(Family):
    r"""The model manifold of :math:`y_i \sim N(f(x_i;\theta), \sigma_i^2)`, independent (Transtrum, Machta &
    Sethna, *Phys. Rev. E* 83, 036701, 2011).

    Fisher metric :math:`g = J^\top \operatorname{diag}(\sigma^{-2}) J`, :math:`J_{ia} = \partial f(x_i)/\partial\theta_a`
    (index order: data point, parameter); entropy :math:`\sum_i \tfrac12\log(2\pi e\sigma_i^2)`,
    independent of :math:`\theta`.  Where ``J`` has rank below ``dim`` the parameters are not
    identifiable and the curvature is undefined there, with the reason.  ``inputs`` and ``sigma``
    are leaves (traceable).
    """

    kind: ClassVar[str] = "regression"
    defined_by: ClassVar[str] = "model"
    definiteness_requirement: ClassVar[str] = "the columns of J = d f(x_i) / d theta must be linearly independent"
    name: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    model: Callable = eqx.field(static=True)  # (theta, x, xp) -> mean prediction at one input
    inputs: jax.Array | np.ndarray = eqx.field(converter=lambda a: a if is_traced(a) else np.asarray(a, np.float64))
    sigma: jax.Array | np.ndarray = eqx.field(converter=lambda a: a if is_traced(a) else np.asarray(a, np.float64))
    is_lowerable: bool = eqx.field(static=True, default=True)
    description: str = eqx.field(static=True, default="")

    def jacobian(self, theta):
        """``J[i, a] = d f(x_i; theta) / d theta_a`` (outputs of a vector-valued model are flattened into ``i``)."""
        jac = jax.vmap(lambda x: jax.jacfwd(lambda t: jnp.ravel(jnp.asarray(self.model(t, x, JAX))))(theta))(jnp.asarray(self.inputs))
        return jac.reshape(-1, self.dim)

    def _row_sigmas(self):
        """sigma of every row of :meth:`jacobian` (a data point's sigma repeated for each of its outputs)."""
        n = jnp.asarray(self.inputs).shape[0]
        return jnp.repeat(jnp.broadcast_to(jnp.asarray(self.sigma), (n,)), self.jacobian_rows // n)

    @property
    def jacobian_rows(self) -> int:
        out = jax.eval_shape(lambda t, x: jnp.ravel(jnp.asarray(self.model(t, x, JAX))),
                             jax.ShapeDtypeStruct((self.dim,), jnp.float64),
                             jax.ShapeDtypeStruct(np.shape(self.inputs)[1:], jnp.float64))
        return int(np.shape(self.inputs)[0]) * int(out.shape[0])

    def metric(self, theta):
        jac = self.jacobian(theta)
        return jac.T @ (self._row_sigmas()[:, None] ** -2 * jac)

    def metric_constructions(self) -> dict:
        return {"jacobian": self.metric}

    @property
    def has_entropy(self) -> bool:
        return True

    def entropy(self, theta):
        return jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e * self._row_sigmas() ** 2)) + 0.0 * jnp.sum(theta)

    @property
    def lowerable(self) -> bool:
        return self.is_lowerable

    @property
    def singular_is_undefined(self) -> bool:
        return True

    def lower_metric(self, coords, xp):
        """``J^T diag(sigma^-2) J`` in ``xp`` (sympy: exact; the inputs and sigmas enter as exact rationals)."""
        inputs = np.asarray(self.inputs, np.float64)
        sig = np.broadcast_to(np.asarray(self.sigma, np.float64), (inputs.shape[0],))
        d = self.dim
        g = [[0] * d for _ in range(d)]
        for x, s in zip(inputs, sig):
            xs = _sympy_number(x) if xp is mathns.SYMPY else x
            out = self.model(list(coords), xs, xp)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            w = sympy.Rational(float(s)) ** -2 if xp is mathns.SYMPY else 1 / float(s) ** 2
            for f in outs:
                grad = [xp.diff(f, c) for c in coords]
                for a in range(d):
                    for b in range(d):
                        g[a][b] += w * grad[a] * grad[b]
        return g

    def output_errors(self) -> str | None:
        return None  # checked at construction (the model's output shape cannot change)


def _sympy_number(x):
    """Inputs as exact rationals (every float64 is one), so the lowered metric is exact in them."""
    if np.ndim(x) == 0:
        return sympy.Rational(float(x))
    return [sympy.Rational(float(v)) for v in np.ravel(x)]


def regression_family(model, inputs, sigma=1.0, name: str | None = None, *, dim: int | None = None) -> Family:
    r"""The model manifold of a data model :math:`y_i \sim N(f(x_i;\theta), \sigma_i^2)` (independent).

    ``model(theta, x, xp)`` returns the mean prediction at one input ``x`` (``inputs`` stacks the
    inputs along its leading axis; each is a scalar or a 1-d array) as a scalar or a 1-d vector
    of outputs; ``sigma`` is a scalar or one positive value per data point.  The number of
    parameters is found by calling ``model`` on sympy symbols (the fewest it accepts); pass
    ``dim=`` for a JAX-only ``model(theta, x)``.  Fisher metric
    :math:`J^\top \operatorname{diag}(\sigma^{-2}) J`; curvature by the generic route, lowered
    to mpmath through sympy.  References: Transtrum, Machta & Sethna, "Geometry of nonlinear
    least squares", *Phys. Rev. E* 83, 036701 (2011); InformationGeometry.jl.

    Example, a two-exponential decay :math:`f(t) = e^{-\theta_0 t} + e^{-\theta_1 t}` at 8 times::

        fam = geometry.regression_family(lambda th, t, xp: xp.exp(-th[0] * t) + xp.exp(-th[1] * t),
                                         inputs=np.linspace(0.25, 4, 8), sigma=0.1)
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(theta, x, xp), got {type(model).__name__}")
    lowerable = _accepts_n_args(model, 3)
    fn = model if lowerable else _JaxOnly2(model, "model")
    try:
        xs = np.asarray(inputs, np.float64)
    except (TypeError, ValueError):
        raise TypeError("inputs must be an array of numbers (leading axis = data points), e.g. np.linspace(0, 1, 10)") from None
    if xs.ndim not in (1, 2) or xs.shape[0] < 1:
        raise ValueError(f"inputs must have shape (N,) (scalar inputs) or (N, k) (vector inputs), got shape {xs.shape}")
    if not np.isfinite(xs).all():
        raise ValueError("inputs contains NaN or inf; remove those data points")
    try:
        sig = np.asarray(sigma, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be a positive number or one per data point, got {sigma!r}") from None
    if isinstance(sigma, bool) or sig.ndim > 1 or (sig.ndim == 1 and sig.shape[0] != xs.shape[0]):
        raise ValueError(f"sigma must be a scalar or have shape ({xs.shape[0]},) (one per data point), got shape {sig.shape}")
    if not (np.isfinite(sig).all() and (sig > 0).all()):
        raise ValueError(f"sigma must be finite and > 0 (the noise standard deviation of each data point), got {sigma!r}")
    name = name or _default_name(model, "user regression model")
    if dim is None:
        if not lowerable:
            raise TypeError(f"model {name} is a JAX-only function model(theta, x): pass dim= (the number of parameters)")
        dim = _infer_dim(fn, xs[0], name)
    dim = _check_dim(dim, "number of parameters")
    _probe_model(fn, dim, xs, name, lowerable)
    return RegressionFamily(name=name, dim=dim, model=fn, inputs=xs, sigma=sig, is_lowerable=lowerable,
                            description=f"regression model, {xs.shape[0]} data points")


#: Largest number of parameters :func:`regression_family` tries when it infers ``dim``.
MAX_INFERRED_DIM = 32


def _infer_dim(fn, x0, name):
    x = _sympy_number(x0)
    for k in range(1, MAX_INFERRED_DIM + 1):
        try:
            fn(list(sympy.symbols(f"t0:{k}", real=True)), x, mathns.SYMPY)
            return k
        except (IndexError, ValueError):
            continue
        except Exception as exc:  # noqa: BLE001 (the user function's failure, reported with the fix)
            raise TypeError(f"model {name} cannot be lowered to sympy ({type(exc).__name__}: {exc}); write it with the "
                            "namespace it receives (xp.exp, xp.log, ...), or pass model(theta, x) and dim= for a JAX-only model") from None
    raise ValueError(f"model {name} did not accept theta of any length 1..{MAX_INFERRED_DIM}; pass dim=")


def _probe_model(fn, dim, xs, name, lowerable):
    what = f"model {name}"
    try:
        out = jax.eval_shape(lambda t, x: fn(t, x, JAX), jax.ShapeDtypeStruct((dim,), jnp.float64),
                             jax.ShapeDtypeStruct(xs.shape[1:], jnp.float64))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError) as exc:
        raise TypeError(f"{what} failed on JAX arrays ({type(exc).__name__}): write it with the namespace it receives "
                        "(xp.exp, xp.log, ...; not np.* or jnp.*, and no Python if on theta)") from None
    if isinstance(out, (list, tuple)):
        raise TypeError(f"{what} returns a {type(out).__name__}; return a scalar or xp.vector([...])")
    if len(out.shape) > 1:
        raise ValueError(f"{what} must return a scalar or a 1-d vector of predictions at one input x of shape "
                         f"{xs.shape[1:]}, got shape {out.shape}; inputs stacks the data points along its first axis")
    if lowerable:
        try:
            fn(list(sympy.symbols(f"t0:{dim}", real=True)), _sympy_number(xs[0]), mathns.SYMPY)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{what} cannot be lowered to sympy ({type(exc).__name__}: {exc}); write it with the namespace "
                            "it receives, or pass model(theta, x) and dim= for a JAX-only model") from None


# --------------------------------------------------------------------------- charts of exponential families
