"""Figures for the real-model checks (all-MiniLM-L6-v2).  Each function writes one PNG and returns its path.

Units: entropy H in nats; scalar curvature R of the Fisher metric is dimensionless.
R spans many decades on real attention, so R axes and colour maps are symmetric-log.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _linthresh(r):
    r = np.abs(np.asarray(r)[np.isfinite(r)])
    return float(max(np.quantile(r, 0.1), 1e-3)) if r.size else 1.0


def entropy_by_layer(per_layer, means, intervals, path, log_n, title):
    """Box plot of attention-row entropies per layer, with the mean and its 95% interval.

    ``per_layer``: list (one per layer) of 1-d entropy arrays; ``means``: per-layer means;
    ``intervals``: (L, 2) bootstrap intervals; ``log_n``: the maximum entropy log n.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    layers = np.arange(1, len(per_layer) + 1)
    ax.boxplot([np.asarray(x) for x in per_layer], positions=layers, widths=0.6, showfliers=False)
    iv = np.asarray(intervals)
    ax.errorbar(layers, means, yerr=[np.asarray(means) - iv[:, 0], iv[:, 1] - np.asarray(means)],
                fmt="o", color="#c62828", capsize=4, label="mean, 95% bootstrap interval")
    ax.axhline(log_n, color="grey", ls="--", lw=1, label=f"uniform: log n = {log_n:.2f}")
    ax.set_xlabel("layer")
    ax.set_ylabel("attention entropy H (nats)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def r_vs_h_by_layer(entropy, curvature, path, title, missing=None):
    """One panel per layer: R against H at every real query with a trusted R (symlog R axis).

    ``entropy``/``curvature``: lists of 1-d arrays per layer; ``missing``: per-layer count of
    points without a trusted R (shown in the panel title).
    """
    nl = len(entropy)
    ncols = 3
    nrows = math.ceil(nl / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    allr = np.concatenate([np.asarray(r)[np.isfinite(r)] for r in curvature])
    lt = _linthresh(allr)
    for k, ax in enumerate(axes.flat):
        if k >= nl:
            ax.axis("off")
            continue
        h, r = np.asarray(entropy[k]), np.asarray(curvature[k])
        ok = np.isfinite(r)
        ax.scatter(h[ok], r[ok], s=2, alpha=0.3, color="#1565c0", rasterized=True)
        ax.set_yscale("symlog", linthresh=lt)
        ax.axhline(0, color="k", lw=0.6)
        extra = f", {missing[k]} without R" if missing is not None else ""
        ax.set_title(f"layer {k + 1}: {int(ok.sum())} points{extra}", fontsize=9)
        ax.set_xlabel("H (nats)")
        ax.set_ylabel("R")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def slice_fields(coords, curvature, entropy, path, title):
    """Scalar curvature and entropy on a 2-d plane of query space (``curvature[i, j]`` at ``(coords[i], coords[j])``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ext = [coords[0], coords[-1], coords[0], coords[-1]]
    r = np.asarray(curvature, float)
    finite = r[np.isfinite(r)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    norm = matplotlib.colors.SymLogNorm(linthresh=_linthresh(finite), vmin=-vmax, vmax=vmax, base=10)
    im = axes[0].imshow(np.ma.masked_invalid(r).T, origin="lower", extent=ext, cmap="RdBu_r", norm=norm, aspect="auto")
    fig.colorbar(im, ax=axes[0], label="R (symlog; grey = not computed)")
    axes[0].set_facecolor("#bdbdbd")
    im2 = axes[1].imshow(np.asarray(entropy).T, origin="lower", extent=ext, cmap="viridis", aspect="auto")
    fig.colorbar(im2, ax=axes[1], label="H (nats)")
    for ax, name in zip(axes, ("scalar curvature R", "entropy H")):
        ax.plot(0, 0, "k+", ms=10)
        ax.set_xlabel("a (first principal direction of the centred keys)")
        ax.set_ylabel("b (second)")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
