"""Properties every family kind must have, driven by the family registry ``conftest.FAMILIES``.

One parametrisation over every kind the toolkit knows (plus the test-only kind of
tests/toy_kind.py), at a few moderate points per family: the metric is symmetric positive
definite; every supported curvature route agrees with the precision-controlled default, and
the default with the mpmath oracle; the Riemann tensor has its algebraic symmetries; the Ricci
tensor contracts to the scalar curvature; batching does not change the default's values; bad
inputs are refused with a ``ValueError`` naming the problem.

Cost: compilation dominates (one program per public function, family and chunk shape), so
every point set is drawn once per family and what several tests need is computed once
(``_cached``).  The precision-controlled default, ``fisher_metric``, the oracle and all input
validation are called eagerly, as a user calls them; ``riemann``, ``ricci`` and the forced float64
routes (documented to return under ``jax.jit`` what the eager call returns) are traced into one
``jax.jit`` program per family: they share the Christoffel symbols and their derivatives, and
the one program compiles in about half the time that separate eager calls take.  The contracted second
Bianchi identity is not tested here: ``jit(jacfwd(ricci))`` costs 2.5-4 s of compilation per
family; test_geometry_tensors.test_second_bianchi_identity covers one family.
"""

import zlib

import jax
import numpy as np
import pytest

import geometry
from geometry._src import routes
from conftest import FAMILIES, FAMILY_IDS

N_POINTS = 4  # a power of two: the batch is one chunk, no padding
ROUTES = ("cumulant", "hessian", "levi-civita")
RTOL = 1e-9
#: R changes sign inside some families (attention): an absolute floor for points near R = 0
ATOL = 1e-12

_CACHE = {}


def _cached(key, fn):
    if key not in _CACHE:
        _CACHE[key] = fn()
    return _CACHE[key]


def _points(case):
    """``N_POINTS`` points of the family, seeded by its id (stable when the registry is reordered)."""
    fid, _, sampler = case
    theta = np.asarray(sampler(np.random.default_rng(zlib.crc32(fid.encode())), N_POINTS), np.float64)
    assert theta.shape == (N_POINTS, case[1].dim)
    return theta


def _metric(case):
    return _cached((case[0], "metric"), lambda: np.asarray(geometry.fisher_metric(case[1], _points(case))))


def _traced(case):
    """``(riemann, ricci, {route: R})`` of the batch, from the public functions traced into one
    ``jax.jit`` program per family (module doc)."""

    def compute():
        fam, methods = case[1], _supported_routes(case[1])

        def all_of(t):
            curv = {m: geometry.scalar_curvature(fam, t, method=m) for m in methods}
            return geometry.riemann(fam, t), geometry.ricci(fam, t), curv

        return jax.tree_util.tree_map(np.asarray, jax.jit(all_of)(_points(case)))

    return _cached((case[0], "traced"), compute)


def _default(case):
    """Precision-controlled scalar curvature of the batch, with its info."""
    return _cached((case[0], "default"), lambda: geometry.scalar_curvature(case[1], _points(case), return_info=True))


def _supported_routes(fam):
    """The float64 routes ``fam`` supports (the selection alone: nothing is compiled)."""
    out = []
    for method in ROUTES:
        try:
            routes.select(fam, method)
        except ValueError:
            continue
        out.append(method)
    return out


registry = pytest.mark.parametrize("case", FAMILIES, ids=FAMILY_IDS)


def test_registry_is_well_formed():
    assert len(set(FAMILY_IDS)) == len(FAMILIES)
    assert {fam.dim for _, fam, _ in FAMILIES} <= {2, 3}, "the tolerances below assume dims 2 and 3"


# --------------------------------------------------------------------------- the metric


@registry
def test_metric_is_symmetric_positive_definite(case):
    g = _metric(case)
    d = case[1].dim
    assert g.shape == (N_POINTS, d, d)
    assert np.isfinite(g).all()
    scale = np.abs(g).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(g, g.swapaxes(1, 2), rtol=0, atol=1e-14 * scale.max())
    lam = np.linalg.eigvalsh(g)
    assert (lam > 0).all(), lam
    # moderate points: well conditioned, not just positive by rounding
    assert (lam.min(axis=1) > 1e-10 * lam.max(axis=1)).all(), lam


# --------------------------------------------------------------------------- routes and the oracle


@registry
def test_every_supported_route_agrees_with_the_default(case):
    fam, theta = case[1], _points(case)
    r, info = _default(case)
    assert r.shape == (N_POINTS,) and np.isfinite(r).all()
    assert info.counts()["total"] == N_POINTS and info.counts()["undefined"] == 0
    supported = _supported_routes(fam)
    assert supported, f"{case[0]} supports none of {ROUTES}"
    assert info.route in supported, (info.route, supported)
    for method in ROUTES:
        if method not in supported:  # refused eagerly, before anything is compiled
            with pytest.raises(ValueError, match=f"method='{method}' needs"):
                geometry.scalar_curvature(fam, theta, method=method)
    curv = _traced(case)[2]
    assert sorted(curv) == sorted(supported)
    for method, got in curv.items():
        np.testing.assert_allclose(got, r, rtol=RTOL, atol=ATOL, err_msg=f"{case[0]}: route {method} vs default")


@registry
def test_default_agrees_with_the_mpmath_oracle(case):
    fam, theta = case[1], _points(case)
    r, _ = _default(case)
    ref = geometry.scalar_curvature_mp(fam, theta[0])
    assert abs(float(r[0]) - float(ref)) <= 1e-8 * abs(float(ref)) + ATOL, (case[0], float(r[0]), ref)


# --------------------------------------------------------------------------- Riemann symmetries


@registry
def test_riemann_symmetries_and_first_bianchi(case):
    d = case[1].dim
    up = _traced(case)[0]  # up[p, l, s, m, n] = R^l_{smn}
    assert up.shape == (N_POINTS, d, d, d, d) and np.isfinite(up).all()
    low = np.einsum("prl,plsmn->prsmn", _metric(case), up)  # R_{rsmn} = g_{rl} R^l_{smn}
    for p in range(N_POINTS):
        r = low[p]
        scale = np.abs(r).max()
        assert scale > 0, "every registry family is curved"
        atol = 1e-9 * max(1.0, scale)
        np.testing.assert_allclose(r, -r.transpose(1, 0, 2, 3), rtol=0, atol=atol, err_msg="R_rsmn = -R_srmn")
        np.testing.assert_allclose(r, -r.transpose(0, 1, 3, 2), rtol=0, atol=atol, err_msg="R_rsmn = -R_rsnm")
        np.testing.assert_allclose(r, r.transpose(2, 3, 0, 1), rtol=0, atol=atol, err_msg="R_rsmn = R_mnrs")
        # R_rsmn + R_rmns + R_rnsm  (einsum "rmns->rsmn": out[r,s,m,n] = r[r,m,n,s])
        bianchi = r + np.einsum("rmns->rsmn", r) + np.einsum("rnsm->rsmn", r)
        np.testing.assert_allclose(bianchi, 0, rtol=0, atol=atol, err_msg="first Bianchi identity")


# --------------------------------------------------------------------------- contractions


@registry
def test_ricci_contracts_to_the_scalar_curvature(case):
    up, ric, _ = _traced(case)
    np.testing.assert_allclose(ric, np.einsum("prsrn->psn", up), rtol=1e-12, atol=1e-14 * max(1.0, np.abs(up).max()))
    np.testing.assert_allclose(ric, ric.swapaxes(1, 2), rtol=0, atol=1e-9 * max(1.0, np.abs(ric).max()))
    scalar = np.einsum("psn,psn->p", np.linalg.inv(_metric(case)), ric)
    r, _ = _default(case)
    np.testing.assert_allclose(scalar, r, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- batching invariance


@registry
def test_batched_default_equals_per_point_calls(case):
    fam, theta = case[1], _points(case)
    r, _ = _default(case)
    # other chunk shapes (one point per call): equal to rounding
    single = np.array([float(geometry.scalar_curvature(fam, t)) for t in theta])
    np.testing.assert_allclose(single, r, rtol=1e-12, atol=1e-15)
    # the same chunk in another leading shape: bit for bit
    grid = geometry.scalar_curvature(fam, theta.reshape(2, N_POINTS // 2, -1))
    assert grid.shape == (2, N_POINTS // 2)
    np.testing.assert_array_equal(grid.reshape(-1), r)


# --------------------------------------------------------------------------- refused inputs


def _callers(fam):
    out = {
        "scalar_curvature": lambda t: geometry.scalar_curvature(fam, t),
        "fisher_metric": lambda t: geometry.fisher_metric(fam, t),
        "christoffel": lambda t: geometry.christoffel(fam, t),
        "riemann": lambda t: geometry.riemann(fam, t),
        "ricci": lambda t: geometry.ricci(fam, t),
        "scalar_curvature_mp": lambda t: geometry.scalar_curvature_mp(fam, t),
    }
    if fam.has_entropy:
        out["entropy"] = lambda t: geometry.entropy(fam, t)
    return out


@registry
def test_wrong_shape_and_nan_are_refused(case):
    fam, theta = case[1], _points(case)
    d = fam.dim
    wrong = [np.zeros(d + 1), np.zeros(d - 1), np.zeros((3, d + 1)), np.asarray(0.5)]
    nan_one = theta[0].copy()
    nan_one[-1] = np.nan
    nan_last = theta.copy()
    nan_last[-1, 0] = np.nan  # only the last point of the batch
    inf_one = theta[0].copy()
    inf_one[0] = np.inf
    for name, call in _callers(fam).items():
        for t in wrong:
            with pytest.raises(ValueError, match="shape"):
                call(t)
        with pytest.raises(ValueError, match="NaN"):
            call(nan_one)
        with pytest.raises(ValueError, match="inf"):
            call(inf_one)
        if name != "scalar_curvature_mp":  # one point only
            with pytest.raises(ValueError, match="NaN"):
                call(nan_last)
    for method in _supported_routes(fam):  # the forced float64 routes validate in the same place
        for t, match in ((np.zeros(d + 1), "shape"), (nan_one, "NaN")):
            with pytest.raises(ValueError, match=match):
                geometry.scalar_curvature(fam, t, method=method)
