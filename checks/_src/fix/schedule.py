r"""The post's temperature schedule, exactly as written.

.. math:: T(t) = T_0\,\bigl(1 + \beta\tanh(\gamma\,(t - t_\mathrm{switch}))\bigr)

with ``T_0 = base_temp``, ``beta`` the maximum relative boost (the post suggests
0.1 to 0.3), ``gamma`` the sharpness of the transition and ``t_switch`` "the
training step at which you observe entropy beginning to collapse".  ``T`` runs
from ``T_0 (1 - beta)`` (early) through ``T_0`` (at ``t_switch``) to
``T_0 (1 + beta)`` (late); it is positive for ``0 <= beta < 1``.

Two readings are tested (``checks._src.fix.train``): the *literal* one,
``loss = cross_entropy / T(t)``, which only rescales the loss, and the *true
temperature* one, in which every attention softmax uses ``logits / T(t)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Parameters of :func:`temperature`; validated at construction."""

    base_temp: float = 1.0
    beta: float = 0.2
    gamma: float = 0.01
    t_switch: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.base_temp) and self.base_temp > 0):
            raise ValueError(f"base_temp must be finite and > 0, got {self.base_temp!r}")
        if not (0 <= self.beta < 1):
            raise ValueError(
                f"beta must be in [0, 1) so that T(t) = base_temp (1 + beta tanh(...)) stays > 0, got {self.beta!r}"
            )
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be finite and > 0 (sharpness, per step), got {self.gamma!r}")
        if not math.isfinite(self.t_switch):
            raise ValueError(f"t_switch must be a finite step number, got {self.t_switch!r}")

    def __call__(self, t):
        return temperature(t, self.base_temp, self.beta, self.gamma, self.t_switch)


def temperature(t, base_temp, beta, gamma, t_switch):
    r""":math:`T(t) = T_0(1 + \beta\tanh(\gamma(t - t_s)))`; works on floats, numpy and traced JAX values."""
    # dtype follows the inputs (float32 schedule vectors give float32 temperatures)
    return base_temp * (1.0 + beta * jnp.tanh(gamma * (t - t_switch)))
