"""Exact theorems (each a difference reducing to exactly 0) and their agreement with geometry.scalar_curvature."""

import functools

import numpy as np
import pytest
import sympy

import derivations
import geometry
from derivations._src import theorems


@functools.lru_cache(maxsize=None)
def attention_derivation():
    return theorems.attention()


def _exact_R(family, **kw):
    form = derivations.formulate(family, **kw)
    return form, derivations.curvature(form.alg, form.g)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_categorical_simplex_has_constant_curvature(n):
    form, c = _exact_R(geometry.categorical(n))
    assert c.R - form.alg.convert(sympy.Rational((n - 1) * (n - 2), 4)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("n", [5, 6])
def test_categorical_simplex_large_n(n):
    form, c = _exact_R(geometry.categorical(n))
    assert c.R - form.alg.convert(sympy.Rational((n - 1) * (n - 2), 4)) == 0


def test_categorical_metric_is_diag_p_minus_ppT():
    form, c = _exact_R(geometry.categorical(3))
    p = form.probs[0]
    for a in range(2):
        for b in range(2):
            assert c.g[a][b] - ((p[a] if a == b else 0) - p[a] * p[b]) == 0


def test_temperature_is_a_reparametrisation_for_every_T():
    s = sympy.Symbol("s", positive=True)
    form, c = _exact_R(geometry.categorical(3), scale=s)
    assert s in form.alg.symbols  # the statement is for symbolic s, not one number
    assert c.R - form.alg.convert(sympy.Rational(1, 2)) == 0
    p1 = form.probs[0][0]
    assert c.g[0][0] - form.alg.convert(s) ** 2 * p1 * (1 - p1) == 0


def test_gaussian_is_the_hyperbolic_plane():
    form, c = _exact_R(geometry.gaussian(), coord_names=["mu", "sigma"])
    mu, sigma = form.coords
    assert sympy.simplify(form.alg.to_expr(c.g[0][0]) - 1 / sigma**2) == 0
    assert sympy.simplify(form.alg.to_expr(c.g[1][1]) - 2 / sigma**2) == 0
    assert form.alg.is_zero(c.g[0][1])
    assert c.R + 1 == 0


def test_user_exponential_family_lowers_through_sympy():
    # Poisson x Poisson in natural coordinates, psi = e^eta1 + e^eta2: a flat (product of 1-d) metric
    fam = geometry.exponential_family(lambda eta, xp: xp.exp(eta[0]) + xp.exp(eta[1]), dim=2, name="poisson2")
    form, c = _exact_R(fam)
    assert sympy.simplify(form.alg.to_expr(c.R)) == 0


def test_hessian_metric_identity_for_a_generic_potential():
    d = theorems.hessian_identity()
    assert d.proven, d.checks
    assert len(d.checks) == 2


def test_simplex_sphere_isometry_all_n():
    d = theorems.sphere_isometry(ns=(2, 3, 4))
    assert d.proven, d.checks


def test_attention_curvature_is_not_a_function_of_entropy():
    d = attention_derivation()
    assert d.proven, d.checks
    assert all(v == 0 for v in d.results["dH0"])  # grad H(0) = 0 exactly
    assert any(v != 0 for v in d.results["dR0"])  # grad R(0) != 0 exactly
    q = d.results["jac_coeff"]
    assert q.is_Rational and q != 0
    assert sympy.simplify(d.results["jac"] - q * sympy.log(2)) == 0
    assert len(set(d.results["ray_limits"].values())) > 1


def test_attention_exact_R_matches_mpmath_oracle():
    d = attention_derivation()
    assert d.results["mp_oracle_max_rel"] < 1e-30


def test_attention_exact_value_at_the_origin_matches_geometry():
    d = attention_derivation()
    fam = theorems.attention_family()
    r = float(geometry.scalar_curvature(fam, np.zeros(2)))
    assert abs(r - float(d.results["R0"])) <= theorems.NUMERIC_RTOL * abs(r)


@pytest.mark.parametrize(
    "make",
    [
        lambda: theorems.categorical(ns=(3, 4)),
        lambda: theorems.gaussian(),
        lambda: attention_derivation(),
        lambda: theorems.temperature(ns=(3,), with_attention=False),
    ],
    ids=["categorical", "gaussian", "attention", "temperature"],
)
def test_symbolic_agrees_with_numeric_at_20_or_more_points(make):
    d = make()
    assert d.numeric, "every family derivation must compare with geometry.scalar_curvature"
    for row in d.numeric:
        assert row["points"] >= 20
        print(f"{row['family']}: max rel diff {row['max_rel_diff']:.2e} vs NUMERIC_RTOL {row['threshold']:.0e}")
        assert row["max_rel_diff"] <= theorems.NUMERIC_RTOL


def test_formulate_rejects_bad_arguments():
    with pytest.raises(TypeError, match="geometry.Family"):
        derivations.formulate("categorical")
    with pytest.raises(ValueError, match="positive sympy Symbol"):
        derivations.formulate(geometry.categorical(3), scale=2.0)
    with pytest.raises(ValueError, match="coord_names"):
        derivations.formulate(geometry.categorical(3), coord_names=["a"])


def test_mp_evaluators_agree():
    fam = geometry.categorical(3)
    x = [0.3, -1.25]
    r = derivations.mp_scalar_curvature(fam, np.asarray(x), dps=30)
    assert abs(r - sympy.Rational(1, 2)) < 1e-25
    g = derivations.mp_metric(fam, x, dps=30)
    gn = np.asarray(geometry.fisher_metric(fam, np.asarray(x)))
    assert np.allclose(np.array(g.tolist(), dtype=float), gn, rtol=1e-13, atol=0)


def test_attention_document_contains_the_certificates(tmp_path):
    d = attention_derivation()
    (path,) = [p for p in derivations.write_documents({d.slug: d}, tmp_path) if p.name == "attention.md"]
    text = path.read_text()
    assert derivations.math_delimiters_balanced(text)
    assert sympy.latex(d.results["jac"]) in text
    assert sympy.latex(d.results["R0"]) in text
    assert "FAILED" not in text
