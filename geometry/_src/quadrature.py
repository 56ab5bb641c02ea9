r"""Quadrature of densities on an interval of the real line (layer 1, beside :mod:`mathns`).

The rule (used by :class:`geometry.DensityFamily` for the Fisher metric and the entropy) is a
double-exponential (DE) trapezoid rule after two changes of variable:

1. ``x = phi(y)`` maps ``y in R`` onto the support: ``x = y`` on :math:`(-\infty, \infty)`,
   :math:`x = lo + e^{y}` on :math:`(lo, \infty)`, :math:`x = hi - e^{-y}` on :math:`(-\infty, hi)`,
   :math:`x = lo + (hi - lo)\,\sigma(y)` (logistic) on :math:`(lo, hi)`;
2. :math:`y = c + s\,\sinh(\tfrac{\pi}{2}\sinh t)` (the sinh-sinh rule), then the trapezoid rule in
   ``t`` with step ``h = 2**-level`` over :math:`|t| \le T`:

.. math:: \int f(x)\,dx \approx h \sum_k f(\phi(y_k))\,\phi'(y_k)\,
          s\,\tfrac{\pi}{2}\cosh t_k \cosh(\tfrac{\pi}{2}\sinh t_k).

For integrands analytic in a strip around the real ``y`` axis the error falls like
:math:`\exp(-c/h)` (Takahasi & Mori 1974; Tanaka, Sugihara, Murota & Mori, *Numer. Math.* 111,
2009, for the sinh-sinh rule), so halving ``h`` roughly squares the relative error: the
estimate of the rule at ``level`` is its difference from the rule at ``level - 1`` (whose nodes
are every other node), which over-estimates it.

**Adapting to the density.**  ``c`` and ``s`` place the nodes where the mass is: ``c`` at the
mode of the density of ``y`` and ``s`` its Laplace scale (:func:`adapted_points`).  The search
starts from the best node of the rule at ``c = 0, s = 1``, which spans
:math:`|y| \le \sinh(\tfrac{\pi}{2}\sinh T)` (about :math:`10^{30}`), so a mode anywhere in
float64's range is found.
``c`` and ``s`` are held fixed under differentiation (the integral does not depend on them), so
derivatives in the family's parameters are the rule applied to the differentiated integrand.

**Where it degrades.**  (i) A multimodal density is centred on its highest mode; modes far from it
(many scales away) fall where the nodes thin out and lose accuracy, which the two-level error
estimate and the normalisation check report.  (ii) An integrable singularity
at a finite endpoint other than 0 (a beta density with ``b < 1`` at ``x = 1``) cannot be resolved
closer than one float64 ulp to the endpoint: :math:`x \to 1^-` rounds to 1, the nodes beyond are
dropped, and the mass lost, about :math:`\varepsilon^b`, shows in the normalisation check.
(iii) Heavy tails are integrated correctly (the transform decays doubly exponentially), but
moments of the score that do not exist make the Fisher metric itself infinite.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

#: Half-width of the ``t`` range: ``sinh(pi/2 sinh 4.5) ~ 4e30`` scales of ``s`` on each side.
T_MAX = 4.5
#: Level of the rule (``h = 2**-LEVEL``, ``2 * T_MAX / h + 1 = 577`` nodes) and of its error
#: estimate (``LEVEL - 1``, every other node).
LEVEL = 6
#: Nodes whose weight ``w_k p(x_k)`` is below ``exp(-LOG_WEIGHT_FLOOR)`` of the largest are dropped: they
#: change no float64 digit of the integrals (1e-61 relative, times a score of any sane size).
LOG_WEIGHT_FLOOR = 140.0
#: A user log-density that is NaN or +inf at a node inside the support is refused, except beyond this |x|.
UNCHECKED_ABS_X = 1e150
#: Safeguarded Newton steps that move the rule's centre to the mode of the density of ``y``.
NEWTON_STEPS = 40


_TINY = float(np.finfo(np.float64).tiny)
_EPS = float(np.finfo(np.float64).eps)


@functools.lru_cache(maxsize=None)
def nodes(level: int):
    """``(t_k, h)`` of the rule at ``level`` (numpy; ``t`` symmetric, a multiple of ``h``)."""
    h = 2.0**-level
    k = int(math.floor(T_MAX / h))
    return np.arange(-k, k + 1) * h, h


def _phi(y, support):
    """``(x, log |dx/dy|)`` of the support map (1 above); ``x`` strictly inside where representable."""
    lo, hi = support
    if math.isinf(lo) and math.isinf(hi):
        return y, jnp.zeros_like(y)
    if math.isinf(hi):
        return lo + jnp.exp(y), y
    if math.isinf(lo):
        return hi - jnp.exp(-y), -y
    # x = lo + (hi - lo) sigmoid(y), formed from the nearer endpoint so both ends keep their digits
    w = hi - lo
    near_lo = lo + w * jax.nn.sigmoid(y)
    near_hi = hi - w * jax.nn.sigmoid(-y)
    x = jnp.where(y < 0, near_lo, near_hi)
    return x, math.log(w) + jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)


def points(c, s, support, level: int):
    """Nodes ``x_k``, their ``y_k`` and log weights ``log(h phi'(y_k) dy/dt)`` (``-inf`` where ``x`` is not
    strictly inside the support or not finite: those nodes carry no weight)."""
    t, h = nodes(level)
    u = (math.pi / 2) * np.sinh(t)
    y = c + s * jnp.asarray(np.sinh(u))
    log_dydt = jnp.log(s) + jnp.asarray(np.log(math.pi / 2 * np.cosh(t)) + np.log(np.cosh(u)) + math.log(h))
    x, log_dxdy = _phi(y, support)
    lo, hi = support
    # a node within a subnormal distance of an endpoint is dropped: XLA on the CPU flushes subnormals to
    # zero, so the user function would see x = lo (log 0) at a point the mask called inside
    inside = jnp.isfinite(x) & (x - lo > _TINY) & (hi - x > _TINY) & jnp.isfinite(log_dxdy)
    return x, y, jnp.where(inside, log_dxdy + log_dydt, -jnp.inf), inside


def _log_density_in_y(log_density, support):
    r""":math:`\ell(y) = \log p(\phi(y)) + \log\phi'(y)`, the log of the density of ``y`` (``-inf`` outside)."""
    lo, hi = support

    def ell(y):
        x, log_dxdy = _phi(y, support)
        inside = jnp.isfinite(x) & (x - lo > _TINY) & (hi - x > _TINY)
        v = log_density(jnp.where(inside, x, _interior(support))) + log_dxdy
        return jnp.where(inside & ~jnp.isnan(v), v, -jnp.inf)

    return ell


def node_rounding(c, s, support):
    r"""Relative rounding of the nodes against the density's width: :math:`\varepsilon\,|x(c)| / (|x'(c)|\,s)`.

    ``x`` is formed in float64, so a density of width ``w`` at ``x`` sees its nodes moved by
    :math:`\varepsilon|x|`, a relative change :math:`\varepsilon|x|/w` of every integrand (a normal at
    ``mu = 1000, sigma = 1e-3`` loses 6 digits: 2e-10).  The rule's two levels cannot see it."""
    x, log_dxdy = _phi(c, support)
    return _EPS * jnp.abs(x) / (jnp.exp(log_dxdy) * s)


def adapted_points(log_density, support, level: int = LEVEL):
    r"""``(c, s)``: the rule's centre and scale in ``y``, held fixed under differentiation.

    ``c`` is the mode of :math:`\ell(y)` (the log-density of ``y``): the best node of the rule at
    ``c = 0, s = 1`` (which spans about :math:`10^{\pm 30}`), then :data:`NEWTON_STEPS` safeguarded
    Newton steps (where :math:`\ell'' \ge 0` a step of half the distance to 0 or of 1 towards
    increasing :math:`\ell`; a step that does not increase :math:`\ell` is halved next time).  ``s`` is the Laplace scale :math:`(-\ell''(c))^{-1/2}`: one standard
    deviation for a normal, the half-width of a Cauchy's core.  ``log_density(x)`` is one scalar.
    """
    ell = _log_density_in_y(log_density, support)
    d1, d2 = jax.grad(ell), jax.grad(jax.grad(ell))
    _, y, _, inside = points(jnp.zeros(()), jnp.ones(()), support, level - 1)
    values = jnp.where(inside, jax.vmap(ell)(y), -jnp.inf)
    c = y[jnp.argmax(values)]
    def newton_step(_, state):
        c, damp = state
        g1, g2 = d1(c), d2(c)
        newton = -g1 / g2
        fallback = jnp.sign(g1) * jnp.maximum(1.0, jnp.abs(c) / 2)
        step = jnp.where((g2 < 0) & jnp.isfinite(newton), newton, fallback)
        step = damp * jnp.clip(step, -jnp.maximum(1.0, jnp.abs(c)), jnp.maximum(1.0, jnp.abs(c)))
        moved = c + step
        better = jnp.isfinite(step) & (ell(moved) >= ell(c))
        # backtracking: a rejected step is halved next time (a fallback step can overshoot a narrow core)
        return jnp.where(better, moved, c), jnp.where(better, jnp.minimum(1.0, 2 * damp), damp / 2)

    # a loop, not unrolled: the metric is differentiated twice by the routes, and each level re-traces this
    c, _ = jax.lax.fori_loop(0, NEWTON_STEPS, newton_step, (jax.lax.stop_gradient(c), jnp.ones(())))
    curv = d2(c)
    s = jnp.where((curv < 0) & jnp.isfinite(curv), 1.0 / jnp.sqrt(-curv), 1.0)
    s = jnp.maximum(s, 1e-300 * (1.0 + jnp.abs(c)))
    return jax.lax.stop_gradient(c), jax.lax.stop_gradient(s)


@functools.lru_cache(maxsize=None)
def _interior_point(lo: float, hi: float) -> float:
    if math.isinf(lo) and math.isinf(hi):
        return 0.0
    if math.isinf(hi):
        return lo + 1.0
    if math.isinf(lo):
        return hi - 1.0
    return lo + (hi - lo) / 2


def _interior(support):
    """A point strictly inside the support (stands in at dropped nodes so the user function never sees them)."""
    return _interior_point(*support)
