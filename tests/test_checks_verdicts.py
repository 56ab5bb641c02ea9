"""Verdict logic on synthetic data where the answer is known (so every check can fail)."""

import math

import numpy as np
import pytest

from checks._src import fit, verdicts
from checks._src.metric import metric_verdict
from checks._src.report import _normalise_points, jsonable

RNG = np.random.default_rng(1234)


def law(h, r):
    f = fit.linear_fit(h, r)
    return f, verdicts.law_family(f, fit.dependence(h, r))


def test_data_following_the_law_holds_and_recovers_C_alpha():
    h = RNG.uniform(0.1, 2.0, 800)
    r = 3.0 * (1.5 - h) + RNG.normal(0, 0.01, h.size)  # R = C (alpha - H), C = 3, alpha = 1.5
    f, (holds, why) = law(h, r)
    assert holds, why
    assert f.C == pytest.approx(3.0, rel=1e-2) and f.alpha == pytest.approx(1.5, rel=1e-2)
    assert f.C_ts == pytest.approx(3.0, rel=2e-2) and f.r2 > 0.99


def test_constant_curvature_fails_with_C_zero():
    h = RNG.uniform(0.1, 2.0, 500)
    r = np.full_like(h, 1.5)  # categorical n = 4: R = (n-1)(n-2)/4 everywhere
    f, (holds, why) = law(h, r)
    assert not holds
    assert f.constant and f.C == 0.0
    assert any("C = 0" in w for w in why)


def test_increasing_line_fails_on_the_sign_of_C():
    h = RNG.uniform(0.1, 2.0, 500)
    f, (holds, why) = law(h, 2.0 * h - 1.0 + RNG.normal(0, 0.01, h.size))
    assert f.C < 0 and not holds


def test_curvature_independent_of_entropy_fails_the_dependence_test():
    h = RNG.uniform(0.1, 2.0, 1000)
    r = RNG.standard_cauchy(h.size)  # heavy-tailed, unrelated to H
    assert fit.dependence(h, r) < 0.1
    assert not law(h, r)[1][0]


def test_dependence_sees_nonlinear_functions_and_certificate_sees_non_functions():
    h = RNG.uniform(0.0, 3.0, 2000)
    assert fit.dependence(h, np.exp(-3 * h) + np.sin(h)) > 0.95  # a function of H, not linear
    h2 = np.repeat(RNG.uniform(0, 1, 200), 2)  # pairs with identical H
    r2 = np.where(np.arange(h2.size) % 2 == 0, 1.0, -5.0)
    cert = fit.certificate(h2, r2)
    assert cert.h1 == cert.h2 and cert.dr == pytest.approx(6.0)


def test_fit_refuses_degenerate_input():
    with pytest.raises(ValueError, match="single value"):
        fit.linear_fit(np.ones(10), np.arange(10.0))
    with pytest.raises(ValueError, match="same number"):
        fit.linear_fit(np.ones(3), np.ones(4))


def test_path_decreasing():
    h = np.linspace(0.1, 2, 50)
    assert verdicts.path_decreasing(h, 5 - h) == (1.0, True)
    frac, ok = verdicts.path_decreasing(h, np.full_like(h, 0.5))  # flat: dR/dH = 0 is not < 0
    assert frac == 0.0 and not ok
    frac, ok = verdicts.path_decreasing(h, np.sin(5 * h))
    assert 0 < frac < 1 and not ok


def test_growth_exponent_and_limit():
    h = np.geomspace(1e-30, 1e-3, 20)
    k = verdicts.growth_exponent(h, -(h**-0.5))
    assert k == pytest.approx(-0.5, abs=1e-9)
    assert not verdicts.limit_family(k, -1e15)[0]
    k0 = verdicts.growth_exponent(h, 2.0 + h)
    assert verdicts.limit_family(k0, 2.0)[0]
    assert not verdicts.limit_family(k0, -2.0)[0]  # finite but negative: not C alpha > 0


def test_top_decile_negative():
    h = np.linspace(0, 1, 100)
    assert verdicts.top_decile_negative(h, 0.5 - h) == (1.0, True)
    assert not verdicts.top_decile_negative(h, np.ones(100))[1]


def test_aggregate_and_identities():
    assert verdicts.aggregate(3, 3) == "holds"
    assert verdicts.aggregate(0, 3) == "fails"
    assert verdicts.aggregate(1, 3) == "partial"
    assert verdicts.aggregate(0, 0) == "undefined"
    assert metric_verdict(1e-14, 0) == "holds"
    assert metric_verdict(1e-14, 2) == "partial"
    assert metric_verdict(1e-3, 0) == "fails"
    assert verdicts.distances_blow_up(0.5, 50.0) and not verdicts.distances_blow_up(0.57, 0.59)


def test_points_must_add_up_and_json_is_strict():
    ok = {"total": 5, "float64": 3, "high_precision": 1, "undefined": 1}
    assert _normalise_points(ok)["not_computed_budget"] == 0
    with pytest.raises(ValueError, match="do not add up"):
        _normalise_points({"total": 5, "float64": 3})
    out = jsonable({"a": np.float64("nan"), "b": [np.inf, -np.inf], "c": np.int64(3), "d": np.array([1.5])})
    assert out == {"a": None, "b": ["inf", "-inf"], "c": 3, "d": [1.5]}
    assert math.isfinite(jsonable(np.float32(2.5)))


def test_family_spearman_ignores_rounding_noise_of_constant_curvature():
    from checks._src.law import family_spearman

    h = np.linspace(0.1, 1.0, 50)
    noise = np.random.default_rng(0).normal(size=50) * 1e-13
    assert math.isnan(family_spearman(h, 1.5 + noise))  # the simplex: R = 1.5 up to rounding
    assert family_spearman(h, 2.0 - h) == pytest.approx(-1.0)
    assert family_spearman(h, 2.0 - h + noise) == pytest.approx(-1.0)
    assert math.isnan(family_spearman(h, np.full(50, np.nan)))
