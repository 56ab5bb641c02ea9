"""The temperature-schedule fix experiment: schedule, optimizer identities, model entropies, verdict logic.

Everything here runs on a tiny model (a few seconds of compilation, a few steps).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import geometry
from checks._src.fix import experiment as E
from checks._src.fix import model as M
from checks._src.fix import task as T
from checks._src.fix import train as TR
from checks._src.fix import verdicts as V
from checks._src.fix.schedule import Schedule, temperature
from checks._src.fix.stats import expected_calibration_error, mean_ci

TINY_TASK = T.Task(n_content=4, train_length=8, ood_length=16)
TINY_MODEL = TR.model_config(TINY_TASK, d_model=8, n_heads=2, n_layers=2)
TINY_TRAIN = TR.TrainConfig(n_steps=12, batch=8, log_every=4, adam_lr=1e-2, sgd_lr=0.5, eval_size=64,
                            dtype="float64", fast_compile=True)
#: the schedule swings from 0.6 T0 to 1.4 T0 inside the 12 steps
TINY_SCHEDULE = Schedule(base_temp=1.0, beta=0.4, gamma=0.5, t_switch=6.0)


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
    # momentum with lr 0.5 amplifies rounding differences (~1e-16 per step) a little faster
    assert _rel(lit_mom, _trajectory("baseline", "sgd-gradscale/T")) < 1e-9
    # ... and the schedule does change the trajectory (so the agreement above is not vacuous)
    assert _rel(lit_mom, _trajectory("baseline", "sgd")) > 1e-3
    # with momentum, lr / T(t) applied after the buffer is only approximately the same
    assert 1e-12 < _rel(lit_mom, _trajectory("baseline", "sgd-lr/T")) < _rel(lit_mom, _trajectory("baseline", "sgd"))


def test_adam_is_invariant_to_a_constant_loss_scale_and_nearly_to_a_slow_one():
    """Adam's update m/(sqrt(v) + eps) is invariant to g -> c g up to eps; a varying c acts through the EMAs only."""
    constant = Schedule(base_temp=2.0, beta=0.0, gamma=1.0, t_switch=0.0)  # T = 2 throughout
    adam_const = _rel(_trajectory("literal", "adam", constant), _trajectory("baseline", "adam", constant))
    sgd_const = _rel(_trajectory("literal", "sgd-plain", constant), _trajectory("baseline", "sgd-plain", constant))
    # m / (sqrt(v) + eps) with g / 2 is m / (sqrt(v) + 2 eps): only coordinates with |g| ~ eps feel it
    assert adam_const < 1e-3 and adam_const < 1e-2 * sgd_const, (adam_const, sgd_const)
    # the tiny schedule swings T by a factor 1.4 / 0.6 in 12 steps; Adam still moves less than SGD does
    adam_dev = _rel(_trajectory("literal", "adam"), _trajectory("baseline", "adam"))
    sgd_dev = _rel(_trajectory("literal", "sgd-plain"), _trajectory("baseline", "sgd-plain"))
    assert adam_dev < 0.5 * sgd_dev, (adam_dev, sgd_dev)


# --------------------------------------------------------------------------- the model's entropies


def test_entropies_come_from_the_forward_softmax():
    """aux["entropy"] is -sum p log p of the very probabilities the forward pass mixes values with,
    and at the QUERY position it equals geometry.entropy of attention(keys, 1 / (sqrt(d_h) tau)) at q."""
    params = M.init_params(TINY_MODEL, T.prng_key(0))
    tokens, positions, _ = T.id_split(TINY_TASK, T.prng_key(1), 3)
    tau = 0.7
    logits, aux = M.forward(params, tokens, positions, tau, return_probs=True)
    p = np.asarray(aux["probs"])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    np.testing.assert_allclose(np.asarray(aux["entropy"]), h, rtol=1e-12, atol=1e-14)
    # the returned probabilities are the ones the forward pass uses: same logits either way
    logits_plain, _ = M.forward(params, tokens, positions, tau)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(logits_plain))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-13)
    assert np.all(np.triu(p[0, 0, 0], 1) == 0.0)  # causal
    d_h = TINY_MODEL.d_head
    keys, q = np.asarray(aux["k"][1, 0, 1]), np.asarray(aux["q"][1, 0, 1, -1])
    fam = geometry.attention(keys[:, :], 1.0 / (math.sqrt(d_h) * tau))
    assert float(geometry.entropy(fam, q)) == pytest.approx(float(aux["entropy"][1, 0, 1, -1]), rel=1e-10)


def test_attention_temperature_raises_entropy():
    params = M.init_params(TINY_MODEL, T.prng_key(0))
    tokens, positions, _ = T.id_split(TINY_TASK, T.prng_key(1), 4)
    h1 = M.forward(params, tokens, positions, 1.0)[1]["entropy"][..., 2:].mean()
    h2 = M.forward(params, tokens, positions, 2.0)[1]["entropy"][..., 2:].mean()
    assert h2 > h1


def test_task_targets_follow_the_marker():
    tokens, positions, targets = T.train_batch(TINY_TASK, T.prng_key(5), 16)
    tokens, targets = np.asarray(tokens), np.asarray(targets)
    for row, y in zip(tokens, targets):
        (p,) = np.flatnonzero(row == TINY_TASK.marker)
        assert row[p + 1] == y and row[-1] == TINY_TASK.query
    assert np.asarray(positions).max() < TINY_TASK.n_positions


# --------------------------------------------------------------------------- statistics and verdict logic


def test_ece_known_values():
    # confident and right: ECE 0; always 0.9 confident, right half of the time: ECE 0.4
    assert expected_calibration_error(np.eye(4), np.arange(4)) == pytest.approx(0.0)
    probs = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(probs, np.array([0, 1] * 5)) == pytest.approx(0.4)


def test_mean_ci_is_student_t():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))


@pytest.mark.parametrize("ci, direction, expected", [
    ((0.03, 0.05), +1, V.SUPPORTS), ((-0.01, 0.01), +1, V.REJECTS), ((-0.01, 0.05), +1, V.INCONCLUSIVE),
    ((-0.05, -0.01), -1, V.SUPPORTS), ((-0.004, 0.01), -1, V.REJECTS),
])
def test_classify(ci, direction, expected):
    claimed = 0.02 if direction > 0 else V.ECE_GAIN_RELEVANT
    assert V.classify(*ci, claimed, direction) == expected


def test_combine():
    assert V.combine({"a": V.SUPPORTS, "b": V.SUPPORTS}) == "holds"
    assert V.combine({"a": V.REJECTS, "b": V.REJECTS}) == "fails"
    assert V.combine({"a": V.SUPPORTS, "b": V.REJECTS}) == "partial"
    assert V.combine({"a": V.INCONCLUSIVE, "b": V.REJECTS}) == "undefined"


def _fake_runs(ood_gain, rng, n_seeds=5, id_acc=0.99):
    """Synthetic per-seed runs: the arms differ from the baseline by ``ood_gain`` (+ small noise)."""
    def run(ood):
        return dict(metrics=dict(ood_acc=ood, id_acc=id_acc, ood_ece=0.1, id_ece=0.01, ood_nll=1.0, id_nll=0.1),
                    entropy=np.ones((3, 3)), entropy_query=np.ones((3, 3)), train_ce=np.ones(2))
    base = 0.8 + 0.05 * rng.normal(size=n_seeds)
    runs = {"baseline": [run(b) for b in base]}
    for arm in V.READINGS:
        runs[arm] = [run(b + ood_gain + 1e-3 * rng.normal()) for b in base]
    return runs


@pytest.mark.parametrize("gain, id_acc, verdict", [(0.05, 0.99, "holds"), (0.0, 0.99, "fails"),
                                                   (0.05, 0.2, "undefined")])
def test_ood_verdict_on_synthetic_runs(gain, id_acc, verdict):
    """A clear +5 % gain holds, no gain fails (the CI excludes +2 %), an untrained baseline is not judged."""
    rng = np.random.default_rng(0)
    res = dict(paired={opt: E._paired(_fake_runs(gain, rng, id_acc=id_acc)) for opt in ("adam", "sgd")},
               config=dict(seeds=list(range(5))), figures=dict(ood_ece="x.png"))
    assert V.judge_ood(res).verdict == verdict


def test_checks_are_registered():
    from checks._src.registry import REGISTRY

    assert {"fix-is-loss-scaling", "fix-keeps-entropy-up", "fix-improves-ood", "fix-improves-calibration"} <= set(REGISTRY)
