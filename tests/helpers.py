"""Shared references for the tests: exact values, mpmath oracles, point generators."""

import mpmath
import numpy as np

import geometry


def simplex_curvature(n):
    """Scalar curvature of the (n-1)-simplex with the Fisher metric: a sphere piece of radius 2."""
    return (n - 1) * (n - 2) / 4


def mp_entropy_softmax(keys, scale, x, dps=60):
    """Entropy of softmax(scale keys x) in mpmath, from the exact binary inputs."""
    with mpmath.workdps(dps):
        z = [mpmath.mpf(float(scale)) * mpmath.fsum(mpmath.mpf(float(k)) * mpmath.mpf(float(t)) for k, t in zip(row, x)) for row in keys]
        lp = geometry.MPMATH.log_softmax(z)
        return -mpmath.fsum(mpmath.exp(t) * t for t in lp)


def points_toward_vertices(rng, dim, count, log10_scale=(-1, 2.7)):
    """Random directions times log-uniform magnitudes: entropies from ~log n down to ~1e-200."""
    v = rng.normal(size=(count, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * 10 ** rng.uniform(*log10_scale, size=(count, 1))


def rel_err(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


def assert_points_add_up(report):
    """Every check's points add up over the status categories, and the report's totals are the sums over checks."""
    from checks._src.report import POINT_KEYS  # ("total", then the categories)

    for e in report["checks"]:
        p = e["points"]
        assert p["total"] == sum(p[k] for k in POINT_KEYS[1:]), (e["id"], p)
    tot = report["points"]
    for k in POINT_KEYS:
        assert tot[k] == sum(e["points"][k] for e in report["checks"]), k
