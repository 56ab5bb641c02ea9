r"""The float64 error model ``64 eps * cancellation * kappa`` and why kappa is the *scaled* condition number.

* Every route computes ``R`` by Cholesky without pivoting and index contractions, so
  rescaling a coordinate by a power of two rescales every intermediate exactly: the
  computed ``R`` is bit for bit the same in the rescaled chart.  Its rounding error is
  therefore that of the best-scaled chart, and ``kappa`` may be (is) the condition number
  of :math:`H = D^{-1/2} g D^{-1/2}`, which is the same in both charts, where
  :math:`\|g\|\,\|g^{-1}\|` is not.
* The estimate bounds the actual error, measured against the mpmath oracle, on points
  chosen to be badly scaled (coordinate scales 1e-6..1e6), badly conditioned and at low
  entropy: for every raw route of softmax families, and for the precision-controlled
  default of every family.
"""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import geometry
from geometry._src import fisher, linalg

from helpers import points_toward_vertices, rel_err

P = np.array([2.0**-9, 2.0**7, 2.0**3, 2.0**-4, 2.0**11, 2.0**-1])  # per-coordinate power-of-two scales


def _gamma_psi(eta, xp):
    """Gamma distribution in natural parameters ``(k - 1, -rate)``."""
    return xp.lgamma(eta[0] + 1) - (eta[0] + 1) * xp.log(-eta[1])


def _rescaled_user_family(psi, p):
    """The same family in the chart ``eta = p * phi`` (``p`` of powers of two)."""
    return geometry.exponential_family(lambda phi, xp: psi(xp.vector([float(c) * phi[i] for i, c in enumerate(p)]), xp), dim=len(p))


def _info(fam, theta, method):
    return geometry.scalar_curvature(fam, theta, method=method, return_info=True)


@pytest.mark.parametrize("m", [2, 6])  # unrolled batch-major kernel, per-point LAPACK route
def test_cumulant_route_is_exactly_equivariant_under_power_of_two_rescaling(m):
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(12, m))
    theta = points_toward_vertices(rng, m, 64, (-1, 1.5))
    p = P[:m]
    r1, i1 = _info(geometry.attention(keys, scale=1.0), theta, "cumulant")
    r2, i2 = _info(geometry.attention(keys * p, scale=1.0), theta / p, "cumulant")  # same logits, bit for bit
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(i1.rel_error, i2.rel_error, rtol=1e-12)


@pytest.mark.parametrize("method", ["hessian", "levi-civita"])
def test_autodiff_routes_are_exactly_equivariant_under_power_of_two_rescaling(method):
    rng = np.random.default_rng(2)
    eta = np.column_stack([np.exp(2 * rng.normal(size=32)), -np.exp(3 * rng.normal(size=32))])
    p = P[:2]
    r1, i1 = _info(geometry.exponential_family(_gamma_psi, dim=2), eta, method)
    r2, i2 = _info(_rescaled_user_family(_gamma_psi, p), eta / p, method)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(i1.rel_error, i2.rel_error, rtol=1e-12)


def test_scaled_condition_ignores_coordinate_scales_and_bounds_the_2_norm_one():
    rng = np.random.default_rng(3)
    for m in (2, 3, 5, 8):
        a = rng.normal(size=(m, m + 2))
        h = a @ a.T
        d = np.exp(3 * rng.normal(size=m))
        for g in (h, h * np.outer(d, d)):  # same scaled metric, very different kappa(g)
            linv = np.linalg.inv(np.linalg.cholesky(g))
            kappa = float(linalg.scaled_condition(jnp.asarray(g), jnp.asarray(linv)))
            s = np.sqrt(np.diag(g))
            k2 = np.linalg.cond(g / np.outer(s, s))
            assert k2 * (1 - 1e-9) <= kappa <= m * k2  # ||A||_inf <= sqrt(m) ||A||_2 for each factor
            unrolled = linalg.scaled_condition_unrolled(
                {(i, j): g[i, j] for i in range(m) for j in range(i + 1)}, {(i, j): linv[i, j] for i in range(m) for j in range(i + 1)}, m
            )
            assert float(unrolled) == pytest.approx(kappa, rel=1e-12)
        assert np.linalg.cond(h * np.outer(d, d)) > 10 * np.linalg.cond(h) or d.max() / d.min() < 10


def _cases():
    rng = np.random.default_rng(4)
    gamma = geometry.exponential_family(_gamma_psi, dim=2, name="gamma")
    shapes = 10 ** rng.uniform(-1, 4, size=64)
    rates = 10 ** rng.uniform(-6, 6, size=64)
    yield "gamma, shape 0.1..1e4, rate 1e-6..1e6", gamma, np.column_stack([shapes - 1, -rates]), ()
    anis = rng.normal(size=(10, 3)) * np.array([1e-3, 1.0, 7e2])  # badly scaled keys, not powers of two
    yield "attention, key scales 1e-3..7e2", geometry.attention(anis, scale=1.0), points_toward_vertices(rng, 3, 24, (-1, 2.3)) / np.array([1e-3, 1.0, 7e2]), ("cumulant", "hessian", "levi-civita")
    yield "categorical(4), low entropy", geometry.categorical(4), points_toward_vertices(rng, 3, 16, (-1, 1.9)), ("cumulant", "hessian", "levi-civita")
    wide = geometry.attention(rng.normal(size=(40, 8)))
    yield "attention n=40, m=8", wide, 1.5 * rng.normal(size=(6, 8)), ("cumulant",)
    sig = 10 ** rng.uniform(-3, 3, size=12)
    yield "gaussian, sigma 1e-3..1e3", geometry.gaussian(), np.column_stack([rng.normal(size=12) * sig * 50, sig]), ()


def _oracle(fam, theta):
    return np.array([float(geometry.scalar_curvature_mp(fam, t, dps=60)) for t in theta])


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_error_estimate_bounds_the_actual_error(case):
    """Raw routes of softmax families (the metric is built from exactly centred keys, so the
    error is made in the contractions the model describes), and the precision-controlled
    default of every family (whose float64 values of exponential families also pass the
    cross-check between two autodiff routes, which sees error made while building the metric:
    the Gamma family's polygamma values are a few ulps off, and that is amplified like 1/(k psi'(k) - 1))."""
    name, fam, theta, methods = case
    ref = _oracle(fam, theta)
    for method in (methods if fam.kind == "softmax-linear" else ()) + (None,):
        r, info = _info(fam, theta, method)
        est = info.rel_error
        if method is not None:
            assert (est < 1e-2).sum() >= len(theta) // 3, (method, est)  # not a vacuous bound
        err = np.array([rel_err(a, b) for a, b in zip(r, ref)])
        bad = (est < 1e-2) & ~(err <= np.maximum(est, 2.3e-16))
        assert not bad.any(), (method, theta[bad], err[bad], est[bad])
    assert info.counts()["float64"] >= len(theta) // 3  # the default trusts float64 where it can


def test_gamma_sweep_needs_no_fallback_where_float64_is_accurate():
    """The benchmark's Gamma sweep: the unscaled kappa (1e4-1e5 from shape vs rate) sent 0.7% of the
    points to mpmath although their float64 values were right to 1e-14; the scaled one sends none."""
    rng = np.random.default_rng(0)
    eta = np.column_stack([np.exp(rng.normal(size=2000)), -np.exp(rng.normal(size=2000))])
    fam = geometry.exponential_family(_gamma_psi, dim=2)
    _, info = geometry.scalar_curvature(fam, eta, return_info=True)
    assert info.counts()["float64"] == 2000
    g = np.asarray(jax.vmap(lambda t: fisher.metric(fam, t))(jnp.asarray(eta)))
    assert np.max(np.linalg.cond(g)) > 1e4  # the coordinates are badly scaled, the geometry is not
