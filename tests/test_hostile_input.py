"""Regression tests, one per cause, for hostile-but-valid input: wrong values reported as trusted,
hangs, silent infinities, false refusals and errors that do not say what to do.

Every case ends in a value checked against an exact reference, an undefined status with its
reason, or a clear error naming the argument.
"""

import threading
import time
import warnings

import jax
import numpy as np
import pytest

import geometry

#: Relative tolerance of the precision promise (geometry's default rtol).
RTOL = 1e-8


def _trusted(r, info, exact) -> bool:
    """Every point has a trusted status (all float64 or all high precision) and is within RTOL of ``exact``."""
    return set(info.status.tolist()) <= {0, 1} and bool(np.all(np.abs(r - exact) <= RTOL * abs(exact)))


# --------------------------------------------------------------------------- 1. wrong values as trusted


def test_keys_rescaled_by_a_power_of_two_do_not_underflow_the_third_moments():
    # categorical(3) with keys times 2^-490: R = 1/2 exactly (the curvature routes work in
    # equilibrated coordinates, exact powers of two, so the third moments stay representable)
    fam = geometry.attention(np.array([[1.0, 0], [0, 1], [0, 0]]) * 2.0**-490, scale=1.0)
    r, info = geometry.scalar_curvature(fam, [[15 * 2.0**490, 0.0]], return_info=True)
    assert _trusted(r, info, 0.5), (r, info)


def test_huge_temperature_with_huge_coordinates():
    r, info = geometry.scalar_curvature(geometry.categorical(3, temperature=1e145), [[2.5e146, 0.0]], return_info=True)
    assert _trusted(r, info, 0.5), (r, info)


def test_user_family_whose_probability_products_underflow_is_handed_on():
    # p_3 = e^-480: p_i p_j underflows float64; the float64 tier hands the point on to mpmath
    fam = geometry.discrete_family(lambda t, xp: xp.log_softmax(xp.vector([t[0], t[1], 0 * t[0]])), dim=2)
    r, info = geometry.scalar_curvature(fam, [[480.0, 1.0]], return_info=True)
    assert info.status.tolist() == [1]
    np.testing.assert_allclose(r, 0.5, rtol=RTOL)


def test_two_threads_computing_low_entropy_points_at_once():
    # mpmath's working precision is process-wide: the mpmath tier holds a lock
    fam = geometry.categorical(3)
    th = np.array([[800.0, 1.0], [-700.0, 650.0], [900.0, -900.0]])
    out = [None, None]

    def work(k):
        out[k] = geometry.scalar_curvature(fam, th, return_info=True)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, info in out:
        assert np.all(info.status == 1), info
        np.testing.assert_allclose(r, 0.5, rtol=RTOL)


def test_oracle_verifies_a_lowered_user_definition_by_a_second_precision():
    # psi = logsumexp(K eta) lowered to sympy is differentiated uncentred: its Hessian cancels
    # (~60 digits here) where the estimate cannot see it; a second precision must agree.
    # Reference: the same family as attention(K, scale=1), whose cumulant formula is centred.
    keys = np.array([[0.13, -0.13], [0.64, 0.1], [-0.54, 0.36]])
    fam = geometry.exponential_family(lambda e, xp: xp.logsumexp(xp.matvec(keys, e)), dim=2)
    th = [130.40000451301373, 94.70809631292421]
    ref = geometry.scalar_curvature_mp(geometry.attention(keys, scale=1.0), th)
    got = geometry.scalar_curvature_mp(fam, th)
    assert abs(got - ref) <= 1e-18 * abs(ref), (got, ref)  # was -1.9e37 for R = 0.5


# --------------------------------------------------------------------------- 2. hangs


def test_exact_zero_curvature_ends():
    # two independent coins: R = 0 exactly; decided by an absolute bound below float64's range
    fam = geometry.multihead_attention([np.array([[1.0, 0], [0, 0]]), np.array([[0.0, 1], [0, 0]])], scale=1.0)
    t0 = time.perf_counter()
    r, info = geometry.scalar_curvature(fam, [[0.3, -0.2]], return_info=True)
    assert time.perf_counter() - t0 < 60
    assert r.tolist() == [0.0] and info.status.tolist() == [1]
    assert float(geometry.scalar_curvature_mp(fam, [0.3, -0.2])) == 0.0


# --------------------------------------------------------------------------- 3. silent infinities


def test_overflowing_metric_is_reported():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geometry.fisher_metric(geometry.categorical(3, temperature=1e-300), [[1e-300, 0.0]])
    assert any("fisher_metric" in str(w.message) and "NaN/inf" in str(w.message) for w in caught)


# --------------------------------------------------------------------------- 4. false refusals


@pytest.mark.parametrize("theta", [[0.0, 1e-300], [0.0, 1e-100], [0.0, 1e100], [1e160, 1.0]])
def test_gaussian_at_extreme_sigma(theta):
    r, info = geometry.scalar_curvature(geometry.gaussian(), [theta], return_info=True)
    assert _trusted(r, info, -1.0), (r, info)


def test_rank_test_is_invariant_under_power_of_two_rescaling():
    fam = geometry.attention(np.array([[2.0**30, 0], [0, 2.0**-30], [0, 0]]), scale=1.0)  # categorical(3), rescaled
    r, info = geometry.scalar_curvature(fam, [[2.0**-30, 2.0**30], [0.0, 0.0]], return_info=True)
    assert _trusted(r, info, 0.5), (r, info)


# --------------------------------------------------------------------------- 5. errors that say what to do


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: geometry.scalar_curvature(geometry.categorical(3), [[0.0, 1.0], [1.0]]), ValueError, "theta.*ragged"),
        (lambda: geometry.attention([[0.0, 1.0], [1.0]]), ValueError, "keys.*ragged"),
        (lambda: geometry.scalar_curvature(geometry.categorical(3), [0.0, 0.0], progress="x"), TypeError, "progress"),
        (lambda: geometry.sweep(geometry.categorical(3), np.zeros((4, 2)), devices="cpu"), TypeError, "devices"),
        (lambda: geometry.sweep(geometry.categorical(3), np.zeros((4, 2)), devices=jax.devices()[0]), TypeError, "devices"),
        (lambda: geometry.scalar_curvature(geometry.categorical(3), [0.0, 0.0], time_budget="1"), TypeError, "time_budget"),
        (lambda: geometry.scalar_curvature(geometry.categorical(3), [0.0, 0.0], time_budget=True), TypeError, "time_budget"),
        (lambda: geometry.sweep(geometry.categorical(3), np.zeros((4, 2)), time_budget=-1), ValueError, "time_budget"),
        (lambda: geometry.sweep(geometry.categorical(3), np.zeros((4, 2)), time_budget=float("nan")), ValueError, "time_budget"),
        (lambda: geometry.sweep(geometry.categorical(3), np.zeros((4, 2)), chunk_size=True), ValueError, "chunk_size"),
        (lambda: geometry.sweep(geometry.categorical(3), np.zeros((4, 2)), chunk_size=2**24), ValueError, "chunk_size.*MAX_CHUNK_SIZE"),
        (lambda: geometry.categorical(3, temperature="2"), TypeError, "temperature"),
        (lambda: geometry.categorical(3, temperature=True), TypeError, "temperature"),
    ],
)
def test_bad_arguments_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: geometry.exponential_family(lambda e, xp: np.log(-e[0]), dim=1), TypeError, "log_partition.*xp.log"),
        (lambda: geometry.exponential_family(lambda e, xp: -xp.log(-e[0]) if e[0] < 0 else 0.0, dim=1), TypeError, "log_partition.*Python if"),
        (lambda: geometry.exponential_family(lambda e, xp: -xp.log(-e[2]), dim=2), ValueError, "beyond dim=2"),
        (lambda: geometry.discrete_family(lambda t, xp: [t[0], -t[0]], dim=1), TypeError, "log_probs.*xp.vector"),
        (lambda: geometry.discrete_family(lambda t, xp: jax.numpy.stack([t[0], -t[0]]) - jax.numpy.log(2.0), dim=1), TypeError, "log_probs.*sympy"),
    ],
)
def test_user_functions_are_checked_in_every_namespace_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("keys, scale, match", [(np.array([[np.nan, 0.0], [1.0, 1.0]]), 1.0, "keys"), (np.eye(2), 0.0, "scale"), (np.eye(2), -1.0, "scale")])
def test_family_class_refuses_invalid_leaves(keys, scale, match):
    with pytest.raises(ValueError, match=match):
        geometry.SoftmaxLinear((geometry.Head(keys, np.asarray(scale)),), name="direct", dim=2)


# --------------------------------------------------------------------------- the error model does not trust the value


def test_error_estimate_never_certifies_a_value_its_terms_cannot_resolve():
    """err = delta / (|R~| - delta) with delta = 64 eps M kappa formed from the terms: a computed |R~| at or
    below delta gets inf however large it is; above, the bound uses |R~| - delta <= |R| (true)."""
    from geometry._src.linalg import EPS, SAFETY, error_estimate

    kappa = np.array([1.0, 1.0, 1.0, 4.0])
    x = np.array([1.0, 2.0, 0.5, 0.25])  # delta / |R~|
    cancel = x / (SAFETY * EPS)
    with np.errstate(divide="ignore"):
        est = error_estimate(cancel, kappa)
    assert np.isinf(est[0]) and np.isinf(est[1])
    np.testing.assert_allclose(est[2], 1.0, rtol=1e-15)  # delta = |R~| / 2: |R| >= |R~| / 2, err <= 1
    assert np.isinf(est[3])  # kappa = 4 brings delta up to |R~|


# --------------------------------------------------------------------------- the budget within a point


class _SpentAfterFirstRound:
    """A clock with 0.5 ms left: any round predicted from a real one is refused."""

    budget = 1.0

    def expired(self):
        return False

    def remaining(self):
        return 5e-4


def test_time_budget_is_enforced_within_a_point(monkeypatch):
    """A point that needs several precision rounds stops before a round predicted to outlast the budget."""
    from geometry._src import highprec

    calls = []
    real = highprec.evaluate
    monkeypatch.setattr(highprec, "evaluate", lambda f, t, d: calls.append(d) or real(f, t, d))
    rng = np.random.default_rng(0)
    fam = geometry.attention(rng.normal(size=(32, 6)), scale=1.0)
    theta = rng.normal(size=6) * 30  # R ~ -6.6e53: needs a second round at 122 digits
    with pytest.raises(highprec.BudgetExhausted, match="would take about"):
        highprec.curvature(fam, theta, rtol=1e-9, clock=_SpentAfterFirstRound())
    assert calls == [40]
    value, err, used = highprec.curvature(fam, theta, rtol=1e-9)  # without a budget it needs the round
    assert used > 40 and err < 1e-9


def test_predicted_round_cost_grows_with_the_digits():
    from geometry._src.highprec import predicted_round_seconds

    assert predicted_round_seconds(1.0, 40, 40) == 1.0
    ratios = [predicted_round_seconds(1.0, 40, d) for d in (122, 400, 1200, 4000)]
    assert all(a < b for a, b in zip(ratios, ratios[1:])) and 1.0 < ratios[0] < 2.0
