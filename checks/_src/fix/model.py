r"""A small pre-norm transformer in pure JAX: parameters are a pytree, the model is a function.

.. math::
    h^0 = E_\mathrm{tok}[x] + E_\mathrm{pos}[i],\qquad
    h^{l+1/2} = h^l + \mathrm{Attn}_l(\mathrm{LN}(h^l)),\qquad
    h^{l+1} = h^{l+1/2} + \mathrm{MLP}_l(\mathrm{LN}(h^{l+1/2}))

and the prediction is read at the last (QUERY) position,
``logits = LN(h^{L}_{-1}) W_out``.  Each head ``a`` of layer ``l`` attends with

.. math:: p_{ij} = \mathrm{softmax}_j\!\left(\frac{q_i\cdot k_j}{\sqrt{d_h}\,\tau}\right),\quad j \le i,

where ``tau`` is the attention temperature (1 except in the "true temperature"
arm).  :func:`attention_probs` is the only place this softmax is computed; the
forward pass and the reported entropies ``H_i = -sum_j p_ij log p_ij`` (nats)
both use its output.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import entr


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    n_out: int
    n_positions: int
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 3
    mlp_ratio: int = 2

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"need n_layers >= 1 and n_heads >= 1, got {self.n_layers}, {self.n_heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_params(cfg: ModelConfig, key, dtype=jnp.float64):
    """Gaussian init with variance 1/fan_in for matrices, unit gains, zero biases.

    Layer parameters are stacked along a leading ``n_layers`` axis (the forward pass
    scans over it, which keeps compile time independent of depth).
    """
    d, h, dh, f, nl = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.mlp_ratio * cfg.d_model, cfg.n_layers
    keys = iter(jax.random.split(key, 9))

    def normal(shape, fan_in):
        return jax.random.normal(next(keys), shape, dtype) / math.sqrt(fan_in)

    layers = dict(
        ln1_g=jnp.ones((nl, d), dtype), ln1_b=jnp.zeros((nl, d), dtype),
        wq=normal((nl, d, h, dh), d), wk=normal((nl, d, h, dh), d), wv=normal((nl, d, h, dh), d),
        wo=normal((nl, h, dh, d), d),
        ln2_g=jnp.ones((nl, d), dtype), ln2_b=jnp.zeros((nl, d), dtype),
        w1=normal((nl, d, f), d), b1=jnp.zeros((nl, f), dtype), w2=normal((nl, f, d), f), b2=jnp.zeros((nl, d), dtype),
    )
    return dict(
        tok=normal((cfg.vocab_size, d), 1), pos=normal((cfg.n_positions, d), 1),
        layers=layers, lnf_g=jnp.ones(d, dtype), lnf_b=jnp.zeros(d, dtype), out=normal((d, cfg.n_out), d),
    )


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * g + b


def queries_keys(layer, x):
    """``q, k`` of shape ``(B, H, L, d_h)`` from the normalised stream ``x = LN(h)``."""
    q = jnp.einsum("bld,dhe->bhle", x, layer["wq"])
    k = jnp.einsum("bld,dhe->bhle", x, layer["wk"])
    return q, k


def attention_probs(q, k, temperature):
    r"""Causal softmax ``p[b, h, i, j]`` of ``q_i . k_j / (sqrt(d_h) tau)``; masked entries are exactly 0."""
    n = q.shape[-2]
    logits = jnp.einsum("bhie,bhje->bhij", q, k) / (math.sqrt(q.shape[-1]) * temperature)
    mask = jnp.tril(jnp.ones((n, n), bool))
    return jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)


def attention_entropy(p):
    """``H[b, h, i] = -sum_j p_ij log p_ij`` in nats (``0 log 0 = 0``)."""
    return entr(p).sum(-1)


def block(layer, h, temperature):
    """One pre-norm block; returns the new stream and ``(p, q, k)`` of its attention."""
    x = layer_norm(h, layer["ln1_g"], layer["ln1_b"])
    q, k = queries_keys(layer, x)
    v = jnp.einsum("bld,dhe->bhle", x, layer["wv"])
    p = attention_probs(q, k, temperature)
    h = h + jnp.einsum("bhle,hed->bld", jnp.einsum("bhij,bhje->bhie", p, v), layer["wo"])
    x = layer_norm(h, layer["ln2_g"], layer["ln2_b"])
    h = h + jax.nn.gelu(x @ layer["w1"] + layer["b1"]) @ layer["w2"] + layer["b2"]
    return h, (p, q, k)


@functools.partial(jax.jit, static_argnames=("return_probs",))
def forward(params, tokens, positions, temperature=1.0, return_probs=False):
    """Logits ``(B, n_out)`` at the last position and ``aux``.

    ``aux["entropy"]``: ``(n_layers, B, H, L)`` entropies of the attention rows the
    forward pass used; with ``return_probs`` also ``aux["probs"]`` ``(n_layers, B, H, L, L)``
    and the per-layer ``aux["q"], aux["k"]`` ``(n_layers, B, H, L, d_h)``.
    """
    h = params["tok"][tokens] + params["pos"][positions]

    def body(h, layer):
        h, (p, q, k) = block(layer, h, temperature)
        return h, ((attention_entropy(p), p, q, k) if return_probs else attention_entropy(p))

    h, per_layer = jax.lax.scan(body, h, params["layers"])
    logits = layer_norm(h[:, -1], params["lnf_g"], params["lnf_b"]) @ params["out"]
    if return_probs:
        ent, p, q, k = per_layer
        return logits, dict(entropy=ent, probs=p, q=q, k=k)
    return logits, dict(entropy=per_layer)


def cross_entropy(logits, targets):
    """Per-example ``-log softmax(logits)[target]`` (nats)."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=-1)[:, 0]
