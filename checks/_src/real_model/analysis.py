r"""Entropy and Fisher curvature of every real attention row of the two real models.

For model :math:`M` (head dimension :math:`d_h`: 32 for all-MiniLM-L6-v2, 64 for
all-mpnet-base-v2), layer :math:`\ell`, head :math:`h` and window :math:`w`, query token
:math:`i` gets :math:`p = \operatorname{softmax}(K q_i/\sqrt{d_h} + b_i)` over the :math:`n`
keys of its window (:mod:`.encoder`; :math:`b_i = 0` for BERT, MPNet's relative position
bias row :math:`b_i[j] = T[\mathrm{bucket}(j - i), h]` otherwise).  As :math:`q` varies in
:math:`\mathbb{R}^{d_h}` this is the attention family ``geometry.attention(K, 1/sqrt(d_h),
offset=b_i)``; its Fisher metric is :math:`g(q) = \tfrac1{d_h}\mathrm{Cov}_p(k)`, definite iff
the centred keys have rank :math:`d_h`.  The offset moves :math:`p`, not the formulas, but it
depends on the query's position, so with MPNet every query has a family of its own (one
core call per point; BERT: one call per head).

* ``n - 1 > d_h`` (the main measurement): a :math:`d_h`-dimensional curved family inside the
  :math:`(n-1)`-simplex.  We evaluate its scalar curvature :math:`R` and entropy :math:`H`
  at every real query.
* ``n - 1 <= d_h`` with centred rank ``n - 1``: ``q -> p`` covers the whole open simplex
  (an offset only translates the logits), so on the quotient by the null directions
  (``geometry.project_keys``) the family is a reparametrisation of the categorical family
  and :math:`R = (n-1)(n-2)/4` at *every* query, whatever its entropy (Amari & Nagaoka
  2000, sec. 2.5).  :func:`short_sequence` measures it on a real 24-token sentence.

Precision.  Every value comes from the public precision-controlled default
``geometry.scalar_curvature(family, q, rtol=CURVATURE_RTOL)``: the float64 ``cumulant`` route
with the core's error estimate (for heads of dimension > 4 the smaller of the a-priori bound
:math:`64\,\varepsilon\,\kappa(H)\,(|T|^2+|\tau|^2)/|R|` and the disagreement with the same
formula in rotated coordinates), and for points above :data:`CURVATURE_RTOL` the double-double
and mpmath tiers.  There is no budget: every point ends trusted to ``CURVATURE_RTOL`` or
undefined with its reason, and all are counted in every result (never dropped silently).
Softmax keys and offsets are traced arguments in the core, so each key shape compiles once
for all heads, windows and queries.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import geometry

from . import encoder, loading, text

#: THE relative accuracy demanded of every real-model curvature value (all three checks, both
#: models, the short sentence and the slice): the toolkit's default.  The verdicts compare R
#: across points at the 1e-2 level (fit residuals, signs), so this leaves six orders of margin.
CURVATURE_RTOL = inspect.signature(geometry.scalar_curvature).parameters["rtol"].default  # 1e-8
#: n - 1 = 23 <= d_h (32 or 64): the regime where the family is the whole simplex.
SHORT_LENGTH = 24
#: A head's centred keys count as full rank if sigma_min / sigma_max exceeds this (reported only;
#: ``geometry.attention`` applies its own rank test and refuses singular heads).
RANK_RTOL = 1e-10

FLOAT64, HIGH_PRECISION, UNDEFINED, BUDGET = 0, 1, 2, 3  # geometry.STATUS_NAMES codes


@dataclasses.dataclass(frozen=True)
class Settings:
    length: int  # tokens per window incl. [CLS]/[SEP]; n - 1 must exceed the head dimension
    windows: int
    slice_grid: int  # points per axis of the 2-d slice
    query_stride: int = 1  # every query_stride-th query token of each window (and of the short sentence)


#: Per model: ``(quick, default)``.  Every point is computed to CURVATURE_RTOL (no budget; the
#: high-precision tiers take whatever float64 cannot certify).  MPNet needs one core call per
#: query (its offsets differ per position: ~1.8 ms a point on 2 idle cores, against ~0.2 ms
#: batched for MiniLM), so it reads 2 windows of 128 tokens by default (36 864 points, every
#: query) and, in --quick, every 8th query of one 128-token window.
SETTINGS = {
    "minilm": (Settings(length=64, windows=1, slice_grid=16), Settings(length=128, windows=3, slice_grid=32)),
    "mpnet": (Settings(length=128, windows=1, slice_grid=16, query_stride=8), Settings(length=128, windows=2, slice_grid=32)),
}


def settings(model, quick: bool) -> Settings:
    return SETTINGS[loading.spec(model).key][0 if quick else 1]


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
    seconds: dict = dataclasses.field(default_factory=dict)

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


def head_curvatures(keys, queries, bar=None, scale: float | None = None, offsets=None) -> Curvatures:
    """Curvature and entropy at ``queries[j, i]`` of the family ``attention(keys[j], scale, offset)``.

    ``keys``: (J, n, m); ``queries``: (J, N, m); ``scale``: default ``1/sqrt(m)``; ``offsets``:
    ``None``, ``(J, n)`` (one logit offset per head) or ``(J, N, n)`` (one per point: MPNet's
    relative position bias, which depends on the query's position).

    Every value is the precision-controlled default ``geometry.scalar_curvature(family, q,
    rtol=CURVATURE_RTOL)``: float64 where its error estimate (for heads of dimension > 4 the
    rotated-coordinates cross-check of the core) is within ``CURVATURE_RTOL``, the
    double-double / mpmath tiers elsewhere, with no budget.  One call per head, or per point
    with per-point offsets (the offset is a leaf of the family, so nothing recompiles).
    ``curvature_f64`` / ``rel_f64`` are the float64 value and its error estimate: those of the
    call where it kept its float64 value, else of the raw ``cumulant`` route (a-priori
    estimate), evaluated again at those points only.  Heads whose centred keys are rank
    deficient are ``undefined`` at every point.  ``seconds`` sums the durations of the calls that
    kept every value in float64, of those that recomputed some point, and of the entropies.
    """
    keys = np.asarray(keys, np.float64)
    queries = np.asarray(queries, np.float64)
    j, n, m = keys.shape
    big_n = queries.shape[1]
    scale = 1.0 / math.sqrt(m) if scale is None else float(scale)
    offsets = None if offsets is None else np.asarray(offsets, np.float64)
    per_point = offsets is not None and offsets.ndim == 3
    if offsets is not None and offsets.shape not in ((j, n), (j, big_n, n)):
        raise ValueError(f"offsets must have shape ({j}, {n}) or ({j}, {big_n}, {n}), got {offsets.shape}")
    if offsets is not None and not np.all(np.isfinite(offsets)):
        raise ValueError(f"offsets contain NaN or inf (first at {tuple(np.argwhere(~np.isfinite(offsets))[0])}); pass finite logit offsets")

    def family(a, i=None):
        off = None if offsets is None else (offsets[a, i] if per_point else offsets[a])
        return geometry.attention(keys[a], scale, offset=off)

    def with_offset(fam, off):
        # the offset is a leaf of the family (a pytree): swap it, not rebuild the head -- rebuilding
        # repeats the rank test of the keys (an SVD, ~0.6 ms, more than half the cost of a point)
        return eqx.tree_at(lambda f: f.heads[0].offset, fam, off)

    def controlled(fam, q):
        t = time.perf_counter()
        val, info = geometry.scalar_curvature(fam, q, return_info=True, rtol=CURVATURE_RTOL)
        st = np.asarray(info.status)
        seconds["curvature_recomputing_calls" if np.any(st == HIGH_PRECISION) else "curvature_float64_calls"] += time.perf_counter() - t
        return val, np.asarray(info.rel_error), st, info.reasons

    r = np.full(queries.shape[:2], np.nan)
    h = np.empty_like(r)
    rel = np.full_like(r, np.inf)
    status = np.zeros(r.shape, np.int8)
    reasons: dict = {}
    seconds = dict.fromkeys(("curvature_float64_calls", "curvature_recomputing_calls", "entropy"), 0.0)
    # One thread on purpose: two threads overlapped the per-point calls (~1.5x faster) but hung in XLA
    # when both ran the double-double tier at once.
    for a in range(j):
        try:
            fam = family(a, 0)
        except ValueError as exc:  # singular metric: centred keys of rank < m
            status[a] = UNDEFINED
            reasons[(a, -1)] = f"undefined at every query: {exc}"
            h[a] = np.nan
        else:
            if not per_point:
                r[a], rel[a], status[a], why = controlled(fam, queries[a])
                reasons.update({(a, int(i)): v for i, v in why.items()})
                t = time.perf_counter()
                h[a] = geometry.entropy(fam, queries[a], chunk_size=n)
            else:  # a family per query: same kernels (keys and offsets are traced leaves), no recompilation
                for i in range(big_n):
                    r[a, i], rel[a, i], status[a, i], why = controlled(with_offset(fam, offsets[a, i]), queries[a, i])
                    if why:
                        reasons[(a, i)] = next(iter(why.values()))
                t = time.perf_counter()
                h[a] = _entropies(keys[a], scale, offsets[a], queries[a])
            seconds["entropy"] += time.perf_counter() - t
        if bar is not None:
            bar.update(1)
    r64, rel64 = np.where(status == FLOAT64, r, np.nan), np.where(status == FLOAT64, rel, np.inf)
    for a, i in np.argwhere(status != FLOAT64).tolist():
        if (a, -1) in reasons:  # no family: the whole head is undefined
            continue
        # few points (recomputed or undefined ones): the raw float64 route again, for its value and a-priori estimate
        val, info = geometry.scalar_curvature(family(a, i), queries[a, i], method="cumulant", return_info=True)
        r64[a, i], rel64[a, i] = float(val), float(info.rel_error) if np.isfinite(val) else np.inf
    return Curvatures(r, h, status, rel, r64, rel64, reasons, seconds)


@jax.jit
def _entropies_jit(keys, scale, offsets, queries):
    return jax.vmap(lambda b, q: geometry.entropy(geometry.attention(keys, scale, offset=b), q))(offsets, queries)


def _entropies(keys, scale, offsets, queries) -> np.ndarray:
    """``H`` of ``attention(keys, scale, offset=offsets[i])`` at ``queries[i]`` for every ``i``: the public
    ``geometry.entropy`` traced over the families in one compiled call (eagerly, one call per family
    would cost ~3 ms of host bookkeeping each; the values agree to ~1e-15)."""
    return np.asarray(_entropies_jit(jnp.asarray(keys), jnp.float64(scale), jnp.asarray(offsets), jnp.asarray(queries)))


# --------------------------------------------------------------------------- the measurement


@dataclasses.dataclass
class Measurement:
    """Everything the three checks and the figures need for one model (arrays indexed [layer, head, window, query])."""

    spec: loading.ModelSpec
    head_dim: int
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
    def name(self) -> str:
        return self.spec.name

    @property
    def num_layers(self) -> int:
        return self.entropy.shape[0]

    @property
    def num_heads(self) -> int:
        return self.entropy.shape[1]

    def trusted(self) -> np.ndarray:
        return np.isfinite(self.curvature) & np.isin(self.status, (FLOAT64, HIGH_PRECISION))


def _short_ids(model: encoder.Encoder) -> np.ndarray:
    stream = text.prose_ids(model.spec, model.tokenizer)
    return np.array(text.wrap(model.spec, stream[: SHORT_LENGTH - 2]), np.int64)


def _per_point_offsets(out: encoder.EncoderOutput, n: int, layers: int, windows: int, stride: int = 1):
    """``(layers * heads * windows, N, n)`` offsets of queries ``0, stride, ...`` in the order of the
    flattened heads (``None`` without a bias)."""
    if out.offsets(0) is None:
        return None
    bias = out.position_bias[:, :n:stride, :n]  # (H, N, n), the same in every layer and window
    return np.broadcast_to(bias[None, :, None], (layers, *bias.shape[:1], windows, *bias.shape[1:])).reshape(-1, *bias.shape[1:])


def offset_as_translation(keys, scale: float, offsets) -> np.ndarray:
    r"""Query translations :math:`\delta` with :math:`s K \delta = b - c\mathbf 1` for full-rank square-ish heads.

    ``keys``: (J, n, n - 1) of centred rank ``n - 1`` (``geometry.project_keys``); ``offsets``:
    (J, N, n).  Solves :math:`[sK, \mathbf 1]\,(\delta, c) = b` (an invertible ``n x n`` system), so
    :math:`\operatorname{softmax}(sKq + b) = \operatorname{softmax}(sK(q + \delta))` for every ``q``.
    Returns ``delta`` (J, N, n - 1).
    """
    keys, offsets = np.asarray(keys, np.float64), np.asarray(offsets, np.float64)
    j, n, m = keys.shape
    if m != n - 1 or offsets.shape[0] != j or offsets.shape[2] != n:
        raise ValueError(f"keys must be (J, n, n - 1) and offsets (J, N, n); got {keys.shape} and {offsets.shape}")
    a = np.concatenate([scale * keys, np.ones((j, n, 1))], axis=2)  # (J, n, n)
    return np.linalg.solve(a[:, None], offsets[..., None])[..., :m, 0]


def short_sequence(model: encoder.Encoder, out: encoder.EncoderOutput, b: int, stride: int = 1) -> dict:
    r"""The ``n - 1 <= d_h`` finding on batch item ``b`` (the first 22 word pieces of the prose).

    Keys projected on the span of their centred keys (``geometry.project_keys``) give an
    ``(n-1)``-dimensional family; :math:`R` should equal :math:`(n-1)(n-2)/4` at every query.

    With a position bias (MPNet) query :math:`i` has its own offset :math:`b_i`, but here an
    offset is a translation of the query: the :math:`n \times n` matrix :math:`[sK_p, \mathbf 1]`
    is invertible (centred rank ``n - 1``), so :math:`b_i = sK_p\delta_i + c_i\mathbf 1` and
    :math:`\operatorname{softmax}(sK_p q + b_i) = \operatorname{softmax}(sK_p(q + \delta_i))` for
    every ``q``: the offset family is the plain one composed with a translation (an isometry), so
    :math:`R` and :math:`H` at :math:`q_i` are those of the plain family at :math:`q_i + \delta_i`.
    All queries of a head then share one family, one batched call (and one batched recomputation
    of the points float64 cannot certify).  ``translation_entropy_max_diff`` is the largest
    :math:`|H|` difference between the two descriptions (the rounding of :math:`\delta_i`).
    """
    n, dh = SHORT_LENGTH, model.cfg.head_dim
    scale = 1.0 / math.sqrt(dh)
    keys = out.keys[:, b, :, :n].reshape(-1, n, dh)
    queries = out.queries[:, b, :, :n:stride].reshape(len(keys), -1, dh)
    offsets = _per_point_offsets(out, n, out.keys.shape[0], 1, stride)
    ranks = [centred_rank(k)[0] for k in keys]
    proj_k, proj_q, proj_b = [], [], []
    for j, (k, q) in enumerate(zip(keys, queries)):
        kp, basis = geometry.project_keys(k)
        if kp.shape[1] == n - 1:
            proj_k.append(kp)
            proj_q.append(q @ basis)  # logits change by a constant per query only: p is unchanged
            proj_b.append(None if offsets is None else offsets[j])
    proj_k, proj_q = np.array(proj_k), np.array(proj_q)
    h_diff = 0.0
    if offsets is not None:
        proj_b = np.array(proj_b)  # (J, N, n)
        h_offset = np.array([_entropies(k, scale, bb, q) for k, bb, q in zip(proj_k, proj_b, proj_q)])
        proj_q = proj_q + offset_as_translation(proj_k, scale, proj_b)
    expected = (n - 1) * (n - 2) / 4
    res = head_curvatures(proj_k, proj_q, scale=scale)
    if offsets is not None:
        h_diff = float(np.max(np.abs(res.entropy - h_offset)))
    ok = np.isfinite(res.curvature)
    dev = np.abs(res.curvature[ok] - expected) / expected
    return {
        "n": n,
        "head_dim": dh,
        "text": model.tokenizer.decode(_short_ids(model).tolist()),
        "heads_full_rank": int(sum(r == n - 1 for r in ranks)),
        "heads": len(ranks),
        "expected_R": expected,
        "max_rel_deviation": float(dev.max()) if dev.size else float("nan"),
        "entropy_range": [float(res.entropy.min()), float(res.entropy.max())],
        "entropy_range_trusted": [float(res.entropy[ok].min()), float(res.entropy[ok].max())] if dev.size else [],
        "translation_entropy_max_diff": h_diff,
        "points": res.counts(),
        "H": res.entropy.ravel(),
        "R": res.curvature.ravel(),
    }


#: The slice half-width moves the logits by this RMS (nats) along the first principal direction.
SLICE_LOGIT_RMS = 4.0


def slice_fields(out: encoder.EncoderOutput, ent, grid: int, layer: int, stride: int = 1) -> dict:
    r"""R and H on the plane ``q0 + a v1 + b v2`` (v1, v2: leading principal directions of the centred keys).

    ``q0`` is the real query of median entropy (window 0) in the head of lowest mean entropy
    of ``layer``, and the family keeps that query's offset (MPNet).  Half-width
    :math:`t = 4\sqrt{d_h}\sqrt{n}/\sigma_1` moves the logits by an RMS of ``SLICE_LOGIT_RMS``
    nats along ``v1`` (:math:`\sigma_1` the top singular value).
    """
    head = int(np.argmin(ent[layer].mean(axis=(1, 2))))
    keys = out.keys[layer, 0, head]
    n, dh = keys.shape
    i0 = stride * int(np.argsort(ent[layer, head, 0])[ent.shape[-1] // 2])  # token index (ent holds every stride-th)
    q0 = out.queries[layer, 0, head, i0]
    offset = out.offsets(head, n)
    _, sv, vt = np.linalg.svd(keys - keys.mean(0), full_matrices=False)
    half = SLICE_LOGIT_RMS * math.sqrt(dh) * math.sqrt(n) / sv[0]
    ts = np.linspace(-half, half, grid)
    pts = q0 + ts[:, None, None] * vt[0] + ts[None, :, None] * vt[1]
    res = head_curvatures(keys[None], pts.reshape(1, -1, dh), scale=1.0 / math.sqrt(dh),
                          offsets=None if offset is None else offset[i0][None])
    return {
        "layer": layer,
        "head": head,
        "query_token": i0,
        "query_entropy": float(ent[layer, head, 0, i0 // stride]),
        "offset": offset is not None,
        "coords": ts,
        "curvature": res.curvature.reshape(grid, grid),
        "entropy": res.entropy.reshape(grid, grid),
        "points": res.counts(),
    }


_CACHE: dict = {}


def measure(model, quick: bool, bar_factory=None) -> Measurement:
    """Run ``model`` (key or spec) on its model-card windows and measure every attention row.

    Cached per ``(model, quick)`` so the three checks share one run per model (the measurement
    samples nothing: no seed).  ``bar_factory(total, desc)`` returns a tqdm-like progress bar
    (e.g. ``ctx.bar``).
    """
    spec = loading.spec(model)
    quick = bool(quick)
    if any(k[1] != quick for k in _CACHE):
        _CACHE.clear()  # keep one run per model (tens of MB each) alive at most
    key = (spec.key, quick)
    if key not in _CACHE:
        _CACHE[key] = _measure(spec, quick, bar_factory)
    return _CACHE[key]


def _measure(spec: loading.ModelSpec, quick: bool, bar_factory) -> Measurement:
    st = settings(spec, quick)
    t0 = time.perf_counter()
    model = encoder.load(spec)
    dh = model.cfg.head_dim
    if st.length - 1 <= dh:
        raise ValueError(f"{spec.name}: windows of {st.length} tokens give n - 1 <= d_h = {dh}, the whole-simplex regime; "
                         f"use length > {dh + 1}")
    win = text.windows(spec, model.tokenizer, st.length, st.windows)
    short = _short_ids(model)
    ids = np.full((win.ids.shape[0] + 1, st.length), model.cfg.pad_id, np.int64)
    mask = np.zeros_like(ids, dtype=np.int32)
    ids[:-1], mask[:-1] = win.ids, 1
    ids[-1, : len(short)], mask[-1, : len(short)] = short, 1  # padded: one compile for both
    out = model(ids, mask)
    t1 = time.perf_counter()
    nl, _, nh, n, _ = out.keys.shape
    s = win.ids.shape[0]
    qs = st.query_stride
    keys = out.keys[:, :s].transpose(0, 2, 1, 3, 4).reshape(nl * nh * s, n, dh)
    queries = out.queries[:, :s, :, ::qs].transpose(0, 2, 1, 3, 4).reshape(nl * nh * s, -1, dh)
    bar = bar_factory(total=nl * nh * s, desc=f"{spec.name} heads") if bar_factory else None
    res = head_curvatures(keys, queries, bar, scale=1.0 / math.sqrt(dh), offsets=_per_point_offsets(out, n, nl, s, qs))
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    shape = (nl, nh, s, queries.shape[1])
    att = out.attention[:, :s, :, ::qs].transpose(0, 2, 1, 3, 4)  # (L, H, S, N, n)
    h_model = -np.sum(np.where(att > 0, att * np.log(np.where(att > 0, att, 1.0)), 0.0), axis=-1)
    t2 = time.perf_counter()
    ent = res.entropy.reshape(shape)
    short_res = short_sequence(model, out, s, qs)
    t3 = time.perf_counter()
    sl = slice_fields(out, ent, st.slice_grid, nl - 1, qs)
    t4 = time.perf_counter()
    # "curvature" (the main pass) = its float64-only calls + calls that recomputed a point + entropies + bookkeeping
    seconds = {"forward": t1 - t0, "curvature": t2 - t1, **res.seconds, "short_sequence": t3 - t2, "slice": t4 - t3}
    return Measurement(
        spec=spec,
        head_dim=dh,
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
        seconds=seconds,
    )
