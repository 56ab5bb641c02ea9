"""geomstats 2.8 comparison of the benchmarks (issue 7): a skip with its reason without
``.venv-geomstats``; with it, the driver reproduces the categorical curvature (n - 1)(n - 2)/4.

The driver runs in its own virtual environment (geomstats 2.8 needs numpy < 2.4), so these
tests call it in a subprocess with that environment's python, exactly as ``benchmarks/run.py`` does.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from benchmarks import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, ".venv-geomstats", "bin", "python")
DRIVER = os.path.join(ROOT, "benchmarks", "geomstats_driver.py")
needs_venv = pytest.mark.skipif(not os.path.exists(VENV_PY), reason=".venv-geomstats not installed (geomstats 2.8 needs numpy < 2.4)")


def test_status_without_the_venv_is_a_skip_naming_numpy(tmp_path, monkeypatch):
    # a root without .venv-geomstats, whether or not this checkout has one
    monkeypatch.setattr(run, "ROOT", str(tmp_path))
    for status in (run.geomstats_status(), run.geomstats_status("categorical n=3", object(), np.zeros((5, 2)), np.full(5, 0.5), 1.0, True)):
        assert set(status) == {"skipped"}
        assert "numpy < 2.4" in status["skipped"] and ".venv-geomstats" in status["skipped"]


@needs_venv
def test_driver_categorical_generic_metric_is_half():
    theta = np.random.default_rng(0).normal(size=(5, 2)) * 2.0
    request = {"budget_seconds": 60.0, "configurations": [
        {"name": "categorical n=3", "family": "categorical", "n": 3, "points": theta.tolist()}]}
    proc = subprocess.run([VENV_PY, "-I", DRIVER, "-"], input=json.dumps(request), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["geomstats_version"].startswith("2.8") and out["backend"] == "autograd"
    conf = out["configurations"]["categorical n=3"]
    generic = conf["variants"]["generic"]
    assert generic["error"] is None and generic["points"] == 5 and generic["points_per_second"] > 0
    np.testing.assert_allclose(generic["values"], 0.5, rtol=0, atol=1e-8)
    # geomstats' own CategoricalDistributions is recorded next to it, whatever it returns
    assert "native" in conf["variants"] and len(conf["variants"]["native"]["values"]) == 5



@needs_venv
def test_driver_beta_distance_agrees_with_geodesic_distance():
    import geometry

    # (alpha, beta) pairs: along the diagonal (alpha = beta is fixed by the isometry alpha <-> beta, so a geodesic), across it, short
    pairs = np.array([[[1.0, 1.0], [5.0, 5.0]], [[2.0, 3.0], [4.0, 1.5]], [[3.0, 3.0], [3.0, 3.5]]])
    request = {"budget_seconds": 60.0, "configurations": [
        {"name": "beta", "family": "beta", "quantity": "distance", "pairs": pairs.tolist()}]}
    proc = subprocess.run([VENV_PY, "-I", DRIVER, "-"], input=json.dumps(request), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["geomstats_version"].startswith("2.8") and out["backend"] == "autograd"
    conf = out["configurations"]["beta"]
    assert conf["quantity"] == "distance" and conf["primary"] == "native"
    native = conf["variants"]["native"]
    assert native["error"] is None and native["pairs"] == 3 and native["pairs_per_second"] > 0 and native["nonfinite"] == 0
    assert len(native["values"]) == len(native["bvp_status"]) == len(native["bvp_max_residual"]) == 3
    assert native["bvp_status"] == [0, 0, 0] and native["bvp_converged"] == 3  # solve_bvp converged on these pairs
    fam = geometry.exponential_family(run._beta_log_partition, dim=2, natural=run._beta_chart, name="beta (log alpha, log beta)")
    ours, info = geometry.geodesic_distance(fam, np.log(pairs[:, 0]), np.log(pairs[:, 1]), return_info=True)
    assert np.all(info.status == 0)
    # geomstats solves the log map by solve_bvp to tol = 1e-3 on the relative collocation residuals; that is the
    # accuracy it asks for (its distances are ~1e-6 from ours here, ours agree with a quadrature on the diagonal to 1e-15)
    np.testing.assert_allclose(native["values"], ours, rtol=1e-3, atol=0)
