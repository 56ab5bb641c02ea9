"""Scalar curvature against exact references, across entropy, by every route."""

import mpmath
import numpy as np
import pytest

import geometry
from helpers import points_toward_vertices, rel_err, simplex_curvature


@pytest.mark.parametrize("n", [2, 3, 4, pytest.param(5, marks=pytest.mark.slow), pytest.param(6, marks=pytest.mark.slow)])
def test_simplex_has_constant_curvature_at_every_entropy(n):
    """R = (n-1)(n-2)/4 to 1e-10 relative, for H from log n down to ~1e-200."""
    rng = np.random.default_rng(n)
    fam = geometry.categorical(n)
    theta = points_toward_vertices(rng, n - 1, 24)
    theta[0] = 0.0  # uniform: H = log n
    theta[1] = 0.0
    theta[1, 0] = 470.0  # H ~ 470 e^-470 ~ 1e-201, dominant outcome 1
    theta[2] = -470.0  # dominant outcome n (the fixed logit)
    r, info = geometry.scalar_curvature(fam, theta, return_info=True, rtol=1e-11)
    h = geometry.entropy(fam, theta)
    assert h.max() == pytest.approx(np.log(n))
    assert h.min() < 1e-150, "the sweep must reach extreme low entropy"
    np.testing.assert_allclose(r, simplex_curvature(n), rtol=1e-10, atol=0 if n > 2 else 1e-300)
    assert info.counts()["total"] == 24
    assert info.counts()["undefined"] == 0


@pytest.mark.parametrize("temperature", [0.05, 1.0, 7.0])
def test_temperature_does_not_change_the_simplex(temperature):
    fam = geometry.categorical(4, temperature=temperature)
    theta = points_toward_vertices(np.random.default_rng(1), 3, 10, (-1, 1.5))
    np.testing.assert_allclose(geometry.scalar_curvature(fam, theta, rtol=1e-11), 1.5, rtol=1e-10)


def test_gaussian_is_hyperbolic_with_curvature_minus_one():
    rng = np.random.default_rng(2)
    theta = np.column_stack([rng.normal(scale=10, size=30), 10 ** rng.uniform(-3, 3, size=30)])
    np.testing.assert_allclose(geometry.scalar_curvature(geometry.gaussian(), theta, rtol=1e-11), -1.0, rtol=1e-10)
    for route in ("hessian", "levi-civita"):
        np.testing.assert_allclose(geometry.scalar_curvature(geometry.gaussian(), theta[:5] / [1, 100] + [0, 1], method=route), -1.0, rtol=1e-8)


def test_one_dimensional_families_are_flat():
    poisson = geometry.exponential_family(lambda eta, xp: xp.exp(eta[0]), dim=1, name="poisson")
    coin = geometry.categorical(2)
    for fam in (poisson, coin):
        r = geometry.scalar_curvature(fam, np.linspace(-3, 3, 7)[:, None])
        assert np.all(r == 0.0)


def test_gaussian_in_natural_coordinates_is_the_same_manifold():
    """A user exponential family with the Gaussian log-partition, in natural coordinates, has R = -1."""
    fam = geometry.exponential_family(lambda e, xp: -e[0] ** 2 / (4 * e[1]) - xp.log(-2 * e[1]) / 2, dim=2)
    eta = np.array([[0.3, -0.5], [5.0, -0.01], [-2.0, -40.0]])
    for route in (None, "hessian", "levi-civita"):
        np.testing.assert_allclose(geometry.scalar_curvature(fam, eta, method=route), -1.0, rtol=1e-7)


def test_round_sphere_is_positive_through_a_discrete_family():
    """The 3-outcome categorical written by hand as a discrete family: R = +1/2 (sphere of radius 2)."""
    fam = geometry.discrete_family(lambda t, xp: xp.log_softmax(xp.vector([t[0], t[1], 0 * t[0]])), dim=2)
    theta = np.array([[0.0, 0.0], [1.0, -2.0], [30.0, 0.5]])
    r, info = geometry.scalar_curvature(fam, theta, return_info=True)
    np.testing.assert_allclose(r, 0.5, rtol=1e-9)
    assert info.route == "levi-civita"


def _attention_families():
    rng = np.random.default_rng(7)
    return [
        geometry.attention(rng.normal(size=(4, 2))),
        geometry.attention(rng.normal(size=(8, 3)), scale=0.8),
        geometry.attention(rng.normal(size=(16, 2))),
        geometry.multihead_attention([rng.normal(size=(5, 2)), rng.normal(size=(3, 2))]),
    ]


@pytest.mark.parametrize("fam", _attention_families(), ids=lambda f: f.name)
def test_routes_agree_where_float64_is_well_conditioned(fam):
    x = np.random.default_rng(3).normal(size=(12, fam.dim)) * 0.7
    r = {route: geometry.scalar_curvature(fam, x, method=route) for route in ("cumulant", "hessian", "levi-civita")}
    np.testing.assert_allclose(r["hessian"], r["cumulant"], rtol=1e-9)
    np.testing.assert_allclose(r["levi-civita"], r["cumulant"], rtol=1e-8)


@pytest.mark.parametrize("fam", _attention_families(), ids=lambda f: f.name)
def test_default_matches_mpmath_oracle_at_every_entropy(fam):
    """8+ significant digits everywhere, including points the float64 routes get wrong."""
    rng = np.random.default_rng(11)
    x = points_toward_vertices(rng, fam.dim, 16, (-0.5, 2.3))
    r, info = geometry.scalar_curvature(fam, x, return_info=True)
    for i in range(len(x)):
        ref = geometry.scalar_curvature_mp(fam, x[i], dps=80 + 2 * int(info.dps[i]))
        assert rel_err(r[i], ref) <= 1e-8, (i, r[i], ref, info.status[i])
        assert info.rel_error[i] <= 1e-8


def test_precision_fallback_fixes_what_naive_float64_gets_wrong():
    """categorical(3) at H ~ 3e-16: naive autodiff is off by orders of magnitude; the default is exact.
    (At theta = (35, 0) the naive route happens to give 0.5 with a float64 error estimate of 1e3:
    right by luck, and not trusted either.)"""
    fam = geometry.categorical(3)
    theta = np.array([[40.0, 0.0], [100.0, 3.0]])
    naive = geometry.scalar_curvature(fam, theta, method="hessian")
    r, info = geometry.scalar_curvature(fam, theta, return_info=True)
    assert np.all(np.abs(naive - 0.5) > 1e-3) or not np.all(np.isfinite(naive))
    np.testing.assert_allclose(r, 0.5, rtol=1e-12)
    assert info.recomputed.all() and (info.dps > 16).all()


def test_independent_high_precision_routes_agree():
    """mpmath cumulant formula vs mpmath Levi-Civita of the same attention family written as a discrete family."""
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.25, -2.0]])
    att = geometry.attention(keys, scale=1.0)
    disc = geometry.discrete_family(lambda x, xp: xp.log_softmax(xp.matvec(keys, x)), dim=2)
    for x in ([0.3, -0.2], [4.0, 1.0], [-12.0, 30.0]):
        a = geometry.scalar_curvature_mp(att, x, dps=120)
        b = geometry.scalar_curvature_mp(disc, x, dps=120)
        assert abs(a - b) <= mpmath.mpf(10) ** -40 * abs(a)


def test_untrusted_points_of_plain_jax_families_are_flagged_not_recomputed():
    import jax.numpy as jnp

    fam = geometry.exponential_family(lambda e: jnp.log(jnp.exp(e[0]) + jnp.exp(e[1]) + 1.0), dim=2)
    theta = np.array([[0.1, 0.2], [60.0, 0.0]])
    with pytest.warns(geometry.UndefinedCurvatureWarning, match="cannot be lowered"):
        r = geometry.scalar_curvature(fam, theta)
    assert r[0] == pytest.approx(0.5, rel=1e-9) and np.isnan(r[1])
    _, info = geometry.scalar_curvature(fam, theta, return_info=True)
    assert info.counts() == {"total": 2, "float64": 1, "high_precision": 0, "undefined": 0, "not_computed_budget": 0, "untrusted": 1}


def test_time_budget_reports_points_instead_of_dropping_them():
    fam = geometry.attention(np.random.default_rng(0).normal(size=(6, 3)))
    x = points_toward_vertices(np.random.default_rng(1), 3, 6, (2.5, 2.6))
    r, info = geometry.scalar_curvature(fam, x, return_info=True, time_budget=0.0)
    c = info.counts()
    assert c["total"] == 6 and c["float64"] + c["high_precision"] + c["not_computed_budget"] == 6
    assert c["not_computed_budget"] >= 1
    assert np.isnan(r[info.status == 3]).all() and all("budget" in info.reasons[i] for i in np.flatnonzero(info.status == 3))


def test_output_shapes_follow_the_leading_axes():
    fam = geometry.categorical(3)
    assert geometry.scalar_curvature(fam, np.zeros(2)).shape == ()
    assert geometry.scalar_curvature(fam, np.zeros((4, 5, 2))).shape == (4, 5)
    assert geometry.scalar_curvature(fam, np.zeros((0, 2))).shape == (0,)
    assert geometry.entropy(fam, np.zeros((3, 2))).shape == (3,)
    assert geometry.fisher_metric(fam, np.zeros((3, 2))).shape == (3, 2, 2)
    assert geometry.christoffel(fam, np.zeros(2)).shape == (2, 2, 2)
    assert geometry.riemann(fam, np.zeros((1, 2))).shape == (1, 2, 2, 2, 2)


def test_two_tied_dominant_outcomes_are_not_trusted_in_float64():
    """p ~ (1/2, 1/2, 3e-37): the float64 metric is numerically singular and the Gram sums of
    the cumulant route cancel to a *negative* |T|^2 + |tau|^2.  Found by hypothesis: the error
    estimate came out negative and R = 7.6e-22 was returned as trusted.  R must be 1/2."""
    fam = geometry.categorical(3, temperature=10**-1.6924759616802256)
    theta = np.array([[1.6924759616802256] * 2, [-1.6924759616802256] * 2, [0.5, 0.5]])
    r, info = geometry.scalar_curvature(fam, theta, return_info=True)
    np.testing.assert_allclose(r, 0.5, rtol=1e-10)
    assert np.all(info.rel_error >= 0)
    np.testing.assert_allclose(geometry.sweep(fam, theta, progress=False), 0.5, rtol=1e-10)
