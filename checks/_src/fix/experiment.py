r"""The fix experiment: baseline vs the post's temperature schedule, two readings, two optimizers.

For each optimizer (``adam``, ``sgd`` with momentum):

1. train the ``baseline`` arm over ``n_seeds`` seeds;
2. choose ``t_switch`` by the post's rule, "the training step at which you observe
   entropy beginning to collapse", made operational as the first logged step at
   which the seed-mean, layer-mean attention entropy of the baseline has fallen by
   ``ONSET_FRACTION`` of its total fall, ``H(t) <= H(0) - f (H(0) - min_t H)``;
3. train the ``literal`` (``loss = CE / T(t)``) and ``true-temp`` (attention logits
   ``/ T(t)``) arms on the same seeds with ``T(t) = T0 (1 + beta tanh(gamma (t - t_switch)))``;
4. measure final in-distribution / OOD accuracy and ECE, the attention entropy curves,
   the parameter distance of each arm from the baseline along training, and the
   Fisher scalar curvature of the trained heads (``geometry.scalar_curvature``).

The ``sgd`` equivalence runs (plain SGD; momentum SGD) are short (training is chaotic:
rounding differences grow exponentially, so agreement "to float tolerance" is only
meaningful over a short horizon), in float64, with their own schedule centred in
the run (``t_switch = n / 2``) so the whole transition is covered.  Each comparison
comes with a chaos reference: the same run restarted from ``theta_0 (1 + e)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import jax
import numpy as np
from scipy import stats as _st

import geometry

from . import model as M
from . import task as T
from . import train as TR
from .schedule import Schedule
from .stats import mean_ci

#: t_switch rule: first step where the baseline's entropy has fallen by this fraction of its total fall.
ONSET_FRACTION = 0.1
#: The post's schedule: base temperature and boost (the post suggests beta ~ 0.1-0.3; we take the middle).
BASE_TEMP = 1.0
BETA = 0.2
#: gamma = GAMMA_TIMES_STEPS / n_steps: tanh reaches 0.96 of its range 2/GAMMA_TIMES_STEPS * n_steps = 10 % of
#: training after t_switch.
GAMMA_TIMES_STEPS = 20.0
#: Chaos reference: the baseline restarted from theta_0 (1 + e); e ~ a few float32 ulps / float64 ulps.
PERTURBATION = {"float32": 1e-6, "float64": 1e-15}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    task: T.Task = T.Task()
    train: TR.TrainConfig = TR.TrainConfig()
    sgd_steps_factor: int = 2  # SGD runs are this many times longer than Adam runs (SGD learns slower)
    n_seeds: int = 5
    optimizers: tuple = ("adam", "sgd")
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 3
    curvature_seqs: int = 2  # probe sequences per head whose QUERY-position curvature is measured
    curvature_seeds: int | None = None  # measure curvature on the first this-many seeds (None: all)
    curvature_time_budget: float = 5.0  # seconds of mpmath fallback per (run, layer, head, sequence)
    equivalence_steps: int = 60
    equivalence_log_every: int = 10

    def __post_init__(self):
        if self.n_seeds < 2:
            raise ValueError(f"n_seeds must be >= 2 for a confidence interval over seeds, got {self.n_seeds}")
        for o in self.optimizers:
            if o not in ("adam", "sgd"):
                raise ValueError(f"optimizers must be a subset of ('adam', 'sgd'), got {o!r}")

    def model(self) -> M.ModelConfig:
        return TR.model_config(self.task, d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers)

    def train_for(self, opt: str) -> TR.TrainConfig:
        if opt == "sgd" and self.sgd_steps_factor != 1:
            t = self.train
            return dataclasses.replace(t, n_steps=t.n_steps * self.sgd_steps_factor, log_every=t.log_every * self.sgd_steps_factor)
        return self.train


PRESETS = {
    # CI: Adam arms only (plus the float64 SGD equivalence runs); 2 seeds give inconclusive effect verdicts
    "quick": ExperimentConfig(
        task=T.Task(n_content=8, train_length=16, ood_length=48),
        train=TR.TrainConfig(n_steps=160, batch=32, log_every=16, adam_lr=3e-3, sgd_lr=0.3, eval_size=256,
                             fast_compile=True),
        optimizers=("adam",), sgd_steps_factor=1, n_seeds=2, d_model=16, n_heads=2, n_layers=3, curvature_seqs=1, curvature_seeds=1,
        curvature_time_budget=1.0, equivalence_steps=48, equivalence_log_every=16,
    ),
    # `python -m checks` without --quick
    "default": ExperimentConfig(n_seeds=3, curvature_seqs=2, curvature_seeds=1),
    # `python -m checks._src.fix --full`
    "full": ExperimentConfig(n_seeds=5, curvature_seqs=2),
}


def onset_step(steps, entropy_curve, fraction: float = ONSET_FRACTION) -> float:
    r"""First ``steps[i]`` with ``H_i <= H_0 - fraction (H_0 - min H)``: where the entropy starts to fall.

    ``entropy_curve`` is the baseline's seed-mean, layer-mean entropy at ``steps``.
    """
    h = np.asarray(entropy_curve, np.float64)
    if h.ndim != 1 or h.shape != np.shape(steps):
        raise ValueError(f"entropy_curve must be 1-d and match steps, got {h.shape} vs {np.shape(steps)}")
    drop = h[0] - h.min()
    if not drop > 0:
        return float(steps[-1])  # entropy never falls: the schedule switches at the end (no-op)
    idx = int(np.flatnonzero(h <= h[0] - fraction * drop)[0])
    return float(steps[idx])


def schedule_for(t_switch: float, n_steps: int) -> Schedule:
    return Schedule(base_temp=BASE_TEMP, beta=BETA, gamma=GAMMA_TIMES_STEPS / n_steps, t_switch=t_switch)


def _rel_distance(a, b):
    """``||a - b|| / ||b||`` per row of two ``(points, P)`` trajectories."""
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def head_curvatures(run: dict, cfg: ExperimentConfig) -> list:
    r"""Scalar curvature and entropy of each trained head at the QUERY position of OOD-length sequences.

    For head ``a`` of layer ``l`` and sequence ``s`` the query space is ``R^{d_h}``
    and the family is ``p(x) = softmax(scale K x)`` with the sequence's keys ``K``
    ``(L, d_h)`` and ``scale = 1 / (sqrt(d_h) tau)``: exactly the softmax of the
    forward pass (``tau`` = the final attention temperature of the arm).  If the
    centred keys have rank < d_h or ``L - 1 < d_h`` the query is projected onto
    their span (``geometry.project_keys``) and the record says ``projected``.
    """
    # OOD-length sequences: n = ood_length keys >> d_h.  On ID sequences with n - 1 <= d_h the
    # (projected) family is the whole simplex on n outcomes, whose R = (n-1)(n-2)/4 is constant.
    tokens, positions, _ = TR.eval_sets(cfg.task, cfg.train.eval_size)["ood"]
    n = cfg.curvature_seqs
    params = jax.tree_util.tree_map(np.asarray, run["params"])
    _, aux = M.forward(params, tokens[:n], positions[:n], run["attn_temp_final"], return_probs=True)
    q, k, ent = (np.asarray(aux[x], np.float64) for x in ("q", "k", "entropy"))
    d_h = q.shape[-1]
    scale = 1.0 / (math.sqrt(d_h) * run["attn_temp_final"])
    out = []
    for l in range(q.shape[0]):
        for s in range(n):
            for a in range(q.shape[2]):
                keys, query = k[l, s, a], q[l, s, a, -1]
                try:
                    fam, theta, projected = geometry.attention(keys, scale), query, False
                except ValueError:
                    kp, basis = geometry.project_keys(keys)
                    fam, theta, projected = geometry.attention(kp, scale), basis.T @ query, True
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", geometry.UndefinedCurvatureWarning)
                    r, info = geometry.scalar_curvature(
                        fam, theta, return_info=True, time_budget=cfg.curvature_time_budget
                    )
                out.append(dict(
                    layer=l, seq=s, head=a, R=float(r), H=float(geometry.entropy(fam, theta)),
                    H_model=float(ent[l, s, a, -1]), dim=int(fam.dim), projected=projected,
                    status=geometry.STATUS_NAMES[int(info.status)],
                ))
    return out


def _summarise_curvature(records):
    r = np.asarray([x["R"] for x in records])
    h = np.asarray([x["H"] for x in records])
    ok = np.isfinite(r)
    counts = {name: int(sum(x["status"] == name for x in records)) for name in geometry.STATUS_NAMES.values()}
    rho = float(_st.spearmanr(h[ok], r[ok]).statistic) if ok.sum() > 2 else math.nan
    return dict(
        n=len(records), n_finite=int(ok.sum()), projected=int(sum(x["projected"] for x in records)),
        status=counts, median_R=float(np.median(r[ok])) if ok.any() else math.nan,
        frac_R_positive=float(np.mean(r[ok] > 0)) if ok.any() else math.nan,
        mean_H=float(h.mean()), spearman_R_H=rho,
        max_entropy_mismatch=float(np.max(np.abs(h - np.asarray([x["H_model"] for x in records])))),
    )


def run(cfg: ExperimentConfig, seed: int = 0, bar=None, log=print) -> dict:
    """Run every arm over ``cfg.n_seeds`` seeds (``seed, seed + 1, ...``) and the SGD equivalence runs.

    ``bar(total, desc)`` makes a tqdm-like progress bar counting training steps.
    Returns a JSON-serialisable dict (see ``checks`` for how it is judged).
    """
    t_start = time.perf_counter()
    seeds = [seed + i for i in range(cfg.n_seeds)]
    mcfg = cfg.model()
    total = sum((3 * cfg.n_seeds + 1) * cfg.train_for(o).n_steps for o in cfg.optimizers)
    total += 7 * cfg.equivalence_steps
    pbar = bar(total, "fix experiment") if bar else None
    res = dict(config=_config_dict(cfg, seeds), runs={}, schedules={}, curvature={}, paired={}, trajectory={})
    for opt in cfg.optimizers:
        tcfg = cfg.train_for(opt)
        runs = {}
        provisional = schedule_for(tcfg.n_steps / 2, tcfg.n_steps)  # unused by the baseline's loss
        runs["baseline"] = [TR.train(cfg.task, mcfg, tcfg, "baseline", opt, s, provisional, True, pbar) for s in seeds]
        steps = runs["baseline"][0]["steps"]
        h_base = np.mean([r["entropy"].mean(axis=1) for r in runs["baseline"]], axis=0)
        t_switch = onset_step(steps, h_base)
        sched = schedule_for(t_switch, tcfg.n_steps)
        res["schedules"][opt] = dict(dataclasses.asdict(sched), n_steps=tcfg.n_steps, rule=(
            f"first logged step where the baseline's seed-mean layer-mean entropy fell by {ONSET_FRACTION:g} "
            "of its total fall"), baseline_entropy=h_base.tolist(), steps=steps.tolist())
        log(f"[fix] {opt}: t_switch = {t_switch:g} of {tcfg.n_steps} steps (gamma = {sched.gamma:.4g})")
        for arm in ("literal", "true-temp"):
            runs[arm] = [TR.train(cfg.task, mcfg, tcfg, arm, opt, s, sched, True, pbar) for s in seeds]
        # distance of each arm's trajectory from the baseline's (same seed, same data, same init), and the
        # chaos reference: the baseline of the first seed restarted from a rounding-sized perturbation
        eps = PERTURBATION[tcfg.dtype]
        chaos = TR.train(cfg.task, mcfg, tcfg, "baseline", opt, seeds[0], provisional, True, pbar, measure=False,
                         init_perturbation=eps)["trajectory"]
        res["chaos_reference"] = res.get("chaos_reference", {})
        res["chaos_reference"][opt] = dict(
            init_perturbation=eps, seed=seeds[0],
            max_rel_param_diff=float(_rel_distance(chaos, runs["baseline"][0]["trajectory"]).max()))
        res["trajectory"][opt] = {
            arm: dict(
                max_rel_param_diff=[float(_rel_distance(a["trajectory"], b["trajectory"]).max())
                                    for a, b in zip(runs[arm], runs["baseline"])],
                max_abs_entropy_diff=[float(np.abs(a["entropy"] - b["entropy"]).max())
                                      for a, b in zip(runs[arm], runs["baseline"])],
            )
            for arm in ("literal", "true-temp")
        }
        for arm, rs in runs.items():
            for r in rs:
                r.pop("trajectory", None)
            res["curvature"].setdefault(opt, {})[arm] = _summarise_curvature(
                [x for r in rs[: cfg.curvature_seeds] for x in head_curvatures(r, cfg)])
            res["runs"].setdefault(opt, {})[arm] = [_run_dict(r) for r in rs]
        res["paired"][opt] = _paired(runs)
    res["equivalence"] = _equivalence(cfg, mcfg, seeds[0], pbar)
    if pbar is not None:
        pbar.close()
    res["elapsed_s"] = time.perf_counter() - t_start
    return res


def _equivalence(cfg, mcfg, seed, pbar) -> dict:
    """Plain SGD: literal vs lr/T(t); momentum SGD: literal vs g/T(t) before the buffer, and vs lr/T(t) after."""
    n = cfg.equivalence_steps
    tcfg = dataclasses.replace(cfg.train, n_steps=n, log_every=cfg.equivalence_log_every, dtype="float64")
    sched = schedule_for(n / 2, n)

    def traj(arm, opt):
        return TR.train(cfg.task, mcfg, tcfg, arm, opt, seed, sched, True, pbar, measure=False)["trajectory"]

    lit_plain, lit_mom = traj("literal", "sgd-plain"), traj("literal", "sgd")
    base_mom = traj("baseline", "sgd")
    chaos = TR.train(cfg.task, mcfg, tcfg, "baseline", "sgd", seed, sched, True, pbar, measure=False,
                     init_perturbation=PERTURBATION["float64"])["trajectory"]

    def cmp(a, b):
        d = _rel_distance(a, b)
        return dict(max_rel_param_diff=float(d.max()), final_rel_param_diff=float(d[-1]))

    return dict(
        steps=n, dtype="float64", schedule=dataclasses.asdict(sched), seed=seed,
        plain_literal_vs_lr_schedule=cmp(lit_plain, traj("baseline", "sgd-plain-lr/T")),
        momentum_literal_vs_grad_scaling=cmp(lit_mom, traj("baseline", "sgd-gradscale/T")),
        momentum_literal_vs_lr_schedule_after_buffer=cmp(lit_mom, traj("baseline", "sgd-lr/T")),
        momentum_literal_vs_baseline=cmp(lit_mom, base_mom),
        chaos_reference=dict(cmp(chaos, base_mom), init_perturbation=PERTURBATION["float64"]),
    )


_PAIRED_METRICS = ("ood_acc", "id_acc", "ood_ece", "id_ece", "ood_nll", "id_nll")


def _final_entropies(r):
    return dict(entropy_mean=float(r["entropy"][-1].mean()), entropy_last_layer=float(r["entropy"][-1, -1]),
                entropy_query_last_layer=float(r["entropy_query"][-1, -1]), final_train_ce=float(r["train_ce"][-1]))


def _paired(runs) -> dict:
    """Per arm: per-seed differences arm - baseline, their mean and 95 % t-interval."""
    out = {}
    base = runs["baseline"]
    for arm in ("literal", "true-temp"):
        d = {}
        for key in _PAIRED_METRICS + tuple(_final_entropies(base[0])):
            get = (lambda r: r["metrics"][key]) if key in _PAIRED_METRICS else (lambda r: _final_entropies(r)[key])
            diffs = np.asarray([get(a) - get(b) for a, b in zip(runs[arm], base)])
            m, lo, hi = mean_ci(diffs)
            d[key] = dict(diffs=diffs.tolist(), mean=m, ci95=[lo, hi],
                          arm_mean=float(np.mean([get(a) for a in runs[arm]])),
                          baseline_mean=float(np.mean([get(b) for b in base])))
        out[arm] = d
    return out


def _run_dict(r) -> dict:
    return dict(seed=r["seed"], steps=r["steps"].tolist(), temperature=r["temperature"].tolist(),
                entropy=r["entropy"].tolist(), entropy_query=r["entropy_query"].tolist(),
                train_ce=r["train_ce"].tolist(), metrics=r["metrics"], **_final_entropies(r))


def _config_dict(cfg, seeds):
    d = dataclasses.asdict(cfg)
    d.update(seeds=seeds, beta=BETA, base_temp=BASE_TEMP, gamma_times_steps=GAMMA_TIMES_STEPS,
             onset_fraction=ONSET_FRACTION)
    return d
