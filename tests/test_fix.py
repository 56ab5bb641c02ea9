"""The temperature-schedule fix experiment: schedule, task, model, curvature penalty, optimizers, the batched
program, the analysis plan and the verdict logic.

Everything in the default run uses tiny models (a few seconds of compilation); the end-to-end runs of the
experiment are in the slow set.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import geometry
from checks._src.fix import batched as B
from checks._src.fix import curvature as C
from checks._src.fix import experiment as E
from checks._src.fix import model as M
from checks._src.fix import plan as P
from checks._src.fix import task as T
from checks._src.fix import train as TR
from checks._src.fix import verdicts as V
from checks._src.fix.schedule import Schedule, temperature
from checks._src.fix.stats import expected_calibration_error, mean_ci

TINY_TASK = T.Task(n_content=4, train_length=8, ood_length=16, mark_noise=0.3, ood_repeat=0.5)
TINY_MODEL = TR.model_config(TINY_TASK, d_model=8, n_heads=2)
TINY_TRAIN = TR.TrainConfig(n_steps=12, batch=8, log_every=4, adam_lr=1e-2, sgd_lr=0.5, eval_size=64,
                            dtype="float64", fast_compile=True)
#: the schedule swings from 0.6 T0 to 1.4 T0 inside the 12 steps
TINY_SCHEDULE = Schedule(base_temp=1.0, beta=0.4, gamma=0.5, t_switch=6.0)
TINY_BATCH = B.BatchConfig(n_steps=8, batch=8, log_every=4, eval_id=16, eval_ood=32, eval_chunk=16, probe=4, chunk=3,
                           dtype="float64", decay_from=0.5, sgd_warmup=3, fast_compile=True)
#: XLA options of the tests' own jits: compile fast, run slow (tiny inputs)
FAST = {"xla_backend_optimization_level": 0}


# --------------------------------------------------------------------------- the schedule


def test_schedule_hand_values():
    # T(t) = T0 (1 + beta tanh(gamma (t - t_s))) with T0 = 2, beta = 0.25, gamma = 0.5, t_s = 10
    s = Schedule(base_temp=2.0, beta=0.25, gamma=0.5, t_switch=10.0)
    assert float(s(10)) == 2.0  # tanh(0) = 0
    assert float(s(12)) == pytest.approx(2.0 * (1 + 0.25 * 0.7615941559557649), rel=1e-15)  # tanh(1)
    assert float(s(8)) == pytest.approx(2.0 * (1 - 0.25 * 0.7615941559557649), rel=1e-15)
    assert float(s(10 + 2 * math.atanh(0.5))) == pytest.approx(2.25, rel=1e-14)  # tanh = 1/2
    assert float(s(1e6)) == pytest.approx(2.5, rel=1e-15)  # T0 (1 + beta)
    assert float(s(-1e6)) == pytest.approx(1.5, rel=1e-15)  # T0 (1 - beta)
    np.testing.assert_allclose(temperature(np.array([10.0, 12.0]), 2.0, 0.25, 0.5, 10.0), [2.0, float(s(12))])


@pytest.mark.parametrize("kw, word", [(dict(beta=1.0), "beta"), (dict(base_temp=0.0), "base_temp"),
                                      (dict(gamma=-1.0), "gamma"), (dict(t_switch=math.nan), "t_switch")])
def test_schedule_rejects_bad_parameters(kw, word):
    with pytest.raises(ValueError, match=word):
        Schedule(**kw)


def test_onset_rule():
    steps = np.arange(0, 100, 10)
    h = np.array([2.0, 2.0, 1.98, 1.9, 1.5, 1.0, 0.5, 0.2, 0.0, 0.0])
    # total fall 2.0; 10 % of it is 0.2, first reached at H = 1.5 (step 40)
    assert E.onset_step(steps, h, 0.1) == 40.0
    assert E.onset_step(steps, np.full(10, 1.0)) == 90.0  # no collapse: switch at the end


# --------------------------------------------------------------------------- the task


def test_task_targets_marks_and_the_repeated_distractor():
    tokens, marks, targets = (np.asarray(a) for a in T.sample(TINY_TASK, T.prng_key(5), 64, 16, 0.5))
    assert np.all(tokens[:, -1] == TINY_TASK.query) and np.all(marks[:, -1] == 0.0)
    for row, mu, y in zip(tokens, marks, targets):
        j = int(np.argmax(mu[:-1]))  # with noise 0.3 the marked slot (mean 1) is almost always the largest
        others = row[:-1][np.arange(15) != j]
        values, counts = np.unique(others, return_counts=True)
        assert values[np.argmax(counts)] != y  # the repeated distractor is never the answer
    hit = [row[int(np.argmax(mu[:-1]))] == y for row, mu, y in zip(tokens, marks, targets)]
    assert np.mean(hit) > 0.9
    # the noise has the configured standard deviation (distractors: mean 0)
    dist = np.concatenate([np.sort(mu[:-1])[:-1] for mu in marks])
    assert np.std(dist) == pytest.approx(TINY_TASK.mark_noise, rel=0.15)


def test_bayes_predictive_is_the_posterior():
    """P(y = c | x, mu) = sum_j softmax(mu / sigma^2)_j [x_j = c], checked against Bayes' rule by hand."""
    task = T.Task(n_content=3, train_length=4, ood_length=4, mark_noise=0.5)
    tokens = np.array([[0, 1, 1, task.query]])
    marks = np.array([[0.2, 0.9, -0.1, 0.0]])
    s2 = 0.25
    like = [np.exp(-((marks[0, j] - 1) ** 2) / (2 * s2)) * np.prod(
        [np.exp(-(marks[0, i] ** 2) / (2 * s2)) for i in range(3) if i != j]) for j in range(3)]
    post = np.asarray(like) / np.sum(like)
    want = np.array([post[0], post[1] + post[2], 0.0])
    np.testing.assert_allclose(T.bayes_predictive(task, tokens, marks)[0], want, rtol=1e-13)


@pytest.mark.parametrize("kw, word", [(dict(mark_noise=0.0), "mark_noise"), (dict(ood_repeat=1.5), "ood_repeat"),
                                      (dict(ood_length=4), "ood_length"), (dict(n_content=1), "n_content")])
def test_task_rejects_bad_settings(kw, word):
    with pytest.raises(ValueError, match=word):
        T.Task(**kw)


# --------------------------------------------------------------------------- the model


@functools.lru_cache(maxsize=None)
def _tiny_batch():
    params = M.init_params(TINY_MODEL, T.prng_key(0), jnp.float64)
    tokens, marks, targets = T.ood_split(TINY_TASK, T.prng_key(1), 6)
    return params, tokens, marks, targets


def test_factored_forward_is_the_transformer():
    """The per-token-type computation of the one-layer model equals the block-by-block transformer:
    logits, attention rows, queries, keys and the gradient of the loss, to float64 rounding."""
    params, tokens, marks, targets = _tiny_batch()
    a, aux_a = M.forward(params, tokens, marks, 0.7, return_probs=True)
    b, aux_b = M.forward_reference(params, tokens, marks, 0.7, return_probs=True)
    for x, y in [(a, b)] + [(aux_a[k], aux_b[k]) for k in ("probs", "q", "k", "entropy")]:
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-13)

    def loss(fwd, p):
        return M.cross_entropy(fwd(p, tokens, marks, 0.7)[0], targets).mean()

    ga = jax.jit(jax.grad(functools.partial(loss, M.forward)), compiler_options=FAST)(params)
    gb = jax.jit(jax.grad(functools.partial(loss, M.forward_reference)), compiler_options=FAST)(params)
    for x, y in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-13)


def test_entropies_and_query_family_come_from_the_forward_softmax():
    """aux["entropy"] is -sum p log p of the very probabilities the forward pass mixes values with, and it
    equals geometry.entropy of attention(keys, 1 / (sqrt(d_h) tau)) at the head's query."""
    params, tokens, marks, _ = _tiny_batch()
    tau = 0.7
    _, aux = M.forward(params, tokens, marks, tau, return_probs=True)
    p = np.asarray(aux["probs"])
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-13)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    np.testing.assert_allclose(np.asarray(aux["entropy"]), h, rtol=1e-12, atol=1e-14)
    keys, q = np.asarray(aux["k"][0, 2, 1]), np.asarray(aux["q"][0, 2, 1])
    fam = geometry.attention(keys, 1.0 / (math.sqrt(TINY_MODEL.d_head) * tau))
    assert float(geometry.entropy(fam, q)) == pytest.approx(float(aux["entropy"][0, 2, 1]), rel=1e-10)


def test_attention_temperature_raises_entropy():
    params, tokens, marks, _ = _tiny_batch()
    h1 = M.forward(params, tokens, marks, 1.0)[1]["entropy"].mean()
    h2 = M.forward(params, tokens, marks, 2.0)[1]["entropy"].mean()
    assert h2 > h1


# --------------------------------------------------------------------------- the curvature penalty


def _keys(seed, n=7, m=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, m)), 2.0 * rng.normal(size=m)


def test_traced_curvature_is_the_engine_value():
    """query_curvatures (jit, vmap, raw cumulant route) equals the precision-controlled eager call."""
    ks, qs = zip(*[_keys(s) for s in range(4)])
    k, q = np.stack(ks)[None, :, None], np.stack(qs)[None, :, None]  # (layers, B, H, ...)
    r = np.asarray(jax.jit(C.query_curvatures)(q, k, 0.8))
    scale = 1.0 / (math.sqrt(3) * 0.8)
    want = [float(geometry.scalar_curvature(geometry.attention(kk, scale), qq)) for kk, qq in zip(ks, qs)]
    np.testing.assert_allclose(r[0, :, 0], want, rtol=1e-9)


def test_curvature_gradient_matches_finite_differences():
    k, q = _keys(7)

    def f(q):
        return C.query_curvatures(q[None, None, None], jnp.asarray(k)[None, None, None])[0, 0, 0]

    g = np.asarray(jax.jit(jax.grad(f), compiler_options=FAST)(jnp.asarray(q)))
    h = 1e-5
    shifted = jax.jit(jax.vmap(f), compiler_options=FAST)(jnp.asarray(np.concatenate([q + h * np.eye(3), q - h * np.eye(3)])))
    fd = (np.asarray(shifted[:3]) - np.asarray(shifted[3:])) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_singular_head_is_nan_with_a_finite_gradient():
    """Keys of centred rank 1 < m = 2: the metric is singular, R comes back NaN and is left out of the
    penalty, whose gradient stays finite (double-where)."""
    k_bad = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    k_ok, q_ok = _keys(3, n=4, m=2)
    k = jnp.asarray(np.stack([k_bad, k_ok]))[None, :, None]

    def penalty(q):
        return C.positive_part_mean(C.query_curvatures(q, k))  # (value, n_finite): value first for grad

    q = jnp.asarray(np.stack([[0.3, -0.2], q_ok]))[None, :, None]
    r = np.asarray(jax.jit(C.query_curvatures, compiler_options=FAST)(q, k))
    assert np.isnan(r[0, 0, 0]) and np.isfinite(r[0, 1, 0])
    (value, n), g = jax.jit(jax.value_and_grad(penalty, has_aux=True), compiler_options=FAST)(q)
    assert int(n) == 1 and float(value) == pytest.approx(max(float(r[0, 1, 0]), 0.0))
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.all(g[0, 0] == 0.0)


# --------------------------------------------------------------------------- the optimizers


def _quadratic_grads(n):
    rng = np.random.default_rng(0)
    return [dict(a=jnp.asarray(rng.normal(size=(3, 2))), b=jnp.asarray(rng.normal(size=4))) for _ in range(n)]


@pytest.mark.parametrize("name, reference", [("sgd", lambda: optax.sgd(0.5, momentum=0.9)),
                                             ("sgd-plain", lambda: optax.sgd(0.5))])
def test_sgd_chain_is_optax_sgd(name, reference):
    """The flag-driven SGD chain with no schedule factors is optax.sgd, update for update, bit for bit."""
    tcfg = TR.TrainConfig(sgd_lr=0.5, momentum=0.9)
    sv = jnp.asarray([1.0, 0.2, 0.1, 3.0])
    mine, ref = TR.make_optimizer(name, tcfg, sv), reference()
    params = _quadratic_grads(1)[0]
    s1, s2 = mine.init(params), ref.init(params)
    for g in _quadratic_grads(6):
        u1, s1 = mine.update(g, s1, params)
        u2, s2 = ref.update(g, s2, params)
        for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_batched_update_is_optax(opt):
    """batched.update is optax.adam (with the lr decay) or optax.sgd(momentum) fed clipped gradients with a
    linear warm-up, step for step."""
    cfg = B.BatchConfig(n_steps=8, log_every=4, sgd_warmup=3, sgd_clip=1.5, decay_from=0.5)
    lr = 0.1
    hp = B._hyper(B.RunSpec(0, opt, "baseline", lr), np.float64)
    if opt == "adam":
        ref = optax.adam(lambda c: lr * jnp.clip((8 - c) / 4.0, 0.0, 1.0))
    else:
        ref = optax.chain(optax.clip_by_global_norm(1.5), optax.trace(decay=0.9),
                          optax.scale_by_schedule(lambda c: -lr * jnp.minimum(1.0, (c + 1) / 3.0)
                                                  * jnp.clip((8 - c) / 4.0, 0.0, 1.0)))
    p1 = p2 = _quadratic_grads(1)[0]
    s1, s2 = B.opt_init(p1), ref.init(p2)
    for t, g in enumerate(_quadratic_grads(8)):
        g = jax.tree_util.tree_map(lambda x: 3.0 * x, g)  # norms > 1.5: clipping is active
        p1, s1 = B.update(p1, g, s1, jnp.asarray(t), hp, cfg)
        u, s2 = ref.update(g, s2, p2)
        p2 = optax.apply_updates(p2, u)
        for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@functools.lru_cache(maxsize=None)
def _trajectory(arm, opt, schedule=TINY_SCHEDULE):
    return TR.train(TINY_TASK, TINY_MODEL, TINY_TRAIN, arm, opt, 3, schedule, keep_trajectory=True,
                    measure=False)["trajectory"]


def _rel(a, b):
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def test_literal_fix_is_an_lr_schedule_under_sgd():
    """grad(CE / T) = grad(CE) / T, so SGD on CE / T(t) is SGD on CE with lr / T(t) (float64, exact up to rounding)."""
    lit_plain = _trajectory("literal", "sgd-plain")
    assert _rel(lit_plain, _trajectory("baseline", "sgd-plain-lr/T")) < 1e-12
    lit_mom = _trajectory("literal", "sgd")
    assert _rel(lit_mom, _trajectory("baseline", "sgd-gradscale/T")) < 1e-9
    # ... and the schedule does change the trajectory (so the agreement above is not vacuous)
    assert _rel(lit_mom, _trajectory("baseline", "sgd")) > 1e-3
    # with momentum, lr / T(t) applied after the buffer is only approximately the same
    assert 1e-12 < _rel(lit_mom, _trajectory("baseline", "sgd-lr/T")) < _rel(lit_mom, _trajectory("baseline", "sgd"))


def test_adam_is_invariant_to_a_constant_loss_scale():
    """Adam's update m/(sqrt(v) + eps) is invariant to g -> c g up to eps; SGD's is not."""
    constant = Schedule(base_temp=2.0, beta=0.0, gamma=1.0, t_switch=0.0)  # T = 2 throughout
    adam_const = _rel(_trajectory("literal", "adam", constant), _trajectory("baseline", "adam", constant))
    sgd_const = _rel(_trajectory("literal", "sgd-plain", constant), _trajectory("baseline", "sgd-plain", constant))
    assert adam_const < 1e-3 and adam_const < 1e-2 * sgd_const, (adam_const, sgd_const)


# --------------------------------------------------------------------------- the batched program


@functools.lru_cache(maxsize=None)
def _tiny_runs():
    sched = E.schedule_for(4, TINY_BATCH.n_steps)
    specs = [B.RunSpec(3, "adam", "baseline", 1e-2), B.RunSpec(3, "adam", "literal", 1e-2, sched),
             B.RunSpec(3, "adam", "baseline", 1e-2), B.RunSpec(4, "sgd", "true-temp", 0.1, sched)]
    return B.train_runs(TINY_TASK, TINY_MODEL, TINY_BATCH, specs)


def test_seeds_are_drawn_outside_the_vmap_as_the_one_run_loop_draws_them():
    """XLA's RngBitGenerator gives a key different bits in different lanes of a vmap, so each seed's batches are
    drawn by _seed_program, step by step, exactly as the one-run loop draws them (fold_in of the data key)."""
    keys = jax.vmap(T.prng_key)(jnp.arange(3))
    lanes = jax.vmap(lambda k: jax.random.bits(k, (4,)))(keys)
    alone = jnp.stack([jax.random.bits(T.prng_key(i), (4,)) for i in range(3)])
    assert not np.array_equal(np.asarray(lanes), np.asarray(alone))  # why the draws are not vmapped
    init, (tokens, marks, targets) = B._seed_program(TINY_TASK, TINY_MODEL, TINY_BATCH)(3)
    data_key = jax.random.fold_in(T.prng_key(3), 1)
    for t in (0, 5):
        want = T.train_batch(TINY_TASK, jax.random.fold_in(data_key, t), TINY_BATCH.batch)
        for got, w in zip((tokens[t], marks[t], targets[t]), want):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(w))
    ref = M.init_params(TINY_MODEL, jax.random.fold_in(T.prng_key(3), 0), jnp.float64)
    for a, b in zip(jax.tree_util.tree_leaves(init), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_batched_runs_are_paired_and_equal_the_one_run_loop():
    """A seed gets the same initial parameters and batches in any lane of the vmapped program (the pairing of
    arms), and its baseline is the one-run loop's to float64 rounding (same data, init and update rule)."""
    runs = _tiny_runs()
    np.testing.assert_array_equal(runs[0]["flat"], runs[2]["flat"])  # lanes 0 and 2, same seed
    np.testing.assert_array_equal(runs[0]["flat"][0], runs[1]["flat"][0])  # same start for both arms
    assert _rel(runs[1]["flat"], runs[0]["flat"]) > 1e-6  # ... and the arm does differ
    tcfg = TR.TrainConfig(n_steps=8, batch=8, log_every=4, adam_lr=1e-2, dtype="float64", decay_from=0.5,
                          fast_compile=True)
    sets = B.eval_sets(TINY_TASK, TINY_BATCH.eval_id, TINY_BATCH.eval_ood, TINY_BATCH.probe)
    old = TR.train(TINY_TASK, TINY_MODEL, tcfg, "baseline", "adam", 3, TINY_SCHEDULE, keep_trajectory=True, sets=sets)
    assert _rel(old["trajectory"], runs[0]["flat"]) < 1e-12
    for k in ("id_acc", "ood_acc", "ood_nll"):
        assert runs[0]["metrics"][k] == pytest.approx(old["metrics"][k], rel=1e-10, abs=1e-12)


def test_batched_metrics_are_the_host_ones():
    """In-graph accuracy, log-loss and ECE (same bins as stats.expected_calibration_error) on random data."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, 500)
    m = jax.jit(B._metrics)(jnp.asarray(probs), jnp.asarray(y))
    ece = float(np.sum(np.abs(np.asarray(m["bin_correct"]) - np.asarray(m["bin_conf"]))) / 500)
    assert ece == pytest.approx(expected_calibration_error(probs, y), rel=1e-12)
    assert float(m["correct"]) == np.sum(probs.argmax(1) == y)
    assert float(m["nll"]) / 500 == pytest.approx(-np.log(probs[np.arange(500), y]).mean(), rel=1e-12)


def test_runspec_and_config_validation():
    with pytest.raises(ValueError, match="lam"):
        B.RunSpec(0, "adam", "baseline", 1e-2, lam=1.0)
    with pytest.raises(ValueError, match="lam"):
        B.RunSpec(0, "adam", "curvature", 1e-2, lam=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        B.RunSpec(0, "rmsprop", "baseline", 1e-2)
    with pytest.raises(ValueError, match="head dim"):
        E.ExperimentConfig(d_model=32, n_heads=1)  # d_h = 32 > train_length - 1 = 15
    with pytest.raises(ValueError, match="max_seeds"):
        E.ExperimentConfig(n_seeds=48, max_seeds=32)


# --------------------------------------------------------------------------- the analysis plan


def test_mean_ci_and_half_width_are_student_t():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    assert P.half_width(1.0, 3) == pytest.approx(hi - m)


def test_seeds_needed_is_the_smallest_sufficient_n():
    for sd, target in [(0.03, 0.01), (0.015, 0.005), (0.2, 0.01), (1e-4, 0.01)]:
        n = P.seeds_needed(sd, target)
        assert P.half_width(sd, n) <= target and (n == 2 or P.half_width(sd, n - 1) > target)
    assert P.seeds_needed(math.inf, 0.01) > 10**6
    with pytest.raises(ValueError, match="target"):
        P.seeds_needed(0.1, 0.0)


def test_planning_sd_is_an_upper_confidence_limit():
    # 16 values: chi^2_{0.2, 15} = 10.307, so the limit is sd * sqrt(15 / 10.307)
    assert P.planning_sd(1.0, 16) == pytest.approx(math.sqrt(15 / 10.307), rel=1e-3)
    assert P.planning_sd(1.0, 4) > P.planning_sd(1.0, 16) > 1.0


def _lines(sds):
    return P.power_lines({("adam", "literal", "ood_acc"): sds[0], ("sgd", "literal", "ood_acc"): sds[1],
                          ("sgd", "literal", "id_acc"): [0.0, 1.0]})


def test_plan_seeds_and_the_underpowered_configuration():
    rng = np.random.default_rng(0)
    small, large = 0.01 * rng.standard_normal(16), 0.05 * rng.standard_normal(16)
    lines = _lines([small, large])
    assert len(lines) == 2  # id_acc has no power target
    planned = P.plan_seeds(lines, 32, 64, 16)
    assert planned["adam"][0] == 32 and planned["sgd"][0] == 64 and planned["sgd"][1] > 64
    missed = P.check_plan(lines, planned, strict=False)
    assert [ln.optimizer for ln in missed] == ["sgd"]
    with pytest.raises(P.UnderpoweredError, match=rf"at least {planned['sgd'][1]} seeds"):
        P.check_plan(lines, planned, strict=True)


@pytest.mark.parametrize("ci, direction, expected", [
    ((0.03, 0.05), +1, P.SUPPORTS), ((-0.01, 0.01), +1, P.REJECTS), ((-0.01, 0.05), +1, P.INCONCLUSIVE),
    ((0.001, 0.015), +1, P.REJECTS),  # excludes 0 but also the claimed +0.02: the claim is rejected
    ((-0.05, -0.01), -1, P.SUPPORTS), ((-0.004, 0.01), -1, P.REJECTS), ((math.nan, 0.1), +1, P.INCONCLUSIVE),
])
def test_classify(ci, direction, expected):
    claimed = 0.02 if direction > 0 else P.ECE_GAIN_RELEVANT
    assert P.classify(*ci, claimed, direction) == expected


def test_combine():
    S, R, I = P.SUPPORTS, P.REJECTS, P.INCONCLUSIVE
    assert P.combine({"a": S, "b": S}, {"a": True, "b": True}) == "holds"
    assert P.combine({"a": S, "b": R}, {}) == "partial"
    assert P.combine({"a": R, "b": R}, {}) == "fails"
    assert P.combine({"a": I, "b": R}, {"a": False, "b": True}) == "fails"
    assert P.combine({"a": I, "b": I}, {"a": True, "b": False}) == "fails"  # powered and nothing found
    assert P.combine({"a": I, "b": I}, {"a": False, "b": False}) == "undefined"  # too wide to decide anything
    assert P.combine({}, {}) == "undefined"


def test_selection_rules():
    acc = [np.array([0.95, 0.60]), np.array([0.95, 0.93]), np.array([0.96, 0.94])]
    nll = [np.array([0.2, 1.0]), np.array([0.3, 0.35]), np.array([0.25, 0.40])]
    # the first rate loses a seed; of the others the second has the better worst seed (0.35 < 0.40)
    assert E.choose_lr((0.01, 0.03, 0.1), acc, nll, 0.9)[0] == 0.03
    assert E.choose_lambda((1e-3, 1e-2, 1e-1), acc, 0.9)[0] == 1e-1
    assert E.choose_lambda((1e-3, 1e-2), [np.array([0.5]), np.array([0.4])], 0.9)[0] == 1e-3
    assert E.learned_threshold(0.93, 8) == pytest.approx(0.125 + 0.9 * (0.93 - 0.125))


# --------------------------------------------------------------------------- verdict logic on synthetic results


def _fake_res(gain, rng, n=32, id_acc=0.92, noise=0.005, ece_gain=-0.01):
    """A result dict in the shape experiment.run returns: every arm moves OOD accuracy by ``gain`` and ECE by
    ``ece_gain`` (+ per-seed noise)."""
    def run(ood, ece):
        return dict(metrics=dict(ood_acc=ood, ood_ece=ece, ood_nll=1.0, id_acc=id_acc, id_nll=0.3, id_ece=0.02,
                                 id_entropy_min=0.3, id_entropy=0.6, ood_entropy_min=0.8, id_R_median=-1.0,
                                 id_R_frac_pos=0.4, id_R_pos_mean=1.0), train_ce=[0.3])
    res = dict(paired={}, learned={}, config=dict(seeds={}, provisional=False), learned_threshold=0.85,
               selection=dict(lambda_={}), power_plan=dict(lines=[]), figures=dict(effects="x.png", entropy="y.png"),
               curvature={}, bayes=dict(id=dict(entropy=0.25, acc=0.93), ood=dict(acc=0.81, ece=0.04)))
    res["selection"] = dict(**{"lambda": {o: dict(chosen=1e-3) for o in ("adam", "sgd")}})
    for opt in ("adam", "sgd"):
        base_ood = 0.75 + 0.02 * rng.standard_normal(n)
        base_ece = 0.1 + 0.01 * rng.standard_normal(n)
        base = [run(a, b) for a, b in zip(base_ood, base_ece)]
        res["paired"][opt] = {arm: E.paired(base, [run(a + gain + noise * rng.standard_normal(),
                                                       b + ece_gain + noise * rng.standard_normal())
                                                   for a, b in zip(base_ood, base_ece)]) for arm in E.ARMS}
        res["learned"][opt] = dict(per_seed=[id_acc] * n, all=id_acc >= 0.85, n=n, n_learned=n * (id_acc >= 0.85),
                                   threshold=0.85)
        res["config"]["seeds"][opt] = list(range(n))
    return res


@pytest.mark.parametrize("gain, id_acc, verdict", [(0.05, 0.92, "holds"), (0.0, 0.92, "fails"),
                                                   (0.05, 0.2, "undefined")])
def test_ood_verdict_on_synthetic_runs(gain, id_acc, verdict):
    """A clear +5 % gain holds, no gain fails (the interval excludes +2 %), an untrained baseline is not judged."""
    r = V.judge_ood(_fake_res(gain, np.random.default_rng(0), id_acc=id_acc))
    assert r.verdict == verdict
    assert "POWER_TARGET_OOD_ACC" in [t.name for t in r.thresholds]


def test_a_missed_power_target_is_stated():
    """Noisy effects over few seeds: the summary says the experiment missed its power target, with the numbers."""
    r = V.judge_calibration(_fake_res(0.0, np.random.default_rng(1), n=6, noise=0.03))
    assert "MISSED ITS POWER TARGET" in r.summary and "> target 0.005" in r.summary
    quiet = V.judge_calibration(_fake_res(0.0, np.random.default_rng(1), n=32, noise=0.002))
    assert "every judged combination met its power target" in quiet.summary
    assert quiet.verdict == "holds"  # ECE down by 0.01 +- 0.002: better calibration in every combination


def test_checks_are_registered():
    from checks._src.registry import REGISTRY

    assert {"fix-is-loss-scaling", "fix-keeps-entropy-up", "fix-improves-ood", "fix-improves-calibration"} <= set(REGISTRY)


# --------------------------------------------------------------------------- end to end (slow)

TINY_EXPERIMENT = E.ExperimentConfig(
    task=TINY_TASK, train=dataclasses.replace(TINY_BATCH, dtype="float32", n_steps=40, log_every=20, chunk=8),
    n_seeds=4, max_seeds=4, seed_step=4, pilot_seeds=2, lambda_pilot_seeds=2, d_model=8, n_heads=2,
    sgd_lr_grid=(0.03,), lambda_grid=(1e-3,), old_loop_seeds=2, curvature_audit=1, equivalence_steps=8,
    equivalence_log_every=4)


@pytest.mark.slow
def test_experiment_end_to_end_and_figures(tmp_path):
    res = E.run(TINY_EXPERIMENT, seed=0, log=lambda *_: None)
    names = V.write_outputs(res, lambda name: str(tmp_path / name))
    assert all((tmp_path / n).stat().st_size > 0 for n in names.values())
    assert set(res["paired"]) == {"adam", "sgd"} and set(res["paired"]["adam"]) == set(E.ARMS)
    for judge in V.JUDGES.values():
        assert judge(res).verdict in ("holds", "fails", "partial", "undefined")
    assert res["timing"]["one_at_a_time"]["vs_batched"]["max_rel_param_diff"] < 1e-3
    audit = res["curvature"]["adam"]["baseline"]["audit"]
    assert audit["n"] > 0 and audit["max_rel_diff_raw_vs_engine"] < 1e-6


@pytest.mark.slow
def test_too_few_seeds_are_refused_before_the_main_runs():
    cfg = dataclasses.replace(TINY_EXPERIMENT, n_seeds=2, max_seeds=2, strict_power=True, old_loop_seeds=0)
    calls = []
    with pytest.raises(P.UnderpoweredError, match="seeds"):
        E.run(cfg, seed=0, log=calls.append)
    assert not any("t_switch" in c for c in calls)  # the main baselines never ran
