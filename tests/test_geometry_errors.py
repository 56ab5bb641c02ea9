"""Bad input gets a clear error that names the argument and the fix."""

import jax.numpy as jnp
import numpy as np
import pytest

import geometry


@pytest.mark.parametrize(
    "theta, match",
    [
        ([np.nan, 0.0], r"theta contains NaN or inf"),
        ([np.inf, 0.0], r"theta contains NaN or inf"),
        (np.zeros(3), r"theta must have shape \(\.\.\., 2\)"),
        (np.zeros((4, 1)), r"theta must have shape \(\.\.\., 2\)"),
        (np.float64(1.0), r"theta must have shape"),
    ],
)
def test_bad_coordinates(theta, match):
    with pytest.raises(ValueError, match=match):
        geometry.scalar_curvature(geometry.categorical(3), theta)


def test_wrong_types():
    with pytest.raises(TypeError, match="family must be a geometry.Family"):
        geometry.scalar_curvature("categorical", [0.0, 0.0])
    with pytest.raises(TypeError, match="theta must be a real array"):
        geometry.entropy(geometry.categorical(3), ["a", "b"])
    with pytest.raises(TypeError, match="theta must be real"):
        geometry.entropy(geometry.categorical(3), np.array([1j, 0]))


@pytest.mark.parametrize("t", [0.0, -1.0, np.nan, np.inf])
def test_temperature_must_be_positive(t):
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0"):
        geometry.categorical(3, temperature=t)


def test_categorical_needs_two_outcomes():
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        geometry.categorical(1)


def test_keys_with_more_query_dimensions_than_directions():
    with pytest.raises(ValueError, match=r"m = 3 dimensions but 3 keys span at most n - 1 = 2.*Project the query"):
        geometry.attention(np.eye(3))


@pytest.mark.parametrize(
    "keys",
    [
        np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [-1.0, -2.0]]),  # collinear
        np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]),  # duplicate
        np.zeros((5, 2)),  # zero
    ],
)
def test_rank_deficient_keys(keys):
    with pytest.raises(ValueError, match=r"centred rank .* < m = 2: the query space has more dimensions than the keys can see"):
        geometry.attention(keys)


def test_project_keys_gives_the_nondegenerate_quotient():
    keys = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    proj, basis = geometry.project_keys(keys)
    assert proj.shape == (4, 2)
    fam = geometry.attention(proj, scale=1.0)
    x = np.array([0.3, -0.2, 5.0])
    p_full = np.exp(keys @ x - np.max(keys @ x))
    p_proj = np.exp(proj @ (basis.T @ x) - np.max(proj @ (basis.T @ x)))
    np.testing.assert_allclose(p_full / p_full.sum(), p_proj / p_proj.sum(), rtol=1e-12)
    assert np.isfinite(geometry.scalar_curvature(fam, basis.T @ x))


def test_keys_input_validation():
    with pytest.raises(ValueError, match=r"keys must be a 2-d \(n, m\) array"):
        geometry.attention(np.ones(4))
    with pytest.raises(ValueError, match="keys contains NaN or inf"):
        geometry.attention(np.array([[0.0, np.nan], [1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="keys_list.*query dimension"):
        geometry.multihead_attention([np.eye(3)[:, :2], np.ones((3, 1))])
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        geometry.attention(np.eye(3)[:, :2], scale=0.0)


def test_gaussian_sigma_must_be_positive():
    with pytest.raises(ValueError, match=r"outside the domain.*sigma = theta\[\.\.\., 1\] must be > 0"):
        geometry.scalar_curvature(geometry.gaussian(), [[0.0, 1.0], [0.0, -1.0]])


def test_user_family_whose_metric_is_not_positive_definite():
    concave = geometry.exponential_family(lambda e, xp: -(e[0] ** 2) - e[1] ** 2 + e[0] * e[1] ** 2, dim=2, name="concave")
    with pytest.raises(ValueError, match=r"not positive definite at theta\[0\].*smallest eigenvalue -"):
        geometry.scalar_curvature(concave, [[0.1, 0.2]])
    concave1 = geometry.exponential_family(lambda e, xp: -xp.exp(e[0]), dim=1, name="concave1")
    with pytest.raises(ValueError, match="not positive definite"):
        geometry.scalar_curvature(concave1, [[0.1]])


def test_missing_entropy_and_unknown_methods():
    fam = geometry.exponential_family(lambda e, xp: xp.exp(e[0]), dim=1)
    with pytest.raises(ValueError, match="has no entropy function.*Pass entropy="):
        geometry.entropy(fam, [0.0])
    with pytest.raises(ValueError, match="method must be None, 'cumulant', 'hessian' or 'levi-civita'"):
        geometry.scalar_curvature(geometry.categorical(3), [0.0, 0.0], method="magic")
    with pytest.raises(ValueError, match="method='cumulant' needs a softmax-linear family"):
        geometry.scalar_curvature(geometry.gaussian(), [0.0, 1.0], method="cumulant")
    with pytest.raises(ValueError, match="score construction needs a density"):
        geometry.fisher_metric(fam, [0.0], method="score")


def test_user_dimension_and_callables():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        geometry.exponential_family(lambda e, xp: e[0], dim=0)
    with pytest.raises(TypeError, match="log_partition must be callable"):
        geometry.exponential_family("psi", dim=1)
    with pytest.raises(TypeError, match="log_probs must be a function"):
        geometry.discrete_family(None, dim=1)


def test_plain_jax_user_family_works_numerically():
    fam = geometry.exponential_family(lambda e: jnp.logaddexp(e[0], 0.0), dim=1, name="bernoulli")
    assert geometry.fisher_metric(fam, [0.0])[0, 0] == pytest.approx(0.25)
