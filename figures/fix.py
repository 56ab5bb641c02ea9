"""Figures for the temperature-schedule fix experiment (``checks._src.fix``).  Each function writes one PNG.

All take the JSON-serialisable result dict of ``checks._src.fix.experiment.run``.
Entropies are in nats.  Effects are per-seed paired differences arm - baseline: every
seed is a dot, the bar is the mean with its 95 % t-interval.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ARM_STYLE = {"baseline": ("k", "baseline"), "literal": ("tab:blue", "literal: loss / T(t)"),
             "true-temp": ("tab:red", "true temperature: logits / T(t)"),
             "curvature": ("tab:green", "curvature penalty: CE + lambda mean R+")}
ARMS = ("literal", "true-temp", "curvature")
#: (metric, axis label, claimed/relevant effect drawn as a dashed line, its sign)
EFFECT_PANELS = (("ood_acc", "OOD accuracy", "OOD_GAIN_CLAIMED", +1), ("ood_ece", "OOD ECE", "ECE_GAIN_RELEVANT", -1),
                 ("ood_nll", "OOD log-loss (nats)", None, -1),
                 ("id_entropy_min", "final entropy of the sharpest head (nats)", "ENTROPY_GAIN_RELEVANT", +1))


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _claims():
    from checks._src.fix import plan

    return {k: getattr(plan, k) for k in ("OOD_GAIN_CLAIMED", "ECE_GAIN_RELEVANT", "ENTROPY_GAIN_RELEVANT")}


def plot_effects(res: dict, path: str) -> str:
    """Per-seed paired effects (arm - baseline) of every arm and optimizer, four metrics."""
    claims = _claims()
    targets = res["config"].get("power_targets", {})
    opts = list(res["paired"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    for ax, (metric, label, claim, sign) in zip(axes.ravel(), EFFECT_PANELS):
        ticks, names = [], []
        for j, opt in enumerate(opts):
            for k, arm in enumerate(ARMS):
                d = res["paired"][opt][arm][metric]
                x = j * (len(ARMS) + 1) + k
                colour = ARM_STYLE[arm][0]
                diffs = np.asarray(d["diffs"], float)
                ax.scatter(x + 0.08 * rng.standard_normal(diffs.size), diffs, s=6, color=colour, alpha=0.45, lw=0)
                lo, hi = d["ci95"]
                ax.errorbar([x + 0.32], [d["mean"]], yerr=[[d["mean"] - lo], [hi - d["mean"]]], fmt="o", ms=4,
                            color=colour, capsize=3)
                ticks.append(x)
                names.append(f"{opt}\n{arm}")
        ax.axhline(0, color="0.5", lw=0.8)
        if claim:
            ax.axhline(sign * claims[claim], color="0.3", ls="--", lw=0.9, label=f"{claim} = {sign * claims[claim]:+g}")
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(ticks, names, fontsize=6)
        title = f"d {label}"
        if metric in targets:
            title += f"  (target half-width {targets[metric]:g})"
        ax.set_title(title, fontsize=9)
    n = ", ".join(f"{len(v)} {o}" for o, v in res["config"]["seeds"].items())
    fig.suptitle(f"Paired effects arm - baseline, one dot per seed ({n} seeds); bar: mean and 95 % t-interval",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_entropy(res: dict, path: str) -> str:
    """QUERY-row entropy of the sharpest head during training: one panel per optimizer, per-seed lines and the mean."""
    opts = list(res["runs"])
    fig, axes = plt.subplots(1, len(opts), figsize=(5.2 * len(opts), 3.4), squeeze=False, sharey=True)
    for i, opt in enumerate(opts):
        ax = axes[0, i]
        for arm, runs in res["runs"][opt].items():
            colour, label = ARM_STYLE[arm]
            steps = np.asarray(runs[0]["steps"])
            ent = np.asarray([np.asarray(r["entropy"]).min(axis=-1).mean(axis=-1) for r in runs])  # (seeds, points)
            for e in ent:
                ax.plot(steps, e, color=colour, lw=0.3, alpha=0.25)
            ax.plot(steps, ent.mean(0), color=colour, lw=1.8, label=label)
        ax.axvline(res["schedules"][opt]["t_switch"], color="0.5", ls=":", lw=1)
        b = res.get("bayes", {}).get("id", {}).get("entropy")
        if b is not None:
            ax.axhline(b, color="0.4", ls="--", lw=0.8, label="Bayes-optimal row")
        ax.set_title(opt, fontsize=9)
        ax.set_xlabel("step")
    axes[0, 0].set_ylabel("entropy of the sharpest head (nats)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Attention entropy at the QUERY during training (thin: each seed; dotted: t_switch)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_schedule(res: dict, path: str) -> str:
    """The schedule T(t) = T0 (1 + beta tanh(gamma (t - t_switch))) used for each optimizer."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for opt, s in res["schedules"].items():
        t = np.linspace(0, s["n_steps"], 400)
        temp = s["base_temp"] * (1 + s["beta"] * np.tanh(s["gamma"] * (t - s["t_switch"])))
        line, = ax.plot(t, temp, label=f"{opt}: t_switch = {s['t_switch']:g}, gamma = {s['gamma']:.3g}")
        ax.axvline(s["t_switch"], color=line.get_color(), ls=":", lw=1)
    s = next(iter(res["schedules"].values()))
    ax.axhline(s["base_temp"], color="0.6", lw=0.8)
    ax.set_xlabel("training step t")
    ax.set_ylabel("temperature T(t)")
    ax.set_title(f"The post's schedule, beta = {s['beta']:g}; under the literal reading the loss is CE / T(t)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_curvature(res: dict, path: str) -> str:
    """Final Fisher scalar curvature of the heads at the ID probe queries: per-seed median R and fraction R > 0."""
    opts = list(res["runs"])
    arms = ("baseline",) + ARMS
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for j, opt in enumerate(opts):
        for k, arm in enumerate(arms):
            x = j * (len(arms) + 1) + k
            colour = ARM_STYLE[arm][0]
            runs = res["runs"][opt][arm]
            for ax, key in ((axes[0], "id_R_median"), (axes[1], "id_R_frac_pos")):
                v = np.asarray([r["metrics"][key] for r in runs], float)
                ax.scatter(np.full(v.size, x), v, s=6, color=colour, alpha=0.5, lw=0,
                           label=ARM_STYLE[arm][1] if j == 0 and ax is axes[0] else None)
                ax.plot([x - 0.3, x + 0.3], [np.nanmedian(v)] * 2, color=colour, lw=2)
    for ax, title in ((axes[0], "median R over heads and probe queries (symlog)"), (axes[1], "fraction of R > 0")):
        ax.set_xticks([j * (len(arms) + 1) + 1.5 for j in range(len(opts))], opts)
        ax.set_title(title, fontsize=9)
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[0].axhline(0, color="0.5", lw=0.8)
    axes[0].legend(fontsize=6)
    fig.suptitle("Curvature each arm ends with (one dot per seed; raw float64 cumulant route)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
