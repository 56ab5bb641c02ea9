"""geometry.sweep and the batch-major cumulant kernel.

* The batch-major kernel evaluates the same formula as the per-point route: the two
  agree within the route's own error model 64 eps kappa (|T|^2+|tau|^2)/|R|, and its
  condition estimate bounds the true condition number kappa_2(g) from above.
* ``sweep`` returns what ``scalar_curvature`` returns (values, fallback statuses),
  compiles once however many chunks it streams, and gives bitwise-identical results
  on 1, 2 and 4 (simulated) devices.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geometry
from geometry._src import engine as api, fisher, linalg, routes as sw

EPS = np.finfo(np.float64).eps
#: Agreement between two float64 evaluations of one formula, in units of the error model.
ERROR_MODEL_FACTOR = 2.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _families():
    rng = np.random.default_rng(7)
    return [  # Gram form (n <= m^2, m = 4); tensor form over several heads (m = 2)
        geometry.categorical(5, temperature=0.5),
        geometry.multihead_attention([rng.normal(size=(4, 2)), rng.normal(size=(6, 2))]),
    ]


def _points(fam, rng, k=64):
    pts = [rng.normal(size=(k, fam.dim)), 8.0 * rng.normal(size=(k, fam.dim)), np.zeros((1, fam.dim))]  # low entropy, ties
    return np.vstack(pts)


@pytest.mark.parametrize("fam", _families(), ids=lambda f: f.name)
def test_batch_major_kernel_is_the_cumulant_formula(fam):
    rng = np.random.default_rng(1)
    th = _points(fam, rng)
    r_b, c_b, k_b = (np.asarray(a) for a in jax.jit(lambda x: sw.cumulant_batch_major(fam, x))(jnp.asarray(th)))
    r_p, c_p, k_p = (np.asarray(a) for a in jax.jit(jax.lax.map, static_argnums=0)(lambda t: sw.cumulant_point(fam, t), jnp.asarray(th)))
    with np.errstate(divide="ignore", invalid="ignore"):
        model = linalg.SAFETY * EPS * c_p * np.maximum(k_p, 1.0)
        model_b = linalg.SAFETY * EPS * c_b * np.maximum(k_b, 1.0)
    # where float64 claims two or more digits, the two evaluations agree within the error model
    ok = model < 1e-2
    assert ok.sum() >= len(th) // 2  # the unit-scale half of the points at least
    np.testing.assert_array_less(np.abs(r_b - r_p)[ok] / np.abs(r_p[ok]), ERROR_MODEL_FACTOR * model[ok])
    # the cancellation factor (|T|^2+|tau|^2)/|R| inherits R's error, nothing more
    np.testing.assert_array_less(np.abs(c_b[ok] - c_p[ok]) / c_p[ok], ERROR_MODEL_FACTOR * model[ok] + 1e-12)
    # where it does not, the batch-major estimate also sends the point to the fallback (default rtol)
    assert np.all(~(model_b[~ok] <= api.DEFAULT_RTOL))
    # kappa itself is computed from g, so it is known to relative precision ~ eps kappa
    np.testing.assert_array_less(np.abs(k_b - k_p) / k_p, linalg.SAFETY * EPS * k_p)

    # kappa is an upper bound of the 2-norm condition number of the Jacobi-scaled metric
    # D^-1/2 g D^-1/2 (the precision controller relies on it)
    g = np.asarray(jax.jit(jax.vmap(lambda t: fisher.metric(fam, t)))(jnp.asarray(th)))
    d = np.sqrt(np.einsum("bii->bi", g))
    cond = np.linalg.cond(g / (d[:, :, None] * d[:, None, :]))
    known = cond < 1e12  # where numpy's own float64 cond is accurate to ~1e-4
    assert np.all(k_b[known] >= cond[known] * (1 - 1e-3))


def test_vmapped_route_uses_the_unrolled_kernel_and_stays_differentiable():
    fam = geometry.attention(np.random.default_rng(2).normal(size=(16, 2)))
    jaxpr = str(jax.make_jaxpr(jax.vmap(lambda t: sw.scalar_cumulant(fam, t)))(jnp.ones((8, 2))))
    assert "cholesky" not in jaxpr and "triangular_solve" not in jaxpr
    x = jnp.asarray([0.3, -0.7])
    grad = jax.jit(jax.grad(lambda t: sw.scalar_cumulant(fam, t)[0]))(x)
    h = 1e-6
    r_of = jax.jit(lambda t: sw.cumulant_point(fam, t)[0])
    fd = [(r_of(x + h * e) - r_of(x - h * e)) / (2 * h) for e in jnp.eye(2)]
    np.testing.assert_allclose(np.asarray(grad), np.asarray(fd), rtol=1e-5, atol=1e-9)


def test_sweep_matches_scalar_curvature_including_the_fallback():
    fam = geometry.categorical(3)  # R = 1/2 everywhere; large logits force the mpmath fallback
    rng = np.random.default_rng(3)
    th = np.vstack([rng.normal(size=(300, 2)), 30.0 * rng.normal(size=(20, 2))])
    r_ref, info_ref = geometry.scalar_curvature(fam, th, return_info=True)
    r, info = geometry.sweep(fam, th, return_info=True, chunk_size=64, progress=False)
    assert info.counts() == info_ref.counts()
    assert info.counts()["high_precision"] > 0
    np.testing.assert_allclose(r, r_ref, rtol=1e-8)
    np.testing.assert_allclose(r, 0.5, rtol=1e-8)


def test_sweep_compiles_once_across_chunks_and_reports_progress():
    fam = geometry.attention(np.random.default_rng(4).normal(size=(16, 2)))
    th = np.random.default_rng(5).normal(size=(1000, 2))
    seen = []
    r, stats = geometry.sweep(fam, th, method="cumulant", chunk_size=64, progress=seen.append, return_stats=True)
    assert stats.chunks == 16 and stats.traces == 1
    assert sum(seen) == 1000
    _, again = geometry.sweep(fam, th[:130], method="cumulant", chunk_size=64, progress=False, return_stats=True)
    assert again.traces == 1 and again.chunks == 3  # same program reused, tail padded
    np.testing.assert_allclose(r, geometry.scalar_curvature(fam, th, method="cumulant"), rtol=1e-9)


def test_sweep_reads_memmaps_and_keeps_leading_shape(tmp_path):
    fam = geometry.gaussian()
    mm = np.lib.format.open_memmap(tmp_path / "pts.npy", mode="w+", dtype=np.float64, shape=(5, 7, 2))
    mm[..., 0] = np.linspace(-1, 1, 35).reshape(5, 7)
    mm[..., 1] = np.linspace(0.5, 2, 35).reshape(5, 7)
    r = geometry.sweep(fam, mm, "hessian", chunk_size=8, progress=False)
    assert r.shape == (5, 7)
    np.testing.assert_allclose(r, -1.0, rtol=1e-8)


def test_sweep_errors_name_the_argument():
    fam = geometry.categorical(3)
    with pytest.raises(ValueError, match="chunk_size"):
        geometry.sweep(fam, np.zeros((4, 2)), chunk_size=0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        geometry.sweep(fam, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="devices"):
        geometry.sweep(fam, np.zeros((4, 2)), devices=[])
    with pytest.raises(ValueError, match="NaN"):
        geometry.sweep(fam, np.array([[0.0, np.nan]]), progress=False)


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys, jax, numpy as np, geometry
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(11)
    cases = {
        "attention16x2": (geometry.attention(rng.normal(size=(16, 2))), rng.normal(size=(1001, 2)) * 3, None),
        "categorical3-fallback": (geometry.categorical(3), np.vstack([rng.normal(size=(200, 2)), 40 * rng.normal(size=(9, 2))]), None),
    }
    out = {}
    for name, (fam, th, method) in cases.items():
        res = {}
        for k in (1, 2, 4):
            r, info, st = geometry.sweep(fam, th, method, devices=jax.devices()[:k], chunk_size=32,
                                          return_info=True, return_stats=True, progress=False)
            res[k] = (r, info.status, st)
        base = res[1]
        out[name] = {str(k): {"bitwise": bool(np.array_equal(v[0], base[0], equal_nan=True) and np.array_equal(v[1], base[1])),
                              "devices": v[2].devices, "traces": v[2].traces} for k, v in res.items()}
    json.dump(out, sys.stdout)
    """
)


def test_sharded_sweep_is_bitwise_equal_to_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, per_k in result.items():
        for k, rec in per_k.items():
            assert rec["devices"] == int(k) and rec["traces"] == 1, (name, k, rec)
            assert rec["bitwise"], f"{name}: {k} devices differ from 1 device"
