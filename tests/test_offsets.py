"""Softmax heads with per-key logit offsets (``geometry.attention(keys, offset=b)``).

An offset in the span of the keys is a shift of the query: with :math:`b = sKc`,
:math:`\\operatorname{softmax}(sKx + b) = \\operatorname{softmax}(sK(x + c))`, so the offset
family's curvature at ``x`` is the plain family's at ``x + c``: an identity independent of how the
offset is implemented.  An offset outside the span changes the geometry; it is checked against the
mpmath oracle, which adds it exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geometry

RNG = np.random.default_rng(2026)
KEYS = RNG.normal(size=(9, 3))
SCALE = 0.5


def test_offset_in_the_key_span_is_a_query_shift():
    c = np.array([0.25, -0.5, 0.75])
    b = SCALE * KEYS @ c
    x = RNG.normal(size=(16, 3))
    with_offset = geometry.attention(KEYS, SCALE, offset=b)
    plain = geometry.attention(KEYS, SCALE)
    np.testing.assert_allclose(geometry.scalar_curvature(with_offset, x), geometry.scalar_curvature(plain, x + c), rtol=1e-8)
    np.testing.assert_allclose(geometry.entropy(with_offset, x), geometry.entropy(plain, x + c), rtol=1e-13)


@pytest.mark.parametrize("sharp", [1.0, 20.0])
def test_offset_against_the_oracle_in_every_tier(sharp):
    b = 3.0 * RNG.normal(size=9)  # not in the span of 3 key columns: a new geometry
    fam = geometry.attention(KEYS, SCALE, offset=b)
    x = sharp * RNG.normal(size=(4, 3))
    r, info = geometry.scalar_curvature(fam, x, return_info=True)
    oracle = np.array([float(geometry.scalar_curvature_mp(fam, xi, rtol=1e-12)) for xi in x])
    np.testing.assert_allclose(r, oracle, rtol=1e-8)
    if sharp > 1:  # low entropy: the slow tiers took some points, and they add the offset too
        assert info.counts()["high_precision"] > 0


def test_offset_is_a_differentiable_leaf():
    x = jnp.asarray(RNG.normal(size=3))
    f = lambda b: geometry.scalar_curvature(geometry.attention(jnp.asarray(KEYS), SCALE, offset=b), x, method="cumulant")
    b0 = jnp.asarray(RNG.normal(size=9))
    g = jax.grad(f)(b0)
    step = 1e-6 * jnp.eye(9)[4]
    fd = (f(b0 + step) - f(b0 - step)) / 2e-6
    np.testing.assert_allclose(g[4], fd, rtol=1e-6)


@pytest.mark.parametrize("bad, match", [(np.zeros(8), r"shape \(9,\)"), (np.full(9, np.nan), "NaN or inf"), ("x", "offset")])
def test_bad_offset_is_refused_by_name(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        geometry.attention(KEYS, SCALE, offset=bad)


def test_multihead_offsets_per_head():
    k2 = RNG.normal(size=(5, 3))
    fam = geometry.multihead_attention([KEYS, k2], offsets=[None, np.linspace(-1, 1, 5)])
    x = RNG.normal(size=(3, 3))
    oracle = np.array([float(geometry.scalar_curvature_mp(fam, xi)) for xi in x])
    np.testing.assert_allclose(geometry.scalar_curvature(fam, x), oracle, rtol=1e-8)
    with pytest.raises(ValueError, match="offsets must be None or a list of 2"):
        geometry.multihead_attention([KEYS, k2], offsets=[None])
