"""Compare the JAX forward passes with the torch/transformers reference implementations.

Run it once in an environment that has torch and transformers (the toolkit does not depend
on them), with the toolkit's own dependencies on the path::

    python -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy jax equinox \
        diffrax optimistix scipy sympy mpmath gmpy2 matplotlib optax tqdm
    PYTHONPATH=. /tmp/venv-torch/bin/python -m checks._src.real_model.compare_reference --write

It loads the same ``model.safetensors`` into ``transformers.BertModel`` / ``MPNetModel``
(eager attention, float32, eval mode), runs both on the same token ids, and reports per layer
the maximum absolute and relative differences of the hidden states and attention
probabilities over real tokens.  The reference runs in float32, ours in float64, so
differences of ~1e-6 are float32 round-off.  For MPNet it also compares the relative-position
bucket table with transformers' own function.  ``--write`` records the result as
``reference_comparison.json`` (MiniLM) and ``reference_comparison_mpnet.json`` beside this
file; ``tests/test_real_model_reference.py`` recomputes it.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The scalar curvature of the Fisher metric is not a linear function of the entropy.",
]
#: A longer text so that MPNet's relative distances 16, 32 and 64 (where the bucket's float32
#: logarithm is truncated at an integer) and the clipped buckets beyond 91 all occur.
LONG_SENTENCE = (
    "Attention rows are probability distributions over the keys of a sentence, and the query map of one head "
    "is a curved family inside the simplex whose Fisher metric is the covariance of the keys under the row; "
    "its scalar curvature depends on the whole distribution and not on the entropy alone, which is what "
    "the checks of this toolkit measure on every real query of two pretrained encoders, layer by layer and "
    "head by head, with the precision-controlled curvature and its error estimate, on windows of the model "
    "cards' own prose, cut into consecutive pieces of one hundred and twenty eight word pieces each."
)
#: Differences at most this count as agreement (the test's threshold; float32 reference).
REFERENCE_ATOL = 1e-4
HERE = pathlib.Path(__file__).parent
JSON_FILES = {"minilm": HERE / "reference_comparison.json", "mpnet": HERE / "reference_comparison_mpnet.json"}


def reference_outputs(key: str, ids: np.ndarray, mask: np.ndarray):
    """Hidden states (L+1, B, n, d) and attentions (L, B, H, n, n) from transformers (float32, eager)."""
    import torch
    import transformers

    from . import loading

    spec = loading.spec(key)
    cls = {"bert": transformers.BertModel, "mpnet": transformers.MPNetModel}[spec.arch]
    kwargs = {"add_pooling_layer": False}
    model = cls.from_pretrained(str(spec.directory()), attn_implementation="eager", **kwargs)
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
            output_hidden_states=True, output_attentions=True,
        )
    hidden = np.stack([h.numpy() for h in out.hidden_states]).astype(np.float64)
    att = np.stack([a.numpy() for a in out.attentions]).astype(np.float64)
    return hidden, att


def _bucket_table_mismatches(max_distance: int = 600) -> int:
    """Distances in [-max_distance, max_distance] where our bucket differs from transformers'."""
    import torch
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from .encoder import relative_position_bucket

    rel = np.arange(-max_distance, max_distance + 1)
    theirs = MPNetEncoder.relative_position_bucket(torch.as_tensor(rel)).numpy()
    return int(np.sum(relative_position_bucket(rel) != theirs))


def max_differences(key: str = "minilm", sentences=None) -> dict:
    """Max |ours - reference| (absolute, and relative to max |reference|) over real tokens, per layer and overall."""
    from . import encoder

    sentences = list(SENTENCES + [LONG_SENTENCE] if sentences is None else sentences)
    model = encoder.load(key)
    batch, mask = model.batch(sentences)
    ours = model(batch, mask)
    ref_hidden, ref_att = reference_outputs(key, batch, mask)
    real = mask.astype(bool)
    dh, rh = [], []
    for k in range(ref_hidden.shape[0]):
        diff = np.abs(ours.hidden[k][real] - ref_hidden[k][real])
        dh.append(float(diff.max()))
        rh.append(float(diff.max() / np.abs(ref_hidden[k][real]).max()))
    da, ra = [], []
    pair = real[:, None, :, None] & real[:, None, None, :]
    for k in range(ref_att.shape[0]):
        diff = np.where(pair, np.abs(ours.attention[k] - ref_att[k]), 0.0)  # (B, H, n, n)
        da.append(float(diff.max()))
        # relative to the reference probability, over entries where it is not negligible (>= 1e-3)
        big = pair & (ref_att[k] >= 1e-3)
        ra.append(float(np.max(np.where(big, diff / np.where(big, ref_att[k], 1.0), 0.0))))
    res = {
        "model": model.name,
        "model_safetensors_sha256": model.spec.weights_sha256,
        "sentences": sentences,
        "tokens": [int(t) for t in real.sum(1)],
        "hidden_max_abs_diff_by_layer": dh,
        "hidden_max_abs_diff": max(dh),
        "hidden_max_rel_diff_by_layer": rh,
        "hidden_max_rel_diff": max(rh),
        "attention_max_abs_diff_by_layer": da,
        "attention_max_abs_diff": max(da),
        "attention_max_rel_diff_by_layer": ra,
        "attention_max_rel_diff": max(ra),
        "attention_rel_diff_over": "entries with reference probability >= 1e-3",
    }
    if model.cfg.arch == "mpnet":
        res["relative_bucket_mismatches_within_600"] = _bucket_table_mismatches()
    return res


def main(argv=None) -> int:
    import torch
    import transformers

    argv = sys.argv[1:] if argv is None else argv
    ok = True
    for key in ("minilm", "mpnet"):
        res = {"torch": torch.__version__, "transformers": transformers.__version__, **max_differences(key)}
        print(json.dumps(res, indent=1))
        agree = res["hidden_max_abs_diff"] <= REFERENCE_ATOL and res["attention_max_abs_diff"] <= REFERENCE_ATOL
        agree = agree and res.get("relative_bucket_mismatches_within_600", 0) == 0
        print(f"{res['model']}: agrees to {REFERENCE_ATOL}: {agree} (max abs diff hidden "
              f"{res['hidden_max_abs_diff']:.2e}, attention {res['attention_max_abs_diff']:.2e})")
        ok &= agree
        if "--write" in argv:
            JSON_FILES[key].write_text(json.dumps(res, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
