"""A family kind that exists only in the tests: nothing under geometry/ knows it.

``TemperedSimplex(n, T)``: ``n`` outcomes, coordinates ``theta`` in ``R^(n-1)``,
``p = softmax((theta, 0) / T)``, with the temperature ``T`` an *array leaf* (a 0-d
float64 array), so the family is a pytree that ``jax.grad`` / ``jax.vmap`` can see
through.  It implements the contract of :class:`geometry.Family` from its own
log-probabilities (no geometry helper):

* ``metric``: the score metric ``sum_x p(x) d_i log p(x) d_j log p(x)`` (jax);
* ``entropy``: ``-sum p log p``;
* ``potential``: ``psi(eta, xp) = logsumexp(eta / T, 0)`` in the chart ``eta = theta``,
  lowerable to sympy / mpmath (``float(T)`` outside JAX);
* ``lower_metric``: ``g = (diag p - p p^T) / T^2`` as sympy expressions.

The temperature only rescales the coordinates, so the scalar curvature is that of the
simplex, ``(n-1)(n-2)/4``, for every ``T``.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import geometry


def simplex_curvature(n: int) -> float:
    return (n - 1) * (n - 2) / 4


class TemperedSimplex(geometry.Family):
    kind: ClassVar[str] = "tempered-simplex (test-only kind)"
    defined_by: ClassVar[str] = "log_probs of a tempered softmax"
    definiteness_requirement: ClassVar[str] = "T > 0"

    T: jax.Array
    name: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    # ------------------------------------------------------------------ defining function
    def _logits(self, theta):
        theta = jnp.asarray(theta, jnp.float64)
        return jnp.concatenate([theta / self.T, jnp.zeros((1,), jnp.float64)])

    def log_probs(self, theta):
        return jax.nn.log_softmax(self._logits(theta))

    # ------------------------------------------------------------------ the contract
    def metric(self, theta):
        lp = self.log_probs(theta)
        score = jax.jacfwd(self.log_probs)(theta)  # (n, dim)
        return jnp.einsum("x,xi,xj->ij", jnp.exp(lp), score, score)

    def metric_constructions(self) -> dict:
        return {"score": self.metric}

    @property
    def has_entropy(self) -> bool:
        return True

    def entropy(self, theta):
        lp = self.log_probs(theta)
        return -jnp.sum(jnp.exp(lp) * lp)

    def potential(self):
        def psi(eta, xp):
            if xp is geometry.JAX:
                return xp.logsumexp(jnp.concatenate([jnp.asarray(eta) / self.T, jnp.zeros((1,), jnp.float64)]))
            t = float(self.T)  # concrete outside JAX: the lowering sees a number
            return xp.logsumexp([e / t for e in eta] + [0])

        return psi, None

    @property
    def lowerable(self) -> bool:
        return True

    def lower_metric(self, coords, xp):
        t = float(self.T)
        z = [c / t for c in coords] + [0]
        den = xp.sum([xp.exp(v) for v in z])
        p = [xp.exp(v) / den for v in z]
        d = self.dim
        return [[((p[i] if i == j else 0) - p[i] * p[j]) / t**2 for j in range(d)] for i in range(d)]

    @property
    def definite_by_construction(self) -> bool:
        return True

    @property
    def num_outcomes(self) -> int:
        return self.dim + 1


def tempered_simplex(n: int, T=1.0) -> TemperedSimplex:
    """``n`` outcomes at temperature ``T`` (a 0-d float64 leaf; a traced ``T`` is accepted)."""
    if isinstance(T, jax.core.Tracer):
        t = jnp.asarray(T, jnp.float64)
    else:
        t = jnp.asarray(np.float64(T))
    return TemperedSimplex(T=t, name=f"tempered_simplex(n={n})", dim=n - 1)


def toy_sampler(T: float, dim: int):
    """Points at moderate entropy: logits ``theta / T`` in [-1.5, 1.5]."""

    def sample(rng: np.random.Generator, count: int):
        return rng.uniform(-1.5, 1.5, size=(count, dim)) * T

    return sample
