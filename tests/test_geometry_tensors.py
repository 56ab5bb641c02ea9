"""Fisher metric constructions, entropy, invariances and the identities of the Riemann tensor."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geometry
from geometry._src import routes, tensors as _curv
from helpers import mp_entropy_softmax, points_toward_vertices, rel_err

RNG = np.random.default_rng(5)
SOFTMAX = [
    geometry.categorical(4),
    geometry.attention(RNG.normal(size=(6, 3))),
    geometry.multihead_attention([RNG.normal(size=(4, 2)), RNG.normal(size=(5, 2))]),
]


@pytest.mark.parametrize("fam", SOFTMAX + [geometry.gaussian()], ids=lambda f: f.name)
def test_fisher_metric_hessian_equals_expected_score_outer_product(fam):
    theta = RNG.normal(size=(7, fam.dim)) * 0.8
    if fam.name.startswith("gaussian"):
        theta[:, 1] = np.exp(theta[:, 1])
    hess = geometry.fisher_metric(fam, theta, method="hessian")
    score = geometry.fisher_metric(fam, theta, method="score")
    np.testing.assert_allclose(score, hess, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(geometry.fisher_metric(fam, theta), hess, rtol=1e-10, atol=1e-13)


def test_gaussian_metric_closed_form():
    sigma = np.array([0.1, 1.0, 30.0])
    g = geometry.fisher_metric(geometry.gaussian(), np.column_stack([np.zeros(3), sigma]))
    np.testing.assert_allclose(g[:, 0, 0], 1 / sigma**2)
    np.testing.assert_allclose(g[:, 1, 1], 2 / sigma**2)
    np.testing.assert_allclose(g[:, 0, 1], 0, atol=1e-15)


def test_attention_metric_is_scaled_key_covariance():
    keys = RNG.normal(size=(5, 2))
    fam = geometry.attention(keys, scale=0.7)
    x = np.array([0.4, -1.1])
    p = np.exp(0.7 * keys @ x)
    p /= p.sum()
    cov = keys.T @ (np.diag(p) - np.outer(p, p)) @ keys
    np.testing.assert_allclose(geometry.fisher_metric(fam, x), 0.49 * cov, rtol=1e-12)


@pytest.mark.parametrize("fam", SOFTMAX[:2], ids=lambda f: f.name)
def test_entropy_is_accurate_down_to_1e_minus_200(fam):
    h = fam.heads[0]
    x = points_toward_vertices(np.random.default_rng(2), fam.dim, 15, (-1, 2.7))
    z = np.sort(h.scale * h.keys @ x[0])
    x[0] *= 470 / (z[-1] - z[-2])  # logit gap 470: H ~ 470 e^-470 ~ 1e-201
    got = geometry.entropy(fam, x)
    for i in range(len(x)):
        assert rel_err(got[i], mp_entropy_softmax(h.keys, h.scale, x[i])) < 1e-12
    assert got.min() < 1e-100


def test_multihead_entropy_and_metric_are_sums_over_heads():
    k1, k2 = RNG.normal(size=(4, 2)), RNG.normal(size=(6, 2))
    both = geometry.multihead_attention([k1, k2], scale=1.0)
    a, b = geometry.attention(k1, scale=1.0), geometry.attention(k2, scale=1.0)
    x = RNG.normal(size=(5, 2))
    np.testing.assert_allclose(geometry.entropy(both, x), geometry.entropy(a, x) + geometry.entropy(b, x), rtol=1e-13)
    np.testing.assert_allclose(geometry.fisher_metric(both, x), geometry.fisher_metric(a, x) + geometry.fisher_metric(b, x), rtol=1e-13)


def _lowered(family, theta):
    g = geometry.fisher_metric(family, theta)
    return jnp.einsum("...rk,...ksmn->...rsmn", g, geometry.riemann(family, theta))


@pytest.mark.parametrize("fam", [SOFTMAX[1], geometry.gaussian()], ids=lambda f: f.name)
def test_riemann_symmetries_and_first_bianchi(fam):
    theta = np.array([0.3, 0.9, -0.2])[: fam.dim] if fam.dim == 3 else np.array([0.3, 1.7])
    r = np.asarray(_lowered(fam, theta))  # R_{rho sigma mu nu}
    scale = np.abs(r).max()
    assert scale > 0
    np.testing.assert_allclose(r, -r.transpose(0, 1, 3, 2), atol=1e-12 * scale)
    np.testing.assert_allclose(r, -r.transpose(1, 0, 2, 3), atol=1e-12 * scale)
    np.testing.assert_allclose(r, r.transpose(2, 3, 0, 1), atol=1e-12 * scale)
    bianchi = r + r.transpose(0, 2, 3, 1) + r.transpose(0, 3, 1, 2)  # R_r[smn]
    np.testing.assert_allclose(bianchi, 0, atol=1e-12 * scale)


def test_second_bianchi_identity():
    r"""$\nabla_\lambda R^\rho{}_{\sigma\mu\nu}$ summed cyclically over $(\lambda,\mu,\nu)$ vanishes (m = 3)."""
    fam = SOFTMAX[1]
    theta = jnp.array([0.2, -0.4, 0.5])
    riem = lambda t: _curv.riemann(fam, t)  # noqa: E731

    @jax.jit
    def cyclic(theta):
        rm = riem(theta)
        d = jax.jacfwd(riem)(theta)  # d[r, s, m, n, l] = d_l R^r_smn
        gam = _curv.christoffel(fam, theta)  # gam[k, i, j]
        cov = (
            d
            + jnp.einsum("rlk,ksmn->rsmnl", gam, rm)
            - jnp.einsum("kls,rkmn->rsmnl", gam, rm)
            - jnp.einsum("klm,rskn->rsmnl", gam, rm)
            - jnp.einsum("kln,rsmk->rsmnl", gam, rm)
        )
        return cov, cov + cov.transpose(0, 1, 3, 4, 2) + cov.transpose(0, 1, 4, 2, 3)

    cov, cyc = cyclic(theta)
    assert np.abs(cov).max() > 1e-3
    np.testing.assert_allclose(cyc, 0, atol=1e-10 * np.abs(cov).max())


def test_ricci_contracts_to_the_scalar_curvature():
    fam = SOFTMAX[1]
    theta = np.array([0.1, 0.5, -0.3])
    g = geometry.fisher_metric(fam, theta)
    assert np.sum(np.linalg.inv(g) * geometry.ricci(fam, theta)) == pytest.approx(float(geometry.scalar_curvature(fam, theta)), rel=1e-9)


def test_christoffel_of_the_hessian_metric_is_half_the_third_derivative():
    r"""$\Gamma_{kij} = g_{kl}\Gamma^l_{ij} = \tfrac12\partial_i\partial_j\partial_k\psi$ for a Hessian metric."""
    fam = SOFTMAX[1]
    theta = jnp.array([0.1, 0.5, -0.3])
    g, t = jax.jit(lambda th: routes.hessian_jets(fam, th))(theta)
    first_kind = jnp.einsum("kl,lij->kij", g, geometry.christoffel(fam, theta))
    np.testing.assert_allclose(first_kind, 0.5 * t, rtol=1e-9, atol=1e-12)


def test_metric_scaled_by_c_has_curvature_divided_by_c():
    psi = lambda e, xp: -e[0] ** 2 / (4 * e[1]) - xp.log(-2 * e[1]) / 2  # noqa: E731
    eta = np.array([[0.3, -0.5], [1.0, -2.0]])
    for c in (0.25, 3.0):
        fam = geometry.exponential_family(lambda e, xp, c=c: c * psi(e, xp), dim=2)
        np.testing.assert_allclose(geometry.scalar_curvature(fam, eta), -1.0 / c, rtol=1e-9)


keys_strategy = st.integers(min_value=3, max_value=7).flatmap(
    lambda n: st.integers(min_value=1, max_value=min(3, n - 1)).flatmap(
        lambda m: st.tuples(st.just(n), st.just(m), st.integers(0, 2**31 - 1))
    )
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=keys_strategy, t=st.floats(0.1, 10.0), angle=st.floats(0, 2 * np.pi))
def test_rotation_and_temperature_invariance(spec, t, angle):
    n, m, seed = spec
    rng = np.random.default_rng(seed)
    keys, x = rng.normal(size=(n, m)), rng.normal(size=m)
    q = np.linalg.qr(rng.normal(size=(m, m)))[0]
    base = geometry.attention(keys, scale=1.0)
    r0 = geometry.scalar_curvature(base, x)
    # rotating the query space: keys -> keys Q^T, x -> Q x
    np.testing.assert_allclose(geometry.scalar_curvature(geometry.attention(keys @ q.T, scale=1.0), q @ x), r0, rtol=1e-7, atol=1e-9)
    # attention(keys / T) at x is attention(keys) at x / T
    np.testing.assert_allclose(geometry.scalar_curvature(geometry.attention(keys / t, scale=1.0), x), geometry.scalar_curvature(base, x / t), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(geometry.entropy(geometry.attention(keys / t, scale=1.0), x), geometry.entropy(base, x / t), rtol=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=keys_strategy, log_scale=st.floats(-1.0, 2.0))
def test_default_agrees_with_the_mpmath_oracle_on_random_keys(spec, log_scale):
    n, m, seed = spec
    rng = np.random.default_rng(seed)
    fam = geometry.attention(rng.normal(size=(n, m)))
    x = rng.normal(size=m) * 10**log_scale
    r, info = geometry.scalar_curvature(fam, x, return_info=True)
    ref = geometry.scalar_curvature_mp(fam, x, dps=60 + 2 * int(info.dps))
    assert abs(float(r) - ref) <= 1e-8 * abs(ref) + (0 if m > 1 else 1e-300)
