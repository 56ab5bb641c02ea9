r"""Training one run at a time: the loop of the first version (host loop over jit-compiled intervals, optax).

The experiment trains its seeds with :mod:`.batched` (one compiled program for many
runs).  This loop stays for two jobs: the float64 SGD equivalence runs of
``fix-is-loss-scaling`` (every SGD variant below as one optax chain), and the
seeds-per-second reference against which the batched program is timed (same task,
model, data, initial parameters and update rule; its baseline differs from the
batched one by rounding only).

Arms (what the loss / forward pass does at step ``t``, with ``T = T(t)`` from
:mod:`.schedule`):

``baseline``   ``loss = CE``, attention softmax at temperature 1;
``literal``    ``loss = CE / T(t)`` -- the post's three lines, read literally;
``true-temp``  ``loss = CE``, every attention softmax uses ``logits / T(t)``.

Optimizers (``OPTIMIZERS``): ``adam`` (optax.adam) and ``sgd`` (heavy-ball
momentum) are the experiment's two; the others exist to test the claim that the
literal fix is a learning-rate schedule:

``sgd-plain``          plain SGD, ``theta -= lr g``;
``sgd-plain-lr/T``     plain SGD with ``lr_t = lr / T(t)``: identical to ``literal`` + ``sgd-plain``
                       in exact arithmetic, since ``grad(CE / T) = grad(CE) / T``;
``sgd-gradscale/T``    momentum SGD fed ``g / T(t)`` (``scale_by_schedule`` before ``trace``): identical
                       to ``literal`` + ``sgd`` in exact arithmetic;
``sgd-lr/T``           ``optax.sgd(lr / T(t), momentum)``: the schedule applied *after* the momentum
                       buffer, which differs from ``literal`` + ``sgd`` by the lag of the buffer.

Every run is a pure function of ``(seed, configs, schedule)``: the initial parameters come from
``fold_in(prng_key(seed), 0)`` and the data of step ``t`` from ``fold_in(fold_in(prng_key(seed), 1), t)``
(``task.prng_key``), so all arms of one seed see the same batches from the same initial parameters
(a paired design), here and in :mod:`.batched`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import model as M
from . import task as T
from .schedule import Schedule, temperature
from .stats import expected_calibration_error

ARMS = ("baseline", "literal", "true-temp")
OPTIMIZERS = ("adam", "sgd", "sgd-plain", "sgd-plain-lr/T", "sgd-gradscale/T", "sgd-lr/T")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    n_steps: int = 400
    batch: int = 32
    log_every: int = 40
    adam_lr: float = 1e-2
    sgd_lr: float = 0.03
    momentum: float = 0.9
    eval_size: int = 1024
    dtype: str = "float32"
    #: compile with XLA backend optimisation level 0: faster compilation, slower steps (tests)
    fast_compile: bool = False
    #: Adam only: the learning rate decays linearly to 0 from this fraction of training on, as in
    #: ``batched.BatchConfig`` (1: constant, the SGD variants are never decayed)
    decay_from: float = 1.0

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.n_steps % self.log_every:
            raise ValueError(f"n_steps ({self.n_steps}) must be a multiple of log_every ({self.log_every})")


def _temp(sched_vec, t):
    return temperature(t, sched_vec[0], sched_vec[1], sched_vec[2], sched_vec[3])


#: SGD variants as ``(momentum?, divide g by T before the buffer?, divide lr by T after it?)``.
SGD_VARIANTS = {
    "sgd": (True, False, False),
    "sgd-plain": (False, False, False),
    "sgd-plain-lr/T": (False, False, True),
    "sgd-gradscale/T": (True, True, False),
    "sgd-lr/T": (True, False, True),
}


def optimizer_vector(name: str, tcfg: TrainConfig):
    """Traced hyper-parameters of ``name``: ``(momentum, pre, post)`` for the SGD family, ``()`` for Adam."""
    if name == "adam":
        return jnp.zeros(3)
    if name not in SGD_VARIANTS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    mom, pre, post = SGD_VARIANTS[name]
    return jnp.asarray([tcfg.momentum if mom else 0.0, pre, post], jnp.float64)


def make_optimizer(name: str, tcfg: TrainConfig, sched_vec, opt_vec=None) -> optax.GradientTransformation:
    r"""The optax transformation ``name`` (see module docstring); ``sched_vec = (T0, beta, gamma, t_switch)``.

    All SGD variants are one optax chain, so one compilation serves them all:

    .. math:: m_t = \mu\,m_{t-1} + a_t g_t,\qquad \theta_{t+1} = \theta_t - \eta\,b_t\,m_t,

    with :math:`a_t = 1/T(t)` ("gradscale") or 1 and :math:`b_t = 1/T(t)` ("lr/T") or 1.
    With :math:`a = b = 1` this is ``optax.sgd(lr, momentum=mu)`` step for step
    (``optax.trace`` then ``scale(-lr)``; ``mu = 0`` gives plain SGD, ``0 m + g = g``
    exactly); ``tests/test_fix.py`` checks the identity.  ``adam`` is ``optax.adam`` with the
    learning-rate decay of ``tcfg.decay_from`` (the schedule of :func:`.batched.lr_decay`).
    """
    if name == "adam":
        if tcfg.decay_from >= 1:
            return optax.adam(tcfg.adam_lr)
        start = tcfg.decay_from * tcfg.n_steps
        return optax.adam(lambda count: tcfg.adam_lr * jnp.clip((tcfg.n_steps - count) / (tcfg.n_steps - start), 0.0, 1.0))
    vec = optimizer_vector(name, tcfg) if opt_vec is None else opt_vec
    mu, pre, post = vec[0], vec[1], vec[2]

    def factor(flag):
        return lambda c: jnp.where(flag > 0, 1.0 / _temp(sched_vec, c), 1.0).astype(sched_vec.dtype)

    return optax.chain(
        optax.scale_by_schedule(factor(pre)),
        optax.trace(decay=mu.astype(sched_vec.dtype)),
        optax.scale_by_schedule(factor(post)),
        optax.scale(-tcfg.sgd_lr),
    )


def _check_arm(arm):
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")


def arm_flags(arm: str):
    """``(is_literal, is_true_temp)`` as a traced-friendly array, so one compilation serves every arm."""
    _check_arm(arm)
    return jnp.asarray([arm == "literal", arm == "true-temp"])


def loss_fn(params, batch, t, sched_vec, flags):
    """``(loss, CE)`` of one batch at step ``t`` (the only place the arms differ).

    ``literal``: ``loss = CE / T(t)``; ``true-temp``: attention at ``T(t)``; the
    other factor is exactly 1.0, so the baseline graph computes exactly ``CE``.
    """
    tokens, marks, targets = batch
    temp = _temp(sched_vec, t)
    attn_temp = jnp.where(flags[1], temp, 1.0).astype(params["tok"].dtype)
    logits, _ = M.forward(params, tokens, marks, attn_temp)
    ce = M.cross_entropy(logits, targets).mean()
    return ce / jnp.where(flags[0], temp, 1.0).astype(ce.dtype), ce


@functools.lru_cache(maxsize=64)
def _interval_fn(task: T.Task, tcfg: TrainConfig, family: str):
    """jit: run ``log_every`` steps from ``t0``; returns new params, state and the mean CE."""

    def run(params, opt_state, t0, sched_vec, data_key, flags, opt_vec):
        opt = make_optimizer("adam" if family == "adam" else "sgd", tcfg, sched_vec, opt_vec)

        def step(carry, t):
            params, opt_state = carry
            batch = T.train_batch(task, jax.random.fold_in(data_key, t), tcfg.batch)
            grads, ce = jax.grad(loss_fn, has_aux=True)(params, batch, t, sched_vec, flags)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), ce

        (params, opt_state), ces = jax.lax.scan(step, (params, opt_state), t0 + jnp.arange(tcfg.log_every))
        return params, opt_state, ces.mean()

    return jax.jit(run, compiler_options=_compiler_options(tcfg))


def _compiler_options(tcfg: TrainConfig):
    return {"xla_backend_optimization_level": 0} if tcfg.fast_compile else None


@functools.lru_cache(maxsize=1)
def _probe_fn():
    def probe(params, tokens, marks, attn_temp):
        _, aux = M.forward(params, tokens, marks, attn_temp)
        return aux["entropy"].mean(axis=1)  # (layers, heads): QUERY-row entropy, mean over probe sequences

    return jax.jit(probe)


@functools.lru_cache(maxsize=16)
def _predict_fn():
    def predict(params, tokens, marks, attn_temp):
        logits, _ = M.forward(params, tokens, marks, attn_temp)
        return jax.nn.softmax(logits)

    return jax.jit(predict)


def model_config(task: T.Task, **kw) -> M.ModelConfig:
    return M.ModelConfig(vocab_size=task.vocab_size, n_out=task.n_content, **kw)


def evaluate(params, task: T.Task, sets: dict, attn_temp: float, chunk: int = 512) -> dict:
    """Accuracy, ECE and NLL on the ID and OOD splits (softmax of the output logits, attention at ``attn_temp``)."""
    out = {}
    for split in ("id", "ood"):
        tokens, marks, targets = sets[split]
        size = tokens.shape[0]
        probs = np.concatenate(
            [np.asarray(_predict_fn()(params, tokens[i : i + chunk], marks[i : i + chunk], attn_temp))
             for i in range(0, size, chunk)]
        )
        targets = np.asarray(targets)
        out[f"{split}_acc"] = float((probs.argmax(1) == targets).mean())
        out[f"{split}_ece"] = expected_calibration_error(probs, targets)
        out[f"{split}_nll"] = float(-np.log(np.maximum(probs[np.arange(size), targets], 1e-300)).mean())
    return out


def train(task: T.Task, mcfg: M.ModelConfig, tcfg: TrainConfig, arm: str, opt_name: str, seed: int,
          schedule: Schedule, keep_trajectory: bool = False, bar=None, measure: bool = True,
          init_perturbation: float = 0.0, sets: dict | None = None) -> dict:
    """Train one (arm, optimizer, seed); return the logged curves, final metrics and parameters (numpy).

    Logged every ``log_every`` steps (``n_steps / log_every + 1`` points, step 0 included):
    ``temperature`` and the QUERY-row attention entropy per (layer, head), mean over the probe
    sequences (``entropy``, ``(points, layers, heads)``); ``train_ce`` is the mean CE of each interval.
    ``sets``: the ``id``, ``ood`` and ``probe`` data (default: ``batched.eval_sets`` at ``eval_size``
    sequences each).  ``measure=False`` skips the entropy probes and the final evaluation
    (trajectory-only runs).
    ``init_perturbation = e`` starts from ``theta_0 (1 + e)``: the chaos reference (how far two runs
    that differ by rounding-sized amounts drift apart).
    """
    _check_arm(arm)
    if opt_name not in OPTIMIZERS:
        raise ValueError(f"opt_name must be one of {OPTIMIZERS}, got {opt_name!r}")
    sched_vec = jnp.asarray([schedule.base_temp, schedule.beta, schedule.gamma, schedule.t_switch], jnp.dtype(tcfg.dtype))
    root = T.prng_key(seed)
    params = M.init_params(mcfg, jax.random.fold_in(root, 0), jnp.dtype(tcfg.dtype))
    if init_perturbation:
        params = jax.tree_util.tree_map(lambda p: p * (1 + init_perturbation), params)
    data_key = jax.random.fold_in(root, 1)
    opt_vec = optimizer_vector(opt_name, tcfg).astype(sched_vec.dtype)
    opt_state = make_optimizer(opt_name, tcfg, sched_vec, opt_vec).init(params)
    interval = _interval_fn(task, tcfg, "adam" if opt_name == "adam" else "sgd")
    probe = _probe_fn()
    flags = arm_flags(arm)
    if sets is None:
        from .batched import eval_sets

        sets = eval_sets(task, tcfg.eval_size, tcfg.eval_size, tcfg.eval_size)
    tokens, marks, _ = sets["probe"]

    steps, temps, ent, ces, traj = [], [], [], [], []

    def log(t):
        temp = float(schedule(t))
        steps.append(t)
        temps.append(temp)
        if measure:
            ent.append(np.asarray(probe(params, tokens, marks, temp if arm == "true-temp" else 1.0)))
        if keep_trajectory:
            traj.append(np.asarray(ravel_pytree(params)[0]))

    log(0)
    for t0 in range(0, tcfg.n_steps, tcfg.log_every):
        params, opt_state, ce = interval(params, opt_state, jnp.asarray(t0), sched_vec, data_key, flags, opt_vec)
        ces.append(float(ce))
        log(t0 + tcfg.log_every)
        if bar is not None:
            bar.update(tcfg.log_every)
    final_temp = float(schedule(tcfg.n_steps))
    metrics = evaluate(params, task, sets, final_temp if arm == "true-temp" else 1.0) if measure else {}
    out = dict(
        arm=arm, optimizer=opt_name, seed=seed, steps=np.asarray(steps), temperature=np.asarray(temps),
        entropy=np.stack(ent) if measure else None, train_ce=np.asarray(ces),
        metrics=metrics, params=jax.tree_util.tree_map(np.asarray, params),
        attn_temp_final=final_temp if arm == "true-temp" else 1.0,
    )
    if keep_trajectory:
        out["trajectory"] = np.stack(traj)
    return out
