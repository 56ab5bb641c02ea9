"""Geodesics, distances and sectional curvature against closed forms, properties and bad input.

Closed forms (references only; the library integrates the geodesic equation for every family):

* simplex: ``p -> y = 2 sqrt(p)`` maps the categorical family with its Fisher metric isometrically onto
  a piece of the sphere of radius 2, so ``d(p, q) = 2 arccos(sum_i sqrt(p_i q_i))`` and every sectional
  curvature is ``1/2^2 = 1/4`` (Amari & Nagaoka 2000, sec. 2.5).
* Gaussian ``(mu, sigma)``: the metric ``(dmu^2 + 2 dsigma^2) / sigma^2`` is, with ``u = mu / sqrt 2``,
  ``2 (du^2 + dsigma^2) / sigma^2``, twice the Poincare half-plane, so
  ``d = sqrt(2) arccosh(1 + ((mu1 - mu2)^2 / 2 + (s1 - s2)^2) / (2 s1 s2))`` and ``K = -1/2``
  (Costa, Santos & Strapasson 2015, "Fisher information distance: a geometrical reading", eq. 12).

Compilation dominates the cost, so every call uses at most 8 pairs (one padded batch size) and the
default tests use two families (categorical(3), the Gaussian) plus categorical(4) for 3-d sectional
curvature; the attention head and the temperature run with ``-m slow``.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import geometry
from geometry._src import geodesics as G

CAT = geometry.categorical(3)
GAUSS = geometry.gaussian()
#: accuracy promised against the closed forms
DIST_RTOL = 1e-8


def softmax_last_zero(theta, temperature=1.0):
    z = np.concatenate([theta, np.zeros(theta.shape[:-1] + (1,))], axis=-1) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def fisher_rao_simplex(p, q):
    """``2 arccos(sum sqrt(p q))``, written as ``4 arcsin(|y_p - y_q| / 4)`` with ``y = 2 sqrt(p)`` (the
    same angle on the sphere of radius 2; the chord form keeps its digits for nearby points)."""
    chord = np.linalg.norm(2 * np.sqrt(p) - 2 * np.sqrt(q), axis=-1)
    return 4.0 * np.arcsin(np.clip(chord / 4.0, 0.0, 1.0))


def fisher_rao_gaussian(a, b):
    (m1, s1), (m2, s2) = a.T, b.T
    return np.sqrt(2.0) * np.arccosh(1.0 + ((m1 - m2) ** 2 / 2 + (s1 - s2) ** 2) / (2 * s1 * s2))


def cat_pairs(seed, k=8, scale=2.0):
    rng = np.random.default_rng(seed)
    return scale * rng.normal(size=(k, 2)), scale * rng.normal(size=(k, 2))


def test_categorical_distance_matches_the_sphere_closed_form():
    a, b = cat_pairs(0, scale=3.0)  # entropies from ~1 nat down to ~1e-3
    d, info = geometry.geodesic_distance(CAT, a, b, return_info=True)
    ref = fisher_rao_simplex(softmax_last_zero(a), softmax_last_zero(b))
    assert np.all(info.status == 0), info.reasons
    assert np.max(np.abs(d - ref) / ref) <= DIST_RTOL
    assert np.all(info.error_estimate <= G.GEODESIC_RTOL) and np.all(info.residual < 1e-10)
    assert info.status.shape == (8,) and info.iterations.shape == (8,) and info.counts()["float64"] == 8


@pytest.mark.slow  # 20 s of compiles; the simplex closed form is checked in the default run
def test_gaussian_distance_matches_the_hyperbolic_closed_form():
    rng = np.random.default_rng(1)
    a = np.column_stack([rng.normal(size=8), np.exp(0.7 * rng.normal(size=8))])  # distances 0.3 .. 3
    b = np.column_stack([rng.normal(size=8), np.exp(0.7 * rng.normal(size=8))])
    d, info = geometry.geodesic_distance(GAUSS, a, b, return_info=True)
    ref = fisher_rao_gaussian(a, b)
    assert np.all(info.converged), info.reasons
    assert np.max(np.abs(d - ref) / ref) <= DIST_RTOL


def test_exp_of_log_is_the_target_and_log_of_a_point_is_zero():
    a, b = cat_pairs(2)
    b[0] = a[0]  # d(a, a) = 0: v = 0 exactly
    v, info = geometry.log_map(CAT, a, b, return_info=True)
    x, xinfo = geometry.exp_map(CAT, a, v, return_info=True)
    assert np.all(info.converged) and np.all(xinfo.converged), (info.reasons, xinfo.reasons)
    assert np.max(np.abs(x - b)) < 1e-10
    assert np.all(v[0] == 0) and np.all(x[0] == a[0])
    assert np.all(xinfo.residual < 1e-10)  # energy drift g(x', x') along the geodesics


def test_distance_to_a_short_exp_is_the_metric_norm():
    rng = np.random.default_rng(3)
    a = 2 * rng.normal(size=(8, 2))
    g = geometry.fisher_metric(CAT, a)
    v = rng.normal(size=(8, 2))
    # the nearest face p_k = 0 is at distance 2 arcsin(sqrt(p_k)) >= 2 sqrt(p_min): stay within half of it
    short = np.sqrt(softmax_last_zero(a).min(axis=1)) * rng.uniform(0.1, 1, size=8)
    v *= (short / np.sqrt(np.einsum("ni,nij,nj->n", v, g, v)))[:, None]
    norm = np.sqrt(np.einsum("ni,nij,nj->n", v, g, v))
    d = geometry.geodesic_distance(CAT, a, geometry.exp_map(CAT, a, v))
    assert np.max(np.abs(d - norm) / norm) <= 1e-9


def test_geodesic_points_are_equally_spaced_along_the_minimising_geodesic():
    a, b = cat_pairs(4, k=2)
    path, info = geometry.geodesic(CAT, a, b, num=5, return_info=True)
    assert path.shape == (2, 5, 2) and np.all(info.converged)
    assert np.all(path[:, 0] == a) and np.max(np.abs(path[:, -1] - b)) < 1e-10
    pa = softmax_last_zero(a)[:, None]
    dk = fisher_rao_simplex(pa, softmax_last_zero(path))  # closed-form distance from a to each point
    assert np.max(np.abs(dk - dk[:, -1:] * np.linspace(0, 1, 5))) < 1e-9


def test_broadcasting_a_single_point_against_many_velocities():
    x, info = geometry.exp_map(CAT, np.zeros(2), 0.1 * np.eye(2)[None].repeat(2, 0), return_info=True)
    assert x.shape == (2, 2, 2) and info.status.shape == (2, 2) and np.all(info.converged)


points = st.lists(st.floats(-4.0, 4.0), min_size=2, max_size=2).map(np.array)


@settings(max_examples=4, deadline=None)
@given(points, points)
def test_distance_is_symmetric(a, b):
    d = geometry.geodesic_distance(CAT, np.stack([a, b]), np.stack([b, a]))
    assert abs(d[0] - d[1]) <= 1e-9 * max(d[0], 1e-12)


@settings(max_examples=4, deadline=None)
@given(points, points, points)
def test_triangle_inequality(a, b, c):
    d_ab, d_bc, d_ac = geometry.geodesic_distance(CAT, np.stack([a, b, a]), np.stack([b, c, c]))
    assert d_ac <= d_ab + d_bc + 1e-9


def test_sectional_curvature_of_the_simplex_is_one_quarter_on_every_plane():
    rng = np.random.default_rng(5)
    fam = geometry.categorical(4)  # 3-d: the float64 Riemann contraction
    k, info = geometry.sectional_curvature(fam, 2 * rng.normal(size=(8, 3)), rng.normal(size=(8, 3)),
                                           rng.normal(size=(8, 3)), return_info=True)
    assert np.all(info.converged) and np.max(np.abs(k - 0.25)) < 1e-9
    # the same contraction in 2-d, and through the precision-controlled scalar curvature (K = R/2)
    x, u, v = (rng.normal(size=(8, 2)) for _ in range(3))
    assert np.max(np.abs(np.asarray(G._SECTIONAL(CAT, x, u, v)[0]) - 0.25)) < 1e-9
    assert np.max(np.abs(geometry.sectional_curvature(CAT, x, u, v) - 0.25)) < 1e-9


def test_sectional_curvature_of_the_gaussian_is_minus_one_half():
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.normal(size=8), np.exp(rng.normal(size=8))])
    u, v = rng.normal(size=(8, 2)), rng.normal(size=(8, 2))
    k, err, sym, _ = (np.asarray(o) for o in G._SECTIONAL(GAUSS, x, u, v))  # the contraction: sign and value
    assert np.max(np.abs(k + 0.5)) < 1e-9 and np.all(err < 1e-10) and np.all(sym < 1e-12)
    # (the public 2-d call is R/2 of the precision-controlled scalar curvature: checked on the simplex, whose
    # route compiles in a fraction of the Gaussian's; the Gaussian's R = -1 is tests/test_geometry_curvature.py's)
    k, info = geometry.sectional_curvature(CAT, x[0], u[0], 3 * u[0], return_info=True)
    assert np.isnan(k) and info.status == 2 and "parallel" in info.reasons[0]


def test_a_geodesic_leaving_the_simplex_is_reported_not_returned():
    x, info = geometry.exp_map(CAT, np.zeros(2), np.array([[30.0, 0.0], [0.5, 0.2]]), return_info=True)
    assert np.isnan(x[0]).all() and info.status[0] == 2
    assert "ODE_MAX_STEPS" in info.reasons[0] or "ODE_DTMIN" in info.reasons[0]
    assert info.status[1] == 0 and np.isfinite(x[1]).all()
    with pytest.warns(geometry.UndefinedGeodesicWarning, match="1 of 2 pairs"):
        geometry.exp_map(CAT, np.zeros(2), np.array([[30.0, 0.0], [0.5, 0.2]]))


def test_a_pair_float64_cannot_represent_is_undefined_with_the_reason():
    a = np.array([[1e5, 0.0], [0.5, 0.0]])  # p = (1, e^-1e5, e^-1e5): the metric underflows to singular
    b = np.array([[0.0, 1e5], [0.0, 0.5]])
    d, info = geometry.geodesic_distance(CAT, a, b, return_info=True)
    assert np.isnan(d[0]) and info.status[0] == 2 and "Cholesky" in info.reasons[0]
    assert info.status[1] == 0 and np.isfinite(d[1])


def test_bad_input_names_the_argument_and_the_fix():
    with pytest.raises(TypeError, match="geometry.Family"):
        geometry.geodesic_distance("categorical", np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"theta_a must have shape \(\.\.\., 2\)"):
        geometry.geodesic_distance(CAT, np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="theta_b contains NaN"):
        geometry.log_map(CAT, np.zeros(2), [np.nan, 0.0])
    with pytest.raises(ValueError, match="v contains NaN or inf"):
        geometry.exp_map(CAT, np.zeros(2), [np.inf, 0.0])
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., 2\)"):
        geometry.exp_map(CAT, np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="do not broadcast"):
        geometry.geodesic_distance(CAT, np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="outside the domain"):
        geometry.geodesic_distance(GAUSS, [0.0, 1.0], [0.0, -1.0])
    with pytest.raises(ValueError, match="num must be between 2"):
        geometry.geodesic(CAT, np.zeros(2), np.ones(2), num=1)
    with pytest.raises(TypeError, match="num must be an integer"):
        geometry.geodesic(CAT, np.zeros(2), np.ones(2), num=2.5)
    with pytest.raises(TypeError, match="return_info must be True or False"):
        geometry.geodesic_distance(CAT, np.zeros(2), np.ones(2), return_info="yes")
    with pytest.raises(ValueError, match="needs a 2-plane"):
        geometry.sectional_curvature(geometry.categorical(2), [0.0], [1.0], [1.0])
    with pytest.raises(ValueError, match=r"u must have shape"):
        geometry.sectional_curvature(CAT, np.zeros(2), np.zeros(3), np.ones(2))
    with pytest.raises(TypeError, match="string|str"):
        geometry.exp_map(CAT, "0, 0", np.zeros(2))


@pytest.mark.slow
def test_attention_head_exp_log_round_trip():
    rng = np.random.default_rng(7)
    fam = geometry.attention(rng.normal(size=(6, 2)))
    a, b = rng.normal(size=(8, 2)), rng.normal(size=(8, 2))
    v, info = geometry.log_map(fam, a, b, return_info=True)
    assert np.all(info.converged), info.reasons
    assert np.max(np.abs(geometry.exp_map(fam, a, v) - b)) < 1e-10
    d = geometry.geodesic_distance(fam, a, b)
    # the attention family is a submanifold of the simplex: its distance is at least the simplex's
    def probs(x):
        z = float(fam.heads[0].scale) * x @ np.asarray(fam.heads[0].keys).T
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    assert np.all(d >= fisher_rao_simplex(probs(a), probs(b)) - 1e-9)


@pytest.mark.slow
def test_public_gaussian_sectional_curvature_is_half_the_scalar_curvature():
    rng = np.random.default_rng(9)
    x = np.column_stack([rng.normal(size=8), np.exp(rng.normal(size=8))])
    k, info = geometry.sectional_curvature(GAUSS, x, rng.normal(size=(8, 2)), rng.normal(size=(8, 2)), return_info=True)
    assert np.all(info.status == 0) and np.max(np.abs(k + 0.5)) < 1e-9
    assert np.allclose(k, geometry.scalar_curvature(GAUSS, x) / 2, rtol=1e-12)


@pytest.mark.slow
def test_categorical_with_temperature_matches_the_closed_form():
    fam = geometry.categorical(3, temperature=0.5)
    a, b = cat_pairs(8, scale=1.5)
    d = geometry.geodesic_distance(fam, a, b)
    ref = fisher_rao_simplex(softmax_last_zero(a, 0.5), softmax_last_zero(b, 0.5))
    assert np.max(np.abs(d - ref) / ref) <= DIST_RTOL


# --------------------------------------------------------------------------- low entropy (the embedding acceleration)


def test_embedded_acceleration_equals_the_christoffel_acceleration():
    # Gauss's formula -J^+ D^2y[v, v] is -Gamma(v, v) of g = J^T J; away from low entropy both are accurate
    import jax.numpy as jnp

    rng = np.random.default_rng(11)
    import jax

    # the categorical family (keys [I; 0], temperature), an attention head with logit offsets, two heads
    fams = [geometry.categorical(4, temperature=0.5), geometry.attention(rng.normal(size=(5, 2)), offset=rng.normal(size=5)),
            geometry.multihead_attention([rng.normal(size=(4, 3)), rng.normal(size=(5, 3))])]
    both = jax.jit(jax.vmap(lambda fam, x, v: (G._embedded_acceleration(fam.softmax_heads(), x, v),
                                               G._christoffel_acceleration(fam, x, v)), in_axes=(None, 0, 0)))
    for fam in fams:
        x = jnp.asarray(np.array([0.5, 2.0, 3.0])[:, None] * rng.normal(size=(3, fam.dim)))
        e, c = (np.asarray(o) for o in both(fam, x, jnp.asarray(rng.normal(size=(3, fam.dim)))))
        assert np.all(np.linalg.norm(e - c, axis=1) <= 1e-13 * np.linalg.norm(c, axis=1)), fam.name


def test_pairs_near_different_vertices_match_the_sphere_at_low_entropy():
    # logits (L, 0) -> (0.3 L, L) and the symmetric (15, 0) -> (0, 15): p_min down to 8e-7, entropy to 2.5e-5.
    # The symmetric pair has L_a = L_b: it once passed the nearby-pair test and got the segment length
    # (10.0) as a converged distance (3.14)
    a = np.array([[6.0, 0.0], [10.0, 0.0], [14.0, 0.0], [15.0, 0.0], [0.0, 12.0]])
    b = np.array([[1.8, 6.0], [3.0, 10.0], [4.2, 14.0], [0.0, 15.0], [12.0, 0.0]])
    d, info = geometry.geodesic_distance(CAT, a, b, return_info=True)
    ref = fisher_rao_simplex(softmax_last_zero(a), softmax_last_zero(b))
    assert np.all(info.status == 0), info.reasons
    assert np.max(np.abs(d - ref) / ref) <= DIST_RTOL
    assert geometry.entropy(CAT, a[2]) < 3e-5


@pytest.mark.slow  # ~70 s: the pairs that do not converge run to ODE_MAX_STEPS in every LM iteration
def test_below_the_measured_limit_pairs_are_undefined_never_wrong():
    ls = np.array([16.0, 18.0, 20.0, 22.0, 26.0, 30.0])
    a, b = np.column_stack([ls, 0 * ls]), np.column_stack([0.3 * ls, ls])
    d, info = geometry.geodesic_distance(CAT, a, b, return_info=True)
    ref = fisher_rao_simplex(softmax_last_zero(a), softmax_last_zero(b))
    assert info.status[0] == 0  # entropy 3.8e-6: the measured limit of the module docstring
    conv = info.status == 0
    assert np.all(np.abs(d[conv] - ref[conv]) <= DIST_RTOL * ref[conv])
    assert np.all(np.isnan(d[~conv])) and all(i in info.reasons for i in np.flatnonzero(~conv))


# --------------------------------------------------------------------------- traced inputs


def test_exp_map_under_jit_and_vmap_equals_the_eager_call():
    import jax

    rng = np.random.default_rng(12)
    x, v = rng.normal(size=(8, 2)), 0.5 * rng.normal(size=(8, 2))
    v[0] = [30.0, 0.0]  # leaves the simplex: undefined, eagerly and traced
    eager, einfo = geometry.exp_map(CAT, x, v, return_info=True)
    # jit of a vmap of single-pair calls (one compile covers both transformations)
    traced, tinfo = jax.jit(jax.vmap(lambda x, v: geometry.exp_map(CAT, x, v, return_info=True)))(x, v)
    assert np.array_equal(np.asarray(tinfo.status), einfo.status) and einfo.status[0] == 2
    assert np.allclose(np.asarray(traced), eager, rtol=1e-12, atol=1e-12, equal_nan=True)
    # the estimates (rounding-level differences of two solves) differ between compilations; both pass EXP_RTOL
    assert np.all(np.asarray(tinfo.error_estimate)[1:] <= G.EXP_RTOL) and np.all(einfo.error_estimate[1:] <= G.EXP_RTOL)


@pytest.mark.slow  # 25 s: the reverse-mode compile through the two checked solves
def test_grad_of_exp_map_in_v_matches_a_central_difference():
    import jax

    rng = np.random.default_rng(12)
    x, v = rng.normal(size=(8, 2)), 0.5 * rng.normal(size=(8, 2))
    f = lambda w: geometry.exp_map(CAT, x[1], w)[0]  # noqa: E731
    g = np.asarray(jax.grad(f)(v[1]))
    h = 1e-5
    fd = np.array([(f(v[1] + h * e) - f(v[1] - h * e)) / (2 * h) for e in np.eye(2)])
    assert np.allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_sectional_curvature_under_jit_and_vmap_equals_the_eager_call():
    import jax

    rng = np.random.default_rng(13)
    fam = geometry.categorical(4)
    x, u, v = (rng.normal(size=(8, 3)) for _ in range(3))
    v[0] = 2 * u[0]  # parallel: undefined either way
    eager, einfo = geometry.sectional_curvature(fam, x, u, v, return_info=True)
    traced, tinfo = jax.jit(lambda *a: geometry.sectional_curvature(fam, *a, return_info=True))(x, u, v)
    assert np.array_equal(np.asarray(tinfo.status), einfo.status) and einfo.status[0] == 2
    assert np.allclose(np.asarray(traced), eager, rtol=1e-13, equal_nan=True)
    k2 = jax.vmap(lambda *a: geometry.sectional_curvature(CAT, *a))(x[:, :2], u[:, :2], v[:, :2] + 1.0)
    assert np.max(np.abs(np.asarray(k2) - 0.25)) < 1e-9  # 2-d traced: the float64 contraction


def test_log_map_and_distance_refuse_traced_input_with_what_to_do():
    import jax

    for f in (geometry.log_map, geometry.geodesic_distance):
        with pytest.raises(TypeError, match="outside the transformation.*exp_map and sectional_curvature are traceable"):
            jax.jit(lambda a, b, f=f: f(CAT, a, b))(np.zeros(2), np.ones(2))


def test_points_of_the_sectional_measurement_have_the_requested_entropy():
    """The distances-blow-up check measures sectional curvature at fixed entropy: its points must have that entropy."""
    from checks._src import limits

    fam = geometry.attention(np.random.default_rng(0).normal(size=(16, 3)))
    for h in (0.05, 2.0):
        x = limits._points_at_entropy(fam, np.random.default_rng(1), h, 3)
        assert x.shape == (3, 3)
        np.testing.assert_allclose(np.asarray(geometry.entropy(fam, x)), h, rtol=limits.SECTIONAL_H_RTOL)
