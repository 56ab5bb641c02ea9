"""The precision-map check: its digit measure, its oracle and its verdict inputs, on known values."""

import numpy as np
import pytest

import geometry
from checks._src import precision_map as pm
from checks._src.registry import Context


def test_digits_measure_relative_error_in_decades():
    """digits = -log10(|r - ref| / |ref|), capped to [0, 16]; NaN/inf count as 0 (a wrong value, not a skip)."""
    ref = np.full(6, 0.5)
    r = np.array([0.5, 0.5 * (1 + 1e-9), 0.5 * (1 + 1e-3), 5e15, np.nan, -np.inf])
    d = pm.digits(r, ref)
    np.testing.assert_allclose(d[:3], [pm.DIGITS_CAP, 9.0, 3.0], atol=1e-6)
    assert list(d[3:]) == [0.0, 0.0, 0.0]


def test_phantom_blowup_is_flagged_only_beyond_the_factor():
    row = {"x_values": [1.0, 1e-10, 1e-20], "R_ref": [0.5, 0.5, 0.5],
           "levi-civita": {"R": [0.5, 0.5 * pm.PHANTOM_BLOWUP_FACTOR * 0.99, 4e15]}}
    p = pm._phantom(row)
    assert p["x_at_max"] == 1e-20 and p["first_x"] == 1e-20 and p["R_naive"] == 4e15
    row["levi-civita"]["R"] = [0.5, 0.5, 0.5]
    assert pm._phantom(row) is None


def test_oracle_is_exact_on_the_simplex_at_low_entropy():
    """Categorical n=5 at H ~ 1e-30 (p_min ~ 1e-150): the two-precision oracle gives (n-1)(n-2)/4 = 3."""
    fam = geometry.categorical(5)
    x = np.array([-73.0, -354.0, 12.0, -5.0])
    r, agree = pm.oracle(fam, x)
    assert r == 3.0 and agree >= pm.ORACLE_AGREEMENT_DIGITS


def test_rays_span_the_entropy_range():
    ctx = Context(seed=0, quick=True, out_dir="unused")
    fam = geometry.categorical(3)
    x, h = pm.ray_points(fam, ctx.rng(1), 6)
    assert h[0] == pytest.approx(np.log(3)) and h[-1] == pytest.approx(pm.RAY_H_MIN, rel=0.05)
    assert np.all(np.diff(h) < 0)


@pytest.mark.slow
def test_quick_check_reports_every_point(tmp_path):
    """The whole check in --quick mode (~40 s of CPU): points add up, every family has a row."""
    res = pm.precision_map(Context(seed=0, quick=True, out_dir=str(tmp_path)))
    p = res.points
    assert p["total"] == sum(p[k] for k in ("float64", "high_precision", "undefined", "not_computed_budget", "untrusted"))
    assert p["total"] == pm.RAY_POINTS_QUICK * len(res.measurements["families"])
    assert (tmp_path / "precision_map.png").exists()
    for row in res.measurements["families"]:
        assert len(row["default"]["digits"]) == pm.RAY_POINTS_QUICK
