"""Figures for the temperature-schedule fix experiment (``checks._src.fix``).  Each function writes one PNG.

All take the JSON-serialisable result dict of ``checks._src.fix.experiment.run``.
Entropies are in nats; bands are the min-max range over seeds around the seed mean.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ARM_STYLE = {"baseline": ("k", "baseline"), "literal": ("tab:blue", "literal: loss / T(t)"),
             "true-temp": ("tab:red", "true temperature: logits / T(t)")}


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_entropy(res: dict, path: str) -> str:
    """Mean attention entropy per layer over training, one panel per (optimizer, layer), one line per arm."""
    opts = list(res["runs"])
    n_layers = len(res["runs"][opts[0]]["baseline"][0]["entropy"][0])
    fig, axes = plt.subplots(len(opts), n_layers, figsize=(3.6 * n_layers, 2.8 * len(opts)), squeeze=False,
                             sharey="row")
    for i, opt in enumerate(opts):
        t_switch = res["schedules"][opt]["t_switch"]
        for arm, runs in res["runs"][opt].items():
            colour, label = ARM_STYLE[arm]
            steps = np.asarray(runs[0]["steps"])
            ent = np.asarray([r["entropy"] for r in runs])  # (seeds, points, layers)
            for l in range(n_layers):
                ax = axes[i, l]
                ax.plot(steps, ent[:, :, l].mean(0), color=colour, lw=1.4, label=label)
                ax.fill_between(steps, ent[:, :, l].min(0), ent[:, :, l].max(0), color=colour, alpha=0.15, lw=0)
        for l in range(n_layers):
            ax = axes[i, l]
            ax.axvline(t_switch, color="0.5", ls=":", lw=1)
            ax.set_title(f"{opt}, layer {l + 1}", fontsize=9)
            ax.set_xlabel("step")
        axes[i, 0].set_ylabel("mean attention entropy H (nats)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Attention entropy during training (mean and min-max over {len(res['config']['seeds'])} seeds; "
                 "dotted: t_switch)", fontsize=10)
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


def plot_ood_ece(res: dict, path: str) -> str:
    """OOD accuracy and OOD ECE per arm and optimizer: seed values, mean and 95 % interval of the mean."""
    from scipy import stats

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    opts = list(res["runs"])
    arms = list(ARM_STYLE)
    for ax, key, title in ((axes[0], "ood_acc", "OOD accuracy (longer sequences)"),
                           (axes[1], "ood_ece", "OOD expected calibration error")):
        for j, opt in enumerate(opts):
            for k, arm in enumerate(arms):
                vals = np.asarray([r["metrics"][key] for r in res["runs"][opt][arm]])
                x = j * (len(arms) + 1) + k
                colour = ARM_STYLE[arm][0]
                m = vals.mean()
                half = stats.t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / np.sqrt(len(vals))
                ax.errorbar([x], [m], yerr=[[half], [half]], fmt="o", color=colour, capsize=3,
                            label=ARM_STYLE[arm][1] if j == 0 else None)
                ax.scatter(np.full(len(vals), x + 0.25), vals, s=8, color=colour, alpha=0.5)
        ax.set_xticks([j * (len(arms) + 1) + 1 for j in range(len(opts))], opts)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("Mean with 95 % t-interval over seeds (dots: individual seeds)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
