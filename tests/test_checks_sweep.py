"""The measurement helpers of the checks agree with the geometry core and with closed forms."""

import math

import numpy as np
import pytest

import geometry
from checks._src import sweep
from checks._src.limits import fisher_rao_simplex
from checks._src.metric import pullback_metric


@pytest.fixture(scope="module")
def head():
    keys = sweep.random_keys(np.random.default_rng(0), 8, 2)
    return keys, geometry.attention(keys)


def test_entropy_matches_the_core_down_to_1e_minus_27(head):
    keys, fam = head
    x = np.vstack([np.random.default_rng(1).normal(size=(20, 2)), [[100.0, 30.0], [30.0, 9.0]]])
    ours, core = sweep.entropy(fam, x), np.asarray(geometry.entropy(fam, x))
    np.testing.assert_allclose(ours, core, rtol=1e-12)
    assert ours[-2] < 1e-20 and ours[-2] > 0


def test_pullback_equals_the_fisher_information(head):
    keys, fam = head
    x = np.random.default_rng(2).normal(size=(10, 2))
    g = pullback_metric(keys, fam.heads[0].scale, x)
    np.testing.assert_allclose(g, np.asarray(geometry.fisher_metric(fam, x, method="score")), rtol=1e-10, atol=1e-14)


def test_fisher_rao_distance_on_the_simplex():
    e1, e2 = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    assert fisher_rao_simplex(e1, e2) == pytest.approx(math.pi)  # opposite vertices: the diameter
    u = np.full(3, 1 / 3)
    assert fisher_rao_simplex(u, u) == pytest.approx(0.0, abs=1e-7)
    assert fisher_rao_simplex(u, e1) == pytest.approx(2 * math.acos(1 / math.sqrt(3)))


def test_specs_are_deterministic_in_the_seed():
    a = sweep.family_specs(5, quick=True)
    b = sweep.family_specs(5, quick=True)
    c = sweep.family_specs(6, quick=True)
    ka = [s[2].heads[0].keys for s in a if s[1] == "attention"]
    kb = [s[2].heads[0].keys for s in b if s[1] == "attention"]
    kc = [s[2].heads[0].keys for s in c if s[1] == "attention"]
    assert all(np.array_equal(x, y) for x, y in zip(ka, kb))
    assert not np.array_equal(ka[0], kc[0])
