"""Double-double tier: error-free transformations against exact rationals, exp and the cumulant
route against mpmath, and its place in the precision-controlled ``scalar_curvature``."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import geometry
from geometry._src import ddouble as D

EPS_DD = D.EPS_DD


def _wide(rng, size):
    """float64 values with random signs and exponents spread over 40 decades."""
    return rng.normal(size=size) * 10.0 ** rng.integers(-20, 20, size)


def _exact(pair):
    hi, lo = (np.asarray(a) for a in pair)
    return [Fraction(float(h)) + Fraction(float(l)) for h, l in zip(hi.ravel(), lo.ravel())]


def test_two_sum_is_exact_under_jit():
    rng = np.random.default_rng(0)
    a, b = _wide(rng, 2000), _wide(rng, 2000)
    got = _exact(jax.jit(D.two_sum)(a, b))
    assert all(g == Fraction(x) + Fraction(y) for g, x, y in zip(got, a, b))


def test_two_prod_within_eps_dd_under_jit_and_inside_larger_fusions():
    """FMA contraction by the compiler must not break the product (it did for Dekker's splitter)."""
    rng = np.random.default_rng(1)
    a, b = _wide(rng, 2000), _wide(rng, 2000)
    fused = jax.jit(lambda a, b: D.mul((a, 0.0 * a), D.add((b, 0.0 * b), D.dd(a * 0.0))))
    for got in (_exact(jax.jit(D.two_prod)(a, b)), _exact(fused(a, b))):
        worst = max(abs(g - Fraction(x) * Fraction(y)) / abs(Fraction(x) * Fraction(y)) for g, x, y in zip(got, a, b))
        assert worst <= Fraction(EPS_DD)  # al*bl, e1 + e2 and the renormalisation each round at ~2^-106


def test_constants_survive_the_algebraic_simplifier():
    """``(1 + s) - 1`` must keep the rounding error of ``1 + s`` (XLA folds literal constants)."""
    s = jnp.asarray([1e-3, 2e-5, 3.3e-7])
    hi, lo = jax.jit(lambda s: D.add(D.const(1.0, s), D.dd(s)))(s)
    assert all(g == 1 + Fraction(float(v)) for g, v in zip(_exact((hi, lo)), s))


@pytest.mark.parametrize("op, ref", [(D.mul, lambda x, y: x * y), (D.div, lambda x, y: x / y), (D.add, lambda x, y: x + y)])
def test_arithmetic_to_double_double_precision(op, ref):
    rng = np.random.default_rng(2)
    hi = rng.normal(size=(2, 500)) * 10.0 ** rng.integers(-5, 5, (2, 500))
    x = (hi[0], hi[0] * 1e-17 * rng.uniform(-0.5, 0.5, 500))
    y = (hi[1], hi[1] * 1e-17 * rng.uniform(-0.5, 0.5, 500))
    got = _exact(jax.jit(op)(x, y))
    for g, a, b in zip(got, _exact(x), _exact(y)):
        want = ref(a, b)
        assert abs(g - want) <= 4 * EPS_DD * (abs(want) if op is not D.add else abs(a) + abs(b))


def test_sqrt_to_double_double_precision():
    x = jnp.asarray([2.0, 1e-200, 3.0e150, 0.7])
    hi, lo = jax.jit(lambda x: D.sqrt(D.dd(x)))(x)
    mpmath.mp.dps = 60
    for h, l, v in zip(np.asarray(hi), np.asarray(lo), np.asarray(x)):
        want = mpmath.sqrt(mpmath.mpf(float(v)))
        assert abs((mpmath.mpf(float(h)) + mpmath.mpf(float(l)) - want) / want) <= 4 * EPS_DD


def test_exp_relative_error_is_a_few_eps_dd_down_to_exp_minus_650():
    rng = np.random.default_rng(3)
    x = rng.uniform(-650.0, 5.0, 300)
    x_lo = x * 1e-17 * rng.uniform(-0.5, 0.5, 300)
    hi, lo = jax.jit(D.exp)((jnp.asarray(x), jnp.asarray(x_lo)))
    mpmath.mp.dps = 60
    worst = max(
        abs((mpmath.mpf(float(h)) + mpmath.mpf(float(l)) - mpmath.exp(mpmath.mpf(float(a)) + mpmath.mpf(float(b)))) / mpmath.exp(mpmath.mpf(float(a)) + mpmath.mpf(float(b))))
        for h, l, a, b in zip(np.asarray(hi), np.asarray(lo), x, x_lo)
    )
    assert worst <= 4 * EPS_DD


def _ill_conditioned_attention(seed, n=12, m=2, count=12):
    """Queries along rays where the float64 estimate exceeds the default rtol but double-double suffices."""
    rng = np.random.default_rng(seed)
    fam = geometry.attention(rng.normal(size=(n, m)))
    dirs = rng.normal(size=(count, m))
    return fam, dirs * rng.uniform(4.0, 14.0, (count, 1))


@pytest.mark.parametrize("seed, m", [(0, 2), (1, 2), (2, 6)])  # unrolled program; loops + Gram form
def test_cumulant_dd_agrees_with_mpmath_within_its_own_estimate(seed, m):
    fam, theta = _ill_conditioned_attention(seed, m=m)
    r, cancel, kappa, ok = D.evaluate(fam, theta, chunk=8)
    est = 64 * EPS_DD * cancel * np.maximum(kappa, 1.0)
    assert ok.all()
    for i in range(theta.shape[0]):
        ref = geometry.scalar_curvature_mp(fam, theta[i], rtol=1e-34, dps=60)
        err = abs((mpmath.mpf(float(r[i])) - ref) / ref)
        assert err <= max(est[i], 2.3e-16), (i, float(err), est[i])


def test_default_recomputes_mildly_ill_conditioned_points_in_double_double_and_extreme_ones_in_mpmath():
    fam = geometry.attention(np.random.default_rng(4).normal(size=(10, 3)))
    direction = np.array([0.6, -0.3, 0.74])
    theta = np.stack([t * direction for t in (1.0, 9.0, 14.0, 60.0, 400.0)])
    r, info = geometry.scalar_curvature(fam, theta, return_info=True)
    assert int(info.status[0]) == 0  # well conditioned: float64
    dd_points = np.flatnonzero(info.dps == 32)
    mp_points = np.flatnonzero(info.dps > 32)
    assert dd_points.size >= 1 and mp_points.size >= 1, info.dps
    assert (info.status[info.dps > 0] == 1).all()
    for i in np.flatnonzero(info.dps > 0):
        ref = geometry.scalar_curvature_mp(fam, theta[i], rtol=1e-20)
        assert abs((mpmath.mpf(float(r[i])) - ref) / ref) <= max(info.rel_error[i], 2.3e-16)
        assert info.rel_error[i] <= 1e-8


def test_the_tier_covers_single_head_softmax_families():
    assert D.supported(geometry.attention(np.random.default_rng(5).normal(size=(6, 2))))
    assert D.supported(geometry.attention(np.random.default_rng(5).normal(size=(20, D.MAX_UNROLLED_DIM + 1))))
    assert not D.supported(geometry.gaussian())
    assert not D.supported(geometry.multihead_attention([np.eye(3)[:, :2], np.eye(3)[:, 1:]]))


def test_sweep_and_scalar_curvature_share_the_double_double_tier():
    fam = geometry.attention(np.random.default_rng(4).normal(size=(10, 3)))
    theta = np.stack([t * np.array([0.6, -0.3, 0.74]) for t in (1.0, 14.0, 60.0)])
    r1, info1 = geometry.scalar_curvature(fam, theta, return_info=True)
    r2, info2 = geometry.sweep(fam, theta, return_info=True, progress=False)
    assert (info1.dps == 32).any()
    np.testing.assert_array_equal(info1.dps, info2.dps)
    np.testing.assert_allclose(r1, r2, rtol=1e-8)
