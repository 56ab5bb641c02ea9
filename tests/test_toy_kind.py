"""A family kind defined only in the tests (tests/toy_kind.py) goes through every part of the toolkit.

``TemperedSimplex(n, T)``: ``p = softmax((theta, 0) / T)`` with ``T`` an array leaf.  Nothing
under geometry/ knows it; the toolkit must use only the contract of :class:`geometry.Family`.
It is the same distribution, in the same coordinates, as ``geometry.categorical(n, T)``, which
gives reference values for every tensor; its scalar curvature is ``(n-1)(n-2)/4`` for every T.
"""

from __future__ import annotations

import pathlib
import warnings

import equinox as eqx
import mpmath
import numpy as np
import pytest
import sympy

import jax
import jax.numpy as jnp

import geometry
from toy_kind import TemperedSimplex, simplex_curvature, tempered_simplex, toy_sampler

T = 0.5
FAM = tempered_simplex(3, T)
REF = geometry.categorical(3, temperature=T)  # same distribution, same coordinates
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _points(count=4, seed=0, fam=FAM, t=T):
    return toy_sampler(t, fam.dim)(np.random.default_rng(seed), count)


def test_geometry_does_not_know_the_kind():
    for path in (ROOT / "geometry").rglob("*.py"):
        assert "TemperedSimplex" not in path.read_text() and "tempered_simplex" not in path.read_text(), path
    assert isinstance(FAM, geometry.Family) and isinstance(FAM, eqx.Module)
    leaves = jax.tree_util.tree_leaves(FAM)
    assert len(leaves) == 1 and jnp.shape(leaves[0]) == () and jnp.asarray(leaves[0]).dtype == jnp.float64


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize("method", ["levi-civita", "hessian"])
@pytest.mark.parametrize("n, t", [(3, 0.5), (4, 2.0)])
def test_routes_give_the_simplex_curvature(method, n, t):
    fam = tempered_simplex(n, t)
    X = _points(3, fam=fam, t=t)
    r, info = geometry.scalar_curvature(fam, X, method=method, return_info=True)
    assert isinstance(r, np.ndarray) and r.shape == (3,)
    np.testing.assert_allclose(r, simplex_curvature(n), rtol=1e-10)
    assert info.route == method and np.all(info.status == 0)


def test_cumulant_route_refuses_with_what_it_needs():
    with pytest.raises(ValueError, match=r"method='cumulant' needs a softmax-linear family"):
        geometry.scalar_curvature(FAM, _points(2), method="cumulant")


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be"):
        geometry.scalar_curvature(FAM, _points(2), method="christoffel")


def test_precision_controlled_default_at_moderate_entropy():
    X = _points(5)
    r, info = geometry.scalar_curvature(FAM, X, return_info=True)
    assert np.all(np.abs(r - 0.5) <= 1e-8 * 0.5)
    assert {geometry.STATUS_NAMES[int(s)] for s in info.status} <= {"float64", "high_precision"}
    assert info.route == "hessian" and not info.reasons
    # the default without return_info warns about nothing here
    with warnings.catch_warnings():
        warnings.simplefilter("error", geometry.UndefinedCurvatureWarning)
        np.testing.assert_allclose(geometry.scalar_curvature(FAM, X), 0.5, rtol=1e-8)


def test_precision_controlled_default_recomputes_low_entropy_points():
    """Logits +-12: float64 loses ~10 digits, so the default hands the point to the mpmath tier
    (the built-in categorical(3, T) does the same and returns 0.5 with status high_precision)."""
    X = np.array([[12.0 * T, -12.0 * T], [0.3, -0.2]])
    r_ref, info_ref = geometry.scalar_curvature(REF, X, return_info=True)
    assert info_ref.status[0] == 1  # the reference needs a high-precision tier there
    r, info = geometry.scalar_curvature(FAM, X, return_info=True)
    assert info.status[0] == 1 and info.status[1] == 0, info
    np.testing.assert_allclose(r, 0.5, rtol=1e-8)


class _StaticTemperature(TemperedSimplex):
    """Control: the same kind with ``T`` a static field instead of an array leaf."""

    T: float = eqx.field(static=True)


def test_control_same_kind_with_static_temperature_reaches_mpmath():
    """Shows that the kind's lowering (potential with xp = SYMPY / MPMATH) is sound: with a
    static T (no array leaf) the oracle and the mpmath tier work.  The array-leaf tests above
    and below fail only where geometry needs to hash the family."""
    fam = _StaticTemperature(T=T, name="tempered_simplex static T", dim=2)
    assert jax.tree_util.tree_leaves(fam) == []
    assert abs(float(geometry.scalar_curvature_mp(fam, np.array([0.3, -0.2]))) - 0.5) <= 1e-15 * 0.5
    r, info = geometry.scalar_curvature(fam, np.array([12.0 * T, -12.0 * T]), return_info=True)
    assert info.status == 1 and abs(float(r) - 0.5) <= 1e-8


# --------------------------------------------------------------------------- the mpmath oracle


@pytest.mark.parametrize("theta", [[0.3, -0.2], [1.0, 0.25], [6.0, -6.0]])
def test_mpmath_oracle(theta):
    val = geometry.scalar_curvature_mp(FAM, np.array(theta), dps=50, rtol=1e-20)
    assert abs(val - sympy.Rational(1, 2)) <= 1e-15 * 0.5


def test_lowerings_agree_with_the_jax_metric():
    """``potential()`` and ``lower_metric`` lower to sympy, and match the float64 metric."""
    th = sympy.symbols("theta0:2", real=True)
    psi, chart = FAM.potential()
    assert chart is None
    expr = psi(list(th), geometry.SYMPY)
    hess = [[sympy.diff(expr, th[i], th[j]) for j in range(2)] for i in range(2)]
    low = FAM.lower_metric(list(th), geometry.SYMPY)
    x = np.array([0.3, -0.2])
    g = np.asarray(FAM.metric(jnp.asarray(x)))
    subs = dict(zip(th, x))
    for lowered in (hess, low):
        num = np.array([[float(e.subs(subs)) for e in row] for row in lowered])
        np.testing.assert_allclose(num, g, rtol=1e-13)
    # and psi evaluates in mpmath
    with mpmath.workdps(30):
        v = psi([mpmath.mpf(0.3), mpmath.mpf(-0.2)], geometry.MPMATH)
        assert abs(v - mpmath.log(mpmath.exp(mpmath.mpf(0.3) / T) + mpmath.exp(mpmath.mpf(-0.2) / T) + 1)) < 1e-28


# --------------------------------------------------------------------------- metric, entropy, tensors


def test_metric_entropy_and_tensors_match_the_builtin_categorical():
    X = _points(4)
    for method in (None, "score"):
        np.testing.assert_allclose(geometry.fisher_metric(FAM, X, method=method), geometry.fisher_metric(REF, X), rtol=1e-12)
    with pytest.raises(ValueError, match="covariance"):
        geometry.fisher_metric(FAM, X, method="covariance")
    p = np.exp(np.concatenate([X / T, np.zeros((4, 1))], axis=1))
    p /= p.sum(axis=1, keepdims=True)
    g_exact = (np.einsum("ki,ij->kij", p[:, :2], np.eye(2)) - np.einsum("ki,kj->kij", p[:, :2], p[:, :2])) / T**2
    np.testing.assert_allclose(geometry.fisher_metric(FAM, X), g_exact, rtol=1e-12)
    h = geometry.entropy(FAM, X)
    np.testing.assert_allclose(h, -np.sum(p * np.log(p), axis=1), rtol=1e-13)
    np.testing.assert_allclose(h, geometry.entropy(REF, X), rtol=1e-13)
    for fn in (geometry.christoffel, geometry.riemann, geometry.ricci):
        a, b = fn(FAM, X), fn(REF, X)
        assert isinstance(a, np.ndarray) and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
    ginv = np.linalg.inv(g_exact)
    np.testing.assert_allclose(np.einsum("ksn,ksn->k", ginv, geometry.ricci(FAM, X)), 0.5, rtol=1e-10)


# --------------------------------------------------------------------------- sweep


def test_sweep():
    X = _points(37, seed=3)  # not a multiple of the chunk: the tail is padded
    r, info, stats = geometry.sweep(FAM, X, progress=False, return_info=True, return_stats=True)
    np.testing.assert_allclose(r, 0.5, rtol=1e-8)
    assert r.shape == (37,) and info.route == "hessian" and stats.points == 37 and stats.route == "hessian"
    r2 = geometry.sweep(FAM, X.reshape(37, 1, 2), method="levi-civita", progress=False)
    assert r2.shape == (37, 1)
    np.testing.assert_allclose(r2[:, 0], 0.5, rtol=1e-10)


# --------------------------------------------------------------------------- jit, vmap, grad


@pytest.mark.slow  # 25-35 s under load: the default run stays under 10 minutes
def test_jit_vmap_grad_with_respect_to_points_and_temperature():
    X = _points(3)
    eager = {m: geometry.scalar_curvature(FAM, X, method=m) for m in ("hessian", "levi-civita")}
    temps = jnp.array([0.25, 0.5, 1.0, 3.0])

    def curv(t, x, m):
        return geometry.scalar_curvature(tempered_simplex(3, t), x, method=m)

    @jax.jit
    def run(F, X, temps):
        out = {}
        for m in ("hessian", "levi-civita"):
            out[m] = (
                geometry.scalar_curvature(F, X, method=m),
                jax.vmap(lambda x: geometry.scalar_curvature(F, x, method=m))(X),
                jax.vmap(lambda t: curv(t, X[0], m))(temps),  # a stack of temperatures
                jax.grad(lambda t: curv(t, X[0], m))(F.T),  # R does not depend on T
                jax.grad(lambda x: geometry.scalar_curvature(F, x, method=m))(X[0]),  # nor on theta
            )
        out["entropy_dT"] = jax.grad(lambda t: geometry.entropy(tempered_simplex(3, t), X[0]))(F.T)
        out["metric_stack"] = jax.vmap(lambda t: geometry.fisher_metric(tempered_simplex(3, t), X))(temps)
        return out

    out = run(FAM, X, temps)
    for m in ("hessian", "levi-civita"):
        batch, per_point, stack, d_t, d_x = out[m]
        np.testing.assert_allclose(np.asarray(batch), eager[m], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(per_point), eager[m], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(stack), 0.5, rtol=1e-10)
        assert abs(float(d_t)) < 1e-10 and np.max(np.abs(np.asarray(d_x))) < 1e-10
    # dH/dT against central differences of the eager entropy (smooth, O(1): h = 2^-12 leaves
    # truncation h^2 H''' / 6 ~ 1e-8 and rounding eps / h ~ 1e-12)
    h = 2.0**-12
    fd = (float(geometry.entropy(tempered_simplex(3, T + h), X[0])) - float(geometry.entropy(tempered_simplex(3, T - h), X[0]))) / (2 * h)
    assert abs(float(out["entropy_dT"]) - fd) <= 1e-6
    for i, t in enumerate(np.asarray(temps)):
        np.testing.assert_allclose(np.asarray(out["metric_stack"][i]), geometry.fisher_metric(geometry.categorical(3, float(t)), X), rtol=1e-12)


def test_default_method_refuses_traced_temperature():
    with pytest.raises(TypeError, match="method="):
        jax.jit(lambda t: geometry.scalar_curvature(tempered_simplex(3, t), np.array([0.1, 0.2])))(jnp.asarray(0.5))


# --------------------------------------------------------------------------- the checks' plugin registry


def test_checks_user_family_registry(tmp_path):
    import checks
    from checks._src import sweep as checks_sweep
    from checks._src.registry import Context

    name = "toy tempered simplex (test)"
    checks.register_family(name, FAM, toy_sampler(T, 2), group="user")
    try:
        assert name in checks.user_families()
        ctx = Context(seed=0, quick=True, out_dir=str(tmp_path), progress=None)
        (res,) = checks_sweep.sweep(ctx, names=[name])
        assert res.name == name and res.family is FAM and res.theta.shape == (checks_sweep.SWEEP_POINTS_QUICK, 2)
        np.testing.assert_allclose(res.R, 0.5, rtol=1e-8)
        np.testing.assert_allclose(res.H, geometry.entropy(REF, res.theta), rtol=1e-12)
        counts = res.counts
        assert counts["total"] == checks_sweep.SWEEP_POINTS_QUICK
        assert counts["float64"] + counts["high_precision"] == counts["total"], counts
    finally:
        checks.unregister_family(name)
    assert name not in checks.user_families()
