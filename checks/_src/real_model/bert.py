r"""BERT encoder forward pass in JAX (float64) returning per-layer, per-head queries, keys and attention.

For layer :math:`\ell` with input :math:`X \in \mathbb{R}^{n\times 384}` (Devlin et al. 2019;
Vaswani et al. 2017, eq. 1), head :math:`h` has

.. math:: Q_h = X W^Q_h{}^\top + b^Q_h,\quad K_h = X W^K_h{}^\top + b^K_h,\quad
          A_h = \operatorname{softmax}_{\text{row}}\!\big(Q_h K_h^\top/\sqrt{32} + M\big)

with head dimension 32 and :math:`M_{ij} = 0` for real keys, :math:`-\infty` (here
``finfo.min``) for padding.  So the attention row of query token :math:`i` is exactly
the attention family ``geometry.attention(K_h, 1/sqrt(32))`` at :math:`x = q_i`:
:math:`p = \operatorname{softmax}(K_h q_i/\sqrt{32})`; the biases are inside ``q`` and ``K``.

Post-LN block: :math:`X' = \mathrm{LN}(X + \mathrm{Attn}(X)W^O{}^\top + b^O)`,
:math:`X'' = \mathrm{LN}(X' + \mathrm{GELU}(X'W_1^\top + b_1)W_2^\top + b_2)` with the
erf GELU and LayerNorm eps 1e-12.  Sentence embedding (sentence-transformers
``all-MiniLM-L6-v2``): mean of the last hidden states over real tokens, L2-normalised.
Weights are float32 on disk and computed in float64 here.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import loading

#: Sequence lengths are padded (masked) up to a multiple of this before the jitted pass.
LENGTH_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class BertOutput:
    """``hidden``: (L+1, B, n, 384) (embeddings first); ``queries``/``keys``: (L, B, H, n, 32);
    ``attention``: (L, B, H, n, n), row ``[.., i, :]`` is the distribution of query token ``i``."""

    hidden: np.ndarray
    queries: np.ndarray
    keys: np.ndarray
    attention: np.ndarray
    mask: np.ndarray  # (B, n) 1 for real tokens


def params_from_weights(weights: dict, cfg: loading.BertConfig) -> dict:
    """Nest the Hugging Face tensor names into a pytree of jnp float64 arrays (checks every shape)."""

    def get(name, shape):
        if name not in weights:
            raise KeyError(f"weight {name!r} missing from model.safetensors")
        arr = weights[name]
        if arr.shape != shape:
            raise ValueError(f"weight {name} has shape {arr.shape}, expected {shape}")
        return jnp.asarray(arr, jnp.float64)

    d, f = cfg.hidden, cfg.intermediate

    def ln(prefix):
        return {"g": get(prefix + ".weight", (d,)), "b": get(prefix + ".bias", (d,))}

    def dense(prefix, out, inp):
        return {"w": get(prefix + ".weight", (out, inp)), "b": get(prefix + ".bias", (out,))}

    layers = []
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        layers.append({
            "q": dense(p + "attention.self.query", d, d),
            "k": dense(p + "attention.self.key", d, d),
            "v": dense(p + "attention.self.value", d, d),
            "o": dense(p + "attention.output.dense", d, d),
            "ln1": ln(p + "attention.output.LayerNorm"),
            "ff1": dense(p + "intermediate.dense", f, d),
            "ff2": dense(p + "output.dense", d, f),
            "ln2": ln(p + "output.LayerNorm"),
        })
    return {
        "word": get("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
        "pos": get("embeddings.position_embeddings.weight", (cfg.max_positions, d)),
        "type": get("embeddings.token_type_embeddings.weight", (2, d)),
        "ln": ln("embeddings.LayerNorm"),
        "layers": layers,
    }


@dataclasses.dataclass(frozen=True, eq=False)
class Bert:
    """The loaded model: config, parameters and tokenizer.  Build with :func:`load`."""

    cfg: loading.BertConfig
    params: dict
    tokenizer: object

    def __call__(self, input_ids, mask=None) -> BertOutput:
        ids = np.atleast_2d(np.asarray(input_ids))
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be an integer array of shape (n,) or (B, n), got {ids.dtype} {ids.shape}")
        if ids.shape[1] > self.cfg.max_positions:
            raise ValueError(f"input_ids has {ids.shape[1]} tokens; the model has {self.cfg.max_positions} positions. Cut the text.")
        if np.any((ids < 0) | (ids >= self.cfg.vocab_size)):
            raise ValueError(f"input_ids must be token ids in [0, {self.cfg.vocab_size}); encode text with model.tokenizer")
        mask = np.ones(ids.shape, np.int32) if mask is None else np.atleast_2d(np.asarray(mask, np.int32))
        if mask.shape != ids.shape:
            raise ValueError(f"mask has shape {mask.shape} but input_ids has {ids.shape}")
        # Pad the length to a multiple of LENGTH_BUCKET (masked, so nothing leaks into real
        # tokens: padded keys get probability exp(finfo.min) = 0): few shapes, few compilations.
        n = ids.shape[1]
        nb = min(-(-n // LENGTH_BUCKET) * LENGTH_BUCKET, self.cfg.max_positions)
        pids = np.zeros((ids.shape[0], nb), np.int64)
        pmask = np.zeros((ids.shape[0], nb), np.int32)
        pids[:, :n], pmask[:, :n] = ids, mask
        out = _forward(self.params, jnp.asarray(pids), jnp.asarray(pmask), self.cfg.num_heads, self.cfg.layer_norm_eps)
        hidden, q, k, a = (np.asarray(t) for t in out)
        return BertOutput(
            hidden=hidden[:, :, :n], queries=q[..., :n, :], keys=k[..., :n, :], attention=a[..., :n, :n], mask=mask
        )

    def encode_ids(self, text: str) -> np.ndarray:
        """Token ids ``[CLS] ... [SEP]`` of ``text`` (no truncation, no padding)."""
        return np.asarray(self.tokenizer.encode(text).ids, np.int64)

    def embed(self, sentences) -> np.ndarray:
        """Sentence embeddings (B, 384): masked mean of the last hidden states, L2-normalised."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be a list of strings, got one string; wrap it in a list")
        ids = [self.encode_ids(s) for s in sentences]
        n = max(len(i) for i in ids)
        batch = np.zeros((len(ids), n), np.int64)
        mask = np.zeros((len(ids), n), np.int32)
        for b, i in enumerate(ids):
            batch[b, : len(i)] = i
            mask[b, : len(i)] = 1
        last = self(batch, mask).hidden[-1]
        pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@functools.lru_cache(maxsize=1)
def load() -> Bert:
    """Load all-MiniLM-L6-v2 from the installed package (raises :class:`loading.ModelNotInstalled`)."""
    cfg = loading.load_config()
    return Bert(cfg, params_from_weights(loading.load_weights(), cfg), loading.load_tokenizer())


def _layer_norm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["g"] + p["b"]


def _dense(x, p):
    return x @ p["w"].T + p["b"]


@functools.partial(jax.jit, static_argnums=(3, 4))
def _forward(params, ids, mask, num_heads, eps):
    b, n = ids.shape
    x = params["word"][ids] + params["pos"][jnp.arange(n)][None] + params["type"][0][None, None]
    x = _layer_norm(x, params["ln"], eps)
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float64).min)
    hidden, qs, ks, atts = [x], [], [], []
    for lp in params["layers"]:
        def heads(t):
            return t.reshape(b, n, num_heads, -1).transpose(0, 2, 1, 3)  # (B, H, n, dh)

        q, k, v = heads(_dense(x, lp["q"])), heads(_dense(x, lp["k"])), heads(_dense(x, lp["v"]))
        scores = jnp.einsum("bhid,bhjd->bhij", q, k) / jnp.sqrt(q.shape[-1]) + bias
        att = jax.nn.softmax(scores, axis=-1)
        ctx = jnp.einsum("bhij,bhjd->bhid", att, v).transpose(0, 2, 1, 3).reshape(b, n, -1)
        x = _layer_norm(x + _dense(ctx, lp["o"]), lp["ln1"], eps)
        ff = jax.nn.gelu(_dense(x, lp["ff1"]), approximate=False)
        x = _layer_norm(x + _dense(ff, lp["ff2"]), lp["ln2"], eps)
        hidden.append(x)
        qs.append(q)
        ks.append(k)
        atts.append(att)
    return jnp.stack(hidden), jnp.stack(qs), jnp.stack(ks), jnp.stack(atts)
