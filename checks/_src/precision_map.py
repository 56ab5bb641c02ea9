r"""Precision map: digits of accuracy of naive float64 curvature and of the toolkit's default.

Why this check exists
---------------------
Along a ray toward a vertex of the simplex the entropy falls like :math:`e^{-ct}`,
the Fisher metric degenerates (its smallest eigenvalue is :math:`\sim p_{\min}`) and
the scalar curvature becomes a difference of two huge numbers,
:math:`R = \tfrac14(|T|_g^2 - |\tau|_g^2)` with :math:`|T|_g^2, |\tau|_g^2 \sim 1/p_{\min}`
(Totaro 2004, eq. 1; see :mod:`geometry._src.routes`).  Naive float64
(autodiff Levi-Civita, or the autodiff Hessian formula) therefore loses about
:math:`\log_{10}(1/p_{\min}) + \log_{10}\kappa(g)` digits and, once that exceeds 16,
returns noise of size :math:`\sim 1/p_{\min}`, which looks like a curvature blow-up.
The categorical simplex has :math:`R = (n-1)(n-2)/4` *exactly* at every point
(the sphere of radius 2; Amari & Nagaoka 2000, sec. 2.5), so any growth there is an
artefact.

What is measured
----------------
For each shipped family and one ray per family, at ``RAY_POINTS`` points whose
entropies are log-spaced from :math:`\log n` (the uniform distribution, ``t = 0``)
down to ``RAY_H_MIN = 1e-30``:

* ``digits = -log10(|R - R_ref| / |R_ref|)`` (capped at ``DIGITS_CAP``; a NaN/inf
  result, or a ``ValueError`` on a valid point, counts as 0 digits) for
  ``method="levi-civita"``, ``method="hessian"`` (naive float64, no fallback; full run
  only) and the default (``method=None``, precision-controlled);
* ``R_ref``: the mpmath oracle :func:`geometry.scalar_curvature_mp` evaluated at two
  working precisions ``dps`` and ``dps + ORACLE_EXTRA_DPS``; the reference is trusted
  only when they agree to ``ORACLE_AGREEMENT_DIGITS`` digits (and, for the categorical
  family, when it equals the exact :math:`(n-1)(n-2)/4`).

The Gaussian :math:`N(\mu, \sigma^2)` has no vertices and a differential entropy that
goes to :math:`-\infty`; its "ray" is :math:`\mu = 1`, :math:`\sigma` from 1 down to
``GAUSSIAN_SIGMA_MIN``, and its panel's x axis is :math:`\sigma` (true :math:`R = -1`).

Verdict: ``holds`` if the default delivers at least ``DIGITS_REQUIRED`` digits at
every point of every family (points the default reports as undefined or not computed
count as 0 digits); ``undefined`` if some oracle value could not be trusted.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

import geometry

from .registry import FAILS, HOLDS, UNDEFINED, Result, Threshold, register

#: the default must deliver at least this many correct significant digits at every point
DIGITS_REQUIRED = 8.0
#: digits are capped here (float64 carries ~15.9 significant digits)
DIGITS_CAP = 16.0
#: an oracle value is trusted when its two evaluations agree to this many digits
ORACLE_AGREEMENT_DIGITS = 30.0
#: second oracle evaluation uses this many more decimal digits than the first
ORACLE_EXTRA_DPS = 40
#: oracle working precision before the digits lost at the point are added (see :func:`oracle_dps`)
ORACLE_BASE_DPS = 60
#: naive float64 "confirms a blow-up" where |R_naive| exceeds |R_true| by this factor
PHANTOM_BLOWUP_FACTOR = 10.0
RAY_H_MIN = 1e-30
RAY_POINTS, RAY_POINTS_QUICK = 24, 12
GAUSSIAN_SIGMA_MIN = 1e-30
#: high-precision time budget of the default per family (seconds); exceeded points are
#: reported as not computed, which costs them their digits (0) and the verdict
TIME_BUDGET = 60.0
#: t grid on which the ray entropy is tabulated to place the points
T_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1e5, 4000)])
METHODS = ("levi-civita", "hessian", "default")
#: --quick measures naive Levi-Civita and the default only (each route compiles once per family: ~2 s each)
METHODS_QUICK = ("levi-civita", "default")
POINT_KEYS = ("total", "float64", "high_precision", "undefined", "not_computed_budget", "untrusted")


def _families(ctx):
    """``[(label, family)]``: the shipped families, random keys from the seed."""
    rng = ctx.rng(800)
    keys4 = rng.normal(size=(4, 2))
    keys16 = rng.normal(size=(16, 2))
    heads = [rng.normal(size=(4, 2)), rng.normal(size=(4, 2))]
    return [
        ("categorical n=3", geometry.categorical(3)),
        ("categorical n=5", geometry.categorical(5)),
        ("attention n=4 m=2", geometry.attention(keys4)),
        ("attention n=16 m=2", geometry.attention(keys16)),
        ("multihead h=2 n=4 m=2", geometry.multihead_attention(heads)),
        ("gaussian", geometry.gaussian()),
    ]


def exact_curvature(family) -> float | None:
    """Closed form where one exists: categorical :math:`(n-1)(n-2)/4`, Gaussian :math:`-1`."""
    if family.name.startswith("categorical"):
        n = family.dim + 1
        return (n - 1) * (n - 2) / 4
    if family.name.startswith("gaussian"):
        return -1.0
    return None


def ray_points(family, rng, k):
    r"""Points ``x = t v`` with entropies log-spaced from :math:`H(0) = \log n` to ``RAY_H_MIN``.

    ``v`` is a random unit direction along which the entropy decreases monotonically
    through the whole range (a generic direction goes to the vertex of
    :math:`\arg\max_i k_i\cdot v`).  Returns ``(x (k, dim), H (k,))``.
    """
    for _ in range(50):
        v = rng.normal(size=family.dim)
        v /= np.linalg.norm(v)
        h = np.asarray(geometry.entropy(family, T_GRID[:, None] * v))
        if not (np.all(np.diff(h) <= 0) and h[-1] < RAY_H_MIN):
            continue
        targets = np.geomspace(h[0], RAY_H_MIN, k)
        with np.errstate(divide="ignore"):  # H underflows to 0 far out: log 0 = -inf sorts first, harmless
            t = np.interp(np.log(targets), np.log(h[::-1]), T_GRID[::-1])
        t[0] = 0.0
        x = t[:, None] * v
        return x, np.asarray(geometry.entropy(family, x))
    raise RuntimeError(f"no direction with monotone entropy down to {RAY_H_MIN:g} found for {family.name}")


def oracle_dps(family, theta) -> int:
    r"""Working precision for the oracle: ``ORACLE_BASE_DPS`` plus three times the decades lost.

    Softmax families lose about :math:`2\log_{10}(1/p_{\min})` digits (cancellation
    :math:`\sim 1/p_{\min}` times conditioning :math:`\sim 1/p_{\min}`), with
    :math:`\log p_{\min} = -(z_{\max} - z_{\min})` read off the logits; note that
    :math:`p_{\min}` can be far below :math:`H` (a ray at :math:`H = 10^{-30}` may have
    :math:`p_{\min} = 10^{-150}`).  The Gaussian in natural coordinates loses about
    :math:`4\log_{10}(1/\sigma)` digits (:math:`\eta_2 = -1/(2\sigma^2)`).
    """
    theta = np.asarray(theta, np.float64)
    if family.kind == "softmax-linear":
        spread = max(float(np.ptp(h.scale * (h.keys @ theta))) for h in family.heads)
        decades = spread / math.log(10)
    else:
        decades = 2 * max(0.0, -math.log10(theta[1]), math.log10(max(abs(theta[0]), 1.0)))
    return int(ORACLE_BASE_DPS + 3 * decades)


def oracle(family, theta):
    """``(R_ref as float, agreement digits)`` from :func:`geometry.scalar_curvature_mp` at two precisions."""
    dps = oracle_dps(family, theta)
    a = geometry.scalar_curvature_mp(family, theta, dps)
    b = geometry.scalar_curvature_mp(family, theta, dps + ORACLE_EXTRA_DPS)
    with mpmath.workdps(dps + ORACLE_EXTRA_DPS):
        if b == 0:
            agree = float(dps) if a == 0 else 0.0
        else:
            diff = abs(a - b) / abs(b)
            agree = float(-mpmath.log10(diff)) if diff > 0 else float(dps)
    return float(b), agree


def digits(r, ref):
    """Correct significant digits of ``r`` against ``ref``: ``-log10(|r - ref|/|ref|)``, in ``[0, DIGITS_CAP]``."""
    r = np.asarray(r, np.float64)
    ref = np.asarray(ref, np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.abs(r - ref) / np.maximum(np.abs(ref), 1e-300)
        d = np.where(rel > 0, -np.log10(rel), DIGITS_CAP)
    d = np.where(np.isfinite(r), d, 0.0)
    return np.clip(np.nan_to_num(d, nan=0.0), 0.0, DIGITS_CAP) + 0.0  # + 0.0: no -0.0 in the report


def _curvature(family, x, method):
    """``(R, counts, errors)``; a ``ValueError`` on the batch is retried point by point and a point that
    still raises gets NaN, is counted as ``undefined`` and keeps its message in ``errors``."""
    kwargs = dict(method=None if method == "default" else method, return_info=True,
                  time_budget=TIME_BUDGET if method == "default" else None)
    try:
        r, info = geometry.scalar_curvature(family, x, **kwargs)
        return np.asarray(r, np.float64), info.counts(), {}
    except ValueError:
        pass
    r = np.full(len(x), np.nan)
    counts = {key: 0 for key in POINT_KEYS}
    errors = {}
    for i, xi in enumerate(x):
        # the point repeated to the batch's shape reuses the compiled program (a (1, dim) call would compile anew)
        try:
            ri, info = geometry.scalar_curvature(family, np.repeat(xi[None], len(x), axis=0), **kwargs)
            r[i] = ri[0]
            counts[geometry.STATUS_NAMES[int(info.status[0])]] += 1
        except ValueError as exc:
            errors[i] = f"ValueError: {exc}"
            counts["undefined"] += 1
        counts["total"] += 1
    return r, counts, errors


def measure_family(label, family, x, h, ref, methods=METHODS):
    """Curvature of ``family`` at ``x`` by the three methods; digits against ``ref``; the counts."""
    import warnings

    out = dict(family=label, H=h.tolist(), R_ref=ref.tolist())
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", geometry.UndefinedCurvatureWarning)
            r, counts, errors = _curvature(family, x, method)
        out[method] = dict(R=r.tolist(), digits=digits(r, ref).tolist(), counts=counts,
                           errors={str(k): v for k, v in errors.items()})
    return out


def _phantom(row):
    """Where naive Levi-Civita reports ``|R| > PHANTOM_BLOWUP_FACTOR |R_true|``: first x and the largest ratio."""
    r = np.asarray(row["levi-civita"]["R"], np.float64)
    ref = np.asarray(row["R_ref"], np.float64)
    xv = row["x_values"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(r) / np.abs(ref)
    big = np.flatnonzero(np.isfinite(ratio) & (ratio > PHANTOM_BLOWUP_FACTOR))
    if not big.size:
        return None
    j = int(big[np.argmax(ratio[big])])
    return dict(first_x=xv[int(big[0])], max_ratio=float(ratio[j]), R_naive=float(r[j]), x_at_max=xv[j], R_true=float(ref[j]))


@register("precision-map", "(toolkit) Curvature numbers are correct at every entropy: naive float64 vs the precision-controlled default", order=90,
          measured="The precision-controlled default keeps at least {worst_default_digits:.1f} correct digits of R at every point from H = log n down to {RAY_H_MIN:g} nats (required: {DIGITS_REQUIRED:g}); naive float64 autodiff falls to {families.levi-civita.digits_min|min:.1f} digits, with a phantom blow-up in {families.phantom_blowup|known} of {families|len} families.")
def precision_map(ctx) -> Result:
    thresholds = [
        Threshold("DIGITS_REQUIRED", DIGITS_REQUIRED, "holds if the default has >= value correct digits at every point (vs mpmath)"),
        Threshold("ORACLE_AGREEMENT_DIGITS", ORACLE_AGREEMENT_DIGITS, "oracle trusted if its two precisions agree to >= value digits"),
        Threshold("RAY_H_MIN", RAY_H_MIN, "rays run from H = log n down to value (nats)"),
        Threshold("PHANTOM_BLOWUP_FACTOR", PHANTOM_BLOWUP_FACTOR, "naive 'confirms a blow-up' where |R_naive| > value * |R_true|"),
    ]
    k = RAY_POINTS_QUICK if ctx.quick else RAY_POINTS
    fams = _families(ctx)
    rows, points = [], {key: 0 for key in POINT_KEYS}
    bar = ctx.bar(total=len(fams), desc="precision map")
    for i, (label, fam) in enumerate(fams):
        if fam.kind == "exponential":  # Gaussian: sigma from 1 down to GAUSSIAN_SIGMA_MIN at mu = 1
            sigma = np.geomspace(1.0, GAUSSIAN_SIGMA_MIN, k)
            x = np.stack([np.ones(k), sigma], axis=1)
            h = np.asarray(geometry.entropy(fam, x))
            axis_vals = sigma
        else:
            x, h = ray_points(fam, ctx.rng(810 + i), k)
            axis_vals = h
        refs, agree = zip(*(oracle(fam, xi) for xi in x))
        ref = np.array(refs)
        exact = exact_curvature(fam)
        methods = METHODS_QUICK if ctx.quick else METHODS
        row = measure_family(label, fam, x, h, ref, methods)
        row.update(x_axis="sigma" if fam.kind == "exponential" else "H", x_values=np.asarray(axis_vals).tolist(),
                   oracle_agreement_digits_min=float(min(agree)), exact=exact,
                   oracle_vs_exact_digits_min=None if exact is None else float(digits(ref, np.full(k, exact)).min()))
        for m in methods:
            d = np.asarray(row[m]["digits"])
            row[m]["digits_min"] = float(d.min())
            below = np.flatnonzero(d < DIGITS_REQUIRED)
            row[m]["first_x_below_required"] = float(axis_vals[below[0]]) if below.size else None
        row["phantom_blowup"] = _phantom(row)
        for key, v in row["default"]["counts"].items():
            points[key] += v
        rows.append(row)
        bar.update(1)
    bar.close()

    from figures.precision_map import precision_map_figure

    fig = precision_map_figure(rows, ctx.figure_path("precision_map.png"), DIGITS_REQUIRED, PHANTOM_BLOWUP_FACTOR)
    worst_default = min(r["default"]["digits_min"] for r in rows)
    oracle_ok = all(r["oracle_agreement_digits_min"] >= ORACLE_AGREEMENT_DIGITS for r in rows) and all(
        r["oracle_vs_exact_digits_min"] is None or r["oracle_vs_exact_digits_min"] >= DIGITS_CAP for r in rows)
    if not oracle_ok:
        verdict = UNDEFINED
    else:
        verdict = HOLDS if worst_default >= DIGITS_REQUIRED else FAILS
    phantoms = [(r["family"], r["phantom_blowup"], r["x_axis"]) for r in rows if r["phantom_blowup"]]
    summary = (
        f"Default: worst {worst_default:.1f} digits over {points['total']} points (required >= {DIGITS_REQUIRED:g}; "
        f"{points['float64']} float64, {points['high_precision']} high precision (double-double or mpmath), {points['undefined']} undefined, "
        f"{points['not_computed_budget']} budget). Naive Levi-Civita worst "
        f"{min(r['levi-civita']['digits_min'] for r in rows):.1f} digits"
        + (f", naive Hessian worst {min(r['hessian']['digits_min'] for r in rows):.1f}. " if not ctx.quick else ". ")
        + ("Phantom blow-ups of naive float64: " + "; ".join(
            f"{name}: R_naive = {p['R_naive']:.2g} vs true {p['R_true']:.3g} at {axis} = {p['x_at_max']:.1e}"
            for name, p, axis in phantoms) + "."
           if phantoms else "No phantom blow-up of naive float64 on these rays.")
        + ("" if oracle_ok else " Some oracle values could not be trusted (see measurements).")
    )
    measurements = dict(families=rows, worst_default_digits=worst_default, oracle_trusted=oracle_ok)
    return Result(verdict, thresholds, measurements, [fig.split("/")[-1]], points, summary)
