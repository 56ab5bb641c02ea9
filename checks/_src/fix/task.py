r"""Synthetic task: copy the token that follows the marker.

A sequence of ``length`` tokens is drawn uniformly from ``n_content`` content
tokens; at a random position ``p in [0, length - 3]`` the token is replaced by the
MARKER, the last token is the QUERY, and the target is the token at ``p + 1``::

    7 3 12 MARKER 5 9 0 ... 4 QUERY   ->  5

Solving it needs sharp attention (an induction circuit: a previous-token head
marks the token after the MARKER, a second head at the QUERY copies it), and
chance accuracy is ``1 / n_content``.

Splits.  Training and in-distribution (ID) sequences have ``length = L`` and
their position ids start at a random offset in ``[0, n_positions - L]`` so that
every position embedding is trained.  Out-of-distribution (OOD) sequences are
longer (default ``4 L``, offset 0): every position is known, but there are four
times as many distractors to ignore, which is exactly where diluted
(high-entropy) attention hurts.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


#: XLA's RngBitGenerator: the same streams on every run, and ~3x faster to compile on CPU than threefry.
PRNG_IMPL = "rbg"


def prng_key(seed: int):
    """The key every random draw of the fix experiment derives from (``jax.random.key(seed, impl=PRNG_IMPL)``)."""
    return jax.random.key(seed, impl=PRNG_IMPL)


@dataclasses.dataclass(frozen=True)
class Task:
    n_content: int = 8
    train_length: int = 16
    ood_length: int = 64

    def __post_init__(self):
        if self.n_content < 2:
            raise ValueError(f"n_content must be >= 2 (chance accuracy 1/n_content), got {self.n_content}")
        if self.train_length < 4:
            raise ValueError(f"train_length must be >= 4 (marker, its token, query), got {self.train_length}")
        if self.ood_length < self.train_length:
            raise ValueError(f"ood_length ({self.ood_length}) must be >= train_length ({self.train_length})")

    @property
    def marker(self) -> int:
        return self.n_content

    @property
    def query(self) -> int:
        return self.n_content + 1

    @property
    def vocab_size(self) -> int:
        return self.n_content + 2

    @property
    def n_positions(self) -> int:
        return self.ood_length


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def sample(task: Task, key, batch: int, length: int, random_offset: bool):
    """``(tokens (B, length) int32, positions (B, length) int32, targets (B,) int32)``; pure JAX."""
    k_tok, k_pos, k_off = jax.random.split(key, 3)
    tokens = jax.random.randint(k_tok, (batch, length), 0, task.n_content, dtype=jnp.int32)
    p = jax.random.randint(k_pos, (batch,), 0, length - 2, dtype=jnp.int32)
    rows = jnp.arange(batch)
    targets = tokens[rows, p + 1]
    tokens = tokens.at[rows, p].set(task.marker).at[:, -1].set(task.query)
    if random_offset:
        offset = jax.random.randint(k_off, (batch, 1), 0, task.n_positions - length + 1, dtype=jnp.int32)
    else:
        offset = jnp.zeros((batch, 1), jnp.int32)
    positions = offset + jnp.arange(length, dtype=jnp.int32)[None, :]
    return tokens, positions, targets


def train_batch(task: Task, key, batch: int):
    return sample(task, key, batch, task.train_length, random_offset=True)


def id_split(task: Task, key, size: int):
    return sample(task, key, size, task.train_length, random_offset=True)


def ood_split(task: Task, key, size: int):
    return sample(task, key, size, task.ood_length, random_offset=False)
