r"""Time the scalar curvature and the Fisher-Rao distance in geomstats 2.8 (autograd backend), for ``benchmarks/run.py``.

Run with the python of ``.venv-geomstats`` (geomstats 2.8 needs numpy < 2.4, so it
lives in its own virtual environment); this file imports neither jax nor the
``geometry`` package, only the standard library, numpy and geomstats::

    .venv-geomstats/bin/python benchmarks/geomstats_driver.py '{"budget_seconds": 3, "configurations": [...]}'
    .venv-geomstats/bin/python benchmarks/geomstats_driver.py - < request.json

Request (JSON, on argv[1] or on stdin when argv[1] is ``-`` or absent)::

    {"budget_seconds": 3.0,
     "configurations": [
        {"name": "categorical n=3", "family": "categorical", "n": 3, "points": [[t0, t1], ...]},
        {"name": "attention n=16 m=2", "family": "attention", "keys": [[...], ...], "scale": 0.707, "points": [...]},
        {"name": "gaussian", "family": "gaussian", "points": [[mu, sigma], ...]},
        {"name": "gamma", "family": "gamma", "points": [[eta0, eta1], ...]},
        {"name": "beta", "family": "beta", "quantity": "distance", "pairs": [[[a1, b1], [a2, b2]], ...]}]}

A configuration without ``quantity`` (or with ``"quantity": "scalar_curvature"``) has ``points``
and times the scalar curvature; ``"quantity": "distance"`` has ``pairs`` and times the distance.

Points are in the coordinates of ``geometry``: logits ``theta`` (last logit 0) for
categorical, the query ``x`` for attention (``p = softmax(scale * keys @ x)``),
``(mu, sigma)`` for the Gaussian, natural parameters ``eta`` for the gamma family.
Every value is ``RiemannianMetric.scalar_curvature`` of geomstats (Christoffel symbols
and Riemann tensor by autograd Jacobians of ``metric_matrix``).  Variants:

* ``generic`` (categorical, attention): :class:`SoftmaxFisherMetric`, the Fisher metric
  :math:`g(x) = s^2 \mathrm{Cov}_p(K)` of ``p = softmax(s K x)`` written in ``gs`` on
  ``Euclidean(dim=m)`` (categorical n: ``K = [I; 0]``, ``s = 1/T``).
* ``native`` (categorical): ``CategoricalDistributions(dim=n-1)``, fed ``p = softmax(theta, 0)``.
* ``native`` (gaussian): ``NormalDistributions(sample_dim=1)`` (univariate, coordinates (mean, std)).
* ``generic-hessian`` (gamma): :class:`HessianMetric` of
  :math:`\psi(\eta) = \log\Gamma(\eta_0 + 1) - (\eta_0 + 1)\log(-\eta_1)` by autograd.

Distances (``"quantity": "distance"``), one variant:

* ``native`` (beta): ``BetaDistributions().metric.dist(p, q)`` for each pair ``(p, q)`` of points
  ``(alpha, beta)``, the metric :math:`g = \mathrm{diag}(\psi_1(\alpha), \psi_1(\beta)) - \psi_1(\alpha + \beta)\,\mathbf 1\mathbf 1^T`
  (``psi_1`` the trigamma function; the Hessian of :math:`\log B(\alpha, \beta)`).  geomstats computes
  :math:`|\log_p q|_{g_p}`, the log map by ``LogODESolver``: ``scipy.integrate.solve_bvp`` on the geodesic
  equation over a fixed mesh of ``n_nodes = 1000`` (= ``max_nodes``, so the mesh cannot be refined),
  ``tol = 1e-3`` on the relative collocation residuals, the Jacobian from its closed-form Christoffel
  symbols, started from the straight segment; the answer is the initial velocity of whatever
  ``solve_bvp`` returns, converged or not (geomstats does not look at its ``status``).  The driver
  therefore records ``solve_bvp``'s result per pair (``integrator.save_result``): ``bvp_status``
  (0 converged, 1 ``max_nodes`` exceeded, 2 singular Jacobian, 3 ``bc_tol`` not met) and
  ``bvp_max_residual`` (the largest relative rms collocation residual, converged means <= 1e-3).
  A batched ``dist`` is a Python loop over the same per-pair solve (``_LogBatchMixins.log``), so
  the driver calls it per pair.

Timing per variant: one warm-up call on the first point, then one call per point (geomstats'
batched call loops over points in Python anyway and was not faster) until ``budget_seconds``
have elapsed or the points run out; ``points_per_second`` = points done / elapsed seconds.
Distances alike, per pair (``pairs``, ``pairs_per_second``).

Output: one JSON object on stdout (``NaN`` for non-finite values)::

    {"geomstats_version", "backend", "numpy", "autograd", "python",
     "configurations": {name: {"family", "primary", "variants": {label: {
         "description", "points", "seconds", "points_per_second", "warmup_seconds",
         "values", "nonfinite", "error", "note"}}}}}

and for a distance configuration ``{"family", "quantity": "distance", "primary", "variants": {label: {
"description", "pairs", "seconds", "pairs_per_second", "warmup_seconds", "warmup_value", "values",
"nonfinite", "bvp_status", "bvp_max_residual", "bvp_converged", "error", "note"}}}`` (``values`` and the
``bvp_`` lists: one entry per pair done, in the order given; ``bvp_converged``: how many have status 0).

A failing variant has ``error`` (exception type and message) and no timing; the
driver itself exits 0 unless the request is malformed.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback

os.environ["GEOMSTATS_BACKEND"] = "autograd"  # before the first geomstats import

import numpy as np  # noqa: E402


def _geomstats():
    import geomstats
    import geomstats.backend as gs
    from geomstats.geometry.euclidean import Euclidean
    from geomstats.geometry.riemannian_metric import RiemannianMetric

    return geomstats, gs, Euclidean, RiemannianMetric


def _classes():
    _, gs, _, RiemannianMetric = _geomstats()

    class SoftmaxFisherMetric(RiemannianMetric):
        r"""Fisher metric of ``p = softmax(scale * keys @ x)``: :math:`g = s^2 (K^T \mathrm{diag}\,p\, K - K^T p p^T K)`."""

        def __init__(self, space, keys, scale):
            super().__init__(space)
            self.scaled_keys = gs.array(np.asarray(keys, dtype=np.float64) * float(scale))

        def metric_matrix(self, base_point=None):
            sk = self.scaled_keys
            z = gs.einsum("nm,...m->...n", sk, base_point)
            z = z - gs.amax(z, axis=-1)[..., None]
            e = gs.exp(z)
            p = e / gs.sum(e, axis=-1)[..., None]
            mean = gs.einsum("...n,nm->...m", p, sk)
            second = gs.einsum("...n,nm,nl->...ml", p, sk, sk)
            return second - gs.einsum("...m,...l->...ml", mean, mean)

    class HessianMetric(RiemannianMetric):
        """Hessian metric ``g = d^2 psi`` of a log-partition ``psi`` (natural coordinates), by autograd."""

        def __init__(self, space, log_partition):
            super().__init__(space)
            self.log_partition = log_partition

        def metric_matrix(self, base_point=None):
            return gs.autodiff.hessian_vec(self.log_partition)(base_point)

    return SoftmaxFisherMetric, HessianMetric


def _gamma_log_partition():
    """``psi(eta) = lgamma(eta0 + 1) - (eta0 + 1) log(-eta1)`` and a note on where lgamma comes from."""
    _, gs, _, _ = _geomstats()
    lgamma = getattr(gs, "lgamma", None) or getattr(gs, "gammaln", None)
    if lgamma is not None:
        note = "lgamma from geomstats.backend"
    else:
        # geomstats.backend (2.8, autograd) exports gamma and polygamma but no lgamma/gammaln;
        # log(gs.gamma(x)) would overflow for x > 171, so use autograd's own gammaln primitive
        # (same autodiff system as gs; derivatives digamma -> polygamma(k) to any order).
        from autograd.scipy.special import gammaln as lgamma

        note = ("geomstats.backend has no lgamma/gammaln (only gamma, polygamma): psi uses "
                "autograd.scipy.special.gammaln, differentiated by autograd like the rest of gs")

    def psi(eta):
        return lgamma(eta[..., 0] + 1) - (eta[..., 0] + 1) * gs.log(-eta[..., 1])

    return psi, note


def _softmax_space(keys, scale):
    _, _, Euclidean, _ = _geomstats()
    SoftmaxFisherMetric, _ = _classes()
    keys = np.asarray(keys, dtype=np.float64)
    space = Euclidean(dim=keys.shape[1], equip=False)
    space.equip_with_metric(SoftmaxFisherMetric, keys=keys, scale=scale)
    return space


def _variants(conf):
    """``{label: (description, scalar_curvature_fn, point_transform, note)}`` for one configuration."""
    _, gs, Euclidean, _ = _geomstats()
    fam = conf["family"]
    identity = None
    if fam == "categorical":
        n = int(conf["n"])
        scale = float(conf.get("scale", 1.0))
        keys = np.vstack([np.eye(n - 1), np.zeros((1, n - 1))])
        out = {"generic": (f"SoftmaxFisherMetric(K=[I;0], s={scale:g}) on Euclidean(dim={n - 1})",
                           _softmax_space(keys, scale).metric.scalar_curvature, identity, None)}
        from geomstats.information_geometry.categorical import CategoricalDistributions

        space = CategoricalDistributions(dim=n - 1)

        def to_simplex(theta):
            z = np.append(np.asarray(theta, dtype=np.float64) * scale, 0.0)
            e = np.exp(z - z.max())
            return gs.array(e / e.sum())

        out["native"] = (f"geomstats.information_geometry.categorical.CategoricalDistributions(dim={n - 1}), "
                         "points p = softmax((theta, 0)) in the simplex",
                         space.metric.scalar_curvature, to_simplex, None)
        return out
    if fam == "attention":
        keys = np.asarray(conf["keys"], dtype=np.float64)
        scale = float(conf["scale"])
        return {"generic": (f"SoftmaxFisherMetric(keys {keys.shape[0]}x{keys.shape[1]}, s={scale:g}) on Euclidean(dim={keys.shape[1]})",
                            _softmax_space(keys, scale).metric.scalar_curvature, identity, None)}
    if fam == "gaussian":
        from geomstats.information_geometry.normal import NormalDistributions

        space = NormalDistributions(sample_dim=1)
        return {"native": (f"geomstats.information_geometry.normal.NormalDistributions(sample_dim=1) "
                           f"({type(space).__name__}, {type(space.metric).__name__}), coordinates (mean, std)",
                           space.metric.scalar_curvature, identity, None)}
    if fam == "gamma":
        _, HessianMetric = _classes()
        psi, note = _gamma_log_partition()
        space = Euclidean(dim=2, equip=False)
        space.equip_with_metric(HessianMetric, log_partition=psi)
        return {"generic-hessian": ("HessianMetric(psi = lgamma(eta0+1) - (eta0+1) log(-eta1)) on Euclidean(dim=2), "
                                    "natural coordinates", space.metric.scalar_curvature, identity, note)}
    raise ValueError(f"unknown family {fam!r} (expected categorical, attention, gaussian or gamma)")


def _distance_variants(conf):
    """``{label: (description, distance_fn, diagnose, note)}``: ``distance_fn(pair)``, ``diagnose()`` its solver's verdict."""
    fam = conf["family"]
    if fam != "beta":
        raise ValueError(f"unknown family {fam!r} for quantity 'distance' (expected beta)")
    from geomstats.information_geometry.beta import BetaDistributions

    metric = BetaDistributions().metric
    integrator = metric.log_solver.integrator
    integrator.save_result = True  # keeps solve_bvp's result (status, residuals), which dist discards

    def diagnose():
        res = integrator.result_
        return int(res.status), float(np.max(res.rms_residuals))

    return {"native": (f"geomstats.information_geometry.beta.BetaDistributions().metric.dist ({type(metric).__name__}; "
                       f"log map: {type(metric.log_solver).__name__}, scipy solve_bvp, n_nodes={metric.log_solver.n_nodes}, "
                       f"tol={integrator.tol:g}, max_nodes={integrator.max_nodes}), coordinates (alpha, beta)",
                       lambda pair: metric.dist(pair[0], pair[1]), diagnose,
                       "dist returns |v| of solve_bvp's answer whatever its status; bvp_status says which pairs converged")}


def _time_variant(fn, transform, points, budget, diagnose=None):
    """Warm-up on ``points[0]``, then ``fn`` per point for ``budget`` seconds; ``diagnose()`` after each timed call."""
    pts = list(points) if transform is None else [transform(p) for p in points]
    t0 = time.perf_counter()
    first = float(fn(pts[0]))
    warm = time.perf_counter() - t0
    values, diagnoses = [], []
    t0 = time.perf_counter()
    for p in pts:
        values.append(float(fn(p)))
        if diagnose is not None:
            diagnoses.append(diagnose())
        if time.perf_counter() - t0 >= budget:
            break
    dt = time.perf_counter() - t0
    out = {"points": len(values), "seconds": dt, "points_per_second": len(values) / dt, "warmup_seconds": warm,
           "warmup_value": first, "values": values, "nonfinite": int(np.sum(~np.isfinite(values)))}
    if diagnose is not None:
        out["diagnoses"] = diagnoses
    return out


def _run_distance(conf, gs, budget):
    """One ``"quantity": "distance"`` configuration: per variant its timing over ``conf["pairs"]`` and solver verdicts."""
    rec = {"family": conf["family"], "quantity": "distance", "variants": {}}
    try:
        variants = _distance_variants(conf)
    except Exception as exc:  # noqa: BLE001 -- reported, not raised
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
    pairs = [gs.array(pq) for pq in np.asarray(conf["pairs"], dtype=np.float64)]
    rec["primary"] = next(iter(variants))
    for label, (desc, fn, diagnose, note) in variants.items():
        v = {"description": desc, "note": note, "error": None}
        try:
            t = _time_variant(fn, None, pairs, budget, diagnose)
        except Exception as exc:  # noqa: BLE001
            v["error"] = f"{type(exc).__name__}: {exc}"
            v["traceback"] = traceback.format_exc()[-1500:]
        else:
            status, residual = (list(x) for x in zip(*t.pop("diagnoses")))
            v.update(pairs=t.pop("points"), pairs_per_second=t.pop("points_per_second"), **t, bvp_status=status,
                     bvp_max_residual=residual, bvp_converged=status.count(0))
        rec["variants"][label] = v
    return rec


def run(request):
    geomstats, gs, _, _ = _geomstats()
    import importlib.metadata

    budget = float(request.get("budget_seconds", 3.0))
    out = {"geomstats_version": geomstats.__version__, "backend": gs.__name__.split(".")[-1],
           "numpy": np.__version__, "autograd": importlib.metadata.version("autograd"),
           "python": platform.python_version(), "budget_seconds": budget, "configurations": {}}
    for conf in request["configurations"]:
        name = conf.get("name", conf["family"])
        quantity = conf.get("quantity", "scalar_curvature")
        if quantity == "distance":
            out["configurations"][name] = _run_distance(conf, gs, budget)
            continue
        if quantity != "scalar_curvature":
            raise ValueError(f"unknown quantity {quantity!r} (expected scalar_curvature or distance)")
        rec = {"family": conf["family"], "variants": {}}
        points = np.asarray(conf["points"], dtype=np.float64)
        try:
            variants = _variants(conf)
        except Exception as exc:  # noqa: BLE001 -- reported, not raised
            rec["error"] = f"{type(exc).__name__}: {exc}"
            out["configurations"][name] = rec
            continue
        rec["primary"] = next(iter(variants))
        for label, (desc, fn, transform, note) in variants.items():
            v = {"description": desc, "note": note, "error": None}
            try:
                v.update(_time_variant(fn, transform, [gs.array(p) for p in points], budget))
            except Exception as exc:  # noqa: BLE001
                msg = f"{type(exc).__name__}: {exc}"
                if conf["family"] == "gamma":
                    msg = ("autograd could not differentiate psi = lgamma(eta0+1) - (eta0+1) log(-eta1) four times "
                           f"(metric = Hessian, Riemann = 2 more derivatives): {msg}")
                v["error"] = msg
                v["traceback"] = traceback.format_exc()[-1500:]
            rec["variants"][label] = v
        out["configurations"][name] = rec
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = sys.stdin.read() if not argv or argv[0] == "-" else argv[0]
    print(json.dumps(run(json.loads(text))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
