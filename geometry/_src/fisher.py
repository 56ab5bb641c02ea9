r"""Fisher metric and entropy at one point (layer 3): float64 JAX, pure functions of a family.

Index convention used throughout the package: ``g[i, j] = g_{ij}``; derivative
indices come *last* (``dg[i, j, k] = \partial_k g_{ij}``).  Each family kind
provides its constructions (:meth:`geometry.Family.metric_constructions`); this
layer names them, so that ``geometry.fisher_metric(..., method=...)`` and every
route above see one dispatch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .families import Family
from .mathns import JAX

#: Construction names accepted by :func:`geometry.fisher_metric` (``None``: the most accurate one).
METHODS = (None, "covariance", "hessian", "score")

_NEEDS = {
    "covariance": "a softmax-linear family (categorical/attention)",
    "hessian": "an exponential family (a Hessian metric)",
    "score": "log-probabilities or a log-density with a quadrature rule",
}


def check_method(family: Family, method):
    """Raise ``ValueError`` unless ``method`` is a construction ``family`` provides."""
    if method not in METHODS:
        raise ValueError(f"method must be None, 'covariance', 'hessian' or 'score', got {method!r}")
    if method is not None and method not in family.metric_constructions():
        if method == "score" and "hessian" in family.metric_constructions():
            raise ValueError(f"{family.name} has only a log-partition: the score construction needs a density; use method='hessian'")
        raise ValueError(f"method={method!r} needs {_NEEDS[method]}; {family.name} is {family.kind}")
    return method


def metric(family: Family, theta, method: str | None = None):
    """Fisher metric ``g[i, j]`` at one point by the named construction (``None``: the most accurate one)."""
    if method is None:
        return family.metric(theta)
    return family.metric_constructions()[method](theta)


def entropy(family: Family, theta):
    r"""Shannon entropy :math:`H = -\sum_x p\log p` in nats at one point."""
    return family.entropy(theta)


def metric_diagnostics(family: Family, theta):
    r"""``(g, amplification, definiteness)`` at one point: the default metric, how much its construction
    can lose, and its smallest over largest eigenvalue.

    For a family given through a chart, :math:`g = J^\top H J` can cancel catastrophically (a narrow
    Gaussian far from 0 loses :math:`(\mu/\sigma)^2`); the amplification
    :math:`\max(|J|^\top|H||J|)/\max|g|` measures it (1 for families without a chart).
    """
    potential = family.potential()
    if potential is not None and potential[1] is not None:
        # the metric is J^T H J here: form it from the same H and J as its amplification (once)
        psi, chart = potential
        h = jax.hessian(lambda e: psi(e, JAX))(chart(theta, JAX))
        jac = jax.jacfwd(lambda t: chart(t, JAX))(theta)
        g = jac.T @ h @ jac
        amp = jnp.max(jnp.abs(jac).T @ jnp.abs(h) @ jnp.abs(jac)) / jnp.max(jnp.abs(g))
    else:
        g, amp = family.metric(theta), jnp.ones(())
    lam = jnp.linalg.eigvalsh(0.5 * (g + g.T))
    return g, amp, lam[0] / jnp.max(jnp.abs(lam))
