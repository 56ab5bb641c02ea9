r"""BERT and MPNet encoder forward passes in JAX (float64), returning per-layer, per-head queries, keys and attention.

Both models are post-LN transformer encoders with the same block.  For layer :math:`\ell` with
input :math:`X \in \mathbb{R}^{n\times d}` (Vaswani et al. 2017, eq. 1), head :math:`h` has

.. math:: Q_h = X W^Q_h{}^\top + b^Q_h,\quad K_h = X W^K_h{}^\top + b^K_h,\quad
          A_h = \operatorname{softmax}_{\text{row}}\!\big(Q_h K_h^\top/\sqrt{d_h} + B_h + M\big)

with :math:`M_{ij} = 0` for real keys and ``finfo.min`` for padding, and
:math:`X' = \mathrm{LN}(X + \mathrm{Attn}(X)W^O{}^\top + b^O)`,
:math:`X'' = \mathrm{LN}(X' + \mathrm{GELU}(X'W_1^\top + b_1)W_2^\top + b_2)` (erf GELU).

* **BERT** (all-MiniLM-L6-v2; Devlin et al. 2019): :math:`d = 384`, :math:`d_h = 32`,
  :math:`B = 0`; embeddings ``word[id] + pos[i] + type[0]``, LayerNorm eps 1e-12.
* **MPNet** (all-mpnet-base-v2; Song et al. 2020): :math:`d = 768`, :math:`d_h = 64`;
  :math:`B_h[i, j] = T[\mathrm{bucket}(j - i), h]` from one table :math:`T` (32 buckets x 12
  heads) shared by every layer (:func:`relative_position_bucket`); embeddings
  ``word[id] + pos[position_id]`` with fairseq position ids (:func:`mpnet_position_ids`: real
  tokens get ``pad_id + 1, pad_id + 2, ...``), LayerNorm eps 1e-5.

So the attention row of query token :math:`i` is exactly the attention family
``geometry.attention(K_h, 1/sqrt(d_h), offset=B_h[i])`` at :math:`x = q_i`:
:math:`p = \operatorname{softmax}(K_h q_i/\sqrt{d_h} + B_h[i])` (``offset=None`` for BERT);
the linear biases are inside ``q`` and ``K``.  Sentence embedding (both sentence-transformers
models): mean of the last hidden states over real tokens, L2-normalised.  Weights are float32
on disk and computed in float64 here.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import loading

jax.config.update("jax_enable_x64", True)  # float64 throughout (geometry enables it too; do not depend on import order)

#: Sequence lengths are padded (masked) up to a multiple of this before the jitted pass.
LENGTH_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
    """``hidden``: (L+1, B, n, d) (embeddings first); ``queries``/``keys``: (L, B, H, n, d_h);
    ``attention``: (L, B, H, n, n), row ``[.., i, :]`` is the distribution of query token ``i``;
    ``position_bias``: (H, n, n), the logit offset ``B_h[i, j]`` of every layer (zeros for BERT)."""

    hidden: np.ndarray
    queries: np.ndarray
    keys: np.ndarray
    attention: np.ndarray
    position_bias: np.ndarray
    mask: np.ndarray  # (B, n) 1 for real tokens

    def offsets(self, head: int, n: int | None = None) -> np.ndarray | None:
        """``(n, n)`` logit offsets of ``head`` over the first ``n`` tokens (row ``i``: query ``i``); ``None`` without a bias."""
        if not np.any(self.position_bias):
            return None
        n = self.position_bias.shape[-1] if n is None else n
        return self.position_bias[head, :n, :n]


# --------------------------------------------------------------------------- position rules


def relative_position_bucket(relative_position, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    r"""MPNet's (T5's bidirectional) bucket of ``relative_position = j - i`` (key minus query).

    Half the buckets for keys before the query, half after; in each half distances
    ``< num_buckets/4`` get a bucket each, larger ones share logarithmically wider buckets up to
    ``max_distance`` (clipped there).  Written as transformers' ``MPNetEncoder.relative_position_bucket``
    computes it, including the float32 logarithm (its truncation decides the bucket at
    distances 16, 32 and 64); ``compare_reference`` checks the table against it.
    """
    rel = np.asarray(relative_position, np.int64)
    half = num_buckets // 2
    n = -rel
    ret = np.where(n < 0, half, 0)
    n = np.abs(n)
    exact = half // 2
    ratio = np.maximum(n, 1).astype(np.float32) / np.float32(exact)
    large = exact + (np.log(ratio) / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)).astype(np.int64)
    return ret + np.where(n < exact, n, np.minimum(large, half - 1))


def mpnet_position_ids(ids: np.ndarray, pad_id: int) -> np.ndarray:
    """fairseq/transformers position ids: ``pad_id + cumsum(ids != pad_id)`` on real tokens, ``pad_id`` on padding."""
    real = (np.asarray(ids) != pad_id).astype(np.int64)
    return np.cumsum(real, axis=1) * real + pad_id


# --------------------------------------------------------------------------- weights


def _getter(weights):
    def get(name, shape):
        if name not in weights:
            raise KeyError(f"weight {name!r} missing from model.safetensors")
        arr = weights[name]
        if arr.shape != shape:
            raise ValueError(f"weight {name} has shape {arr.shape}, expected {shape}")
        return jnp.asarray(np.asarray(arr, np.float64))

    return get


def params_from_weights(weights: dict, cfg: loading.ModelConfig) -> dict:
    """Nest the Hugging Face tensor names into one pytree of float64 arrays (checks every shape).

    Both layouts give ``word``, ``pos``, ``ln`` and ``layers`` (``q k v o ln1 ff1 ff2 ln2``);
    BERT adds ``type`` (token-type table), MPNet ``rel`` (the relative bias table, buckets x heads).
    """
    get = _getter(weights)
    d, f = cfg.hidden, cfg.intermediate

    def ln(prefix):
        return {"g": get(prefix + ".weight", (d,)), "b": get(prefix + ".bias", (d,))}

    def dense(prefix, out, inp):
        return {"w": get(prefix + ".weight", (out, inp)), "b": get(prefix + ".bias", (out,))}

    if cfg.arch == "bert":
        names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ln1": "attention.output.LayerNorm"}
    elif cfg.arch == "mpnet":
        names = {"q": "attention.attn.q", "k": "attention.attn.k", "v": "attention.attn.v",
                 "o": "attention.attn.o", "ln1": "attention.LayerNorm"}
    else:
        raise ValueError(f"unknown architecture {cfg.arch!r}; expected 'bert' or 'mpnet'")
    layers = []
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        layer = {k: dense(p + names[k], d, d) for k in ("q", "k", "v", "o")}
        layer.update(ln1=ln(p + names["ln1"]), ff1=dense(p + "intermediate.dense", f, d),
                     ff2=dense(p + "output.dense", d, f), ln2=ln(p + "output.LayerNorm"))
        layers.append(layer)
    params = {
        "word": get("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
        "pos": get("embeddings.position_embeddings.weight", (cfg.max_positions, d)),
        "ln": ln("embeddings.LayerNorm"),
        "layers": layers,
    }
    if cfg.arch == "bert":
        params["type"] = get("embeddings.token_type_embeddings.weight", (2, d))
    else:
        params["rel"] = get("encoder.relative_attention_bias.weight", (cfg.relative_buckets, cfg.num_heads))
    return params


# --------------------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True, eq=False)
class Encoder:
    """A loaded model: its spec, config, parameters and tokenizer.  Build with :func:`load`."""

    spec: loading.ModelSpec
    cfg: loading.ModelConfig
    params: dict
    tokenizer: object

    @property
    def name(self) -> str:
        return self.spec.name

    def position_ids(self, ids: np.ndarray) -> np.ndarray:
        if self.cfg.arch == "mpnet":
            return mpnet_position_ids(ids, self.cfg.pad_id)
        return np.broadcast_to(np.arange(ids.shape[1]), ids.shape)

    def position_bias(self, n: int) -> np.ndarray:
        """``(H, n, n)`` logit offsets ``B_h[i, j] = T[bucket(j - i), h]`` (zeros for BERT)."""
        if self.cfg.arch != "mpnet":
            return np.zeros((self.cfg.num_heads, n, n))
        rel = np.arange(n)[None, :] - np.arange(n)[:, None]
        buckets = relative_position_bucket(rel, self.cfg.relative_buckets, self.cfg.relative_max_distance)
        return np.asarray(self.params["rel"])[buckets].transpose(2, 0, 1)

    def __call__(self, input_ids, mask=None) -> EncoderOutput:
        ids = np.atleast_2d(np.asarray(input_ids))
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be an integer array of shape (n,) or (B, n), got {ids.dtype} {ids.shape}")
        if ids.shape[1] > self.cfg.max_tokens:
            raise ValueError(f"input_ids has {ids.shape[1]} tokens; {self.name} takes at most {self.cfg.max_tokens}. Cut the text.")
        if np.any((ids < 0) | (ids >= self.cfg.vocab_size)):
            raise ValueError(f"input_ids must be token ids in [0, {self.cfg.vocab_size}); encode text with model.tokenizer")
        mask = (ids != self.cfg.pad_id if self.cfg.arch == "mpnet" else np.ones(ids.shape, bool)) if mask is None else mask
        mask = np.atleast_2d(np.asarray(mask, np.int32))
        if mask.shape != ids.shape:
            raise ValueError(f"mask has shape {mask.shape} but input_ids has {ids.shape}")
        # Pad the length to a multiple of LENGTH_BUCKET with the pad token, masked, so nothing leaks into
        # real tokens (padded keys get probability exp(finfo.min) = 0; MPNet's relative bias depends
        # on j - i only and its position ids skip pad tokens): few shapes, few compilations.
        n = ids.shape[1]
        nb = min(-(-n // LENGTH_BUCKET) * LENGTH_BUCKET, self.cfg.max_tokens)
        pids = np.full((ids.shape[0], nb), self.cfg.pad_id, np.int64)
        pmask = np.zeros((ids.shape[0], nb), np.int32)
        pids[:, :n], pmask[:, :n] = ids, mask
        bias = self.position_bias(nb)
        out = _forward(self.params, jnp.asarray(pids), jnp.asarray(pmask), jnp.asarray(self.position_ids(pids)),
                       jnp.asarray(bias), self.cfg.num_heads, self.cfg.layer_norm_eps)
        hidden, q, k, a = (np.asarray(t) for t in out)
        return EncoderOutput(hidden=hidden[:, :, :n], queries=q[..., :n, :], keys=k[..., :n, :],
                             attention=a[..., :n, :n], position_bias=bias[:, :n, :n], mask=mask)

    def encode_ids(self, text: str) -> np.ndarray:
        """Token ids ``[CLS] ... [SEP]`` (MPNet ``<s> ... </s>``) of ``text`` (no truncation, no padding)."""
        return np.asarray(self.tokenizer.encode(text).ids, np.int64)

    def batch(self, sentences) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (B, n) right-padded with the pad token, and the mask of real tokens."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be a list of strings, got one string; wrap it in a list")
        ids = [self.encode_ids(s) for s in sentences]
        n = max(len(i) for i in ids)
        batch = np.full((len(ids), n), self.cfg.pad_id, np.int64)
        mask = np.zeros((len(ids), n), np.int32)
        for b, i in enumerate(ids):
            batch[b, : len(i)] = i
            mask[b, : len(i)] = 1
        return batch, mask

    def embed(self, sentences) -> np.ndarray:
        """Sentence embeddings (B, d): masked mean of the last hidden states, L2-normalised."""
        batch, mask = self.batch(sentences)
        last = self(batch, mask).hidden[-1]
        pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def load(model="minilm") -> Encoder:
    """Load a model by key (``"minilm"``, ``"mpnet"``) or spec (raises :class:`loading.ModelNotInstalled`); cached."""
    return _load(loading.spec(model).key)


@functools.lru_cache(maxsize=2)
def _load(key: str) -> Encoder:
    spec = loading.spec(key)
    cfg = loading.load_config(spec)
    weights = loading.load_weights(spec)
    if len(weights) != spec.num_weights:
        raise ValueError(f"{spec.name} model.safetensors has {len(weights)} tensors, expected {spec.num_weights}")
    return Encoder(spec, cfg, params_from_weights(weights, cfg), loading.load_tokenizer(spec))


def _layer_norm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["g"] + p["b"]


def _dense(x, p):
    return x @ p["w"].T + p["b"]


@functools.partial(jax.jit, static_argnums=(5, 6))
def _forward(params, ids, mask, position_ids, position_bias, num_heads, eps):
    b, n = ids.shape
    x = params["word"][ids] + params["pos"][position_ids]
    if "type" in params:
        x = x + params["type"][0][None, None]
    x = _layer_norm(x, params["ln"], eps)
    bias = position_bias[None] + jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float64).min)
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
