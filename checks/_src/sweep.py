r"""Per-family sweeps of (H, R), shared by the checks, and the user family registry.

A sweep samples points of a family with a seeded generator, computes the
precision-controlled scalar curvature (``geometry.scalar_curvature(...,
return_info=True)``: every point is float64-accurate to ``rtol = 1e-8``,
recomputed in mpmath, or reported as undefined / not computed) and the entropy.
The result of a sweep is cached per ``(seed, quick)`` so that several checks
share one measurement; each check still reports the point counts it used.

Users add families with :func:`register_family`; they then appear in every
sweep-based check (linear-law, decreasing-in-entropy, high-entropy-negative,
lemma-any-fisher-metric) and in the report.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

import geometry

#: high-precision (mpmath) time budget per family sweep, seconds; points beyond it are counted
#: as ``not_computed_budget``, never silently dropped.
SWEEP_TIME_BUDGET = 60.0
SWEEP_POINTS = 1500
SWEEP_POINTS_QUICK = 200
ATTENTION_N = (4, 8, 16, 32)
ATTENTION_M = (2, 3)
ATTENTION_SEEDS = 3
ATTENTION_SEEDS_QUICK = 1
#: query radius |x| is log-uniform in this range (times sqrt(m)); the upper end keeps the
#: sweep mostly in float64 (low-entropy rays are the job of the low-entropy-limit check).
QUERY_RADIUS = (0.05, 4.0)
LOGIT_RADIUS = (0.05, 4.0)


@dataclasses.dataclass(frozen=True)
class UserFamily:
    name: str
    family: geometry.Family
    sampler: Callable[[np.random.Generator, int], np.ndarray]  # (rng, n) -> (n, dim) points
    group: str = "user"


_USER: dict[str, UserFamily] = {}


def register_family(name: str, family, sampler: Callable, group: str = "user") -> None:
    """Add a family to every sweep-based check.

    ``sampler(rng, n)`` must return ``n`` points of shape ``(n, family.dim)`` inside the
    family's domain, covering the entropies you care about; ``family`` must have an
    entropy (``geometry.exponential_family(..., entropy=...)``).  Example::

        fam = geometry.exponential_family(lambda eta, xp: -xp.log(-eta[0]), dim=1,
                                          entropy=lambda eta, xp: 1 - xp.log(-eta[0]), name="exponential")
        checks.register_family("exponential", fam, lambda rng, n: -rng.uniform(0.1, 10, (n, 1)))
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(family, geometry.Family):
        raise TypeError(f"family must be a geometry.Family (e.g. geometry.exponential_family(...)), got {type(family).__name__}")
    if not family.has_entropy:
        raise ValueError(f"family {family.name!r} has no entropy; pass entropy=... when you build it")
    if not callable(sampler):
        raise TypeError("sampler must be a function (rng, n) -> array of shape (n, dim)")
    pts = np.asarray(sampler(np.random.default_rng(0), 4))
    if pts.shape != (4, family.dim):
        raise ValueError(f"sampler(rng, 4) must return shape (4, {family.dim}), got {pts.shape}")
    _USER[name] = UserFamily(name, family, sampler, group)
    _CACHE.clear()


def unregister_family(name: str) -> None:
    _USER.pop(name, None)
    _CACHE.clear()


def user_families() -> dict:
    return dict(_USER)


# --------------------------------------------------------------------------- entropy


def softmax_log_probs(z):
    r"""Numpy ``log softmax`` accurate to relative precision in every entry (``log p_max = -log1p(s)``)."""
    z = np.asarray(z, np.float64)
    imax = np.argmax(z, axis=-1)[..., None]
    d = z - np.take_along_axis(z, imax, axis=-1)
    e = np.exp(d)
    np.put_along_axis(e, imax, 0.0, axis=-1)
    return d - np.log1p(np.sum(e, axis=-1, keepdims=True))


def entropy(family, theta) -> np.ndarray:
    r"""Entropy in nats, :math:`H = -\sum_x p\log p`.

    Softmax families are evaluated here in eager numpy with every term to full
    relative precision (no jit compile per family; ``tests/test_checks_sweep.py``
    checks agreement with ``geometry.entropy``, which before commit 27ab26a lost
    the low-entropy regime under jit: 9.2e-16 for a true 4.8e-27).  Other
    families use ``geometry.entropy``.
    """
    theta = np.asarray(theta, np.float64)
    if family.kind != "softmax-linear":
        return np.asarray(geometry.entropy(family, theta), np.float64)
    total = np.zeros(theta.shape[:-1])
    for h in family.heads:
        lp = softmax_log_probs(h.scale * np.einsum("nm,...m->...n", h.keys, theta))
        total = total - np.sum(np.exp(lp) * lp, axis=-1)
    return total


def probs(family, theta) -> list:
    """Per-head probability vectors ``[(…, n_h)]`` of a softmax family."""
    theta = np.asarray(theta, np.float64)
    return [np.exp(softmax_log_probs(h.scale * np.einsum("nm,...m->...n", h.keys, theta))) for h in family.heads]


# --------------------------------------------------------------------------- curvature with accounting


def add_counts(total: dict, counts: dict) -> dict:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + int(v)
    return total


def curvature(family, theta, time_budget=SWEEP_TIME_BUDGET):
    """``(R, counts)`` from the precision-controlled default route."""
    r, info = geometry.scalar_curvature(family, theta, return_info=True, time_budget=time_budget)
    return np.asarray(r, np.float64), info.counts()


@dataclasses.dataclass
class FamilySweep:
    name: str
    group: str  # "categorical", "tempered", "attention", "multihead", "gaussian", "user"
    family: object
    theta: np.ndarray
    H: np.ndarray
    R: np.ndarray
    counts: dict


def _radius_sample(rng, n, dim, lo, hi):
    u = rng.normal(size=(n, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = np.exp(rng.uniform(np.log(lo), np.log(hi), size=(n, 1)))
    return u * r


def random_keys(rng, n, m):
    """Standard-normal keys of full centred rank (redrawn in the probability-zero degenerate case)."""
    while True:
        k = rng.normal(size=(n, m))
        if np.linalg.matrix_rank(k - k.mean(0)) == m:
            return k


def family_specs(seed: int, quick: bool) -> list:
    """The sweep's families as ``(name, group, family, sampler)``; deterministic in ``seed``."""
    specs = []
    for n in (range(3, 9) if not quick else (3, 8)):
        specs.append((f"categorical n={n}", "categorical", geometry.categorical(n),
                      lambda rng, k, d=n - 1: _radius_sample(rng, k, d, *LOGIT_RADIUS) * np.sqrt(d)))
    for n, t in ((4, 0.25), (4, 4.0)) if not quick else ((4, 4.0),):
        specs.append((f"categorical n={n} T={t:g}", "tempered", geometry.categorical(n, t),
                      lambda rng, k, d=n - 1, t=t: _radius_sample(rng, k, d, *LOGIT_RADIUS) * np.sqrt(d) * t))
    n_seeds = ATTENTION_SEEDS_QUICK if quick else ATTENTION_SEEDS
    ns = ATTENTION_N if not quick else (4, 16)
    for n in ns:
        for m in ATTENTION_M:
            for s in range(n_seeds):
                keys = random_keys(np.random.default_rng([seed, 1000 + n, m, s]), n, m)
                specs.append((f"attention n={n} m={m} keys#{s}", "attention", geometry.attention(keys),
                              lambda rng, k, m=m: _radius_sample(rng, k, m, *QUERY_RADIUS) * np.sqrt(m)))
    heads = [(2, (4, 4)), (3, (8, 8, 8))] if not quick else [(2, (4, 4))]
    for i, (m, ns_h) in enumerate(heads):
        krng = np.random.default_rng([seed, 2000 + i])
        keys = [random_keys(krng, n, m) for n in ns_h]
        specs.append((f"multihead h={len(ns_h)} n={ns_h[0]} m={m}", "multihead", geometry.multihead_attention(keys),
                      lambda rng, k, m=m: _radius_sample(rng, k, m, *QUERY_RADIUS) * np.sqrt(m)))
    specs.append(("gaussian (mu, sigma)", "gaussian", geometry.gaussian(),
                  lambda rng, k: np.column_stack([rng.normal(0, 2, k), np.exp(rng.uniform(np.log(0.01), np.log(100), k))])))
    for uf in _USER.values():
        specs.append((uf.name, uf.group, uf.family, uf.sampler))
    return specs


_CACHE: dict = {}


def sweep(ctx, groups=None, names=None) -> list:
    """Family sweeps for this context, optionally only those in ``groups`` / ``names`` (cached per seed, mode, family)."""
    specs = [(i, sp) for i, sp in enumerate(family_specs(ctx.seed, ctx.quick))
             if (groups is None or sp[1] in groups) and (names is None or sp[0] in names)]
    npts = SWEEP_POINTS_QUICK if ctx.quick else SWEEP_POINTS
    out = []
    todo = [(i, sp) for i, sp in specs if (ctx.seed, ctx.quick, sp[0]) not in _CACHE]
    bar = ctx.bar(total=len(todo), desc="sweep families") if todo else None
    try:
        for i, (name, group, fam, sampler) in specs:
            key = (ctx.seed, ctx.quick, name)
            if key not in _CACHE:
                rng = np.random.default_rng([ctx.seed, 7, i])
                theta = np.asarray(sampler(rng, npts), np.float64)
                if theta.shape != (npts, fam.dim):
                    raise ValueError(f"sampler of family {name!r} returned shape {theta.shape}, expected ({npts}, {fam.dim})")
                r, counts = curvature(fam, theta)
                h = entropy(fam, theta)
                _CACHE[key] = FamilySweep(name, group, fam, theta, h, r, counts)
                bar.update(1)
            out.append(_CACHE[key])
    finally:
        if bar is not None:
            bar.close()
    return out
