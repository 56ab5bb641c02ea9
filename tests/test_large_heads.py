"""Large attention heads (query dimension > 4): the batched-matrix-product kernel and its precision control.

References: the per-point cumulant formula (:func:`routes.cumulant_point`, LAPACK Cholesky), numpy's
Cholesky, and the mpmath oracle (``geometry.scalar_curvature_mp``), which the error estimate of the
precision-controlled kernel must bound at every point.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geometry
from geometry._src import routes
from geometry._src.linalg import batched_cholesky_inverse, error_estimate
from geometry._src.mapping import LocalMapper
from geometry._src.tiers import Rotated


def _head(seed, n, m, anisotropy=0.0, offset=True):
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(n, m)) * np.exp(anisotropy * rng.normal(size=m))
    keys[:, 0] += 3.0  # a common component, as real keys have
    fam = geometry.attention(keys, offset=rng.normal(size=n) if offset else None)
    return fam, rng


def _checked(fam, x):
    """Float64 values and the estimate after the rotated second opinion (tiers.Rotated), for every point."""
    kernel = routes.route_kernel(routes.CUMULANT, checked=True)
    r, est, _ = jax.jit(jax.vmap(lambda t: kernel(fam, t)))(jnp.asarray(x))
    out = Rotated(routes.rotated_cumulant, 64).evaluate(fam, np.asarray(x), 1e-8, None, LocalMapper(),
                                                        prior=np.asarray(r), prior_error=np.asarray(est))
    return out.value, out.rel_error


@pytest.mark.parametrize("m", [5, 8, 12, 37, 64])  # the loops alone (<= CHOLESKY_LEAF), even and odd block splits
def test_batched_cholesky_matches_lapack(m):
    rng = np.random.default_rng(m)
    a = rng.normal(size=(6, m, m + 8)) * np.exp(rng.normal(size=(1, m, 1)))  # rows of different scales
    g = a @ a.transpose(0, 2, 1)
    chol, linv = jax.jit(batched_cholesky_inverse)(jnp.asarray(g))
    ref = np.linalg.cholesky(g)
    np.testing.assert_allclose(chol, ref, rtol=0, atol=1e-12 * np.max(np.abs(ref)))
    np.testing.assert_allclose(np.asarray(linv) @ np.asarray(chol), np.broadcast_to(np.eye(m), (6, m, m)), atol=1e-11)
    assert np.all(np.triu(np.asarray(chol), 1) == 0) and np.all(np.triu(np.asarray(linv), 1) == 0)


def test_batched_cholesky_gives_nan_for_a_metric_that_is_not_definite():
    g = np.broadcast_to(np.eye(20), (2, 20, 20)).copy()
    g[1, 15, 15] = -1.0  # a negative pivot in the second block
    chol, linv = jax.jit(batched_cholesky_inverse)(jnp.asarray(g))
    assert np.all(np.isfinite(chol[0])) and np.isnan(chol[1]).any() and np.isnan(linv[1]).any()


@pytest.mark.parametrize("n, m", [(40, 8), (30, 12)])
def test_gram_batch_kernel_equals_the_per_point_formula(n, m):
    fam, rng = _head(n * m, n, m)
    assert routes.gram_batch_ok(fam)
    x = jnp.asarray(rng.normal(size=(16, m)) * 0.7)
    batched = jax.jit(jax.vmap(lambda t: routes.scalar_cumulant(fam, t)))(x)
    point = jax.jit(jax.vmap(lambda t: routes.cumulant_point(fam, t)))(x)
    # same formulas, other summation order: agree to the (small) error either makes
    np.testing.assert_allclose(batched[0], point[0], rtol=1e-11)
    np.testing.assert_allclose(batched[2], point[2], rtol=1e-6)  # the amplification, a bound: loosely the same


def test_gram_batch_kernel_multihead():
    rng = np.random.default_rng(5)
    fam = geometry.multihead_attention([rng.normal(size=(12, 6)), rng.normal(size=(9, 6))], offsets=[rng.normal(size=12), None])
    assert routes.gram_batch_ok(fam)
    x = rng.normal(size=(5, 6))
    oracle = np.array([float(geometry.scalar_curvature_mp(fam, xi)) for xi in x])
    np.testing.assert_allclose(geometry.scalar_curvature(fam, x, method="cumulant"), oracle, rtol=1e-10)


@pytest.mark.parametrize("sharp, anisotropy", [(0.5, 0.0), (3.0, 0.3), (8.0, 0.3), (3.0, 3.0)])
def test_checked_estimate_bounds_the_oracle_error(sharp, anisotropy):
    """At every point, |R - R_oracle| / |R_oracle| <= the estimate of the precision-controlled kernel."""
    fam, rng = _head(int(10 * sharp + anisotropy), 40, 8, anisotropy)
    x = rng.normal(size=(6, 8)) * sharp / np.sqrt(np.mean(np.asarray(fam.heads[0].keys) ** 2))
    r, est = _checked(fam, x)
    oracle = np.array([float(geometry.scalar_curvature_mp(fam, xi, rtol=1e-12)) for xi in x])
    err = np.abs(np.asarray(r) - oracle) / np.abs(oracle)
    assert np.all(err <= est), (err, est)


def test_checked_estimate_is_sharper_than_the_prior_and_keeps_points_in_float64():
    fam, rng = _head(3, 64, 16)  # the gain grows with the head: about 8x at n = 48, m = 8, 35x here
    x = rng.normal(size=(64, 16)) * 0.3
    prior = error_estimate(*jax.vmap(lambda t: routes.cumulant_point(fam, t))(jnp.asarray(x))[1:])
    checked = _checked(fam, x)[1]
    assert np.all(checked <= prior)
    assert np.median(prior / checked) > 10.0
    _, info = geometry.scalar_curvature(fam, x, return_info=True)
    assert info.counts()["float64"] == len(x)


@pytest.mark.slow
@pytest.mark.parametrize("m", [32, 64])
def test_checked_estimate_bounds_the_oracle_error_at_real_head_size(m):
    for seed, sharp in [(1, 1.0), (2, 4.0), (3, 12.0)]:
        fam, rng = _head(seed + m, 128, m, 0.3)
        x = rng.normal(size=(12, m)) * sharp / np.sqrt(np.mean(np.asarray(fam.heads[0].keys) ** 2))
        r, est = _checked(fam, x)
        oracle = np.array([float(geometry.scalar_curvature_mp(fam, xi, rtol=1e-12)) for xi in x])
        err = np.abs(np.asarray(r) - oracle) / np.abs(oracle)
        assert np.all(err <= est), (seed, err, est)
