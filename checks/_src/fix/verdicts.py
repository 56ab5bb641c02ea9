r"""The four registered checks of the fix experiment and the rules that turn measurements into verdicts.

Every check judges the same experiment (:func:`experiment.run`, run once per
``(seed, quick)`` and cached).  The analysis plan (effect, interval, decision rule,
power targets) is :mod:`.plan`, fixed before the runs.  The effect checks judge the
post's formula, i.e. the two readings of the schedule (``literal``, ``true-temp``)
under each optimizer whose baseline learned the task on every seed; the
curvature-penalty arm tests the mechanism the post names ("penalizes the curvature
directly") and is reported beside them, classified by the same rule, but does not
enter the verdict (it is not the post's formula).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ..registry import FAILS, UNDEFINED, Context, Result, Threshold, register
from . import experiment as E
from . import plan as P
from .plan import (CI_LEVEL, ECE_GAIN_RELEVANT, ENTROPY_GAIN_RELEVANT, INCONCLUSIVE, OOD_GAIN_CLAIMED,  # noqa: F401
                   REJECTS, SUPPORTS, classify, combine)

# --------------------------------------------------------------------------- thresholds (fixed before measuring)
#: float64 SGD runs that are equal in exact arithmetic must agree to this relative parameter distance.
SGD_EQUIVALENCE_RTOL = 1e-9

READINGS = E.READINGS
MECHANISM = "curvature"

_CACHE: dict = {}


def experiment(ctx: Context) -> dict:
    """The experiment for ``ctx`` (preset ``quick`` or ``default``), run once; figures and JSON written once."""
    preset = "quick" if ctx.quick else "default"
    key = (ctx.seed, preset, os.path.abspath(ctx.out_dir))
    if key not in _CACHE:
        res = E.run(E.PRESETS[preset], seed=ctx.seed, bar=lambda total, desc: ctx.bar(total, desc), log=lambda *_: None)
        res["preset"] = preset
        res["figures"] = write_outputs(res, ctx.figure_path)
        _CACHE[key] = res
    return _CACHE[key]


def write_outputs(res: dict, figure_path) -> dict:
    """Figures (``figures.fix``) and the raw numbers as ``fix_experiment.json``; returns figure names by kind."""
    from figures import fix as F

    names = dict(effects="fix_effects.png", entropy="fix_entropy.png", schedule="fix_schedule.png",
                 curvature="fix_curvature.png")
    F.plot_effects(res, figure_path(names["effects"]))
    F.plot_entropy(res, figure_path(names["entropy"]))
    F.plot_schedule(res, figure_path(names["schedule"]))
    F.plot_curvature(res, figure_path(names["curvature"]))
    res["figures"] = names
    with open(figure_path("fix_experiment.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=_json_default)
    return names


def _json_default(x):
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _learned_threshold(res):
    return Threshold("LEARNED_FRACTION", P.LEARNED_FRACTION,
                     f"an optimizer is judged only if every baseline seed's ID accuracy closes this fraction of the gap "
                     f"from chance to the Bayes-optimal ID accuracy (here >= {res['learned_threshold']:.3f})")


def _power_thresholds(metric):
    if metric not in P.POWER_TARGETS:
        return []
    return [Threshold(f"POWER_TARGET_{metric.upper()}", P.POWER_TARGETS[metric],
                      f"the default run is planned so that the {CI_LEVEL:.0%} half-width of the {metric} effect is at "
                      "most this; a miss is stated in the summary")]


def _power_status(res, opt, arm, metric, d, claimed_min):
    """``(powered, text, miss)``: whether the combination's interval is finite and met its target, what to print,
    and, for a missed power target, the words the verdict's headline names it with (else ``None``).

    Metrics without a power target (the entropy) count as powered when the half-width is at most the
    relevant effect: narrow enough that an absent effect would have been told from the relevant one."""
    hw = d["half_width"]
    if not math.isfinite(hw):
        return False, "no finite interval", None
    target = P.POWER_TARGETS.get(metric)
    if target is None:
        ok = hw <= claimed_min
        return ok, f"half-width {hw:.3g}" + ("" if ok else f" > {claimed_min:g} (too wide to decide)"), None
    if hw <= target:
        return True, f"half-width {hw:.3g} <= target {target:g}", None
    need = [ln["seeds_needed"] for ln in res.get("power_plan", {}).get("lines", [])
            if (ln["optimizer"], ln["arm"], ln["metric"]) == (opt, arm, metric)]
    more = f"; the pilot predicted {need[0]} seeds needed" if need else ""
    return False, f"half-width {hw:.3g} > target {target:g}: MISSED ITS POWER TARGET{more}", f"half-width {hw:.3g} > target {target:g}{more}"


def _effect_check(res, metric, claimed_min, direction, thresholds, what, fmt="+.3g"):
    thresholds.append(_learned_threshold(res))
    thresholds.extend(_power_thresholds(metric))
    classes, powered, meas, parts, misses = {}, {}, {}, [], []
    for opt, by_arm in res["paired"].items():
        learned = res["learned"][opt]
        meas[f"{opt}/baseline_id_acc_min"] = min(learned["per_seed"])
        if not learned["all"]:
            parts.append(f"{opt}: {learned['n'] - learned['n_learned']} of {learned['n']} baseline seeds below ID "
                         f"accuracy {learned['threshold']:.3f}, did not learn the task, excluded")
        for arm in READINGS + (MECHANISM,):
            d = by_arm[arm][metric]
            lo, hi = d["ci95"]
            c = classify(lo, hi, claimed_min, direction)
            ok, ptxt, miss = _power_status(res, opt, arm, metric, d, claimed_min)
            key = f"{opt}/{arm}"
            if arm in READINGS and learned["all"]:
                classes[key], powered[key] = c, ok
            if miss and arm in READINGS:
                misses.append(f"{key} ({miss})")
            meas[key] = dict(mean_diff=d["mean"], ci95=[lo, hi], half_width=d["half_width"], per_seed=d["diffs"],
                             arm_mean=d["arm_mean"], baseline_mean=d["baseline_mean"], verdict=c, power=ptxt)
            label = f"{key}" if arm in READINGS else f"[mechanism, lambda = {_lam(res, opt):g}] {key}"
            parts.append(f"{label}: {what} {d['mean']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}], {ptxt} ({c})")
    verdict = combine(classes, powered)
    n = ", ".join(f"{len(v)} ({o})" for o, v in res["config"]["seeds"].items())
    head = f"{verdict.upper()} over {n} seeds per arm (paired, {CI_LEVEL:.0%} t-intervals)"
    if res["config"].get("provisional"):
        head = f"PROVISIONAL (--quick, underpowered by design) " + head
    if misses:
        head += "; the experiment MISSED ITS POWER TARGET for " + ", ".join(misses)
    else:
        head += "; every judged combination met its power target" if P.POWER_TARGETS.get(metric) else ""
    summary = head + "; " + "; ".join(parts) + "."
    meas["verdict_combinations"] = classes
    meas["power_plan"] = res.get("power_plan", {})
    return verdict, meas, summary


def _lam(res, opt):
    return res["selection"]["lambda"][opt]["chosen"]


def _points(res):
    tot: dict = {}
    for by_arm in res["curvature"].values():
        for c in by_arm.values():
            a = c["audit"]
            tot["total"] = tot.get("total", 0) + a["n"]
            for k, v in a["status"].items():
                tot[k] = tot.get(k, 0) + v
    return tot


def _curvature_text(res):
    parts = []
    for opt, by_arm in res["curvature"].items():
        parts.append(f"{opt}: " + ", ".join(
            f"{arm} median R {c['id']['median']:.3g} ({c['id']['frac_pos']:.0%} > 0)" for arm, c in by_arm.items()))
    return "Final R at the ID probe queries: " + "; ".join(parts)


def judge_loss_scaling(res) -> Result:
    thresholds = [Threshold("SGD_EQUIVALENCE_RTOL", SGD_EQUIVALENCE_RTOL,
                            "the literal fix is an LR schedule if float64 SGD trajectories agree within this "
                            "relative distance; the claim (a softmax temperature) then fails")]
    eq = res.get("equivalence")
    if eq is None:
        return Result(UNDEFINED, thresholds, {}, summary="no SGD equivalence runs in this configuration")
    plain = eq["plain_literal_vs_lr_schedule"]["max_rel_param_diff"]
    mom = eq["momentum_literal_vs_grad_scaling"]["max_rel_param_diff"]
    after = eq["momentum_literal_vs_lr_schedule_after_buffer"]["max_rel_param_diff"]
    vs_base = eq["momentum_literal_vs_baseline"]["max_rel_param_diff"]
    chaos64 = eq["chaos_reference"]["max_rel_param_diff"]
    traj = res["trajectory"]
    adam = traj.get("adam", {})
    rounding = res.get("timing", {}).get("one_at_a_time", {}).get("vs_batched")
    meas = dict(
        sgd_plain_literal_vs_lr_over_T=plain, sgd_momentum_literal_vs_grad_over_T=mom,
        sgd_momentum_literal_vs_lr_over_T_after_buffer=after, sgd_momentum_literal_vs_baseline=vs_base,
        sgd_chaos_reference_float64=chaos64, equivalence_steps=eq["steps"], equivalence_dtype=eq["dtype"],
        trajectories=traj, rounding_reference=rounding,
        t_switch={o: s["t_switch"] for o, s in res["schedules"].items()}, curvature=res["curvature"],
    )
    exact = plain <= SGD_EQUIVALENCE_RTOL and mom <= SGD_EQUIVALENCE_RTOL
    verdict = FAILS if exact else UNDEFINED
    summary = (
        f"Plain SGD: literal loss/T vs lr/T(t) differ by max rel. {plain:.2e} (<= {SGD_EQUIVALENCE_RTOL:g}: "
        f"{plain <= SGD_EQUIVALENCE_RTOL}); momentum SGD: literal vs g/T(t) {mom:.2e}, vs lr/T(t) after the "
        f"buffer {after:.2e}, vs baseline {vs_base:.2e} (chaos reference: baseline from theta_0 (1 + "
        f"{eq['chaos_reference']['init_perturbation']:g}) drifts {chaos64:.2e}; {eq['steps']} float64 steps). "
        + ("The literal fix never touches a softmax: it is a learning-rate schedule." if exact else
           "The trajectories do not agree to the tolerance: the equivalence is not demonstrated.")
    )
    if adam:
        lp, le = adam["literal"]["max_rel_param_diff"], adam["literal"]["max_abs_entropy_diff"]
        tp = adam["true-temp"]["max_rel_param_diff"]
        summary += (f" Adam: literal vs baseline max rel. param diff {np.median(lp):.2e} (median over seeds; max "
                    f"{np.max(lp):.2e}), max |dH| {np.max(le):.3f} nats; for scale, the true-temperature arm "
                    f"moves {np.median(tp):.2e}")
        summary += (f" and the same baseline trained by the one-run loop instead of the batched program (rounding "
                    f"differences only) drifts {rounding['max_rel_param_diff']:.2e}." if rounding else ".")
    summary += " " + _curvature_text(res) + "."
    return Result(verdict, thresholds, meas, figures=[res["figures"]["schedule"], res["figures"]["curvature"]],
                  summary=summary)


def judge_entropy(res) -> Result:
    thresholds = [Threshold("ENTROPY_GAIN_RELEVANT", ENTROPY_GAIN_RELEVANT,
                            f"per reading and optimizer: supports if the {CI_LEVEL:.0%} CI of the final QUERY-row "
                            "entropy of the sharpest head (arm - baseline, nats, ID probe) is > 0; rejects if it lies "
                            "below this value")]
    verdict, meas, summary = _effect_check(res, "id_entropy_min", ENTROPY_GAIN_RELEVANT, +1, thresholds, "dH_min")
    for opt, by_arm in res["paired"].items():
        meas[f"{opt}/baseline_final_entropy_min"] = by_arm["literal"]["id_entropy_min"]["baseline_mean"]
        for arm in READINGS + (MECHANISM,):
            meas[f"{opt}/{arm}/head_mean_dH"] = by_arm[arm]["id_entropy"]
            meas[f"{opt}/{arm}/ood_dH_min"] = by_arm[arm]["ood_entropy_min"]
    meas["curvature"] = res["curvature"]
    meas["bayes_entropy"] = {s: res["bayes"][s]["entropy"] for s in ("id", "ood")}
    summary = summary[:-1] + (f"; the Bayes-optimal attention row has entropy {res['bayes']['id']['entropy']:.3f} nats "
                              f"(ID). {_curvature_text(res)}.")
    return Result(verdict, thresholds, meas, figures=[res["figures"]["entropy"], res["figures"]["effects"]],
                  points=_points(res), summary=summary)


def judge_ood(res) -> Result:
    thresholds = [Threshold("OOD_GAIN_CLAIMED", OOD_GAIN_CLAIMED,
                            f"per reading and optimizer: supports if the {CI_LEVEL:.0%} CI of OOD accuracy "
                            "(arm - baseline) is > 0 and reaches this value; rejects if it lies below it")]
    verdict, meas, summary = _effect_check(res, "ood_acc", OOD_GAIN_CLAIMED, +1, thresholds, "dOOD acc")
    b = res["bayes"]["ood"]
    nll = []
    for opt, by_arm in res["paired"].items():
        base = by_arm["literal"]["ood_acc"]["baseline_mean"]
        meas[f"{opt}/headroom_to_bayes"] = b["acc"] - base
        nll.append(f"{opt} baseline OOD accuracy {base:.3f} (Bayes reference {b['acc']:.3f}), dlog-loss " + ", ".join(
            f"{arm} {by_arm[arm]['ood_nll']['mean']:+.3g} [{by_arm[arm]['ood_nll']['ci95'][0]:+.3g}, "
            f"{by_arm[arm]['ood_nll']['ci95'][1]:+.3g}]" for arm in READINGS + (MECHANISM,)))
        for arm in READINGS + (MECHANISM,):
            meas[f"{opt}/{arm}/ood_nll"] = by_arm[arm]["ood_nll"]
    meas["bayes"] = res["bayes"]
    summary = summary[:-1] + ". Continuous metric (OOD log-loss, nats): " + "; ".join(nll) + "."
    return Result(verdict, thresholds, meas, figures=[res["figures"]["effects"]], summary=summary)


def judge_calibration(res) -> Result:
    thresholds = [Threshold("ECE_GAIN_RELEVANT", ECE_GAIN_RELEVANT,
                            f"per reading and optimizer, on the OOD split: supports if the {CI_LEVEL:.0%} CI of "
                            "ECE (arm - baseline) is < 0; rejects if it excludes a reduction of this size")]
    verdict, meas, summary = _effect_check(res, "ood_ece", ECE_GAIN_RELEVANT, -1, thresholds, "dECE", fmt="+.2g")
    for opt, by_arm in res["paired"].items():
        for arm in READINGS + (MECHANISM,):
            meas[f"{opt}/{arm}/id_ece"] = by_arm[arm]["id_ece"]
            meas[f"{opt}/{arm}/final_train_ce"] = by_arm[arm]["final_train_ce"]
    base = ", ".join(f"{o} {by['literal']['ood_ece']['baseline_mean']:.3f}" for o, by in res["paired"].items())
    summary = summary[:-1] + f". Baseline OOD ECE {base} (Bayes reference {res['bayes']['ood']['ece']:.3f})."
    return Result(verdict, thresholds, meas, figures=[res["figures"]["effects"]], summary=summary)


FIX = "temperature = base_temp * (1 + beta * tanh(gamma * (t - t_switch))); loss = cross_entropy / temperature"


@register("fix-is-loss-scaling", f"'{FIX}' penalizes the curvature by lowering the effective inverse "
          "temperature of the softmax", order=500,
          quote="temperature = base_temp * (1 + beta * tanh(gamma * (t - t_switch))) loss = cross_entropy / temperature … "
                "Mathematically, this penalizes the curvature directly by lowering the effective inverse temperature of the softmax",
          measured="Under plain SGD the literal fix and the learning-rate schedule lr/T(t) end {sgd_plain_literal_vs_lr_over_T:.1e} "
                   "apart (relative parameter distance after {equivalence_steps} float64 steps; tolerance {SGD_EQUIVALENCE_RTOL:g}).")
def fix_is_loss_scaling(ctx: Context) -> Result:
    return judge_loss_scaling(experiment(ctx))


@register("fix-keeps-entropy-up", "the schedule keeps attention entropy H bounded away from zero", order=510,
          quote="which keeps H bounded away from zero",
          measured="Change of the sharpest head's final attention entropy, arm − baseline (Adam, SGD): literal fix "
                   "{*/literal.mean_diff|join:+.3f}, true temperature {*/true-temp.mean_diff|join:+.3f}, curvature penalty "
                   "{*/curvature.mean_diff|join:+.3f} nats (relevant: +{ENTROPY_GAIN_RELEVANT}).")
def fix_keeps_entropy_up(ctx: Context) -> Result:
    return judge_entropy(experiment(ctx))


@register("fix-improves-ood", "empirically expect ~2% improvement on OOD generalization", order=520,
          quote="Empirically expect: ~2% improvement on OOD generalization benchmarks.",
          measured="Mean change of OOD accuracy, arm − baseline (Adam, SGD): literal fix {*/literal.mean_diff|join:+.4f}, "
                   "true temperature {*/true-temp.mean_diff|join:+.4f} (claimed +{OOD_GAIN_CLAIMED}); curvature penalty "
                   "{*/curvature.mean_diff|join:+.3f}.")
def fix_improves_ood(ctx: Context) -> Result:
    return judge_ood(experiment(ctx))


@register("fix-improves-calibration", "empirically expect better calibration", order=530,
          quote="Empirically expect: … Better calibration.",
          measured="Mean change of OOD ECE, arm − baseline (Adam, SGD): literal fix {*/literal.mean_diff|join:+.4f}, "
                   "true temperature {*/true-temp.mean_diff|join:+.4f} (relevant: −{ECE_GAIN_RELEVANT}); curvature penalty "
                   "{*/curvature.mean_diff|join:+.3f}.")
def fix_improves_calibration(ctx: Context) -> Result:
    return judge_calibration(experiment(ctx))


JUDGES = {
    "fix-is-loss-scaling": judge_loss_scaling, "fix-keeps-entropy-up": judge_entropy,
    "fix-improves-ood": judge_ood, "fix-improves-calibration": judge_calibration,
}
