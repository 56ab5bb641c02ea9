r"""Fisher metric and entropy (JAX, float64), per point; batched in :mod:`geometry._src.api`.

Index convention used throughout the package: ``g[i, j] = g_{ij}``; derivative
indices come *last* (``dg[i, j, k] = \partial_k g_{ij}``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .families import Family
from .mathns import JAX, stable_log_softmax


def softmax_atoms(family: Family, x):
    r"""Weights and centred, scaled key vectors of a softmax-linear family at query ``x``.

    For each head ``h`` with keys :math:`k_i` and scale ``s``, returns
    :math:`w_i = p_i` and :math:`u_i = s\,(k_i - \bar k)`, :math:`\bar k = \sum_j p_j k_j`,
    stacked over heads.  Then :math:`g = \sum_i w_i u_i u_i^\top` and the third
    cumulant is :math:`T = \sum_i w_i u_i\otimes u_i\otimes u_i` (cumulants of
    independent heads add).

    Precision: :math:`k_i - \bar k` cancels catastrophically when :math:`p` is
    concentrated on one key (then :math:`\bar k \approx k_a`).  We centre at the
    dominant key first: :math:`d_i = k_i - k_a` is exact-ish and
    :math:`\bar d = \sum_j p_j d_j` is a sum of small terms, so
    :math:`d_i - \bar d` is accurate to relative precision for every ``i``.
    """
    ws, us = [], []
    for h in family.heads:
        keys = jnp.asarray(h.keys)
        logp = stable_log_softmax(h.scale * (keys @ x))
        p = jnp.exp(logp)
        a = jnp.argmax(logp)
        d = keys - keys[a]
        c = d - p @ d
        ws.append(p)
        us.append(h.scale * c)
    return jnp.concatenate(ws), jnp.concatenate(us, axis=0)


def metric_from_atoms(w, u):
    return jnp.einsum("a,ai,aj->ij", w, u, u)


def natural_chart(family: Family, theta):
    return theta if family.natural is None else family.natural(theta, JAX)


def metric_hessian(family: Family, theta):
    r""":math:`g_\theta = J^\top\,\nabla^2\psi(\eta(\theta))\,J`, :math:`J = \partial\eta/\partial\theta` (autodiff)."""
    psi = lambda eta: family.log_partition(eta, JAX)  # noqa: E731
    eta = natural_chart(family, theta)
    h = jax.hessian(psi)(eta)
    if family.natural is None:
        return h
    jac = jax.jacfwd(lambda t: natural_chart(family, t))(theta)
    return jac.T @ h @ jac


def _score_metric_discrete(log_probs, theta):
    lp = log_probs(theta)
    score = jax.jacfwd(log_probs)(theta)  # (k, dim): d log p(x) / d theta
    return jnp.einsum("x,xi,xj->ij", jnp.exp(lp), score, score)


def metric_score(family: Family, theta):
    r""":math:`g_{ij} = E_\theta[\partial_i\log p\;\partial_j\log p]`: exact finite sum, or Gauss quadrature."""
    if family.kind == "softmax-linear":
        g = 0.0
        for h in family.heads:
            keys = jnp.asarray(h.keys)
            g = g + _score_metric_discrete(lambda t: stable_log_softmax(h.scale * (keys @ t)), theta)
        return g
    if family.kind == "discrete":
        return _score_metric_discrete(lambda t: family.log_probs(t, JAX), theta)
    if family.log_density is not None and family.quadrature is not None:
        nodes_fn, weights = family.quadrature
        xs = nodes_fn(theta)
        score = jax.vmap(lambda x: jax.grad(lambda t: family.log_density(t, x, JAX))(theta))(xs)
        return jnp.einsum("x,xi,xj->ij", jnp.asarray(weights), score, score)
    raise ValueError(
        f"{family.name}: the score construction E[score (x) score] needs log-probabilities or a log-density; "
        "this exponential family only has a log-partition. Use method='hessian'."
    )


def metric(family: Family, theta, method: str | None = None):
    """Fisher metric at one point by the named construction (``None``: the most accurate one)."""
    if method is None:
        method = {"softmax-linear": "covariance", "exponential": "hessian", "discrete": "score"}[family.kind]
    if method == "covariance":
        if family.kind != "softmax-linear":
            raise ValueError(f"method='covariance' needs a softmax-linear family, {family.name} is {family.kind}")
        return metric_from_atoms(*softmax_atoms(family, theta))
    if method == "hessian":
        if not family.is_hessian_metric:
            raise ValueError(f"method='hessian' needs an exponential family; {family.name} is {family.kind}")
        return metric_hessian(family, theta)
    if method == "score":
        return metric_score(family, theta)
    raise ValueError(f"method must be None, 'covariance', 'hessian' or 'score', got {method!r}")


def entropy(family: Family, theta):
    r"""Shannon entropy :math:`H = -\sum_x p\log p` in nats (``entropy_fn`` for continuous families)."""
    if family.kind == "softmax-linear":
        total = 0.0
        for h in family.heads:
            logp = stable_log_softmax(h.scale * (jnp.asarray(h.keys) @ theta))
            # -p log p >= 0 termwise: no cancellation, and log p_max is accurate (log1p form).
            p = jnp.exp(logp)
            total = total - jnp.sum(jnp.where(p > 0, p * logp, 0.0))  # 0 log 0 = 0, also for logp = -inf
        return total
    if family.kind == "discrete":
        lp = family.log_probs(theta, JAX)
        p = jnp.exp(lp)
        return -jnp.sum(jnp.where(p > 0, p * lp, 0.0))
    return family.entropy_fn(theta, JAX)
