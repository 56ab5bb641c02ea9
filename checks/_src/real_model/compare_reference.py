"""Compare the JAX forward pass with the torch/transformers reference implementation.

Run it in an environment that has torch and transformers (not required by the toolkit)::

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch transformers safetensors tokenizers numpy jax
    /tmp/torchenv/bin/python -m checks._src.real_model.compare_reference

It loads the same ``model.safetensors`` into ``transformers.BertModel`` (eager attention,
float32, eval mode), runs both on the same token ids, and prints the maximum absolute
difference of every hidden state and attention matrix.  The reference runs in float32,
ours in float64, so differences of ~1e-6 are float32 round-off.  ``max_differences`` is
also what ``tests/test_real_model_reference.py`` calls.
"""

from __future__ import annotations

import json
import sys

import numpy as np

SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The scalar curvature of the Fisher metric is not a linear function of the entropy.",
]


def reference_outputs(ids: np.ndarray, mask: np.ndarray):
    """Hidden states (L+1, B, n, d) and attentions (L, B, H, n, n) from transformers' BertModel."""
    import torch
    import transformers

    from . import loading

    path = str(loading.model_dir())
    model = transformers.BertModel.from_pretrained(path, attn_implementation="eager", add_pooling_layer=False)
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
            output_hidden_states=True, output_attentions=True,
        )
    hidden = np.stack([h.numpy() for h in out.hidden_states]).astype(np.float64)
    att = np.stack([a.numpy() for a in out.attentions]).astype(np.float64)
    return hidden, att


def max_differences(sentences=SENTENCES) -> dict:
    """Max |ours - reference| over real tokens for hidden states and attention, per layer and overall."""
    from . import bert

    model = bert.load()
    ids = [model.encode_ids(s) for s in sentences]
    n = max(len(i) for i in ids)
    batch = np.zeros((len(ids), n), np.int64)
    mask = np.zeros((len(ids), n), np.int64)
    for b, i in enumerate(ids):
        batch[b, : len(i)] = i
        mask[b, : len(i)] = 1
    ours = model(batch, mask)
    ref_hidden, ref_att = reference_outputs(batch, mask)
    real = mask.astype(bool)
    dh = [float(np.max(np.abs(ours.hidden[k][real] - ref_hidden[k][real]))) for k in range(ref_hidden.shape[0])]
    da = []
    for k in range(ref_att.shape[0]):
        diff = np.abs(ours.attention[k] - ref_att[k])  # (B, H, n, n)
        diff = np.where(real[:, None, :, None] & real[:, None, None, :], diff, 0.0)
        da.append(float(diff.max()))
    return {
        "sentences": list(sentences),
        "hidden_max_abs_diff_by_layer": dh,
        "hidden_max_abs_diff": max(dh),
        "attention_max_abs_diff_by_layer": da,
        "attention_max_abs_diff": max(da),
    }


def main() -> int:
    import torch
    import transformers

    res = {"torch": torch.__version__, "transformers": transformers.__version__, **max_differences()}
    print(json.dumps(res, indent=1))
    ok = res["hidden_max_abs_diff"] <= 1e-4
    print(f"hidden states agree to 1e-4: {ok} (max abs diff {res['hidden_max_abs_diff']:.2e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
