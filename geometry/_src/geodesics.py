r"""Geodesics of the Fisher metric (layer 10, beside the curvature API): exp, log, distance, paths, sectional curvature.

Conventions are those of :mod:`geometry._src.tensors` (``christoffel[k, i, j] = Gamma^k_ij``,
the round sphere has positive curvature).

The geodesic equation
---------------------
:math:`\ddot x^k = -\Gamma^k_{ij}(x)\,\dot x^i\dot x^j`, integrated as a first-order system in
``(x, v)`` over ``t in [0, 1]`` by diffrax's ``Dopri8`` (an 8th-order embedded Runge--Kutta pair)
with a PID step-size controller at ``rtol = atol = ODE_RTOL``.  The acceleration of softmax
families (categorical, attention, multi-head) comes from their isometric embedding
:math:`y = 2\sqrt p` (:func:`_embedded_acceleration`: :math:`\ddot x = -J^+ D^2y[\dot x, \dot x]`, Gauss's
formula, by a QR least-squares solve); that of every other family from the Christoffel symbols of
:func:`geometry._src.tensors.christoffel` (autodiff of ``family.metric``).  The two agree to
~2e-15 where both are accurate (tests/test_geodesics.py); at low entropy only the first is (below).
Eighth order because at a tolerance of 1e-12 it takes 5--30 steps where a 5th-order pair
(``Tsit5``) takes hundreds.  A geodesic that leaves the
domain before ``t = 1`` (on the simplex the boundary is at finite distance: logits run to
infinity in finite time) drives the step size below ``ODE_DTMIN`` and stops the solve
with ``dt_min_reached``; that, ``max_steps``, non-finite values and end points outside the
family's domain become a per-pair ``UNDEFINED`` status with the reason.

Every solve is checked twice: (1) the energy :math:`E = g_x(\dot x, \dot x)` is constant
along a geodesic, its relative drift :math:`|E(1) - E(0)|/E(0)` is reported; (2) a companion
solve at the looser tolerance ``ODE_CHECK_RTOL`` (run in the same compiled loop) bounds the
integration error of the end point: its distance from the tight end point, in the Fisher
norm.  The error estimate is the larger of the two (relative to the length of ``v``).  Families
with an :func:`embedding` measure both, and every Fisher length, through it (:func:`_speed`,
:func:`_gap`): :math:`\dot x^\top g\,\dot x` loses :math:`\varepsilon/p_{\min}` to rounding at low
entropy, which had refused converged pairs for an energy drift that was the rounding's.

Softmax families at low entropy
-------------------------------
The logits of a low-entropy point are large and the metric is tiny in the directions that
move probability off the dominant key; a unit-speed geodesic then moves the logits fast
(:math:`|\dot x| \sim 1/\sqrt{p_{\min}}`).  The step-size controller follows that
(relative tolerances on ``x`` and ``v``), and the shooting below works in Fisher-normalised
velocities ``w = L_a^T v`` (``g_a = L_a L_a^T``), in which the problem is as well-scaled at
entropy 1e-3 as at log n, and its initial guess is the chord of the isometric embedding
:math:`y = 2\sqrt p` (:func:`embedding`), not the coordinate segment.  Measured limit (categorical(3), pairs near *different* vertices,
logits ``(L, 0)`` to ``(0.3 L, L)``, against the sphere closed form): with the Christoffel acceleration
the rounding of :math:`\Gamma(\dot x, \dot x)` (it solves with ``g``, :math:`\operatorname{cond} g \sim
1/p_{\min}`), amplified by :math:`|\dot x|^2 \sim 1/p_{\min}`, exceeded ``ODE_RTOL`` from
:math:`p_{\min} \lesssim 10^{-6}` on (``max_steps_reached``).  With the embedding acceleration (whose
right-hand side agrees with a 40-digit mpmath evaluation to 7e-16 for ``L = 15 .. 30``, down to
:math:`p_{\min} = 10^{-13}`)
these pairs converge, to 4e-14 of the closed form, down to ``L = 16`` (:math:`p_{\min} = 1.1\cdot10^{-7}`,
entropy 3.8e-6); from ``L = 18`` (:math:`p_{\min} = 1.5\cdot10^{-8}`, entropy 5.8e-7) they are reported
undefined (``max_steps_reached`` / ``dt_min_reached``).  The cause there is the error control, not the
right-hand side: diffrax's controller tests each component of ``v`` against ``rtol |v_i|``, and where the
two small probabilities differ by many orders (e.g. ``p = (1, 1e-6, 1e-13)`` on the way) the slow logit's
velocity is O(1) while the least-squares rounding leaked from the fast one (:math:`\sim
\varepsilon\operatorname{cond}(J)^2|\ddot x|`) is not, so steps shrink to ~1e-7 (a Fisher-norm error
control would remove it; not done).  A looser tolerance would return a number, but not to 1e-8.
Pairs near the *same* vertex are unaffected.
Where the metric underflows float64 the pair is reported undefined, never returned as a number.

The logarithmic map: shooting with Levenberg--Marquardt and continuation
------------------------------------------------------------------------
``log_map`` solves :math:`F(w) = L_b^T(\exp_a(L_a^{-T}w) - b) = 0` (the residual in the
Fisher norm at ``b``) with ``optimistix.least_squares`` and ``optimistix.LevenbergMarquardt``,
forward-mode Jacobians through the ODE solve (``diffrax.ForwardMode``), from the straight-line
guess ``v0 = b - a``.  Levenberg--Marquardt rather than plain Newton because its trust region
is a globalisation: a trial step whose geodesic leaves the domain (``F`` not finite, replaced
by a large penalty) is rejected and the region shrinks, where Newton would stop.  Shooting
rather than a collocation boundary-value solver because it reuses the error-controlled
initial-value solver, and its answer is verified by the same solve that ``exp_map`` uses.
Pairs that direct shooting does not converge for are solved again by continuation: shoot to
the intermediate targets ``a + s (b - a)``, ``s in CONTINUATION``, each from the previous
solution scaled by the ratio of the ``s`` (the same compiled program, no new compile).

Nearby pairs (metric variation at most ``SHORT_VARIATION``, :func:`_short_pair`) take the second-order
answer instead, accepted only where ``exp_a(v)`` lands on ``b`` to ``GEODESIC_RTOL``: the variation test
once looked only at the speed along the segment, which is constant for pairs symmetric under an isometry
(categorical(3) logits ``(15, 0)`` and ``(0, 15)``), and returned their segment length, 10.0 instead of the
distance 3.14, as converged.

A pair has status ``FLOAT64`` (converged) only when its error estimate
``(|exp_a(v) - b|_{g_b} + integration error) / |v|_{g_a}`` is at most ``GEODESIC_RTOL`` and
the geodesic found is no longer than the straight coordinate segment from ``a`` to ``b``
(``LINE_NODES``-point Gauss--Legendre length, an upper bound on the distance): a longer one
is not minimising and the pair is reported undefined.  For families where any two points are
joined by one geodesic (the simplex: a geodesically convex piece of a sphere; the Gaussian:
the hyperbolic plane) the converged geodesic is the minimising one.  Elsewhere (attention
heads) shooting finds *a* geodesic shorter than the straight segment; if another, shorter one
exists it is not detected.

All kernels are ``jax.jit``-compiled and ``jax.vmap``-ed over pairs; batches are padded to a
few fixed sizes (powers of two from ``MIN_BATCH`` to ``CHUNK``) so that calls of different
sizes reuse the compiled programs, and a family's array leaves (keys) are traced arguments,
so attention heads with different keys of one shape share them too.
"""

from __future__ import annotations

import dataclasses
import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from . import engine, fisher, tensors
from .engine import UndefinedCurvatureWarning, check_family, tracing
from .families import DiscreteFamily, Family, as_real_array
from .mathns import JAX, stable_log_softmax
from .linalg import EPS, cholesky_inverse, error_estimate, scaled_condition
from .tiers import FLOAT64, STATUS_NAMES, UNDEFINED, UNTRUSTED

__all__ = [
    "GeodesicInfo", "UndefinedGeodesicWarning", "exp_map", "log_map", "geodesic_distance", "geodesic",
    "sectional_curvature",
]

# --------------------------------------------------------------------------- named tolerances (fixed before use)

#: relative and absolute tolerance of the adaptive geodesic solve (per step, on ``x`` and ``v``)
ODE_RTOL = 1e-12
#: tolerance of the companion solve whose distance from the tight one estimates the integration error
ODE_CHECK_RTOL = 1e-10
#: steps per solve before ``max_steps_reached``
ODE_MAX_STEPS = 1024
#: steps per solve inside the shooting iterations (a trial velocity needing more is rejected; pairs whose
#: geodesic needs more are reported undefined); as ODE_MAX_STEPS, because low-entropy geodesics between
#: different vertices take 300--600 steps (entropy 1e-5: 340); under ``vmap`` a batch waits for its slowest pair
SHOOT_ODE_MAX_STEPS = 1024
#: smallest step (of ``t in [0, 1]``): below it the geodesic is leaving the domain (``dt_min_reached``)
ODE_DTMIN = 1e-13
#: Levenberg--Marquardt termination tolerances (on ``w`` and on the residual) and its iteration cap
SHOOT_RTOL = 1e-10
SHOOT_MAX_STEPS = 48
#: value of each residual component where the trial geodesic failed (the trust region rejects it)
SHOOT_PENALTY = 1e6
#: intermediate targets ``a + s (b - a)`` of the continuation
CONTINUATION = (0.125, 0.25, 0.5, 0.75, 1.0)
#: a log map / distance / geodesic is converged (status FLOAT64) when its error estimate is at most this
GEODESIC_RTOL = 1e-9
#: an exp map is converged when its error estimate (relative to ``|v|_g``) is at most this
EXP_RTOL = 1e-9
#: Gauss--Legendre nodes of the straight-segment length (the minimality screen) and its slack
LINE_NODES = 64
LINE_SLACK = 1e-6
#: pairs whose metric varies by at most this (relative) along the segment take the second-order answer
#: (:func:`_short_pair`, error ``SHORT_SAFETY * variation^2``) instead of shooting
SHORT_VARIATION = 1e-5
SHORT_SAFETY = 10.0
#: sectional curvature: ``u, v`` count as parallel when the Gram determinant is below this times g(u,u) g(v,v)
PARALLEL_RTOL = 1e-10
#: sectional curvature in dim >= 3 (raw float64): trusted when the error estimate is at most this
SECTIONAL_RTOL = 1e-8
#: pairs per compiled batch, and the smallest padded batch
CHUNK = 128
MIN_BATCH = 8

_ODE_RESULT = {int(item._value): name for name, item in diffrax.RESULTS._name_to_item.items()}
_ODE_WHY = {
    "max_steps_reached": (f"the geodesic solve took more than ODE_MAX_STEPS = {ODE_MAX_STEPS} steps (at low entropy, "
                          "p_min below ~1e-7 near different vertices: the per-component error control of the slow logits' "
                          "velocity cannot be met in float64; see geometry._src.geodesics)"),
    "dt_min_reached": (f"the step size fell below ODE_DTMIN = {ODE_DTMIN:g}: the geodesic leaves the domain before t = 1 "
                       "(runs to infinity in these coordinates), or moves them too fast to follow (at low entropy logits "
                       "move at speed ~ 1/sqrt(p_min))"),
}


class UndefinedGeodesicWarning(UndefinedCurvatureWarning):
    """Some pairs have no converged geodesic result (NaN); ``return_info=True`` gives the reasons."""


@dataclasses.dataclass(frozen=True)
class GeodesicInfo:
    """Per-pair record of a geodesic computation (arrays have the leading (broadcast) shape of the inputs).

    ``status``: :data:`geometry.STATUS_NAMES` codes: 0 converged in float64 (1: the 2-d sectional
    curvature recomputed in high precision), 2 undefined (``reasons`` says why; the value is NaN),
    4 untrusted (a float64 sectional curvature whose estimate exceeds ``tolerance``).
    ``residual``: ``exp_map``: relative drift of the energy ``g(x', x')`` along the geodesic;
    ``log_map`` / ``geodesic_distance`` / ``geodesic``: ``|exp_map(theta_a, v) - theta_b|`` in the
    Fisher norm at ``theta_b`` (a distance); ``sectional_curvature``: ``|R(u,v,v,u) - R(v,u,u,v)|`` over
    the Gram determinant (how far the float64 Riemann tensor is from its pair symmetry).
    ``error_estimate``: estimated relative error of the returned value.
    ``tolerance``: the named tolerance a converged pair meets. ``steps``: ODE steps of the final solve;
    ``iterations``: Levenberg--Marquardt iterations (all continuation stages).
    """

    status: np.ndarray
    residual: np.ndarray
    error_estimate: np.ndarray
    reasons: dict
    tolerance: float
    steps: np.ndarray | None = None
    iterations: np.ndarray | None = None

    @property
    def converged(self):
        return self.status == FLOAT64

    def tree_flatten(self):
        # arrays are the leaves; the reasons (a dict of strings, empty for traced calls) and the tolerance are static
        return (self.status, self.residual, self.error_estimate, self.steps, self.iterations), (
            tuple(sorted(self.reasons.items())), self.tolerance)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        status, residual, err, steps, iterations = leaves
        return cls(status, residual, err, dict(aux[0]), aux[1], steps, iterations)

    def counts(self) -> dict:
        out = {"total": int(np.size(self.status))}
        for code, name in STATUS_NAMES.items():
            out[name] = int(np.sum(self.status == code))
        return out


jax.tree_util.register_pytree_node(GeodesicInfo, GeodesicInfo.tree_flatten, GeodesicInfo.tree_unflatten)


# --------------------------------------------------------------------------- traced kernels (one pair)


def _christoffel_acceleration(family, x, v):
    r""":math:`\ddot x = -\Gamma(x)(\dot x, \dot x)` from the autodiff Christoffel symbols (every family)."""
    return -jnp.einsum("kij,i,j->k", tensors.christoffel(family, x), v, v)


def _embedded_acceleration(heads, x, v):
    r""":math:`\ddot x = -J^+\,D^2y[\dot x, \dot x]` through the isometric embedding :math:`y = 2\sqrt p` of softmax heads.

    Gauss's formula: a curve on a submanifold :math:`y(x)` of Euclidean space is a geodesic of the
    induced metric :math:`g = J^\top J` (:math:`J = \partial y/\partial x`) iff its ambient acceleration
    :math:`\ddot y = J\ddot x + D^2y[\dot x, \dot x]` is normal to the tangent space, i.e.
    :math:`J^\top\ddot y = 0`, so :math:`\ddot x = -(J^\top J)^{-1}J^\top D^2y[\dot x,\dot x]`; in exact
    arithmetic this is :math:`-\Gamma(\dot x,\dot x)` (do Carmo, *Riemannian Geometry*, ch. 6, sec. 2).
    The Fisher metric of a softmax head is the pullback of the sphere of radius 2 by :math:`y = 2\sqrt p`
    (:func:`embedding`), and the heads of a multi-head family are independent, so ``y`` is their concatenation.

    Per head, with :math:`z = sKx + b`, :math:`c_i = \dot z_i - \sum_l p_l\dot z_l` and
    :math:`\tilde k_i = sk_i - \sum_l p_l\,sk_l`:
    :math:`J_{i\cdot} = \tfrac12 y_i\tilde k_i`, :math:`c_i = \tilde k_i\cdot\dot x` and
    :math:`D^2y_i[\dot x,\dot x] = y_i\,(c_i^2/4 - \tfrac12\sum_l p_l c_l^2)`.  Why not autodiff of the
    Christoffel symbols: at low entropy the metric is nearly singular (:math:`\operatorname{cond} g \sim
    1/p_{\min}`) and :math:`|\dot x|^2 \sim 1/p_{\min}`, so the float64 rounding of :math:`\Gamma(\dot x, \dot x)`
    (which solves with ``g``) exceeds ``ODE_RTOL``.  Here the centred keys are formed as
    :math:`\sum_l p_l(sk_i - sk_l)` (no cancellation: the dominant key's row, of size :math:`p_{\min}`, keeps
    its relative precision), the variance is a sum of positive terms, and ``J^+`` is applied by a
    Householder QR least-squares solve, whose rounding grows with :math:`\operatorname{cond} J =
    \sqrt{\operatorname{cond} g}`, not with ``cond g``.
    """
    jac, d2 = [], []
    for h in heads:
        sk = h.scale * jnp.asarray(h.keys)  # (n, m)
        logp = stable_log_softmax(h.logits(x))
        p, y = jnp.exp(logp), 2.0 * jnp.exp(0.5 * logp)
        kc = jnp.einsum("l,ilm->im", p, sk[:, None, :] - sk[None, :, :])  # centred keys, termwise
        c = kc @ v
        var = jnp.sum(p * c**2)
        jac.append(0.5 * y[:, None] * kc)
        d2.append(y * (0.25 * c**2 - 0.5 * var))
    q, r = jnp.linalg.qr(jnp.concatenate(jac), mode="reduced")
    return -jax.scipy.linalg.solve_triangular(r, q.T @ jnp.concatenate(d2), lower=False)


def _acceleration(t, y, family):
    x, v = y
    heads = family.softmax_heads()
    return v, (_embedded_acceleration(heads, x, v) if heads else _christoffel_acceleration(family, x, v))


_TERM = diffrax.ODETerm(_acceleration)
_SOLVER = diffrax.Dopri8()


def _solve(family, x, v, rtol, saveat, adjoint, max_steps=None):
    max_steps = ODE_MAX_STEPS if max_steps is None else max_steps
    controller = diffrax.PIDController(rtol=rtol, atol=rtol, dtmin=ODE_DTMIN, force_dtmin=False)
    return diffrax.diffeqsolve(_TERM, _SOLVER, 0.0, 1.0, None, (x, v), family, saveat=saveat,
                               stepsize_controller=controller, max_steps=max_steps, throw=False, adjoint=adjoint)


def _fisher_norm(g, d):
    return jnp.sqrt(jnp.maximum(d @ g @ d, 0.0))


def _speed(family, x, d):
    r"""Fisher length :math:`|d|_{g(x)}` of a tangent vector ``d`` at ``x``.

    For families with an :func:`embedding` it is :math:`|J(x)\,d|` (one forward-mode product through
    ``y = 2\sqrt p``), a sum of squares; :math:`\sqrt{d^	op g d}` is computed otherwise.  Why: at low
    entropy a geodesic's logit velocity is of order :math:`1/\sqrt{p_{\min}}` along the directions where
    ``g`` is of order :math:`p_{\min}`, so :math:`d^	op g d` is O(1) computed from terms of size
    :math:`|g||d|^2 \sim 1/p_{\min}`: its rounding error is :math:`arepsilon/p_{\min}` relative (an
    attention pair at entropy 2.4e-3 had an apparent energy drift of 3.2 along a geodesic whose tight and
    loose solves agreed to 2e-12).
    """
    emb = embedding(family)
    if emb is None:
        return _fisher_norm(fisher.metric(family, x), d)
    return jnp.sqrt(jnp.sum(jax.jvp(emb, (x,), (d,))[1] ** 2))


def _gap(family, x, y):
    """Fisher distance between two nearby points to first order: the chord of the :func:`embedding` where there is
    one (accurate at any entropy, as :func:`_speed`), else the Fisher norm of ``x - y`` at ``x``."""
    emb = embedding(family)
    if emb is None:
        return _fisher_norm(fisher.metric(family, x), x - y)
    return jnp.sqrt(jnp.sum((emb(x) - emb(y)) ** 2))


def _checked_flow(family, x, v):
    """End point at ``t = 1`` with the tight and the loose solve (one vmapped loop); the verification record."""
    def one(rtol):
        sol = _solve(family, x, v, rtol, diffrax.SaveAt(t1=True), diffrax.RecursiveCheckpointAdjoint())
        return sol.ys[0][-1], sol.ys[1][-1], sol.result._value, sol.stats["num_accepted_steps"]

    xs, vs, res, steps = jax.vmap(one)(jnp.array([ODE_RTOL, ODE_CHECK_RTOL]))
    x1, v1 = xs[0], vs[0]
    e0, e1 = _speed(family, x, v) ** 2, _speed(family, x1, v1) ** 2
    drift = jnp.where(e0 > 0, jnp.abs(e1 - e0) / jnp.where(e0 > 0, e0, 1.0), jnp.abs(e1))
    flow_err = _gap(family, xs[0], xs[1])  # absolute, Fisher units at the end point
    finite = jnp.all(jnp.isfinite(x1)) & jnp.all(jnp.isfinite(v1)) & jnp.isfinite(drift) & jnp.isfinite(flow_err)
    return dict(x1=x1, v1=v1, result=jnp.where(res[0] != 0, res[0], res[1]), steps=steps[0], drift=drift,
                flow_err=flow_err, speed=jnp.sqrt(jnp.maximum(e0, 0.0)), finite=finite)


_GL_T, _GL_W = np.polynomial.legendre.leggauss(LINE_NODES)


def _segment_length(family, a, b):
    """Fisher length of the straight coordinate segment a -> b (Gauss--Legendre): an upper bound on the distance."""
    d = b - a
    ts = 0.5 * (jnp.asarray(_GL_T) + 1.0)
    speeds = jax.vmap(lambda t: _speed(family, a + t * d, d))(ts)
    return 0.5 * jnp.sum(jnp.asarray(_GL_W) * speeds)


def embedding(family: Family):
    r"""An isometric embedding ``x -> y`` of a family with finite support into a product of spheres, or ``None``.

    :math:`y = 2\sqrt{p}` per head (the Fisher metric of a finite-support family is the pullback of
    the round metric of the sphere of radius 2), so :math:`|y(x) - y(b)|` is the Fisher distance to
    first order *uniformly*, where the coordinate displacement :math:`L_b^T(x - b)` is so only within
    :math:`\sqrt{p_{\min}}` of ``b`` in logit units.  Used only to measure the shooting residual.
    """
    heads = family.softmax_heads()
    if heads:
        return lambda x: jnp.concatenate(
            [2.0 * jnp.exp(0.5 * stable_log_softmax(h.logits(x))) for h in heads])
    if isinstance(family, DiscreteFamily):
        return lambda x: 2.0 * jnp.exp(0.5 * family.log_probs(x, JAX))
    return None


def _miss(family, b):
    """``x -> `` the miss vector of ``x`` from ``b``, in Fisher units to first order (:func:`embedding`,
    else the Cholesky factor of the metric at ``b``)."""
    emb = embedding(family)
    if emb is not None:
        yb = emb(b)
        return lambda x: emb(x) - yb
    lb_t = jnp.linalg.cholesky(fisher.metric(family, b)).T
    return lambda x: lb_t @ (x - b)


def _shoot_kernel(family, a, b, w0):
    """Levenberg--Marquardt from the normalised initial velocity ``w0`` toward ``b`` (no verification)."""
    linv_a = cholesky_inverse(fisher.metric(family, a))
    miss = _miss(family, b)

    def residual(w, _):
        sol = _solve(family, a, linv_a.T @ w, ODE_RTOL, diffrax.SaveAt(t1=True), diffrax.ForwardMode(), SHOOT_ODE_MAX_STEPS)
        r = miss(sol.ys[0][-1])
        ok = (sol.result._value == 0) & jnp.all(jnp.isfinite(r))
        return jnp.where(ok, r, SHOOT_PENALTY)

    sol = optx.least_squares(residual, optx.LevenbergMarquardt(rtol=SHOOT_RTOL, atol=SHOOT_RTOL), w0, max_steps=SHOOT_MAX_STEPS,
                             throw=False)
    return dict(w=sol.value, v=linv_a.T @ sol.value, iterations=sol.stats["num_steps"], lm_result=sol.result._value)


def _exp_kernel(family, a, v):
    """:func:`_checked_flow` and the exp map's relative error estimate ``error`` (integration error and
    half the energy drift, relative to ``|v|_g``)."""
    out = _checked_flow(family, a, v)
    speed = out["speed"]
    rel = out["flow_err"] / jnp.where(speed > 0, speed, 1.0)
    out["error"] = jnp.maximum(jnp.where(speed > 0, rel, out["flow_err"]), 0.5 * out["drift"])
    return out


def _check_kernel(family, a, v, b):
    """The verification of a geodesic from ``a`` with velocity ``v`` (shared by exp_map and log_map: one program).

    ``error`` is the exp map's relative error estimate; ``residual``/``log_error``/``line`` judge it as
    a log map toward ``b`` (exp_map passes ``b = a`` and ignores them)."""
    out = _exp_kernel(family, a, v)
    speed = out["speed"]
    res = jnp.sqrt(jnp.sum(_miss(family, b)(out["x1"]) ** 2))
    total = res + out["flow_err"] + 0.5 * out["drift"] * speed
    out.update(residual=res, line=_segment_length(family, a, b),
               log_error=jnp.where(speed > 0, total / jnp.where(speed > 0, speed, 1.0), jnp.where(total == 0, 0.0, jnp.inf)))
    return out


def _path_kernel(family, a, v, ts):
    sol = _solve(family, a, v, ODE_RTOL, diffrax.SaveAt(ts=ts), diffrax.RecursiveCheckpointAdjoint())
    return sol.ys[0], sol.result._value


def _straight_guess(family, a, b):
    r"""The initial Fisher-normalised velocity ``w0 = L_a^T v0`` of the shooting (``g_a = L_a L_a^T``).

    ``v0`` is the straight line in the best-conditioned coordinates available: for families with an
    :func:`embedding` (softmax, finite support) the chord :math:`y(b) - y(a)` projected on the tangent
    space at ``a`` (:math:`v_0 = g_a^{-1}J^\top\Delta y`, so :math:`w_0 = L_a^{-1}J^\top\Delta y`; on the
    simplex this is the direction of the great circle, and never longer than the geodesic); otherwise
    the coordinate segment ``v0 = b - a``.  At low entropy the coordinate segment is a poor guess: the
    logit velocity of the geodesic is of order :math:`1/\sqrt{p_{\min}}`, not ``|b - a|``.
    """
    g = fisher.metric(family, a)
    gb = fisher.metric(family, b)
    linv_a = cholesky_inverse(g)
    definite = jnp.all(jnp.isfinite(linv_a)) & jnp.all(jnp.isfinite(cholesky_inverse(gb)))
    short = _short_pair(family, a, b)
    emb = embedding(family)
    if emb is None:
        return jnp.linalg.cholesky(g).T @ (b - a), definite, short
    jac = jax.jacfwd(emb)(a)
    return linv_a @ (jac.T @ (emb(b) - emb(a))), definite, short


def _short_pair(family, a, b):
    r"""The second-order answer for nearby pairs, where shooting loses digits to ``exp(a, v) - b``.

    With :math:`\delta = b - a` the pair is *short* when the metric is nearly constant over the
    segment, measured by
    :math:`\varepsilon = \max(|L_a - L_b|, |L_a + L_b - 2L_m|)/L_m` (:math:`L_x = |\delta|_{g(x)}`,
    ``m`` the midpoint: the variation of the speed along the segment) together with
    :math:`|\Gamma_x(\delta, \delta)|_{g(x)} / |\delta|_{g(x)}` at ``x = a, b`` (the bending of the
    geodesic away from the segment: the geodesic is :math:`a + t\delta + \tfrac12 t(1-t)\Gamma(\delta,
    \delta) + O(\delta^3)`, so the metric's variation *across* the segment counts, not only along it;
    the speed terms alone vanish for pairs symmetric under an isometry, e.g. logits ``(15, 0)`` and
    ``(0, 15)`` of categorical(3), where :math:`L_a = L_b`).  The geodesic deviates from the segment by
    :math:`O(\varepsilon|\delta|)` and, the length being stationary at the geodesic, the two lengths
    differ by a relative :math:`O(\varepsilon^2)`.  Returns Simpson's length
    :math:`(L_a + 4L_m + L_b)/6`, the velocity :math:`v = \delta + \tfrac12\Gamma_a(\delta, \delta)`
    (:math:`\exp_a(v) = a + v - \tfrac12\Gamma_a(v, v) + O(\delta^3)`) and :math:`\varepsilon`.
    :func:`_log` also checks ``exp_a(v)`` against ``b`` before it accepts the answer.
    """
    d = b - a
    la, lb, lm = _speed(family, a, d), _speed(family, b, d), _speed(family, 0.5 * (a + b), d)
    safe_lm = jnp.where(lm > 0, lm, 1.0)
    bend_a = jnp.einsum("kij,i,j->k", tensors.christoffel(family, a), d, d)
    bend_b = jnp.einsum("kij,i,j->k", tensors.christoffel(family, b), d, d)
    eps = jnp.maximum(jnp.maximum(jnp.abs(la - lb), jnp.abs(la + lb - 2 * lm)) / safe_lm,
                      jnp.maximum(_speed(family, a, bend_a) / jnp.where(la > 0, la, 1.0),
                                  _speed(family, b, bend_b) / jnp.where(lb > 0, lb, 1.0)))
    eps = jnp.where(jnp.isfinite(eps), eps, jnp.inf)
    return dict(v=d + 0.5 * bend_a, length=(la + 4 * lm + lb) / 6, variation=eps)


def sectional_kernel(family, x, u, v):
    r"""Float64 :math:`K(u, v) = R_{\lambda\sigma\mu\nu}u^\lambda v^\sigma u^\mu v^\nu / (g(u,u)g(v,v) - g(u,v)^2)` at one point.

    :math:`R_{\lambda\sigma\mu\nu} = g_{\lambda\rho}R^\rho{}_{\sigma\mu\nu}` (tensors' convention), so the
    numerator is :math:`\langle R(u,v)v, u\rangle` and the round sphere is positive.  Returns
    ``(K, error estimate, pair-symmetry residual, relative Gram determinant)``; the estimate is
    :func:`geometry._src.linalg.error_estimate` of the sum of the magnitudes of the four Riemann terms
    plus the rounding of the Gram determinant.
    """
    a, b, c, d = tensors.riemann_terms(family, x)
    g = fisher.metric(family, x)
    low = jnp.einsum("lr,rsmn->lsmn", g, a - b + c - d)
    mag = jnp.einsum("lr,rsmn->lsmn", jnp.abs(g), jnp.abs(a) + jnp.abs(b) + jnp.abs(c) + jnp.abs(d))
    num = jnp.einsum("lsmn,l,s,m,n->", low, u, v, u, v)
    swapped = jnp.einsum("lsmn,l,s,m,n->", low, v, u, v, u)
    scale = jnp.einsum("lsmn,l,s,m,n->", mag, jnp.abs(u), jnp.abs(v), jnp.abs(u), jnp.abs(v))
    guu, gvv, guv = u @ g @ u, v @ g @ v, u @ g @ v
    gram = guu * gvv - guv**2
    rel_gram = gram / (guu * gvv)
    kappa = scaled_condition(g, cholesky_inverse(g))
    err = error_estimate(scale / jnp.abs(num), kappa) + SAFETY_GRAM * EPS / jnp.abs(rel_gram)
    return num / gram, err, jnp.abs(num - swapped) / jnp.abs(gram), rel_gram


#: rounding of ``g(u,u) g(v,v) - g(u,v)^2`` relative to its terms, in units of eps
SAFETY_GRAM = 8.0


def _batched(kernel):
    return jax.jit(lambda family, *args: jax.vmap(lambda *a: kernel(family, *a))(*args))


_CHECK = _batched(_check_kernel)
_SHOOT = _batched(_shoot_kernel)
_GUESS = _batched(_straight_guess)
_SECTIONAL = _batched(sectional_kernel)
_PATH = jax.jit(lambda family, a, v, ts: jax.vmap(lambda x, y: _path_kernel(family, x, y, ts))(a, v))


# --------------------------------------------------------------------------- host side: validation and batching


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _refuse_traced(family, *arrays, what):
    if tracing(family, arrays):
        raise TypeError(
            f"{what} is host-side (shooting with continuation on the pairs that did not converge, per-pair reasons, "
            "domain checks) and cannot run on traced values (inside jax.jit / vmap / grad): call it outside the "
            "transformation, on concrete arrays (it batches and compiles its kernels itself, vectorised over pairs); "
            "exp_map and sectional_curvature are traceable"
        )


def _traced_rows(fam, arr, name):
    """A traced (or concrete) ``(..., dim)`` argument as ``(rows, lead)``; shapes are checked (values cannot be)."""
    arr = jnp.asarray(arr, jnp.float64)
    if arr.ndim == 0 or arr.shape[-1] != fam.dim:
        raise ValueError(f"{name} must have shape (..., {fam.dim}) for {fam.name}, got shape {arr.shape}")
    return arr, arr.shape[:-1]


def _traced_broadcast(fam, named):
    rows = [_traced_rows(fam, a, n) for n, a in named]
    try:
        lead = jnp.broadcast_shapes(*[l for _, l in rows])
    except ValueError:
        desc = ", ".join(f"{n} {tuple(l)}" for (n, _), (_, l) in zip(named, rows))
        raise ValueError(f"the leading (batch) shapes do not broadcast: {desc}") from None
    return [jnp.broadcast_to(r, lead + (fam.dim,)).reshape(-1, fam.dim) for r, _ in rows], tuple(lead)


def _definite(fam, x):
    """Traced domain test: the float64 Cholesky factor of the metric at ``x`` exists and is finite."""
    return jnp.all(jnp.isfinite(cholesky_inverse(fisher.metric(fam, x))))


def _exp_traced(fam, theta, v, return_info):
    r"""exp_map on traced values: the eager kernel vmapped, the status as an array, no reasons.

    The status rules are the eager ones with the domain test replaced by the traced one of
    :func:`_definite` (the metric at both end points is positive definite and finite)."""
    (x, vv), lead = _traced_broadcast(fam, [("theta", theta), ("v", v)])

    def one(x, v):
        out = _exp_kernel(fam, x, v)
        ok = ((out["result"] == 0) & out["finite"] & _definite(fam, x) & _definite(fam, jnp.where(out["finite"], out["x1"], x))
              & (out["error"] <= EXP_RTOL))
        return jnp.where(ok, out["x1"], jnp.nan), jnp.where(ok, FLOAT64, UNDEFINED).astype(jnp.int8), out["drift"], out["error"], out["steps"]

    x1, status, drift, err, steps = jax.vmap(one)(x, vv)
    out = x1.reshape(lead + (fam.dim,))
    if not return_info:
        return out
    return out, GeodesicInfo(status.reshape(lead), drift.reshape(lead), err.reshape(lead), {}, EXP_RTOL, steps.reshape(lead))


def _sectional_traced(fam, theta, u, v, return_info):
    r"""sectional_curvature on traced values: the float64 contraction (:func:`sectional_kernel`) in every dimension.

    In 2-d the eager call takes :math:`R/2` from the precision-controlled scalar curvature (high-precision tiers
    are host-side); here the float64 value is kept where its estimate is at most ``SECTIONAL_RTOL`` and is NaN with
    status 4 (untrusted) elsewhere, as in dim >= 3.  Parallel ``u, v`` or a non-finite value: status 2."""
    (x, uu, vv), lead = _traced_broadcast(fam, [("theta", theta), ("u", u), ("v", v)])

    def one(x, u, v):
        k, err, sym, rel_gram = sectional_kernel(fam, x, u, v)
        parallel = ~(jnp.abs(rel_gram) > PARALLEL_RTOL)
        finite = jnp.isfinite(k) & _definite(fam, x)
        status = jnp.where(parallel | ~finite, UNDEFINED, jnp.where(err <= SECTIONAL_RTOL, FLOAT64, UNTRUSTED))
        return jnp.where(status == FLOAT64, k, jnp.nan), status.astype(jnp.int8), sym, jnp.where(parallel, jnp.inf, err)

    k, status, sym, err = jax.vmap(one)(x, uu, vv)
    out = k.reshape(lead)
    if not return_info:
        return out
    return out, GeodesicInfo(status.reshape(lead), sym.reshape(lead), err.reshape(lead), {}, SECTIONAL_RTOL)


def _points(fam, theta, name):
    """Validated ``(rows, lead, undefined {row: reason})``: shape, finiteness and the family's domain."""
    rows, lead = engine.as_rows(fam, theta, name)
    prepare = engine.block_checker(fam, name)
    flat = prepare(rows, 0) if rows.shape[0] else np.asarray(rows, np.float64)
    return flat, lead, dict(prepare.undefined)


def _vectors(fam, vec, name):
    arr = as_real_array(vec, name, f"a real array of shape (..., {fam.dim})")
    if arr.ndim == 0 or arr.shape[-1] != fam.dim:
        raise ValueError(f"{name} must have shape (..., {fam.dim}) for {fam.name} (tangent vectors in the family's "
                         f"coordinates, last axis of length {fam.dim}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr.reshape(-1, fam.dim)).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or inf (first at flat index {i}); tangent vectors must be finite")
    return arr.reshape(-1, fam.dim), arr.shape[:-1]


def _broadcast(names_rows_leads):
    """Broadcast the leading shapes; ``ValueError`` naming the arguments when they do not broadcast."""
    leads = [lead for _, _, lead in names_rows_leads]
    try:
        lead = np.broadcast_shapes(*leads)
    except ValueError:
        desc = ", ".join(f"{n} {tuple(l)}" for n, _, l in names_rows_leads)
        raise ValueError(f"the leading (batch) shapes do not broadcast: {desc}; pass arrays of one batch shape "
                         "(or a single point, shape (dim,), to pair with every row of the other)") from None
    n = int(np.prod(lead, dtype=np.int64))
    idx = np.arange(n).reshape(lead) if n else np.zeros(lead, int)
    out = []
    for _, rows, l in names_rows_leads:
        src = np.arange(rows.shape[0]).reshape(l) if rows.shape[0] else np.zeros(l, int)
        out.append(rows[np.broadcast_to(src, lead).reshape(-1)] if n else rows[:0])
    return out, lead, idx


def _bucket(k):
    size = MIN_BATCH
    while size < k:
        size *= 2
    return size


def _run(compiled, fam, *arrays, extra=()):
    """``compiled(fam, *chunk, *extra)`` over chunks of at most CHUNK rows, padded to a bucket size."""
    n = arrays[0].shape[0]
    parts = []
    for start in range(0, n, CHUNK):
        block = [a[start:start + CHUNK] for a in arrays]
        k = block[0].shape[0]
        size = _bucket(k)
        padded = [np.concatenate([b, np.repeat(b[:1], size - k, axis=0)]) if size > k else b for b in block]
        out = compiled(fam, *[jnp.asarray(p, jnp.float64) for p in padded], *extra)
        parts.append(jax.tree_util.tree_map(lambda o: np.asarray(o)[:k], out))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *parts)


def _outside(fam, rows):
    """Row indices whose points lie outside the family's domain (host-side test)."""
    if rows.shape[0] == 0 or not fam.domain_error(rows):
        return np.zeros(rows.shape[0], bool)
    return np.array([bool(fam.domain_error(rows[i:i + 1])) for i in range(rows.shape[0])])


def _ode_reason(code):
    name = _ODE_RESULT.get(int(code), f"code {int(code)}")
    return _ODE_WHY.get(name, f"the geodesic solve failed ({name})")


def _warn(info, what):
    if info.reasons:
        i, why = next(iter(info.reasons.items()))
        warnings.warn(f"{what}: {len(info.reasons)} of {info.status.size} pairs have no converged value (NaN); first: "
                      f"pair {i}: {why}. Call {what}(..., return_info=True) for the per-pair status.",
                      UndefinedGeodesicWarning, stacklevel=3)


# --------------------------------------------------------------------------- exp


def _exp(fam, x, v):
    n = x.shape[0]
    out = _run(_CHECK, fam, x, v, x) if n else None
    status, reasons = np.zeros(n, np.int8), {}
    if not n:
        return np.zeros((0, fam.dim)), status, np.zeros(0), np.zeros(0), reasons, np.zeros(0, int)
    x1 = out["x1"].copy()
    bad_domain = _outside(fam, np.where(np.isfinite(x1), x1, x[:1]))
    for i in range(n):
        why = None
        if out["result"][i] != 0:
            why = _ode_reason(out["result"][i])
        elif not out["finite"][i]:
            why = "the geodesic solve produced NaN/inf (the metric or its Christoffel symbols are not finite on the way)"
        elif bad_domain[i]:
            why = f"the geodesic leaves the domain of {fam.name}: {fam.domain_error(x1[i:i + 1])}"
        elif not out["error"][i] <= EXP_RTOL:
            why = (f"the geodesic solve did not meet EXP_RTOL = {EXP_RTOL:g}: error estimate {out['error'][i]:.2e} "
                   f"(energy drift {out['drift'][i]:.2e})")
        if why:
            status[i], reasons[i] = UNDEFINED, why
            x1[i] = np.nan
    return x1, status, out["drift"], out["error"], reasons, out["steps"]


def exp_map(family: Family, theta, v, return_info: bool = False):
    r"""Exponential map: the point at time 1 of the geodesic from ``theta`` with initial velocity ``v``.

    ``theta`` and ``v`` have shapes ``(..., dim)`` whose leading shapes broadcast; the result has
    the broadcast shape ``(..., dim)``.  The geodesic equation is integrated by diffrax (``Dopri8``,
    ``rtol = atol = ODE_RTOL``; module docstring).  A pair is converged (status 0) when the solve
    succeeded, stayed finite, ended in the domain and its error estimate (integration error of the
    end point against a looser companion solve, and half the energy drift, relative to
    ``|v|_g``) is at most ``EXP_RTOL``; otherwise the point is NaN and the reason is in
    ``info.reasons`` (``return_info=True``) or an :class:`UndefinedGeodesicWarning`.
    ``info.residual`` is the relative drift of the energy :math:`g(\dot x, \dot x)`.

    Traceable: under ``jax.jit`` / ``jax.vmap`` / ``jax.grad`` (e.g. with respect to ``v``) the same kernel
    runs on the traced values and ``info`` (a pytree) holds arrays: ``status`` (int8 codes), residual,
    error estimate and steps, with no per-pair reasons; the domain test is then the traced one (the metric
    at both end points positive definite and finite).
    """
    fam = check_family(family)
    return_info = _check_bool(return_info, "return_info")
    if tracing(fam, (theta, v)):
        return _exp_traced(fam, theta, v, return_info)
    x, lx, undef = _points(fam, theta, "theta")
    vv, lv = _vectors(fam, v, "v")
    (x, vv), lead, idx = _broadcast([("theta", x, lx), ("v", vv, lv)])
    x1, status, drift, err, reasons, steps = _exp(fam, x, vv)
    _mark_unrepresentable(undef, lx, lead, status, reasons, x1)
    info = GeodesicInfo(status.reshape(lead), drift.reshape(lead), err.reshape(lead), reasons, EXP_RTOL, steps.reshape(lead))
    out = x1.reshape(lead + (fam.dim,))
    if return_info:
        return out, info
    _warn(info, "exp_map")
    return out


def _mark_unrepresentable(undef, l_in, lead, status, reasons, *values):
    """Pairs whose input point float64 cannot represent (``block_checker``): undefined with the reason."""
    if not undef:
        return
    src = np.broadcast_to(np.arange(int(np.prod(l_in, dtype=np.int64))).reshape(l_in), lead).reshape(-1)
    for j in np.flatnonzero(np.isin(src, list(undef))):
        status[j], reasons[int(j)] = UNDEFINED, undef[int(src[j])]
        for val in values:
            val[j] = np.nan


# --------------------------------------------------------------------------- log


def _log(fam, a, b):
    """Shooting with continuation on rows ``a, b``: ``(v, distance, status, residual, error, reasons, steps, iterations)``."""
    n = a.shape[0]
    if not n:
        z = np.zeros(0)
        return np.zeros((0, fam.dim)), z, np.zeros(0, np.int8), z, z, {}, np.zeros(0, int), np.zeros(0, int)
    w0, definite, short = _run(_GUESS, fam, a, b)
    near = definite & (short["variation"] <= SHORT_VARIATION)  # nearby pairs: the second-order answer
    shot = _run(_SHOOT, fam, a, b, w0)
    shot_v = shot["v"].copy()
    shot["v"][near] = short["v"][near]
    out = _run(_CHECK, fam, a, shot["v"], b)
    # the second-order answer is accepted only where exp_a(v) lands on b (an independent check of the
    # short-pair test); the others take the shooting velocity, checked like every other pair
    miss = (out["residual"] + out["flow_err"]) / np.where(short["length"] > 0, short["length"], 1.0)
    demote = np.flatnonzero(near & ~((out["result"] == 0) & out["finite"] & (miss <= GEODESIC_RTOL)))
    if demote.size:
        near[demote] = False
        shot["v"][demote] = shot_v[demote]
        again = _run(_CHECK, fam, a[demote], shot_v[demote], b[demote])
        for key in out:
            out[key][demote] = again[key]
    out["speed"][near] = short["length"][near]
    out["log_error"][near] = np.maximum(SHORT_SAFETY * short["variation"][near] ** 2 + SHORT_SAFETY * EPS, miss[near])
    iters = np.where(near, 0, shot["iterations"].astype(int))

    def ok(o):
        return (o["result"] == 0) & o["finite"] & (o["log_error"] <= GEODESIC_RTOL)

    retry = np.flatnonzero(~ok(out) & definite & ~near)
    if retry.size:  # continuation: intermediate targets a + s (b - a) from the scaled previous solution
        ar, br = a[retry], b[retry]
        w, s_prev = w0[retry] * CONTINUATION[0], CONTINUATION[0]
        for s in CONTINUATION:
            stage = _run(_SHOOT, fam, ar, ar + s * (br - ar), w * (s / s_prev))
            w, s_prev = np.where(np.isfinite(stage["w"]), stage["w"], w * (s / s_prev)), s
            iters[retry] += stage["iterations"].astype(int)
        check = _run(_CHECK, fam, ar, stage["v"], br)
        better = ok(check) | (check["log_error"] < out["log_error"][retry])  # the retried pairs had not converged
        for key in out:
            out[key][retry[better]] = check[key][better]
        for key in shot:
            shot[key][retry[better]] = stage[key][better]
    status, reasons = np.zeros(n, np.int8), {}
    v, dist = shot["v"].copy(), out["speed"].copy()
    for i in range(n):
        why = None
        if not definite[i]:
            why = ("the float64 Cholesky factorisation of the Fisher metric at theta_a or theta_b failed: the metric is "
                   "singular, not finite (probabilities underflow), or so ill-conditioned in these coordinates at this "
                   "entropy that float64 cannot factor it; no geodesic can be computed in float64")
        elif out["result"][i] != 0:
            why = _ode_reason(out["result"][i]) + " (on the final shooting velocity)"
        elif not out["finite"][i]:
            why = "shooting produced NaN/inf (the metric or its Christoffel symbols are not finite on the way)"
        elif not out["log_error"][i] <= GEODESIC_RTOL:
            lm = {0: "converged", 7: "reached SHOOT_MAX_STEPS", 8: "diverged"}.get(int(shot["lm_result"][i]), f"result {int(shot['lm_result'][i])}")
            why = (f"shooting (Levenberg-Marquardt {lm}, then continuation) did not reach the target: error estimate "
                   f"{out['log_error'][i]:.2e} > GEODESIC_RTOL = {GEODESIC_RTOL:g} (residual |exp(a, v) - b|_g = {out['residual'][i]:.2e})")
        elif not near[i] and dist[i] > out["line"][i] * (1 + LINE_SLACK) + 1e-300:
            why = (f"the geodesic found (length {dist[i]:.6g}) is longer than the straight coordinate segment "
                   f"(length {out['line'][i]:.6g}): it is not the minimising geodesic")
        if why:
            status[i], reasons[i] = UNDEFINED, why
            v[i], dist[i] = np.nan, np.nan
    return v, dist, status, out["residual"], out["log_error"], reasons, out["steps"], iters


def _pairs(fam, theta_a, theta_b, what):
    _refuse_traced(fam, theta_a, theta_b, what=what)
    a, la, ua = _points(fam, theta_a, "theta_a")
    b, lb, ub = _points(fam, theta_b, "theta_b")
    (a, b), lead, _ = _broadcast([("theta_a", a, la), ("theta_b", b, lb)])
    return a, b, lead, ((ua, la), (ub, lb))


def _log_info(fam, a, b, lead, undef, *values):
    v, dist, status, res, err, reasons, steps, iters = _log(fam, a, b)
    for u, l_in in undef:
        _mark_unrepresentable(u, l_in, lead, status, reasons, v, dist)
    info = GeodesicInfo(status.reshape(lead), res.reshape(lead), err.reshape(lead), reasons, GEODESIC_RTOL,
                        steps.reshape(lead), iters.reshape(lead))
    return v, dist, info


def log_map(family: Family, theta_a, theta_b, return_info: bool = False):
    r"""Logarithmic map: the initial velocity ``v`` at ``theta_a`` with ``exp_map(theta_a, v) = theta_b``.

    Shapes ``(..., dim)`` whose leading shapes broadcast.  Shooting: Levenberg--Marquardt
    (optimistix) on the Fisher-normalised velocity from the straight-line guess
    ``theta_b - theta_a``, then continuation through intermediate targets for the pairs it
    does not converge for (the module docstring says which and why).  Status 0 only when
    ``info.error_estimate`` (``|exp_map(theta_a, v) - theta_b|`` in the Fisher norm plus the
    integration error, over ``|v|_g``) is at most ``GEODESIC_RTOL`` and the geodesic is no longer
    than the straight coordinate segment; otherwise NaN with the reason.
    """
    fam = check_family(family)
    return_info = _check_bool(return_info, "return_info")
    a, b, lead, undef = _pairs(fam, theta_a, theta_b, "log_map")
    v, _, info = _log_info(fam, a, b, lead, undef)
    out = v.reshape(lead + (fam.dim,))
    if return_info:
        return out, info
    _warn(info, "log_map")
    return out


def geodesic_distance(family: Family, theta_a, theta_b, return_info: bool = False):
    r"""Fisher--Rao distance: the length :math:`\sqrt{g_a(v, v)}` of the geodesic ``v = log_map(theta_a, theta_b)``.

    Shape: the broadcast leading shape of the inputs.  Same status rules as :func:`log_map`; the
    error estimate is that of ``|v|_g``.  On the simplex it equals :math:`2\arccos\sum_i\sqrt{p_iq_i}`,
    for the Gaussian in ``(mu, sigma)`` :math:`\sqrt2\,\operatorname{arccosh}(1 + ((\mu_1-\mu_2)^2/2 +
    (\sigma_1-\sigma_2)^2)/(2\sigma_1\sigma_2))` (both to about 1e-12 relative; tests/test_geodesics.py).
    """
    fam = check_family(family)
    return_info = _check_bool(return_info, "return_info")
    a, b, lead, undef = _pairs(fam, theta_a, theta_b, "geodesic_distance")
    _, dist, info = _log_info(fam, a, b, lead, undef)
    out = dist.reshape(lead)
    if return_info:
        return out, info
    _warn(info, "geodesic_distance")
    return out


#: largest ``num`` accepted by :func:`geodesic`
MAX_PATH_POINTS = 100_000


def geodesic(family: Family, theta_a, theta_b, num: int = 64, return_info: bool = False):
    r"""``num`` points of the minimising geodesic from ``theta_a`` to ``theta_b`` at equally spaced times.

    Returns shape ``lead + (num, dim)``: ``out[..., 0, :] = theta_a`` and ``out[..., -1, :]`` is
    ``theta_b`` to the log map's residual.  The velocity is :func:`log_map`'s; the points are one
    diffrax solve saved at ``t = linspace(0, 1, num)`` (``SaveAt(ts=...)``).  Info and status as
    :func:`log_map` (pairs without a converged geodesic are NaN).
    """
    fam = check_family(family)
    return_info = _check_bool(return_info, "return_info")
    if isinstance(num, (bool, np.bool_)) or not isinstance(num, (int, np.integer)):
        raise TypeError(f"num must be an integer >= 2 (points along the geodesic, end points included), got {num!r}")
    if not 2 <= num <= MAX_PATH_POINTS:
        raise ValueError(f"num must be between 2 and {MAX_PATH_POINTS} (points along the geodesic, end points included), got {num}")
    a, b, lead, undef = _pairs(fam, theta_a, theta_b, "geodesic")
    v, _, info = _log_info(fam, a, b, lead, undef)
    pts = np.full((a.shape[0], int(num), fam.dim), np.nan)
    good = np.flatnonzero(info.status.reshape(-1) == FLOAT64)
    if good.size:
        ts = jnp.linspace(0.0, 1.0, int(num))
        path, res = _run(_PATH, fam, a[good], v[good], extra=(ts,))
        pts[good] = np.where((res == 0)[:, None, None], path, np.nan)
        status = info.status.reshape(-1).copy()
        for j in good[res != 0]:
            status[j], info.reasons[int(j)] = UNDEFINED, _ode_reason(res[list(good).index(j)]) + " (saving the path)"
        info = dataclasses.replace(info, status=status.reshape(lead))
    out = pts.reshape(lead + (int(num), fam.dim))
    if return_info:
        return out, info
    _warn(info, "geodesic")
    return out


# --------------------------------------------------------------------------- sectional curvature


def sectional_curvature(family: Family, theta, u, v, return_info: bool = False):
    r"""Sectional curvature :math:`K(u, v)` of the plane spanned by ``u, v`` at ``theta``.

    .. math:: K(u, v) = \frac{R(u, v, v, u)}{g(u,u)\,g(v,v) - g(u,v)^2},\qquad
              R(u,v,v,u) = g_{\lambda\rho}R^\rho{}_{\sigma\mu\nu}\,u^\lambda v^\sigma u^\mu v^\nu
              = \langle R(u,v)v, u\rangle

    with :func:`geometry.riemann`'s :math:`R^\rho{}_{\sigma\mu\nu}`; the sign convention is that of
    :func:`geometry.scalar_curvature`: the round sphere of radius ``r`` has :math:`K = 1/r^2 > 0`
    (the categorical simplex :math:`+1/4` on every plane, the sphere of radius 2), the hyperbolic
    plane is negative (the Gaussian in ``(mu, sigma)``: :math:`K = -1/2`).  In two dimensions
    :math:`K = R/2` for every plane, and it is computed as that from the precision-controlled
    :func:`geometry.scalar_curvature` (statuses 0/1/2/3/4 as there).  In three or more it is the float64
    contraction above with the error model of :mod:`geometry._src.linalg`; points whose estimate
    exceeds ``SECTIONAL_RTOL`` are NaN with status 4 (untrusted) and the reason.  ``u, v``
    (numerically) parallel: undefined.  Shapes ``(..., dim)``, broadcast; the result has the leading
    shape.  Traceable (jit / vmap / grad): then the float64 contraction is used in every dimension,
    trusted to ``SECTIONAL_RTOL`` (:func:`_sectional_traced`), and ``info`` holds arrays without reasons.
    """
    fam = check_family(family)
    return_info = _check_bool(return_info, "return_info")
    if fam.dim < 2:
        raise ValueError(f"{fam.name} is {fam.dim}-dimensional: sectional curvature needs a 2-plane (dim >= 2)")
    if tracing(fam, (theta, u, v)):
        return _sectional_traced(fam, theta, u, v, return_info)
    x, lx, undef = _points(fam, theta, "theta")
    uu, lu = _vectors(fam, u, "u")
    vv, lv = _vectors(fam, v, "v")
    (x, uu, vv), lead, _ = _broadcast([("theta", x, lx), ("u", uu, lu), ("v", vv, lv)])
    n = x.shape[0]
    status, reasons = np.zeros(n, np.int8), {}
    if n:
        k, err, sym, rel_gram = _run(_SECTIONAL, fam, x, uu, vv)
    else:
        k = err = sym = rel_gram = np.zeros(0)
    k, err, sym = np.array(k), np.array(err), np.array(sym)
    if fam.dim == 2 and n:
        r, cinfo, _ = engine.curvature(fam, x)
        k, err = r / 2.0, np.array(cinfo.rel_error, float)
        status[:] = cinfo.status
        reasons.update(cinfo.reasons)
    for i in range(n):
        if i in reasons:
            k[i] = np.nan
            continue
        if not abs(rel_gram[i]) > PARALLEL_RTOL:
            status[i], reasons[i], k[i], err[i] = UNDEFINED, (
                f"u and v are (numerically) parallel: g(u,u) g(v,v) - g(u,v)^2 = {rel_gram[i]:.1e} g(u,u) g(v,v) "
                f"(PARALLEL_RTOL = {PARALLEL_RTOL:g}); they span no plane"), np.nan, np.inf
        elif fam.dim > 2 and not (np.isfinite(k[i]) and err[i] <= SECTIONAL_RTOL):
            status[i] = UNTRUSTED if np.isfinite(k[i]) else UNDEFINED
            reasons[i] = (f"float64 sectional curvature has estimated relative error {err[i]:.1e} > SECTIONAL_RTOL = "
                          f"{SECTIONAL_RTOL:g} (low entropy: no high-precision tier for dim >= 3)" if np.isfinite(k[i])
                          else "the float64 Riemann tensor is not finite here (singular or underflowing metric)")
            k[i] = np.nan
    _mark_unrepresentable(undef, lx, lead, status, reasons, k)
    info = GeodesicInfo(status.reshape(lead), sym.reshape(lead), err.reshape(lead), reasons,
                        SECTIONAL_RTOL if fam.dim > 2 else engine.DEFAULT_RTOL)
    out = k.reshape(lead)
    if return_info:
        return out, info
    _warn(info, "sectional_curvature")
    return out
