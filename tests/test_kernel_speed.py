"""The fast paths of the cumulant route give the same numbers as the plain ones (no timings here).

* Tensor form of the batch-major kernel: the third moment is accumulated in the key
  frame and whitened as a tensor, and tau is its trace; R, the cancellation factor and
  kappa agree with the per-point route (atoms whitened one by one) within the error model,
  and kappa (it depends only on g) agrees up to g's rounding.
* The kernel's shortcuts are exact: the dominant key found by one variadic reduction is
  argmax's, and the weight normalisation and key scale it leaves out drop out of
  |T|^2, |tau|^2 and kappa bit for bit under power-of-two rescaling.
* ``map_points`` pipelines chunks: results equal one call per point-block, for ragged
  tails, pytree outputs and empty inputs; progress sees every point once.
* ``as_points`` skips the row-by-row softmax domain check only when a bound proves it
  cannot fail; overflowing logits and non-finite coordinates are still rejected with
  the same messages.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geometry
from geometry._src.families import _logit_bound
from geometry._src import engine, linalg, mapping, routes as sw


def _as_points(fam, theta):
    rows, lead = engine.as_rows(fam, theta)
    return engine.block_checker(fam)(rows, 0), lead

EPS = np.finfo(np.float64).eps


def _tensor_families():
    rng = np.random.default_rng(11)
    return [
        geometry.attention(rng.normal(size=(16, 2))),
        geometry.attention(rng.normal(size=(64, 4))),
        geometry.attention(rng.normal(size=(10, 3))),
        geometry.multihead_attention([rng.normal(size=(5, 2)), rng.normal(size=(7, 2))]),
    ]


def _points(fam, rng):
    k = 48
    return np.vstack(
        [
            rng.normal(size=(k, fam.dim)),  # unit scale
            6.0 * rng.normal(size=(k, fam.dim)),  # low entropy: large cancellation
            np.zeros((1, fam.dim)),  # uniform weights
        ]
    )


def _per_point(fam, th):
    return [np.asarray(a) for a in jax.jit(jax.lax.map, static_argnums=0)(lambda t: sw.cumulant_point(fam, t), jnp.asarray(th))]


@pytest.mark.parametrize("fam", _tensor_families(), ids=lambda f: f.name)
def test_tensor_form_whitened_as_a_tensor_is_the_per_atom_formula(fam):
    th = _points(fam, np.random.default_rng(3))
    n = sum(h.keys.shape[0] for h in fam.heads)
    assert n > fam.dim**2  # tensor form
    r_b, c_b, k_b = (np.asarray(a) for a in jax.jit(lambda x: sw.cumulant_batch_major(fam, x))(jnp.asarray(th)))
    r_p, c_p, k_p = _per_point(fam, th)
    model = linalg.SAFETY * EPS * c_p * np.maximum(k_p, 1.0)
    ok = model < 1e-2
    assert ok.sum() >= len(th) // 2
    np.testing.assert_array_less(np.abs(r_b - r_p)[ok] / np.abs(r_p[ok]), 2.0 * model[ok])
    np.testing.assert_array_less(np.abs(c_b - c_p)[ok] / c_p[ok], 2.0 * model[ok] + 1e-12)
    # kappa = ||g||_F ||L^-1||_F^2 depends on g alone: the same up to g's rounding, amplified by kappa
    np.testing.assert_array_less(np.abs(k_b - k_p) / k_p, 64 * EPS * np.maximum(k_p, 1.0))


def test_tensor_form_tau_is_the_trace_of_the_whitened_tensor():
    # T and tau of a random symmetric tensor against a direct einsum in the whitened frame
    rng = np.random.default_rng(5)
    for m in (2, 3, 4):
        a = rng.normal(size=(m, m))
        g = a @ a.T + m * np.eye(m)
        tt = rng.normal(size=(m, m, m))
        t = sum(tt.transpose(p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6
        linv = np.linalg.inv(np.linalg.cholesky(g))
        tw_ref = np.einsum("ia,jb,kc,abc->ijk", linv, linv, linv, t)
        tw = sw._whiten3({abc: jnp.asarray(t[abc])[None] for abc in sw._desc_triples(m)}, {(i, j): jnp.asarray(linv[i, j])[None] for i in range(m) for j in range(i + 1)}, m)
        for (i, j, k), v in tw.items():
            np.testing.assert_allclose(float(v[0]), tw_ref[i, j, k], rtol=1e-12, atol=1e-12)
        ginv = np.linalg.inv(g)
        t2 = np.einsum("ia,jb,kc,ijk,abc->", ginv, ginv, ginv, t, t)
        tau = np.einsum("ij,ijk->k", ginv, t)
        np.testing.assert_allclose(np.sum(tw_ref**2), t2, rtol=1e-12)
        np.testing.assert_allclose(np.sum(np.einsum("aac->c", tw_ref) ** 2), tau @ ginv @ tau, rtol=1e-12)


@pytest.mark.parametrize("n", [3, 4])
def test_gram_form_is_unchanged(n):
    fam = geometry.categorical(3) if n == 3 else geometry.attention(np.random.default_rng(2).normal(size=(4, 2)))
    th = _points(fam, np.random.default_rng(4))
    r_b, c_b, k_b = (np.asarray(a) for a in jax.jit(lambda x: sw.cumulant_batch_major(fam, x))(jnp.asarray(th)))
    r_p, c_p, k_p = _per_point(fam, th)
    model = linalg.SAFETY * EPS * c_p * np.maximum(k_p, 1.0)
    ok = model < 1e-2
    np.testing.assert_array_less(np.abs(r_b - r_p)[ok] / np.abs(r_p[ok]), 2.0 * model[ok])


def test_dominant_key_is_the_argmax_key():
    # one variadic reduction instead of argmax + gather: same maximum, same key (the first one on ties)
    rng = np.random.default_rng(6)
    keys = rng.normal(size=(16, 3))
    z = np.round(rng.normal(size=(200, 16)), 1)  # many ties
    z[:5] = 0.0  # all keys tied (theta = 0)
    z[5:10, 3] = z[5:10, 11] = 9.0  # a tie for the maximum
    zmax, k_top = jax.jit(lambda z: sw._dominant_key(z, keys))(jnp.asarray(z))
    top = np.argmax(z, axis=1)
    np.testing.assert_array_equal(np.asarray(zmax), z.max(axis=1))
    for j in range(3):
        np.testing.assert_array_equal(np.asarray(k_top[j]), keys[top, j])


@pytest.mark.parametrize("fam", _tensor_families()[:2], ids=lambda f: f.name)
def test_left_out_weight_normalisation_and_scale_drop_out_exactly(fam):
    # the kernel runs on unnormalised weights e = s p and unscaled keys; with w -> 4^k w, u -> 2^j u
    # every intermediate scales by a power of two, |T|^2 and |tau|^2 by exactly 4^-k, kappa not at all
    th = jnp.asarray(_points(fam, np.random.default_rng(8)))
    w, u, s = jax.jit(lambda x: sw._atoms_batch_major(fam, x))(th)
    assert s is not None and np.all(np.asarray(s) >= 1.0)  # s = sum_i e_i with e_top = 1
    f = jax.jit(sw._contractions_batch_major)
    t2, tau2, kappa = (np.asarray(a) for a in f(w, u))
    t2_s, tau2_s, kappa_s = (np.asarray(a) for a in f(w * 4.0**3, [v * 2.0**-5 for v in u]))
    np.testing.assert_array_equal(t2_s, t2 / 4.0**3)
    np.testing.assert_array_equal(tau2_s, tau2 / 4.0**3)
    np.testing.assert_array_equal(kappa_s, kappa)


def _kernel(family, theta):
    return {"s": theta[0] - theta[1], "v": theta * 2.0}  # one rounding each: same bits as numpy


@pytest.mark.parametrize("count", [0, 1, 7, 64, 65, 200])
def test_pipelined_map_points_equals_direct_evaluation(count):
    fam = geometry.attention(np.random.default_rng(0).normal(size=(5, 2)))
    flat = np.random.default_rng(count).normal(size=(count, 2))
    seen = []
    out = mapping.LocalMapper(32).map(_kernel, fam, flat, lambda b, s: b, seen.append)
    assert out["s"].shape == (count,) and out["v"].shape == (count, 2)
    np.testing.assert_array_equal(out["s"], flat[:, 0] - flat[:, 1])
    np.testing.assert_array_equal(out["v"], flat * 2.0)
    assert sum(seen) == count


@pytest.mark.parametrize("count", [1, 64, 65, 200])
def test_threaded_map_is_the_sequential_map_in_chunk_order(count):
    fam = geometry.attention(np.random.default_rng(0).normal(size=(5, 2)))
    flat = np.random.default_rng(count).normal(size=(count, 2))
    seen, prepared = [], []

    def prepare(block, start):
        prepared.append(start)
        return block

    out = mapping.LocalMapper(16).map(_kernel, fam, flat, prepare, seen.append, workers=3)
    np.testing.assert_array_equal(out["s"], flat[:, 0] - flat[:, 1])
    np.testing.assert_array_equal(out["v"], flat * 2.0)
    assert prepared == list(range(0, count, 16)) and sum(seen) == count


def test_threaded_map_raises_the_first_bad_chunk_and_stops():
    fam = geometry.attention(np.random.default_rng(0).normal(size=(5, 2)))
    flat = np.zeros((200, 2))
    prepared = []

    def prepare(block, start):
        prepared.append(start)
        if start == 96:
            raise ValueError("bad point in the chunk at 96")
        return block

    with pytest.raises(ValueError, match="chunk at 96"):
        mapping.LocalMapper(16).map(_kernel, fam, flat, prepare, None, workers=2)
    assert prepared == list(range(0, 112, 16))  # nothing prepared after the bad chunk


def test_gram_kernel_calls_in_threads_give_the_bits_of_one_at_a_time(monkeypatch):
    # N = 128 keys, m = 32: the Gram kernel, whose route lets two calls run at once
    fam = geometry.attention(np.random.default_rng(3).normal(size=(128, 32)), 1 / np.sqrt(32))
    x = 2.0 * np.random.default_rng(4).normal(size=(700, 32))
    assert sw.CUMULANT.workers(fam) == sw.GRAM_WORKERS
    monkeypatch.setattr(sw, "GRAM_WORKERS", 2)
    both = geometry.scalar_curvature(fam, x, method="cumulant", chunk_size=128)
    monkeypatch.setattr(sw, "GRAM_WORKERS", 1)
    assert sw.CUMULANT.workers(fam) == 1
    one = geometry.scalar_curvature(fam, x, method="cumulant", chunk_size=128)
    np.testing.assert_array_equal(both, one)


def test_scalar_curvature_chunking_changes_values_only_within_the_error_model():
    # different chunk shapes compile to different loops (vector remainders), so only rounding may differ
    fam = geometry.attention(np.random.default_rng(9).normal(size=(16, 2)))
    th = 2.0 * np.random.default_rng(10).normal(size=(1000, 2))
    a, info = geometry.scalar_curvature(fam, th, method="cumulant", chunk_size=128, return_info=True)
    b = geometry.scalar_curvature(fam, th, method="cumulant", chunk_size=1024)
    ok = info.rel_error < 1e-2
    assert ok.sum() > 900
    np.testing.assert_array_less(np.abs(a - b)[ok] / np.abs(a[ok]), 2.0 * info.rel_error[ok] + 1e-300)


def test_overflowing_logits_are_reported_undefined_and_the_others_computed():
    fam = geometry.attention(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
    th = np.zeros((10, 2))
    th[7] = [1.5e308, 0.0]  # logits +-1.06e308: their spread overflows
    r, info = geometry.scalar_curvature(fam, th, method="cumulant", return_info=True)
    assert info.status[7] == 2 and "overflow float64" in info.reasons[7] and np.isnan(r[7])
    assert np.all(info.status[np.arange(10) != 7] == 0)
    # inside the bound: no check needed, same flat array back
    flat, lead = _as_points(fam, np.ones((3, 4, 2)))
    assert flat.shape == (12, 2) and lead == (3, 4)
    assert _logit_bound(fam.heads, flat) < 1e300  # the domain check's fast path applies
    assert not _logit_bound(fam.heads, th) < 1e300  # the full row-by-row check runs


def test_non_finite_coordinates_still_rejected():
    fam = geometry.categorical(3)
    for bad in (np.nan, np.inf, -np.inf):
        th = np.ones((5, 2))
        th[3, 1] = bad
        with pytest.raises(ValueError, match=r"first at flat index 3"):
            _as_points(fam, th)
    # finite entries whose sum overflows are finite
    big = np.full((4, 2), 1e308)
    assert engine._all_finite(big)
    assert not engine._all_finite(np.array([[1.0, np.nan]]))


def test_large_calls_compile_the_keys_as_constants_and_give_the_same_bits():
    """A call on >= CONSTANT_KEYS_MIN_POINTS points of a small softmax family bakes the keys into the
    program (XLA specialises it, about 2x faster); the values equal those of small traced-key calls."""
    rng = np.random.default_rng(1)
    for fam in (geometry.attention(rng.normal(size=(16, 2))), geometry.categorical(3)):
        th = 3.0 * rng.normal(size=(mapping.CONSTANT_LEAVES_MIN_POINTS, fam.dim))
        assert mapping._split(fam, len(th))[1] == ()  # leaves compiled in as constants
        assert mapping._split(fam, 8192)[1] != ()  # leaves traced
        big = geometry.scalar_curvature(fam, th, method="cumulant")
        small = np.concatenate([geometry.scalar_curvature(fam, th[i : i + 8192], method="cumulant") for i in range(0, len(th), 8192)])
        np.testing.assert_array_equal(big, small)
