r"""Many training runs as one compiled program: ``jax.vmap`` over runs of the whole training loop.

A *run* is one (seed, optimizer, arm, hyper-parameters) combination, described by a
:class:`RunSpec`.  Everything that differs between runs is a traced scalar (the seed's
key, the optimizer selector and learning rate, the arm's flags, the schedule, the
curvature weight ``lambda``), so one compilation of :func:`_train_program` trains every
run of a ``chunk``: baselines, both readings of the schedule and both optimizers alike.
The curvature-penalty arm computes ``R`` at every step and has its own program
(``penalty=True``), so the other arms do not pay for it.  Runs are padded to a whole
number of chunks (one shape, one compilation per program).

Arms (what the loss does at step ``t``, ``T = T(t)`` from :mod:`.schedule`):

``baseline``   ``loss = CE``;
``literal``    ``loss = CE / T(t)`` (the post's three lines, read literally);
``true-temp``  ``loss = CE`` with every attention softmax at ``logits / T(t)``;
``curvature``  ``loss = CE + lambda mean R_+`` with ``R`` the Fisher scalar curvature of each
               head's query family at the QUERY position of the training sequences
               (:mod:`.curvature`; the first :data:`PENALTY_QUERIES` of each batch) and
               :math:`R_+ = \max(R, 0)`.

Optimizers share one update rule with a traced selector (:func:`update`):

* ``adam``: ``optax.adam(lr)`` exactly (:math:`b_1 = 0.9, b_2 = 0.999, \epsilon = 10^{-8}`);
* ``sgd``: heavy-ball momentum, ``optax.sgd(lr, momentum)`` exactly, fed gradients clipped to
  global norm ``sgd_clip`` and with the learning rate warmed up linearly over ``sgd_warmup`` steps.

Data: the batch of step ``t`` is ``train_batch(fold_in(fold_in(prng_key(seed), 1), t))``
and the initial parameters come from ``fold_in(prng_key(seed), 0)``, drawn per seed outside
the vmapped program (:func:`_seed_program`): every arm of one seed sees the same batches from
the same start (a paired design), exactly as the one-run loop :func:`.train.train` does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import curvature as C
from . import model as M
from . import task as T
from .schedule import Schedule, temperature
from .stats import ECE_BINS

ARMS = ("baseline", "literal", "true-temp", "curvature")
#: The curvature arm evaluates R at the QUERY of the first this-many sequences of each batch (every head):
#: batches are i.i.d., so their mean R_+ is an unbiased estimate of the batch mean, at a quarter of the cost
#: (the gradient of R through the cumulant route is ~10 us a point on this CPU, 4x a forward-backward step).
PENALTY_QUERIES = 8
OPTIMIZERS = ("adam", "sgd")
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
#: Fixed evaluation data, shared by all seeds and arms (so differences between arms are paired).
EVAL_KEY = 20240


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    n_steps: int = 400
    batch: int = 32
    log_every: int = 40
    momentum: float = 0.9
    sgd_warmup: int = 40
    sgd_clip: float = 1.0
    #: both optimizers: the learning rate decays linearly to 0 from this fraction of training on (1: no decay)
    decay_from: float = 0.5
    eval_id: int = 2000
    eval_ood: int = 10000
    probe: int = 128  # ID sequences whose QUERY-row entropy and curvature are logged along training
    dtype: str = "float32"
    chunk: int = 32  # runs per call of the compiled program
    eval_chunk: int = 2500  # sequences per step of the evaluation loop (memory)
    #: compile with XLA backend optimisation level 0: ~2x faster compilation, ~6x slower steps (tests only)
    fast_compile: bool = False

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.n_steps % self.log_every:
            raise ValueError(f"n_steps ({self.n_steps}) must be a multiple of log_every ({self.log_every})")
        for name in ("eval_id", "eval_ood"):
            if getattr(self, name) % min(self.eval_chunk, getattr(self, name)):
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of eval_chunk ({self.eval_chunk})")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run.  ``schedule`` is used by the ``literal`` and ``true-temp`` arms only."""

    seed: int
    optimizer: str
    arm: str
    lr: float
    schedule: Schedule = Schedule(gamma=1.0)
    lam: float = 0.0
    init_perturbation: float = 0.0

    def __post_init__(self):
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {self.arm!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam (curvature weight) must be finite and >= 0 (it penalises positive R), got {self.lam!r}")
        if self.lam and self.arm != "curvature":
            raise ValueError(f"lam = {self.lam!r} is only meaningful for the 'curvature' arm, not {self.arm!r}")


def _hyper(spec: RunSpec, dtype) -> dict:
    s = spec.schedule
    return dict(
        sgd=np.asarray(spec.optimizer == "sgd"), lr=np.asarray(spec.lr, dtype),
        literal=np.asarray(spec.arm == "literal"), true_temp=np.asarray(spec.arm == "true-temp"),
        sched=np.asarray([s.base_temp, s.beta, s.gamma, s.t_switch], dtype), lam=np.asarray(spec.lam, np.float64),
        eps=np.asarray(spec.init_perturbation, dtype),
    )


def _temp(hp, t):
    s = hp["sched"]
    return temperature(t, s[0], s[1], s[2], s[3])


def attention_temperature(hp, t):
    """The attention temperature of a run at step ``t``: ``T(t)`` in the ``true-temp`` arm, else exactly 1."""
    return jnp.where(hp["true_temp"], _temp(hp, t), 1.0)


# --------------------------------------------------------------------------- optimizer


def opt_init(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return dict(m=zeros, v=zeros)


def lr_decay(t, cfg: BatchConfig):
    """Learning-rate factor at step ``t``: 1 until ``decay_from * n_steps``, then linear to 0 at ``n_steps``."""
    start = cfg.decay_from * cfg.n_steps
    if start >= cfg.n_steps:
        return jnp.ones(())
    return jnp.clip((cfg.n_steps - t) / (cfg.n_steps - start), 0.0, 1.0)


def update(params, grads, state, t, hp, cfg: BatchConfig):
    r"""One step of ``adam`` or ``sgd`` (selected by the traced ``hp["sgd"]``) at step ``t`` (0-based).

    .. math::
        \text{adam:}\quad m \leftarrow b_1 m + (1-b_1) g,\ v \leftarrow b_2 v + (1-b_2) g^2,\
        \theta \leftarrow \theta - \eta\,\frac{m/(1-b_1^{t+1})}{\sqrt{v/(1-b_2^{t+1})}+\epsilon}

        \text{sgd:}\quad g \leftarrow g\,\min(1, c/\|g\|),\ m \leftarrow \mu m + g,\
        \theta \leftarrow \theta - \eta\,\min(1, (t+1)/t_w)\,m

    (``c = sgd_clip``, ``t_w = sgd_warmup``).  Both branches are computed and one is
    selected per run (a few flops per parameter, against a forward-backward pass).
    """
    sgd = hp["sgd"]
    leaves = jax.tree_util.tree_leaves(grads)
    gnorm = jnp.sqrt(sum(jnp.sum(g.astype(jnp.float64) ** 2) for g in leaves))
    clip = jnp.where(sgd & (gnorm > cfg.sgd_clip), cfg.sgd_clip / gnorm, 1.0)
    decay = jnp.where(sgd, cfg.momentum, ADAM_B1)
    gain = jnp.where(sgd, clip, 1.0 - ADAM_B1)
    count = t + 1
    warm = jnp.where(sgd, jnp.minimum(1.0, count / max(cfg.sgd_warmup, 1)), 1.0) * lr_decay(t, cfg)

    def leaf(p, g, m, v):
        dt = p.dtype
        m = decay.astype(dt) * m + gain.astype(dt) * g
        v = jnp.asarray(ADAM_B2, dt) * v + jnp.asarray(1.0 - ADAM_B2, dt) * g * g
        m_hat = m / (1 - jnp.asarray(ADAM_B1, dt) ** count.astype(dt))
        v_hat = v / (1 - jnp.asarray(ADAM_B2, dt) ** count.astype(dt))
        step = jnp.where(sgd, m, m_hat / (jnp.sqrt(v_hat) + ADAM_EPS))
        return p - (hp["lr"] * warm).astype(dt) * step, m, v

    out = jax.tree_util.tree_map(leaf, params, grads, state["m"], state["v"])
    pick = lambda i: jax.tree_util.tree_map(lambda _, o: o[i], params, out)  # noqa: E731
    return pick(0), dict(m=pick(1), v=pick(2))


# --------------------------------------------------------------------------- loss, probes


def loss_fn(params, batch, t, hp, penalty: bool):
    """``(loss, (CE, mean R_+))`` of one batch at step ``t`` (the only place the arms differ)."""
    tokens, marks, targets = batch
    temp = _temp(hp, t)
    attn_temp = attention_temperature(hp, t).astype(params["tok"].dtype)
    logits, aux = M.forward(params, tokens, marks, attn_temp, return_probs=penalty)
    ce = M.cross_entropy(logits, targets).mean()
    loss = ce / jnp.where(hp["literal"], temp, 1.0).astype(ce.dtype)
    if not penalty:
        return loss, (ce, jnp.zeros((), jnp.float64))
    n = PENALTY_QUERIES
    r_plus, _ = C.positive_part_mean(C.query_curvatures(aux["q"][:, :n], aux["k"][:, :n], attn_temp))
    return loss + (hp["lam"] * r_plus).astype(loss.dtype), (ce, r_plus)


def probe_entropy(params, probe, attn_temp):
    """QUERY-row entropy per (layer, head), mean over the probe sequences."""
    tokens, marks, _ = probe
    _, aux = M.forward(params, tokens, marks, attn_temp)
    return aux["entropy"].mean(axis=1)


def probe_stats(params, probe, attn_temp):
    """QUERY-row entropy per layer (mean over heads and probe sequences) and ``R`` per (layer, sequence, head)."""
    tokens, marks, _ = probe
    _, aux = M.forward(params, tokens, marks, attn_temp, return_probs=True)
    r = C.query_curvatures(aux["q"], aux["k"], attn_temp)
    return aux["entropy"].mean(axis=(1, 2)), r


def curvature_summary(r) -> dict:
    """Summary of final ``R`` values (numpy): ``median``, ``pos_mean`` (mean of ``R_+``, the penalty),
    ``frac_pos`` (fraction > 0), ``frac_finite``; NaN entries (singular metric) are left out and counted."""
    r = np.asarray(r, np.float64).ravel()
    ok = np.isfinite(r)
    if not ok.any():
        return dict(median=math.nan, pos_mean=math.nan, frac_pos=math.nan, frac_finite=0.0)
    v = r[ok]
    return dict(median=float(np.median(v)), pos_mean=float(np.maximum(v, 0).mean()), frac_pos=float(np.mean(v > 0)),
                frac_finite=float(ok.mean()))


# --------------------------------------------------------------------------- the programs


@functools.lru_cache(maxsize=16)
def _train_program(task: T.Task, mcfg: M.ModelConfig, cfg: BatchConfig, penalty: bool):
    dtype = jnp.dtype(cfg.dtype)

    def one(hp, params, data, probe):
        params = jax.tree_util.tree_map(lambda p: p * (1 + hp["eps"]), params)

        def step(carry, t):
            params, state = carry
            batch = jax.tree_util.tree_map(lambda a: a[t], data)
            grads, (ce, rp) = jax.grad(loss_fn, has_aux=True)(params, batch, t, hp, penalty)
            params, state = update(params, grads, state, t, hp, cfg)
            return (params, state), (ce, rp)

        def log(params, t):
            ent = probe_entropy(params, probe, attention_temperature(hp, t).astype(dtype))
            return dict(entropy=ent, flat=ravel_pytree(params)[0])

        def interval(carry, t0):
            carry, (ce, rp) = jax.lax.scan(step, carry, t0 + jnp.arange(cfg.log_every))
            return carry, dict(train_ce=ce.mean(), penalty=rp.mean(), **log(carry[0], t0 + cfg.log_every))

        first = log(params, 0)
        (params, _), logs = jax.lax.scan(interval, (params, opt_init(params)),
                                         jnp.arange(0, cfg.n_steps, cfg.log_every))
        logs |= {k: jnp.concatenate([first[k][None], logs[k]]) for k in first}
        return params, logs

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)), compiler_options=_compiler_options(cfg))


@functools.lru_cache(maxsize=16)
def _seed_program(task: T.Task, mcfg: M.ModelConfig, cfg: BatchConfig):
    """jit: a seed's initial parameters and every training batch (``(n_steps, batch, L)`` arrays).

    Drawn one seed at a time and step by step (``lax.map``, never ``vmap``): XLA's RngBitGenerator
    (``task.PRNG_IMPL``) gives different bits to the same key in different lanes of a ``vmap``, so
    drawing inside the vmapped training program would break the pairing of arms and the agreement
    with the one-run loop (:func:`.train.train`), which draws the same batches the same way.
    """
    dtype = jnp.dtype(cfg.dtype)

    def draw(seed):
        root = T.prng_key(seed)
        params = M.init_params(mcfg, jax.random.fold_in(root, 0), dtype)
        data_key = jax.random.fold_in(root, 1)
        tokens, marks, targets = jax.lax.map(lambda t: T.train_batch(task, jax.random.fold_in(data_key, t), cfg.batch),
                                             jnp.arange(cfg.n_steps))
        return params, (tokens, marks.astype(dtype), targets)

    return jax.jit(draw)


def _compiler_options(cfg: BatchConfig):
    return {"xla_backend_optimization_level": 0} if cfg.fast_compile else None


def _metrics(probs, targets):
    """Accuracy, NLL and the ECE of ``stats.expected_calibration_error`` (same bins) from aggregated sums."""
    probs = probs.astype(jnp.float64)
    n = targets.shape[0]
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(jnp.float64)
    inner = jnp.linspace(0.0, 1.0, ECE_BINS + 1)[1:-1]
    idx = jnp.sum(conf[:, None] > inner[None, :], axis=1)  # np.digitize(conf, inner, right=True)
    one_hot = jax.nn.one_hot(idx, ECE_BINS, dtype=jnp.float64)
    p_t = jnp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]
    return dict(correct=correct.sum(), nll=-jnp.log(jnp.maximum(p_t, 1e-300)).sum(),
                bin_conf=one_hot.T @ conf, bin_correct=one_hot.T @ correct, n=jnp.asarray(n, jnp.float64))


@functools.lru_cache(maxsize=16)
def _eval_program(mcfg: M.ModelConfig, cfg: BatchConfig):
    """``lax.map`` over runs (each run's evaluation is one large batched forward), chunks of sequences inside."""

    def split_metrics(params, attn_temp, data):
        tokens, marks, targets = data
        size = tokens.shape[0]
        chunk = min(cfg.eval_chunk, size)

        def one_chunk(i):
            sl = lambda a: jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk)  # noqa: E731
            logits, aux = M.forward(params, sl(tokens), sl(marks), attn_temp)
            m = _metrics(jax.nn.softmax(logits.astype(jnp.float64)), sl(targets))
            return m | dict(entropy=aux["entropy"].astype(jnp.float64).sum(axis=1))  # (layers, heads)

        parts = jax.lax.map(one_chunk, jnp.arange(size // chunk))
        tot = jax.tree_util.tree_map(lambda a: a.sum(0), parts)
        n = tot["n"]
        return dict(acc=tot["correct"] / n, nll=tot["nll"] / n,
                    ece=jnp.sum(jnp.abs(tot["bin_correct"] - tot["bin_conf"])) / n, head_entropy=tot["entropy"] / n)

    def one(args, id_data, ood_data, probe_id):
        params, attn_temp = args
        out = {}
        for name, data in (("id", id_data), ("ood", ood_data)):
            for k, v in split_metrics(params, attn_temp, data).items():
                out[f"{name}_{k}"] = v
        _, r_id = probe_stats(params, probe_id, attn_temp)
        return out, dict(id=r_id)

    return jax.jit(lambda params, temps, *data: jax.lax.map(lambda a: one(a, *data), (params, temps)),
                   compiler_options=_compiler_options(cfg))


@functools.lru_cache(maxsize=8)
def eval_sets(task: T.Task, n_id: int, n_ood: int, n_probe: int):
    """The fixed ID and OOD evaluation sets and the ID probe sequences (entropy along training, final R)."""
    k_id, k_ood, k_probe = jax.random.split(T.prng_key(EVAL_KEY), 3)
    return dict(id=T.id_split(task, k_id, n_id), ood=T.ood_split(task, k_ood, n_ood),
                probe=T.id_split(task, k_probe, n_probe))


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)


# --------------------------------------------------------------------------- ahead-of-time compilation

_COMPILED: dict = {}
_LOCKS: dict = {}
_GUARD = threading.Lock()
#: wall seconds each compiled program took to compile, by name
COMPILE_SECONDS: dict = {}


def _once(key, name, build):
    """``build()`` once per key, also across threads (a second caller waits for the first)."""
    with _GUARD:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _COMPILED:
            t0 = time.perf_counter()
            _COMPILED[key] = build()
            COMPILE_SECONDS[name] = time.perf_counter() - t0
    return _COMPILED[key]


def _chunked(tree, n):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((n,) + tuple(a.shape), a.dtype), tree)


def compiled_train(task: T.Task, mcfg: M.ModelConfig, cfg: BatchConfig, penalty: bool):
    """The training program for one chunk, compiled ahead of time (thread-safe, once per configuration)."""
    def build():
        hp = _stack([_hyper(RunSpec(0, "adam", "baseline", 1.0), np.dtype(cfg.dtype))] * cfg.chunk)
        init, data = _chunked(jax.eval_shape(_seed_program(task, mcfg, cfg), 0), cfg.chunk)
        probe = eval_sets(task, cfg.eval_id, cfg.eval_ood, cfg.probe)["probe"]
        return _train_program(task, mcfg, cfg, penalty).lower(hp, init, data, probe).compile()

    return _once(("train", task, mcfg, cfg, penalty), "train (curvature penalty)" if penalty else "train", build)


def compiled_eval(task: T.Task, mcfg: M.ModelConfig, cfg: BatchConfig):
    """The evaluation program for one chunk, compiled ahead of time."""
    def build():
        params = _chunked(jax.eval_shape(_seed_program(task, mcfg, cfg), 0)[0], cfg.chunk)
        temps = jax.ShapeDtypeStruct((cfg.chunk,), np.dtype(cfg.dtype))
        sets = eval_sets(task, cfg.eval_id, cfg.eval_ood, cfg.probe)
        return _eval_program(mcfg, cfg).lower(params, temps, sets["id"], sets["ood"], sets["probe"]).compile()

    return _once(("eval", task, mcfg, cfg), "evaluation", build)


def precompile(task: T.Task, mcfg: M.ModelConfig, cfg: BatchConfig, penalty=(False, True), evaluation=True):
    """Compile the programs ``train_runs`` will need (e.g. in a background thread while another one runs)."""
    for p in penalty:
        compiled_train(task, mcfg, cfg, p)
    if evaluation:
        compiled_eval(task, mcfg, cfg)


def train_runs(task: T.Task, mcfg: M.ModelConfig, cfg: BatchConfig, specs, bar=None) -> list:
    """Train and evaluate every spec; returns one dict of numpy arrays per spec (in order).

    Per run: ``metrics`` (``id_acc, id_nll, id_ece, id_entropy, ood_*``: accuracy, log-loss in nats,
    ECE, QUERY-row entropy), the logged curves (``steps``, ``temperature``, ``entropy`` ``(points,
    layers, heads)``, ``train_ce``, ``penalty``), the final ``R`` at the ID probe queries (``R_final["id"]``
    ``(layers, probe, heads)``; summaries ``id_R_*`` in ``metrics``), the final ``params``, the parameter
    trajectory ``flat`` ``(points, P)`` and ``seconds``
    (this run's share of its chunk's wall time).  ``bar.update(n)`` is called per chunk with its steps.
    """
    specs = list(specs)
    if not specs:
        return []
    dtype = np.dtype(cfg.dtype)
    sets = eval_sets(task, cfg.eval_id, cfg.eval_ood, cfg.probe)
    out = [None] * len(specs)
    groups = {}
    for i, s in enumerate(specs):
        groups.setdefault(s.arm == "curvature", []).append(i)
    for penalty, idx in sorted(groups.items()):
        train = compiled_train(task, mcfg, cfg, penalty)
        evaluate = compiled_eval(task, mcfg, cfg)
        for c0 in range(0, len(idx), cfg.chunk):
            part = idx[c0 : c0 + cfg.chunk]
            padded = part + [part[-1]] * (cfg.chunk - len(part))
            hp = _stack([_hyper(specs[i], dtype) for i in padded])
            t0 = time.perf_counter()
            drawn = {}
            for i in padded:
                if specs[i].seed not in drawn:
                    drawn[specs[i].seed] = _seed_program(task, mcfg, cfg)(specs[i].seed)
            init, data = _stack([drawn[specs[i].seed] for i in padded])
            params, logs = train(hp, init, data, sets["probe"])
            temps = np.asarray([float(specs[i].schedule(cfg.n_steps)) if specs[i].arm == "true-temp" else 1.0
                                for i in padded], dtype)
            metrics, r_final = evaluate(params, temps, sets["id"], sets["ood"], sets["probe"])
            metrics, r_final, logs = jax.device_get((metrics, r_final, logs))
            share = (time.perf_counter() - t0) / len(part)
            steps = np.arange(0, cfg.n_steps + 1, cfg.log_every)
            for j, i in enumerate(part):
                pick = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a[j]), tree)  # noqa: E731
                m = {k: np.asarray(v[j], np.float64) for k, v in metrics.items()}
                for split in ("id", "ood"):
                    he = m.pop(f"{split}_head_entropy")  # (layers, heads)
                    m[f"{split}_entropy"], m[f"{split}_entropy_min"] = float(he.mean()), float(he.min(axis=1).mean())
                    m[f"{split}_head_entropy"] = he.tolist()
                r_fin = pick(r_final)
                m.update({f"id_R_{k}": v for k, v in curvature_summary(r_fin["id"]).items()})
                out[i] = dict(spec=specs[i], metrics={k: (float(v) if np.ndim(v) == 0 else v) for k, v in m.items()},
                              steps=steps, temperature=np.asarray(specs[i].schedule(steps), np.float64),
                              R_final=r_fin, params=pick(params), seconds=share, **pick(logs))
            if bar is not None:
                bar.update(len(part) * cfg.n_steps)
    return out
