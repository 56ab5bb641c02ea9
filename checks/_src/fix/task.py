r"""Synthetic task: retrieve the one marked token among distractors, from noisy marks.

A sequence of ``length`` tokens holds ``length - 2`` *distractors* drawn uniformly
from ``n_content`` content tokens, one *marked* token at a uniformly random slot, and
the QUERY token last; the target is the content of the marked token.  Every token
also carries a *mark strength* ``mu``: 1 for the marked token, 0 for the others
(and exactly 0 for the QUERY), plus Gaussian noise of standard deviation
``mark_noise`` on every non-QUERY token::

    tokens   7    3    1    5    1    0   ...  4    QUERY   ->  5
    mu      .1  -.3   .2  1.1   .4  -.2  ... -.1    0

The model sees ``E[x] + mu m`` (token embedding plus mark strength times a learned
mark vector) and no positions: the task is order-free.  Chance accuracy is
``1 / n_content``.

Why this task (issue 17).  The first version's task (copy the token after a marker)
needs a two-layer induction circuit that a seed either found or did not: OOD
accuracy was nearly bimodal over seeds and a third of the SGD seeds never learned,
so the spread over seeds swamped any effect of the schedule.  Noise-free marks
fail the other way: one attention row finds the marked key and can sharpen without
limit, so a trained model is right on sequences of any length and an OOD split has
no headroom.  With noisy marks the task has a known optimum: the posterior over the
marked slot is ``softmax(mu / sigma^2)`` (:func:`bayes_predictive`), *one attention
row at a finite inverse temperature*.  So there is a right amount of attention
entropy, every seed of a one-layer model learns the ID task (close to the Bayes
accuracy; the rule is ``plan.LEARNED_FRACTION``), and the OOD score depends
continuously on how sharp the learned row is -- the quantity the post's argument is
about -- with the Bayes predictor as the ceiling any model trained on this
distribution can be compared with.

Splits.  Training and in-distribution (ID) sequences have ``length = train_length``.
Out-of-distribution (OOD) sequences (:func:`ood_split`) carry the two shifts of the
post's argument:

* **longer contexts, more distractors**: ``ood_length`` tokens (default ``4 L``), so
  the marked key competes with ``(ood_length - 2) / (train_length - 2)`` times as many
  noisy distractors (no positions: no unseen position embeddings confound the shift);
* **a shifted distractor distribution**: in each OOD sequence a fraction
  ``ood_repeat`` of the distractor slots holds one *repeated distractor* ``d != target``.
  Attention mass that leaks off the marked key then adds up on one wrong value
  instead of averaging out over uniform distractors, so overconfident, too-sharp or
  too-flat rows are all penalised.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


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
    #: standard deviation of the Gaussian noise on every token's mark strength (marked: 1, others: 0)
    mark_noise: float = 0.3
    #: fraction of the OOD distractor slots that hold one repeated distractor (0: uniform distractors)
    ood_repeat: float = 0.5

    def __post_init__(self):
        if self.n_content < 2:
            raise ValueError(f"n_content must be >= 2 (chance accuracy 1/n_content), got {self.n_content}")
        if self.train_length < 3:
            raise ValueError(f"train_length must be >= 3 (a distractor, the marked token, the query), got {self.train_length}")
        if self.ood_length < self.train_length:
            raise ValueError(f"ood_length ({self.ood_length}) must be >= train_length ({self.train_length})")
        if not (math.isfinite(self.mark_noise) and self.mark_noise > 0):
            raise ValueError(f"mark_noise must be finite and > 0 (noise-free marks make the task trivially "
                             f"length-invariant), got {self.mark_noise!r}")
        if not 0.0 <= self.ood_repeat <= 1.0:
            raise ValueError(f"ood_repeat is a fraction of distractor slots and must be in [0, 1], got {self.ood_repeat!r}")

    @property
    def query(self) -> int:
        return self.n_content

    @property
    def vocab_size(self) -> int:
        return self.n_content + 1


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def sample(task: Task, key, batch: int, length: int, repeat: float = 0.0):
    """``(tokens (B, length) int32, marks (B, length), targets (B,) int32)``; pure JAX.

    ``repeat``: fraction of the distractor slots replaced by one repeated distractor ``!= target``.
    The QUERY token (last) has mark strength exactly 0.
    """
    k_tgt, k_pos, k_tok, k_rep, k_mix, k_noise = jax.random.split(key, 6)
    c = task.n_content
    targets = jax.random.randint(k_tgt, (batch,), 0, c, dtype=jnp.int32)
    where = jax.random.randint(k_pos, (batch,), 0, length - 1, dtype=jnp.int32)
    tokens = jax.random.randint(k_tok, (batch, length), 0, c, dtype=jnp.int32)
    if repeat > 0:
        other = (targets + 1 + jax.random.randint(k_rep, (batch,), 0, c - 1, dtype=jnp.int32)) % c
        tokens = jnp.where(jax.random.uniform(k_mix, (batch, length)) < repeat, other[:, None], tokens)
    rows = jnp.arange(batch)
    tokens = tokens.at[rows, where].set(targets).at[:, -1].set(task.query)
    marks = task.mark_noise * jax.random.normal(k_noise, (batch, length))
    marks = marks.at[rows, where].add(1.0).at[:, -1].set(0.0)
    return tokens, marks, targets


def train_batch(task: Task, key, batch: int):
    return sample(task, key, batch, task.train_length)


def id_split(task: Task, key, size: int):
    return sample(task, key, size, task.train_length)


def ood_split(task: Task, key, size: int):
    return sample(task, key, size, task.ood_length, task.ood_repeat)


def bayes_predictive(task: Task, tokens, marks):
    r"""The Bayes-optimal predictive distribution of the *training* distribution, ``(B, n_content)``.

    The marked position ``j`` is uniform over the ``length - 1`` non-QUERY slots and
    :math:`\mu_j \sim N([j = j^*], \sigma^2)`, so its posterior is
    :math:`P(j^* = j \mid \mu) \propto e^{\mu_j / \sigma^2}` (the likelihood ratio
    :math:`N(\mu; 1, \sigma^2) / N(\mu; 0, \sigma^2) = e^{(2\mu - 1)/(2\sigma^2)}`), and
    :math:`P(y = c) = \sum_j P(j^* = j \mid \mu)\,[x_j = c]`: one softmax attention row at
    inverse temperature :math:`1/\sigma^2` reading one-hot values.  Applied to OOD sequences it
    is the best predictor that knows only the training distribution (it does not know that the
    repeated distractor is never the answer); numpy, float64.
    """
    tokens, marks = np.asarray(tokens), np.asarray(marks, np.float64)
    logits = marks[:, :-1] / task.mark_noise**2
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = tokens[:, :-1, None] == np.arange(task.n_content)[None, None, :]
    return np.einsum("bj,bjc->bc", p, onehot)
