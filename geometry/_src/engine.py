r"""The engine (layer 9): validation, chunked mapping, status bookkeeping, fallback, budgets, progress, warnings.

Every public batched function is this engine with three strategies passed in, in
the shape of diffrax's integration loop: a *route* (:mod:`geometry._src.routes`,
which float64 formula), the *tiers* (:mod:`geometry._src.tiers`, which arithmetic
recomputes the points whose error estimate exceeds ``rtol``), and a *mapper*
(:mod:`geometry._src.mapping`, how points reach the devices).  The loop knows no
family kind, no route and no tier:

1. validate every argument (one place: :func:`check_family`, :func:`check_rtol`, ...);
2. read the points chunk by chunk (:func:`as_rows`, no copy of a large or
   memory-mapped ``theta``), checking finiteness, the family's domain and its user
   functions per chunk (:func:`block_checker`);
3. map the float64 tier's kernel with the mapper; screen definiteness;
4. hand the points whose estimate exceeds ``rtol`` to each tier in turn
   (:func:`recompute`); every point ends with exactly one status;
5. warn (or return ``CurvatureInfo``) for every point without a trusted value.

Calls with traced values (inside ``jit``/``vmap``/``grad``) take :func:`traced_map`
instead: the same per-point kernel, mapped with ``jax.vmap``, no host-side steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import ddouble, fisher, highprec, routes
from .families import Family, as_real_array, is_traced
from .mapping import LocalMapper
from .linalg import EPS, SAFETY
from .tiers import HIGH_PRECISION, STATUS_NAMES, UNDEFINED, UNTRUSTED, Clock, Float64, Rotated

DEFAULT_RTOL = 1e-8
#: The recomputation tiers of the precision-controlled default, in order.
#: Tried in order on the points the float64 pass could not certify: a second float64 opinion for large
#: softmax heads (same values, sharper estimate), double-double, mpmath.
HIGH_PRECISION_TIERS = (Rotated(routes.rotated_cumulant, 64), ddouble.TIER, highprec.TIER)
#: Largest points per chunk a caller may ask for (per device): beyond it a chunk only costs memory.
MAX_CHUNK_SIZE = 1 << 20
#: Smallest eigenvalue over largest below which a float64 metric counts as indefinite.
INDEFINITE_RTOL = -1e-12
#: For families whose metric may be singular (:attr:`geometry.Family.singular_is_undefined`): a high-precision
#: metric whose smallest eigenvalue is below this fraction of its norm counts as singular.  Near a
#: non-identifiable point the eigenvalue falls like the square of the distance, so this is a relative
#: distance of about 1e-12 -- within a few thousand float64 ulps of the singular set.
SINGULAR_RTOL = 1e-24
#: ... and a float64 ``1/kappa`` (a lower bound of the eigenvalue ratio) below this sends the point to that test.
SINGULAR_SCREEN = 1e-13
#: Normalisation error above which a user definition is refused: ``|log sum p|`` of log-probabilities,
#: ``|integral of p - 1|`` (by quadrature) of a density.
NORMALISATION_ATOL = 1e-9

__all__ = ["CurvatureInfo", "UndefinedCurvatureWarning", "STATUS_NAMES", "DEFAULT_RTOL"]


class UndefinedCurvatureWarning(UserWarning):
    """Some points have no trustworthy curvature (see ``info.status`` and ``info.reasons``)."""


@dataclasses.dataclass(frozen=True)
class CurvatureInfo:
    """Per-point precision record of :func:`geometry.scalar_curvature` (arrays have the leading shape of ``theta``).

    ``rel_error``: estimated relative error of the returned value.
    ``digits``: estimated correct significant digits, ``-log10(rel_error)`` (capped at 16).
    ``status``: 0 float64, 1 recomputed in high precision, 2 undefined, 3 not computed
    (high-precision time budget exhausted), 4 untrusted (float64 not accurate enough and no
    high-precision tier supports the family).
    ``recomputed``: ``status == 1``.  ``dps``: decimal digits of the recomputation: 0 for
    float64 points, 32 for the double-double tier, else the mpmath working precision.
    ``reasons``: ``{flat index: reason}`` for undefined / budget / untrusted points.
    ``route``: the float64 route used first.
    """

    rel_error: np.ndarray
    status: np.ndarray
    dps: np.ndarray
    reasons: dict
    route: str
    rtol: float

    @property
    def recomputed(self):
        return self.status == HIGH_PRECISION

    @property
    def digits(self):
        with np.errstate(divide="ignore"):
            return np.minimum(16.0, -np.log10(np.maximum(self.rel_error, 1e-300)))

    def counts(self) -> dict:
        """``{"total", "float64", "high_precision", "undefined", "not_computed_budget", "untrusted"}``."""
        out = {"total": int(self.status.size)}
        for code, name in STATUS_NAMES.items():
            out[name] = int(np.sum(self.status == code))
        return out


# --------------------------------------------------------------------------- argument validation (one place)


def check_family(family) -> Family:
    if not isinstance(family, Family):
        raise TypeError(
            f"family must be a geometry.Family (build one with geometry.categorical, attention, "
            f"gaussian, exponential_family, ...), got {type(family).__name__}"
        )
    return family


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_chunk_size(chunk_size, what="points per compiled batch"):
    if chunk_size is None:
        return None
    if not _is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or a positive integer ({what}), got {chunk_size!r}")
    if chunk_size > MAX_CHUNK_SIZE:
        raise ValueError(
            f"chunk_size={chunk_size} exceeds MAX_CHUNK_SIZE = {MAX_CHUNK_SIZE}: a chunk that large only costs "
            "memory (every chunk is padded to full size); pass a smaller chunk_size or None for the default"
        )
    return int(chunk_size)


def check_rtol(rtol) -> float:
    if isinstance(rtol, (bool, np.bool_)) or not isinstance(rtol, (float, int, np.floating, np.integer)) or not 0 < rtol < 1:
        raise ValueError(f"rtol must be a relative tolerance in (0, 1), got {rtol!r}")
    return float(rtol)


def check_time_budget(time_budget):
    if time_budget is None:
        return None
    if isinstance(time_budget, (bool, np.bool_)) or not isinstance(time_budget, (float, int, np.floating, np.integer)):
        raise TypeError(f"time_budget must be None (no limit) or a number of seconds >= 0, got {time_budget!r}")
    if not math.isfinite(time_budget) or time_budget < 0:
        raise ValueError(f"time_budget must be None (no limit) or a finite number of seconds >= 0, got {time_budget!r}")
    return float(time_budget)


def check_progress(progress):
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise TypeError(
        f"progress must be None/False (no progress), True (a tqdm bar) or a callable receiving the number of "
        f"points done, got {progress!r}"
    )


def progress_meter(progress, total: int, desc: str):
    """``(bar or None, tick(k))`` for ``progress`` in ``None | bool | callable``."""
    if callable(progress) and not isinstance(progress, bool):
        return None, progress
    if not progress:
        return None, lambda k: None
    from tqdm.auto import tqdm  # noqa: PLC0415 (tqdm is imported only when a bar is asked for)

    bar = tqdm(total=total, desc=desc, unit="pt", unit_scale=True, leave=False, disable=None)
    return bar, bar.update


def as_rows(family: Family, theta, name: str = "theta"):
    """``(rows, lead)``: an ``(N, dim)`` view of ``theta`` (no copy of an ndarray or memmap) and its leading shape.

    Types and shape are checked here; finiteness and the domain per chunk (:func:`block_checker`).
    """
    if isinstance(theta, np.ndarray) and np.issubdtype(theta.dtype, np.floating):
        arr = theta
    else:
        arr = as_real_array(theta, name, f"a real array of shape (..., {family.dim})")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != family.dim:
        raise ValueError(
            f"{name} must have shape (..., {family.dim}) for {family.name} (its last axis holds the "
            f"{family.dim} coordinates), got shape {arr.shape}. "
            + ("For a single point of a 1-d family pass [value]." if family.dim == 1 else "")
        )
    return arr.reshape(-1, family.dim), arr.shape[:-1]


def _all_finite(flat: np.ndarray) -> bool:
    """Whether every entry is finite.  Fast path: a finite sum has no NaN/inf term (an overflowing sum
    of finite terms falls through to the elementwise test)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(flat)):
            return True
    return bool(np.isfinite(flat).all())


def _user_check_kernel(family, theta):
    return family.point_checks(theta)


def block_checker(family: Family, name: str = "theta", total: int | None = None, chunk: int | None = None):
    """``prepare(block, start) -> float64 block``: finiteness, the family's domain and (for families not
    definite by construction) its user functions at every point; ``ValueError`` naming the point.

    Valid points that float64 cannot represent (:meth:`geometry.Family.unrepresentable`) are not
    refused: ``prepare.undefined`` collects ``{global index: reason}`` for them, and the block carries a
    representable stand-in row there, whose result the caller replaces by NaN."""
    user = not family.definite_by_construction

    def prepare(block, start):
        flat = _check_block(block, start)
        beyond = family.unrepresentable(flat) if flat.shape[0] else None
        if beyond is not None:  # valid points float64 cannot represent: reported, the others computed
            mask, reason = beyond
            for i in np.flatnonzero(mask):
                prepare.undefined[start + int(i)] = reason
            keep = np.flatnonzero(~mask)
            flat = flat.copy()
            flat[mask] = flat[keep[0]] if keep.size else 0.0  # a representable stand-in, overwritten later
        if user and flat.shape[0]:
            _check_user_functions(flat, start)
        return flat

    prepare.undefined = {}

    def _check_block(block, start):
        flat = np.asarray(block, np.float64)
        if not _all_finite(flat):
            finite = np.isfinite(flat).all(axis=1)
            i = int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"{name} contains NaN or inf ({int((~finite).sum())} of {flat.shape[0]} points"
                f"{'' if start == 0 and total in (None, flat.shape[0]) else ' in this chunk'}; first at flat "
                f"index {start + i}: {flat[i].tolist()}). Remove or replace those points; curvature needs finite coordinates."
            )
        if flat.shape[0]:
            msg = family.domain_error(flat)
            if msg:
                raise ValueError(f"{name} is outside the domain of {family.name}: {msg}")
        return flat

    def _check_user_functions(flat, start):
        if flat.shape[0]:
            finite, norm = LocalMapper().map(_user_check_kernel, family, flat, lambda b, s: b, None, chunk)
            if not finite.all() and family.lowerable:
                # a metric beyond float64's range (a Gaussian with sigma = 1e-300) is not a bad input:
                # the points whose metric is finite in mpmath go on (the float64 tier hands them on)
                finite = finite | _finite_in_high_precision(family, flat, ~finite)
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                raise ValueError(
                    f"the Fisher metric of {family.name} is not finite at {name}[{start + i}] = {flat[i].tolist()} "
                    f"({int((~finite).sum())} of {flat.shape[0]} points): {family.defined_by} returns NaN/inf there or "
                    "is not twice differentiable; check its domain (e.g. log of a negative number)"
                )
            if norm.max() > NORMALISATION_ATOL:
                i = int(np.argmax(norm))
                raise ValueError(
                    f"{family.defined_by} of {family.name} is not normalised at {name}[{start + i}] = {flat[i].tolist()}: "
                    f"normalisation error {norm[i]:.3e} (tolerance NORMALISATION_ATOL = {NORMALISATION_ATOL:g}); {family.normalisation_fix}"
                )
        return flat

    return prepare


#: At most this many non-finite float64 metrics of one chunk are re-examined in mpmath.
MAX_HIGH_PRECISION_DOMAIN_CHECKS = 64


def _finite_in_high_precision(family, flat, mask):
    """Points of ``mask`` whose metric is finite in mpmath.  Only the first
    MAX_HIGH_PRECISION_DOMAIN_CHECKS are examined; when all of those are finite, the rest are passed
    on too (the mpmath tier reports any of them it cannot compute, with the reason)."""
    out = np.zeros(flat.shape[0], bool)
    examined = np.flatnonzero(mask)[:MAX_HIGH_PRECISION_DOMAIN_CHECKS]
    real = lambda v: isinstance(v, highprec.mpmath.mpf) and not highprec.mpmath.isnan(v)  # noqa: E731 (complex: log of < 0)
    for i in examined:
        try:
            values = highprec.defining_values(family, flat[i])
            if values is None or not all(real(v) for v in values):
                continue
            g = highprec.metric(family, flat[i])
        except (ArithmeticError, ValueError, TypeError, ZeroDivisionError, NotImplementedError):
            continue
        out[i] = all(real(v) and highprec.mpmath.isfinite(v) for v in g)
    if out[examined].all():
        out |= mask
    return out


def check_outputs(family: Family):
    """Output shapes of user functions (``ValueError`` naming the function); once per call."""
    msg = family.output_errors()
    if msg:
        raise ValueError(msg)


# --------------------------------------------------------------------------- traced calls


def traced_map(kernel: Callable, family: Family, theta):
    """``kernel`` over the leading axes of a traced ``theta`` with ``jax.vmap`` (no host-side steps)."""
    theta = jnp.asarray(theta, jnp.float64)
    if theta.ndim == 0 or theta.shape[-1] != family.dim:
        raise ValueError(f"theta must have shape (..., {family.dim}) for {family.name}, got shape {theta.shape}")
    lead = theta.shape[:-1]
    flat = theta.reshape(-1, family.dim)
    out = jax.vmap(lambda t: kernel(family, t))(flat)
    return jax.tree_util.tree_map(lambda a: a.reshape(lead + a.shape[1:]), out)


def tracing(family, theta) -> bool:
    return is_traced(family) or is_traced(theta)


# --------------------------------------------------------------------------- per-point quantities


def _validated_map(kernel: Callable, family, theta, chunk_size, mapper=None):
    """``(rows, lead, outputs, {index: reason} of unrepresentable points)`` of ``kernel`` over validated points."""
    chunk_size = check_chunk_size(chunk_size)
    rows, lead = as_rows(family, theta)
    if rows.shape[0]:
        check_outputs(family)
    prepare = block_checker(family, chunk=chunk_size)
    out = (mapper or LocalMapper()).map(kernel, family, rows, prepare, None, chunk_size)
    return rows, lead, out, prepare.undefined


def _nan_at(a, idx):
    a = np.array(a, dtype=np.result_type(a.dtype, np.float64))
    a[idx] = np.nan
    return a


def pointwise(kernel: Callable, family, theta, chunk_size=None, what: str | None = None, mapper=None):
    """``kernel(family, theta)`` at every point, validated, chunked; warns about non-finite results of ``what``."""
    family = check_family(family)
    if tracing(family, theta):
        return traced_map(kernel, family, theta)
    rows, lead, out, undefined = _validated_map(kernel, family, theta, chunk_size, mapper)
    if undefined:
        idx = np.fromiter(undefined, int)
        out = jax.tree_util.tree_map(lambda a: _nan_at(a, idx), out)
        first = next(iter(undefined.items()))
        warnings.warn(
            f"{what or kernel.__name__}: {idx.size} of {rows.shape[0]} points are NaN (first: theta[{first[0]}]): {first[1]}",
            UndefinedCurvatureWarning,
            stacklevel=3,
        )
    if what is not None and out.size:
        bad = ~np.isfinite(out.reshape(out.shape[0], -1)).all(axis=1)
        bad[np.fromiter(undefined, int)] = False  # reported above
        if bad.any():
            warnings.warn(
                f"{what}: {int(bad.sum())} of {rows.shape[0]} points are NaN/inf in float64 (first: theta[{int(np.flatnonzero(bad)[0])}]); "
                "at such low entropy the float64 metric underflows or is numerically singular and this tensor has no "
                "precision control. geometry.scalar_curvature(..., return_info=True) gives precision-controlled curvature.",
                UndefinedCurvatureWarning,
                stacklevel=3,
            )
    return jax.tree_util.tree_map(lambda a: a.reshape(lead + a.shape[1:]), out)


def metric_kernel(family, theta):
    """The default float64 metric at one point (one function object: its compiled programs are shared)."""
    return fisher.metric(family, theta)


def raise_if_indefinite(family: Family, rows, lam_rel, lam_override=None, singular=None):
    """Raise for points whose metric is not positive definite; return points that only *looked* indefinite.

    For families whose metric is semi-definite by construction (:attr:`geometry.Family.singular_is_undefined`)
    a metric that is not definite is *singular* (non-identifiable parameters), not bad input: with a
    dict ``singular`` those points are added to it as ``{index: reason}`` instead of raising.

    ``lam_rel`` is the smallest over largest eigenvalue per point, or NaN where it is unknown (the
    route's Cholesky factorisation failed: the eigenvalues are computed here).  A float64 metric built
    with cancellation (a narrow Gaussian far from 0) can look indefinite while the true metric is
    definite, so for families that lower to mpmath the verdict is confirmed in high precision first.
    """
    lam_rel = np.array(lam_rel, dtype=np.float64)
    unknown = np.flatnonzero(np.isnan(lam_rel))
    if unknown.size:
        pts = np.asarray(rows[unknown], np.float64)
        lam = np.linalg.eigvalsh(LocalMapper().map(metric_kernel, family, pts, lambda b, s: b))
        lam_rel[unknown] = lam[:, 0] / np.max(np.abs(lam), axis=1)
    # a semi-definite family's singular points are not negative: screen them by the float64 condition number
    screen = SINGULAR_SCREEN if (singular is not None and family.singular_is_undefined) else INDEFINITE_RTOL
    bad = np.flatnonzero(~(lam_rel > screen))
    looked = []
    for i in bad:
        i = int(i)
        point = np.asarray(rows[i], np.float64)
        if lam_override is None and family.lowerable:
            try:
                gm = highprec.metric(family, point)
                definite, lam0 = highprec.is_positive_definite(gm)
                if family.singular_is_undefined:  # entries known to ~1e-12 of the largest: resolve singular from tiny
                    definite = definite and lam0 > SINGULAR_RTOL * float(highprec.mpmath.mnorm(gm, 1))
            except highprec.PrecisionExhausted:
                definite, lam0 = False, float("nan")
            if definite:
                looked.append(i)
                continue
        else:
            lam0 = lam_override if lam_override is not None else float(np.linalg.eigvalsh(np.asarray(fisher.metric(family, jnp.asarray(point))))[0])
        if singular is not None and family.singular_is_undefined:
            singular[i] = (f"undefined: the Fisher metric is singular here (smallest eigenvalue {lam0:.3e}): the parameters "
                           f"are not identifiable at this point ({family.definiteness_requirement})")
            continue
        raise ValueError(
            f"the Fisher metric of {family.name} is not positive definite at theta[{i}] = {point.tolist()}: smallest "
            f"eigenvalue {lam0:.3e}; {bad.size} of {rows.shape[0]} points looked indefinite in float64. "
            f"For this family {family.definiteness_requirement}; check its sign and domain ({family.defined_by})."
        )
    return np.asarray(looked, dtype=int)


def controlled_metric(family, theta, chunk_size=None):
    """:func:`geometry.fisher_metric`'s default: float64, with points whose construction loses more than
    6 digits (:func:`geometry._src.fisher.metric_diagnostics`) recomputed in mpmath."""
    family = check_family(family)
    if tracing(family, theta):
        return traced_map(metric_kernel, family, theta)
    rows, lead, (g, amp, lam_rel), undefined = _validated_map(fisher.metric_diagnostics, family, theta, chunk_size)
    idx = np.fromiter(undefined, int)
    g, amp, lam_rel = _nan_at(g, idx), _nan_at(amp, idx), np.where(np.isin(np.arange(rows.shape[0]), idx), 1.0, lam_rel)
    suspect = np.flatnonzero(~(SAFETY * EPS * amp <= 1e-10) | ~(lam_rel > INDEFINITE_RTOL))
    if suspect.size and family.lowerable:
        for i in suspect:
            gm = highprec.metric(family, np.asarray(rows[i], np.float64))
            definite, lam = highprec.is_positive_definite(gm)
            if not definite:
                raise_if_indefinite(family, rows, np.where(np.arange(rows.shape[0]) == i, -1.0, 1.0), lam_override=lam)
            g[i] = np.array(gm.tolist(), dtype=np.float64)
    elif suspect.size:
        raise_if_indefinite(family, rows, lam_rel)
        warnings.warn(
            f"fisher_metric of {family.name}: {suspect.size} points lose more than 6 digits in J^T (hess psi) J and "
            "the family is a plain JAX function, so they cannot be recomputed in high precision",
            UndefinedCurvatureWarning,
            stacklevel=3,
        )
    return g.reshape(lead + g.shape[1:])


# --------------------------------------------------------------------------- scalar curvature


def recompute(family, rows, idx, r, rel, status, dps, reasons, rtol, clock, tiers, mapper):
    """Hand points ``idx`` to each tier that supports ``family`` in turn; accept values within ``rtol``.

    Every point leaves with exactly one status: accepted by a tier, settled by a tier
    (undefined / budget, with its reason), or untrusted when no tier could deliver it.
    """
    for tier in tiers:
        if not idx.size:
            return
        if not tier.supports(family):
            continue
        # a tier that re-judges the float64 values (tiers.Rotated) gets them with their estimates
        extra = {"prior": r[idx], "prior_error": rel[idx]} if getattr(tier, "uses_prior", False) else {}
        out = tier.evaluate(family, np.asarray(rows[idx], np.float64), rtol, clock, mapper, **extra)
        with np.errstate(invalid="ignore"):
            good = np.isfinite(out.value) & (out.rel_error <= rtol)
        done = idx[good]
        r[done], rel[done], status[done], dps[done] = out.value[good], out.rel_error[good], tier.status, out.dps[good]
        settled = np.zeros(idx.size, bool)
        for j, (code, reason) in out.settled.items():
            i = int(idx[j])
            status[i], reasons[i], r[i] = code, reason, np.nan
            if code == UNDEFINED:
                rel[i] = np.inf
            settled[j] = True
        idx = idx[~good & ~settled]
    for i in idx:
        status[i] = UNTRUSTED
        hint = (
            f"{family.name} is a plain JAX function that cannot be lowered to mpmath; write it as f(theta, xp) to enable the fallback"
            if not family.lowerable
            else f"no high-precision tier supports {family.name}"
        )
        reasons[int(i)] = f"float64 estimate of relative error {rel[i]:.1e} exceeds rtol={rtol:g} and {hint}"
        r[i] = np.nan


@dataclasses.dataclass
class Timings:
    """Seconds spent by one :func:`curvature` call in its float64 pass and in the recomputation tiers."""

    float64: float = 0.0
    fallback: float = 0.0


def curvature(family, theta, *, method=None, rtol=DEFAULT_RTOL, chunk_size=None, time_budget=None,
              progress=None, mapper=None, tiers=HIGH_PRECISION_TIERS):
    """The engine behind :func:`geometry.scalar_curvature` and :func:`geometry.sweep`.

    Returns ``(R, CurvatureInfo, Timings)`` with ``R`` of the leading shape of ``theta``.
    ``mapper``: :class:`~geometry._src.mapping.LocalMapper` (default) or a sharded mapper;
    ``method=None`` checks the float64 estimate against ``rtol`` and recomputes through
    ``tiers``; a named route returns its float64 values, non-finite ones as undefined.
    """
    fam = check_family(family)
    route = routes.select(fam, method)
    rtol = check_rtol(rtol)
    time_budget = check_time_budget(time_budget)
    chunk_size = check_chunk_size(chunk_size)
    progress = check_progress(progress)
    rows, lead = as_rows(fam, theta)
    mapper = mapper or LocalMapper()
    n = rows.shape[0]
    r, rel = np.zeros(n), np.zeros(n)
    status, dps = np.zeros(n, np.int8), np.zeros(n, np.int32)
    reasons: dict = {}
    timings = Timings()
    chunk = chunk_size or routes.default_chunk(fam, route)
    prepare = block_checker(fam, total=n, chunk=min(chunk, routes.default_chunk(fam, routes.LEVI_CIVITA)))
    bar, tick = progress_meter(progress, n, f"curvature {fam.name} [{route.name}]")
    try:
        if n:
            check_outputs(fam)
        t0 = time.perf_counter()
        if fam.dim == 1:  # R = 0 identically; only the metric must be definite
            if not fam.definite_by_construction and n:
                g = mapper.map(metric_kernel, fam, rows, prepare, None, chunk)
                lam = np.linalg.eigvalsh(g)
                raise_if_indefinite(fam, rows, lam[:, 0] / np.max(np.abs(lam), axis=1))
            elif n:
                for start in range(0, n, chunk):
                    prepare(rows[start : start + chunk], start)
            tick(n)
        elif n:
            first = Float64(routes.route_kernel(route, checked=method is None), chunk, route.workers(fam))
            out = first.evaluate(fam, rows, rtol, None, mapper, prepare=prepare, progress=tick)
            r, rel = out.value, out.rel_error
            if not fam.definite_by_construction:
                # raises for truly indefinite metrics; points whose float64 metric only looked indefinite recompute
                rel[raise_if_indefinite(fam, rows, out.extra[0], singular=prepare.undefined)] = np.inf
        for i, reason in prepare.undefined.items():  # valid points beyond float64, singular metrics: reported, not refused
            r[i], rel[i], status[i], reasons[i] = np.nan, np.inf, UNDEFINED, reason
        timings.float64 = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()
    if fam.dim > 1 and n:
        t0 = time.perf_counter()
        if method is None:
            bad = np.flatnonzero(~(rel <= rtol) & (status != UNDEFINED))
            if bad.size:
                recompute(fam, rows, bad, r, rel, status, dps, reasons, rtol, Clock(time_budget), tiers, mapper)
        else:
            for i in np.flatnonzero(~np.isfinite(r) & (status != UNDEFINED)):
                status[i] = UNDEFINED
                reasons[int(i)] = f"raw {route.name} route gave a non-finite value (singular or overflowing metric in float64)"
                r[i] = np.nan
        timings.fallback = time.perf_counter() - t0
    info = CurvatureInfo(rel.reshape(lead), status.reshape(lead), dps.reshape(lead), reasons, route.name, rtol)
    return np.asarray(r, np.float64).reshape(lead), info, timings


def warn_undefined(info: CurvatureInfo, caller: str, stacklevel: int = 3):
    """One :class:`UndefinedCurvatureWarning` naming the first point without a trusted value."""
    if info.reasons:
        first = next(iter(info.reasons.items()))
        warnings.warn(
            f"{len(info.reasons)} of {info.status.size} points have no trustworthy curvature (NaN); first: point {first[0]}: "
            f"{first[1]}. Call {caller}(..., return_info=True) for the per-point status.",
            UndefinedCurvatureWarning,
            stacklevel=stacklevel + 1,
        )

