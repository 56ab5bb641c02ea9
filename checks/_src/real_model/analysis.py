r"""Entropy and Fisher curvature of every real attention row of all-MiniLM-L6-v2.

For layer :math:`\ell`, head :math:`h` and window :math:`w`, query token :math:`i` gets
:math:`p = \operatorname{softmax}(K q_i/\sqrt{32})` over the :math:`n` keys of its window
(:mod:`.bert`).  As :math:`q` varies in :math:`\mathbb{R}^{32}` this is the attention family
``geometry.attention(K, 1/sqrt(32))``; its Fisher metric is
:math:`g(q) = \tfrac1{32}\mathrm{Cov}_p(k)`, definite iff the centred keys have rank 32.

* ``n - 1 > 32`` (the main measurement): a 32-dimensional curved family inside the
  :math:`(n-1)`-simplex.  We evaluate its scalar curvature :math:`R` and entropy :math:`H`
  at every real query.
* ``n - 1 <= 32`` with centred rank ``n - 1``: ``q -> p`` covers the whole open simplex;
  on the quotient by the null directions (``geometry.project_keys``) the family is a
  reparametrisation of the categorical family, so :math:`R = (n-1)(n-2)/4` at *every*
  query, whatever its entropy (Amari & Nagaoka 2000, sec. 2.5).  :func:`short_sequence`
  measures it on a real 24-token sentence.

Precision.  Every value comes from the public ``geometry.scalar_curvature``: the float64
``cumulant`` route with the core's error estimate
:math:`64\,\varepsilon\,\kappa(H)\,(|T|^2+|\tau|^2)/|R|` (:math:`H` the Jacobi-scaled metric), and for points above
``CURVATURE_RTOL`` the precision-controlled call (mpmath fallback) within a budget of points.
Points the budget does not reach are NaN with status ``not_computed_budget`` and are
counted in every result (never dropped silently).  Softmax keys are traced arguments in
the core, so each key shape compiles once for all 72 x windows heads.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

import geometry

from . import bert, text

#: Relative accuracy demanded of every curvature value.  The verdicts compare R across
#: points at the 1e-2 level (fit residuals, signs), so 1e-4 leaves two orders of margin;
#: 1e-8 (the core's default) would send ~30% of deep-layer points to mpmath at ~3 s each.
CURVATURE_RTOL = 1e-4
HEAD_DIM = 32
SCALE = 1.0 / math.sqrt(HEAD_DIM)
#: n - 1 = 23 <= 32: the regime where the family is the whole simplex.
SHORT_LENGTH = 24
#: A head's centred keys count as full rank if sigma_min / sigma_max exceeds this (reported only;
#: ``geometry.attention`` applies its own rank test and refuses singular heads).
RANK_RTOL = 1e-10

FLOAT64, HIGH_PRECISION, UNDEFINED, BUDGET = 0, 1, 2, 3  # geometry.STATUS_NAMES codes


@dataclasses.dataclass(frozen=True)
class Settings:
    length: int  # tokens per window incl. [CLS]/[SEP]
    windows: int
    hp_points: int  # points recomputed in mpmath for the real queries (a count, not seconds: same seed => same numbers)
    aux_points: int  # points recomputed in mpmath for the short sentence and for the slice, each
    slice_grid: int  # points per axis of the 2-d slice


#: --quick: one 64-token window, no mpmath (points above CURVATURE_RTOL are counted as not computed).
QUICK = Settings(length=64, windows=1, hp_points=0, aux_points=0, slice_grid=16)
DEFAULT = Settings(length=128, windows=3, hp_points=120, aux_points=20, slice_grid=32)


def settings(quick: bool) -> Settings:
    return QUICK if quick else DEFAULT


@dataclasses.dataclass
class Curvatures:
    """Per-point results with leading shape ``(J, N)``; ``status`` uses ``geometry.STATUS_NAMES``.

    ``curvature`` holds only trusted values (NaN otherwise); ``curvature_f64`` and
    ``rel_f64`` keep the raw float64 value and its error estimate for every point (a value
    whose estimated relative error is below 1 still has a trustworthy *sign*).
    """

    curvature: np.ndarray
    entropy: np.ndarray
    status: np.ndarray
    rel_error: np.ndarray
    curvature_f64: np.ndarray
    rel_f64: np.ndarray
    reasons: dict

    def counts(self) -> dict:
        out = {"total": int(self.status.size)}
        for code, name in geometry.STATUS_NAMES.items():
            out[name] = int(np.sum(self.status == code))
        return out


def centred_rank(keys: np.ndarray) -> tuple[int, float]:
    """Rank of the centred keys and ``sigma_min / sigma_max``."""
    sv = np.linalg.svd(keys - keys.mean(0), compute_uv=False)
    ratio = float(sv[-1] / sv[0]) if sv[0] > 0 else 0.0
    return int(np.sum(sv > RANK_RTOL * sv[0])), ratio


def head_curvatures(keys, queries, hp_points: int | None, rng: np.random.Generator, bar=None) -> Curvatures:
    """Curvature and entropy at ``queries[j, i]`` of the family ``attention(keys[j], 1/sqrt(32))``.

    ``keys``: (J, n, m); ``queries``: (J, N, m).  Two public passes of
    ``geometry.scalar_curvature``: the raw float64 ``cumulant`` route with its error
    estimate at every point, then the precision-controlled call (mpmath fallback) on the
    points above ``CURVATURE_RTOL``, one point at a time in a seeded random order (so a
    budget cut leaves an unbiased subset) until ``hp_points`` points are done (0: none; None: all).
    The budget is a count, not a time, so the same seed gives the same numbers on any machine.
    Heads whose centred keys are rank deficient are ``undefined`` at every point.
    """
    keys = np.asarray(keys, np.float64)
    queries = np.asarray(queries, np.float64)
    j, n, m = keys.shape
    r = np.full(queries.shape[:2], np.nan)
    h = np.empty_like(r)
    rel = np.full_like(r, np.inf)
    status = np.zeros(r.shape, np.int8)
    reasons: dict = {}
    families: dict = {}
    for a in range(j):
        try:
            fam = families[a] = geometry.attention(keys[a], SCALE)
        except ValueError as exc:  # singular metric: centred keys of rank < m
            status[a] = UNDEFINED
            reasons[(a, -1)] = f"undefined at every query: {exc}"
            h[a] = np.nan
        else:
            r[a], info = geometry.scalar_curvature(fam, queries[a], method="cumulant", return_info=True, chunk_size=n)
            rel[a] = np.where(np.isfinite(r[a]), info.rel_error, np.inf)
            h[a] = geometry.entropy(fam, queries[a], chunk_size=n)
        if bar is not None:
            bar.update(1)
    r64, rel64 = r.copy(), rel.copy()
    bad = np.argwhere((status == FLOAT64) & ~(rel <= CURVATURE_RTOL))
    bad = bad[rng.permutation(len(bad))]
    r[tuple(bad.T)] = np.nan
    for k, (a, i) in enumerate(bad):
        a, i = int(a), int(i)
        if hp_points is not None and k >= hp_points:
            status[a, i] = BUDGET
            reasons[(a, i)] = f"not computed: high-precision budget of {hp_points} points exhausted (float64 error {rel[a, i]:.1e})"
            continue
        val, info = geometry.scalar_curvature(families[a], queries[a, i], return_info=True, rtol=CURVATURE_RTOL)
        st = int(info.status)
        status[a, i], r[a, i], rel[a, i] = st, float(val), float(info.rel_error)
        if info.reasons:
            reasons[(a, i)] = next(iter(info.reasons.values()))
    return Curvatures(r, h, status, rel, r64, rel64, reasons)


# --------------------------------------------------------------------------- the measurement


@dataclasses.dataclass
class Measurement:
    """Everything the three checks and the figures need (arrays indexed [layer, head, window, query])."""

    settings: Settings
    windows: text.Windows
    entropy: np.ndarray
    curvature: np.ndarray  # trusted to CURVATURE_RTOL, NaN otherwise
    status: np.ndarray
    rel_error: np.ndarray
    curvature_f64: np.ndarray  # raw float64 cumulant route at every point
    rel_f64: np.ndarray  # its estimated relative error
    max_prob: np.ndarray
    entropy_model_diff: float  # max |H(core) - H(model's attention row)|
    counts: dict
    reasons: dict
    short: dict
    slice: dict
    seconds: dict

    @property
    def num_layers(self) -> int:
        return self.entropy.shape[0]

    def trusted(self) -> np.ndarray:
        return np.isfinite(self.curvature) & np.isin(self.status, (FLOAT64, HIGH_PRECISION))


def _short_ids(model: bert.Bert) -> np.ndarray:
    stream = model.tokenizer.encode(text.model_card_prose(text.model_card_text()), add_special_tokens=False).ids
    return np.array([text.CLS_ID, *stream[: SHORT_LENGTH - 2], text.SEP_ID], np.int64)


def short_sequence(model: bert.Bert, out: bert.BertOutput, b: int, budget: int, rng) -> dict:
    """The ``n - 1 <= 32`` finding on batch item ``b`` (the first 22 word pieces of the prose).

    Keys projected on the span of their centred keys (``geometry.project_keys``) give an
    ``(n-1)``-dimensional family; :math:`R` should equal :math:`(n-1)(n-2)/4` at every query.
    """
    n = SHORT_LENGTH
    keys = out.keys[:, b, :, :n].reshape(-1, n, HEAD_DIM)
    queries = out.queries[:, b, :, :n].reshape(-1, n, HEAD_DIM)
    ranks = [centred_rank(k)[0] for k in keys]
    proj_k, proj_q = [], []
    for k, q in zip(keys, queries):
        kp, basis = geometry.project_keys(k)
        if kp.shape[1] == n - 1:
            proj_k.append(kp)
            proj_q.append(q @ basis)
    expected = (n - 1) * (n - 2) / 4
    res = head_curvatures(np.array(proj_k), np.array(proj_q), hp_points=budget, rng=rng)
    ok = np.isfinite(res.curvature)
    dev = np.abs(res.curvature[ok] - expected) / expected
    return {
        "n": n,
        "text": model.tokenizer.decode(_short_ids(model).tolist()),
        "heads_full_rank": int(sum(r == n - 1 for r in ranks)),
        "heads": len(ranks),
        "expected_R": expected,
        "max_rel_deviation": float(dev.max()) if dev.size else float("nan"),
        "entropy_range": [float(res.entropy.min()), float(res.entropy.max())],
        "entropy_range_trusted": [float(res.entropy[ok].min()), float(res.entropy[ok].max())] if dev.size else [],
        "points": res.counts(),
        "H": res.entropy.ravel(),
        "R": res.curvature.ravel(),
    }


#: The slice half-width moves the logits by this RMS (nats) along the first principal direction.
SLICE_LOGIT_RMS = 4.0


def slice_fields(model_keys, model_queries, ent, grid: int, layer: int, budget: int, rng) -> dict:
    r"""R and H on the plane ``q0 + a v1 + b v2`` (v1, v2: leading principal directions of the centred keys).

    ``q0`` is the real query of median entropy (window 0) in the head of lowest mean entropy
    of ``layer``.  Half-width :math:`t = 4\sqrt{32}\sqrt{n}/\sigma_1` moves the logits by an
    RMS of ``SLICE_LOGIT_RMS`` nats along ``v1`` (:math:`\sigma_1` the top singular value).
    """
    head = int(np.argmin(ent[layer].mean(axis=(1, 2))))
    keys = model_keys[layer, 0, head]
    i0 = int(np.argsort(ent[layer, head, 0])[ent.shape[-1] // 2])
    q0 = model_queries[layer, 0, head, i0]
    _, sv, vt = np.linalg.svd(keys - keys.mean(0), full_matrices=False)
    half = SLICE_LOGIT_RMS * math.sqrt(HEAD_DIM) * math.sqrt(keys.shape[0]) / sv[0]
    ts = np.linspace(-half, half, grid)
    pts = q0 + ts[:, None, None] * vt[0] + ts[None, :, None] * vt[1]
    res = head_curvatures(keys[None], pts.reshape(1, -1, HEAD_DIM), hp_points=budget, rng=rng)
    return {
        "layer": layer,
        "head": head,
        "query_token": i0,
        "query_entropy": float(ent[layer, head, 0, i0]),
        "coords": ts,
        "curvature": res.curvature.reshape(grid, grid),
        "entropy": res.entropy.reshape(grid, grid),
        "points": res.counts(),
    }


_CACHE: dict = {}


def measure(quick: bool, seed: int, bar_factory=None) -> Measurement:
    """Run the model on the model-card windows and measure every attention row.

    Cached per ``(quick, seed)`` so the three checks share one run.  ``bar_factory(total,
    desc)`` returns a tqdm-like progress bar (e.g. ``ctx.bar``).
    """
    key = (bool(quick), int(seed))
    if key not in _CACHE:
        _CACHE.clear()  # keep one measurement (tens of MB) alive at most
        _CACHE[key] = _measure(*key, bar_factory)
    return _CACHE[key]


def _measure(quick: bool, seed: int, bar_factory) -> Measurement:
    st = settings(quick)
    t0 = time.perf_counter()
    model = bert.load()
    win = text.windows(model.tokenizer, st.length, st.windows)
    short = _short_ids(model)
    ids = np.zeros((win.ids.shape[0] + 1, st.length), np.int64)
    mask = np.zeros_like(ids, dtype=np.int32)
    ids[:-1], mask[:-1] = win.ids, 1
    ids[-1, : len(short)], mask[-1, : len(short)] = short, 1  # padded: one compile for both
    out = model(ids, mask)
    t1 = time.perf_counter()
    nl, _, nh, n, _ = out.keys.shape
    s = win.ids.shape[0]
    keys = out.keys[:, :s].transpose(0, 2, 1, 3, 4).reshape(nl * nh * s, n, HEAD_DIM)
    queries = out.queries[:, :s].transpose(0, 2, 1, 3, 4).reshape(nl * nh * s, n, HEAD_DIM)
    rng = np.random.default_rng([seed, 6])
    bar = bar_factory(total=nl * nh * s, desc="real-model heads") if bar_factory else None
    res = head_curvatures(keys, queries, st.hp_points, rng, bar)
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    shape = (nl, nh, s, n)
    att = out.attention[:, :s].transpose(0, 2, 1, 3, 4)  # (L, H, S, n, n)
    h_model = -np.sum(np.where(att > 0, att * np.log(np.where(att > 0, att, 1.0)), 0.0), axis=-1)
    t2 = time.perf_counter()
    ent = res.entropy.reshape(shape)
    short_res = short_sequence(model, out, s, st.aux_points, rng)
    t3 = time.perf_counter()
    sl = slice_fields(out.keys, out.queries, ent, st.slice_grid, nl - 1, st.aux_points, rng)
    t4 = time.perf_counter()
    return Measurement(
        settings=st,
        windows=win,
        entropy=ent,
        curvature=res.curvature.reshape(shape),
        status=res.status.reshape(shape),
        rel_error=res.rel_error.reshape(shape),
        curvature_f64=res.curvature_f64.reshape(shape),
        rel_f64=res.rel_f64.reshape(shape),
        max_prob=att.max(-1),
        entropy_model_diff=float(np.max(np.abs(ent - h_model))),
        counts=res.counts(),
        reasons=res.reasons,
        short=short_res,
        slice=sl,
        seconds={"forward": t1 - t0, "curvature": t2 - t1, "short_sequence": t3 - t2, "slice": t4 - t3},
    )
