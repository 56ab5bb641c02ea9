r"""A small pre-norm transformer in pure JAX: parameters are a pytree, the model is a function.

.. math::
    h^0_i = E[x_i] + \mu_i\,m,\qquad
    h^{l+1/2} = h^l + \mathrm{Attn}_l(\mathrm{LN}(h^l)),\qquad
    h^{l+1} = h^{l+1/2} + \mathrm{MLP}_l(\mathrm{LN}(h^{l+1/2}))

(token embedding plus mark strength ``mu`` times a learned mark vector; no position
embeddings, the task is order-free), and the prediction is read at the last (QUERY)
position, ``logits = LN(h^{L}_{-1}) W_out``.  Each head ``a`` of layer ``l`` attends with

.. math:: p_{ij} = \mathrm{softmax}_j\!\left(\frac{q_i\cdot k_j}{\sqrt{d_h}\,\tau}\right),\quad j \le i,

where ``tau`` is the attention temperature (1 except in the "true temperature"
arm).  Only the QUERY row of the last layer reaches the logits, so the last layer
computes that row alone.  A one-layer model (the experiment's) goes through
:func:`factored_layer`, which computes the same function per token *type* (cheap
enough to evaluate every seed on 10,000 long sequences); :func:`forward_reference`
is the block-by-block computation it is tested against.

The query family of head ``a`` at the QUERY position is ``p(x) = softmax(s K x)``
with the sequence's keys ``K`` (``(L, d_h)``), ``s = 1 / (sqrt(d_h) tau)`` and
``x`` the query: ``geometry.attention(K, s)`` at ``q`` (``aux["k"]``, ``aux["q"]``).
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
    d_model: int = 16
    n_heads: int = 2
    n_layers: int = 1
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
def init_params(cfg: ModelConfig, key, dtype=jnp.float32):
    """Gaussian init with variance 1/fan_in for matrices, unit gains, zero biases.

    Layer parameters are stacked along a leading ``n_layers`` axis.
    """
    d, h, dh, f, nl = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.mlp_ratio * cfg.d_model, cfg.n_layers
    keys = iter(jax.random.split(key, 10))

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
        tok=normal((cfg.vocab_size, d), 1), mark=normal((d,), 1),
        layers=layers, lnf_g=jnp.ones(d, dtype), lnf_b=jnp.zeros(d, dtype), out=normal((d, cfg.n_out), d),
    )


def embed(params, tokens, marks):
    """``E[x] + mu m``: the token's embedding plus its mark strength ``mu`` times the mark vector (no positions)."""
    return params["tok"][tokens] + marks[..., None].astype(params["mark"].dtype) * params["mark"]


LN_EPS = 1e-5


def layer_norm(x, g, b, eps=LN_EPS):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * g + b


def attention_probs(q, k, temperature):
    r"""Causal softmax over keys of ``q . k_j / (sqrt(d_h) tau)``.

    ``q`` ``(..., I, d_h)`` are the last ``I`` rows of a sequence whose keys are ``k`` ``(..., J, d_h)``:
    row ``i`` sees keys ``j <= i + J - I`` (the last row sees every key).  Masked entries are exactly 0.
    """
    logits = jnp.einsum("...ie,...je->...ij", q, k) / (math.sqrt(q.shape[-1]) * temperature)
    i, j = q.shape[-2], k.shape[-2]
    mask = jnp.arange(j)[None, :] <= jnp.arange(i)[:, None] + (j - i)
    return jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)


def attention_entropy(p):
    """``H = -sum_j p_j log p_j`` over the last axis, in nats (``0 log 0 = 0``)."""
    return entr(p).sum(-1)


def _mlp(layer, h):
    x = layer_norm(h, layer["ln2_g"], layer["ln2_b"])
    return h + jax.nn.gelu(x @ layer["w1"] + layer["b1"]) @ layer["w2"] + layer["b2"]


def block(layer, h, temperature, query_only: bool):
    """One pre-norm block on ``h`` ``(B, L, d)``.

    Returns the new stream (``(B, L, d)``, or ``(B, 1, d)`` for the QUERY row alone with
    ``query_only``) and ``(p, q, k)`` of the QUERY row: ``p`` ``(B, H, L)``, ``q`` ``(B, H, d_h)``,
    ``k`` ``(B, H, L, d_h)``.
    """
    x = layer_norm(h, layer["ln1_g"], layer["ln1_b"])
    xq = x[:, -1:] if query_only else x
    q = jnp.einsum("bld,dhe->bhle", xq, layer["wq"])
    k = jnp.einsum("bld,dhe->bhle", x, layer["wk"])
    v = jnp.einsum("bld,dhe->bhle", x, layer["wv"])
    p = attention_probs(q, k, temperature)
    h = h[:, -1:] if query_only else h
    h = h + jnp.einsum("bhle,hed->bld", jnp.einsum("bhij,bhje->bhie", p, v), layer["wo"])
    return _mlp(layer, h), (p[:, :, -1], q[:, :, -1], k)


def factored_layer(params, layer, tokens, marks, temperature, return_keys: bool):
    r"""The block of a one-layer model at its QUERY row, computed per token type; the same function as
    :func:`block` on ``h = E[x] + mu m`` (``tests/test_fix.py`` checks it against :func:`forward_reference`).

    The first layer norm of ``h_j = E[x_j] + mu_j m`` is
    :math:`\mathrm{LN}(h_j) = r_j\,(\tilde E_{x_j} + \mu_j \tilde m)\odot g + b` with centred rows
    :math:`\tilde E, \tilde m` and :math:`r_j = (|\tilde E_{x_j} + \mu_j\tilde m|^2/d + \epsilon)^{-1/2}`,
    a function of three per-type scalars and ``mu_j``.  So every key is
    :math:`k_j = r_j (A_{x_j} + \mu_j B) + C` with ``A = (E~ * g) W_k`` (one row per token type),
    ``B = (m~ * g) W_k``, ``C = b W_k`` (values alike), and the QUERY row needs per token only
    ``q . A_x`` (a table over the vocabulary), ``r_j`` and ``mu_j``:
    :math:`\mathrm{logit}_j = s\,(r_j (q\cdot A_{x_j} + \mu_j\, q\cdot B) + q\cdot C)` and
    :math:`\sum_j p_j v_j = \sum_x w_x A^v_x + (\sum_j p_j r_j \mu_j) B^v + C^v`,
    :math:`w_x = \sum_{j: x_j = x} p_j r_j`.  Per token this is ``O(H)`` work instead of ``O(d^2)``: the
    evaluation on 10,000 sequences of 64 tokens per seed is cheap.

    Returns the new QUERY stream ``(B, d)`` and ``(p, q, k)`` as :func:`block` (``k`` is None unless
    ``return_keys``).
    """
    emb, mark, g, b = params["tok"], params["mark"], layer["ln1_g"], layer["ln1_b"]
    d, n_types = emb.shape[-1], emb.shape[0]
    ec = emb - emb.mean(-1, keepdims=True)
    mc = mark - mark.mean()
    mu = marks.astype(emb.dtype)
    r = jax.lax.rsqrt((ec * ec).sum(-1)[tokens] / d + 2 * mu * (ec @ mc)[tokens] / d + mu * mu * (mc @ mc) / d
                      + LN_EPS)  # (B, L)

    def tables(w):  # A (V, H, e), B (H, e), C (H, e)
        return (jnp.einsum("vd,dhe->vhe", ec * g, w), jnp.einsum("d,dhe->he", mc * g, w),
                jnp.einsum("d,dhe->he", b, w))

    ka, kb, kc = tables(layer["wk"])
    va, vb, vc = tables(layer["wv"])
    xq = (r[:, -1, None] * (ec[tokens[:, -1]] + mu[:, -1, None] * mc)) * g + b
    q = jnp.einsum("bd,dhe->bhe", xq, layer["wq"])
    onehot = jax.nn.one_hot(tokens, n_types, dtype=emb.dtype)  # (B, L, V)
    scale = 1.0 / (math.sqrt(q.shape[-1]) * temperature)
    qa = jnp.einsum("bhe,vhe->bhv", q, ka)
    z = (r[:, None, :] * (jnp.einsum("bhv,blv->bhl", qa, onehot) + mu[:, None, :] * jnp.einsum("bhe,he->bh", q, kb)[..., None])
         + jnp.einsum("bhe,he->bh", q, kc)[..., None])
    p = jax.nn.softmax(scale * z, axis=-1)  # (B, H, L): the QUERY row sees every key
    pr = p * r[:, None, :]
    o = (jnp.einsum("bhv,vhe->bhe", jnp.einsum("bhl,blv->bhv", pr, onehot), va)
         + jnp.einsum("bh,he->bhe", (pr * mu[:, None, :]).sum(-1), vb) + vc[None])
    h = emb[tokens[:, -1]] + mu[:, -1, None] * mark + jnp.einsum("bhe,hed->bd", o, layer["wo"])
    k = None
    if return_keys:
        k = r[:, None, :, None] * (jnp.einsum("blv,vhe->bhle", onehot, ka) + mu[:, None, :, None] * kb[None, :, None])
        k = k + kc[None, :, None]
    return _mlp(layer, h), (p, q, k)


@functools.partial(jax.jit, static_argnames=("return_probs",))
def forward(params, tokens, marks, temperature=1.0, return_probs=False):
    """Logits ``(B, n_out)`` at the last position and ``aux``.

    ``aux["entropy"]``: ``(n_layers, B, H)`` entropies of the QUERY rows the forward
    pass used; with ``return_probs`` also ``aux["probs"]`` ``(n_layers, B, H, L)``,
    ``aux["q"]`` ``(n_layers, B, H, d_h)`` and ``aux["k"]`` ``(n_layers, B, H, L, d_h)``.
    One-layer models go through :func:`factored_layer`, deeper ones through :func:`forward_reference`.
    """
    if params["layers"]["wq"].shape[0] != 1:
        return forward_reference(params, tokens, marks, temperature, return_probs)
    layer = jax.tree_util.tree_map(lambda a: a[0], params["layers"])
    h, (p, q, k) = factored_layer(params, layer, tokens, marks, temperature, return_probs)
    logits = layer_norm(h, params["lnf_g"], params["lnf_b"]) @ params["out"]
    aux = dict(entropy=attention_entropy(p)[None])
    if return_probs:
        aux.update(probs=p[None], q=q[None], k=k[None])
    return logits, aux


@functools.partial(jax.jit, static_argnames=("return_probs",))
def forward_reference(params, tokens, marks, temperature=1.0, return_probs=False):
    """:func:`forward` computed block by block (any depth): the plain transformer, the reference."""
    h = embed(params, tokens, marks)
    layers = params["layers"]
    n_layers = layers["wq"].shape[0]
    rows = []
    for l in range(n_layers):  # shallow models: unrolled (the last layer differs: its QUERY row only)
        layer = jax.tree_util.tree_map(lambda a: a[l], layers)
        h, row = block(layer, h, temperature, query_only=l == n_layers - 1)
        rows.append(row)
    logits = layer_norm(h[:, -1], params["lnf_g"], params["lnf_b"]) @ params["out"]
    p, q, k = (jnp.stack(x) for x in zip(*rows))
    aux = dict(entropy=attention_entropy(p))
    if return_probs:
        aux.update(probs=p, q=q, k=k)
    return logits, aux


def cross_entropy(logits, targets):
    """Per-example ``-log softmax(logits)[target]`` (nats)."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=-1)[:, 0]
