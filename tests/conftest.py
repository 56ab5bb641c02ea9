import jax

jax.config.update("jax_enable_x64", True)

# --------------------------------------------------------------------------- family registry
#
# ``FAMILIES``: one ``(id, family, point_sampler)`` per kind of family the toolkit knows, plus a
# kind defined only in the tests (tests/toy_kind.py).  ``point_sampler(rng, count)`` returns
# ``count`` points of shape ``(count, dim)`` inside the family's domain at moderate entropy.
# Tests use it as ``from conftest import FAMILIES`` (tests/ is on sys.path: it has no __init__).
# Keep it small: tests parametrised over it compile one program per family.

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import geometry  # noqa: E402
from toy_kind import tempered_simplex, toy_sampler  # noqa: E402


def _uniform(lo, hi, dim):
    return lambda rng, count: rng.uniform(lo, hi, size=(count, dim))


def _normal(sd, dim):
    return lambda rng, count: rng.normal(0.0, sd, size=(count, dim))


def _full_rank_keys(seed, n, m):
    rng = np.random.default_rng(seed)
    while True:
        k = rng.normal(size=(n, m))
        if np.linalg.matrix_rank(k - k.mean(0)) == m:
            return k


ATTENTION_KEYS_8x2 = _full_rank_keys(1234, 8, 2)
ATTENTION_KEYS_6x3 = _full_rank_keys(5678, 6, 3)
ATTENTION_OFFSET_6 = np.array([0.75, -1.5, 0.0, 2.25, -0.5, 1.0])  # binary fractions: exact in every namespace
MULTIHEAD_KEYS = [_full_rank_keys(91, 4, 2), _full_rank_keys(92, 4, 2)]


def gamma_log_partition(eta, xp):
    """Gamma(shape k = eta0 + 1, rate b = -eta1): psi = lgamma(k) - k log b (eta0 > -1, eta1 < 0)."""
    return xp.lgamma(eta[0] + 1) - (eta[0] + 1) * xp.log(-eta[1])


def _gamma_sampler(rng, count):
    return np.column_stack([rng.uniform(0.5, 3.0, count), -rng.uniform(0.5, 3.0, count)])


#: affine logits z = A theta + b of a 3-outcome family (centred A has rank 2: an affine
#: reparametrisation of categorical(3), so R = 1/2)
DISCRETE_A = np.array([[1.0, 0.5], [-0.5, 1.0], [0.25, -1.25]])
DISCRETE_B = np.array([0.1, -0.2, 0.3])


def affine_softmax_log_probs(theta, xp):
    z = xp.matvec(DISCRETE_A, theta)
    return xp.log_softmax(xp.vector([z[i] + float(DISCRETE_B[i]) for i in range(3)]))


def _gaussian_sampler(rng, count):
    return np.column_stack([rng.normal(0.0, 1.0, count), rng.uniform(0.5, 2.0, count)])


def weibull_log_density(theta, x, xp):
    """Weibull(shape k = theta0, scale lam = theta1) on x > 0."""
    k, lam = theta[0], theta[1]
    return xp.log(k / lam) + (k - 1) * xp.log(x / lam) - (x / lam) ** k


def _weibull_sampler(rng, count):
    return np.column_stack([rng.uniform(1.2, 4.0, count), rng.uniform(0.5, 3.0, count)])


def two_exponential(theta, t, xp):
    """Mean of a two-exponential decay model at time t."""
    return xp.exp(-theta[0] * t) + xp.exp(-theta[1] * t)


DECAY_TIMES = np.linspace(0.25, 4.0, 8)


def _decay_sampler(rng, count):
    return np.column_stack([rng.uniform(0.3, 0.9, count), rng.uniform(1.2, 3.0, count)])


def _gamma_chart_sampler(rng, count):
    return np.column_stack([rng.uniform(0.6, 4.0, count), rng.uniform(0.3, 3.0, count)])


TOY_T = 0.5

FAMILIES = [
    ("categorical3", geometry.categorical(3), _uniform(-1.5, 1.5, 2)),
    ("categorical4_T0.5", geometry.categorical(4, temperature=0.5), _uniform(-0.75, 0.75, 3)),
    ("attention8x2", geometry.attention(ATTENTION_KEYS_8x2), _normal(1.0, 2)),
    ("attention6x3", geometry.attention(ATTENTION_KEYS_6x3), _normal(1.0, 3)),
    # a per-key logit offset, as MPNet's relative position bias (moves p only)
    ("attention6x3_offset", geometry.attention(ATTENTION_KEYS_6x3, offset=ATTENTION_OFFSET_6), _normal(1.0, 3)),
    ("multihead2x4x2", geometry.multihead_attention(MULTIHEAD_KEYS), _normal(1.0, 2)),
    ("gaussian", geometry.gaussian(), _gaussian_sampler),
    ("gamma", geometry.exponential_family(gamma_log_partition, dim=2, name="gamma"), _gamma_sampler),
    ("affine_softmax3", geometry.discrete_family(affine_softmax_log_probs, dim=2, name="affine_softmax3"),
     _uniform(-1.0, 1.0, 2)),
    ("toy_tempered_simplex3", tempered_simplex(3, TOY_T), toy_sampler(TOY_T, 2)),
    ("gamma_shape_scale", geometry.exponential_family(gamma_log_partition, dim=2, name="gamma(k, th)",
                                                      natural=lambda t, xp: xp.vector([t[0] - 1, -1 / t[1]])),
     _gamma_chart_sampler),
    ("weibull_density", geometry.density_family(weibull_log_density, 2, (0.0, float("inf")), name="weibull"),
     _weibull_sampler),
    ("two_exp_regression", geometry.regression_family(two_exponential, DECAY_TIMES, sigma=0.1, name="two-exp decay"),
     _decay_sampler),
]

FAMILY_IDS = [f[0] for f in FAMILIES]


#: The longest cases of the default run, run with ``-m slow`` only, so that the default run stays under
#: 10 minutes on 2 cores (each 20-50 s on a loaded machine; the same checks of other families stay).
SLOW_CASES = {
    "tests/test_registry_properties.py::test_every_supported_route_agrees_with_the_default[weibull_density]",
    "tests/test_transforms.py::test_curvature_transforms_match_eager[affine_softmax3-levi-civita]",
    "tests/test_any_family.py::test_two_exponential_decay_against_oracle_and_unidentifiable_point",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in SLOW_CASES:
            item.add_marker(pytest.mark.slow)
