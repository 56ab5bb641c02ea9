"""Figures for the real-model checks: one panel (or one row of panels) per model.  Each function writes one PNG.

Units: entropy H in nats; scalar curvature R of the Fisher metric is dimensionless.
R spans many decades on real attention, so R axes and colour maps are symmetric-log, with
decade ticks thinned so that no two labels overlap (:func:`symlog_ticks`).

Each function takes ``panels``, a list with one dict per model; a dict with a ``"missing"``
entry (the reason the model could not run) draws an empty panel saying so.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

#: At most this many labelled decades on each side of zero of a symlog axis.
MAX_DECADE_TICKS = 4


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _linthresh(r):
    r = np.abs(np.asarray(r)[np.isfinite(r)])
    return float(max(np.quantile(r, 0.1), 1e-3)) if r.size else 1.0


def symlog_ticks(lo: float, hi: float, linthresh: float, max_per_side: int = MAX_DECADE_TICKS) -> list:
    """Ticks for a symlog axis on ``[lo, hi]``: 0 and ``±10^k`` (k >= log10 linthresh), every s-th decade
    (a side that stays below the first decade gets one tick near its end instead).

    One stride ``s`` for both sides keeps at most ``max_per_side`` decades on each; the innermost
    decade is dropped when it would sit closer to 0 than ``s/2`` display units (the linear part
    is about one unit wide), where its label would touch the label of 0.
    """
    k0 = math.ceil(math.log10(linthresh))
    ticks = [0.0] if lo <= 0 <= hi else []
    sides = {}
    for sign, bound in ((1, hi), (-1, -lo)):
        if bound <= 0:
            continue
        if bound < 10.0**k0:  # this side stays within the linear part: one tick, one significant digit
            ticks.append(sign * min(float(f"{bound:.1g}"), bound))
            continue
        sides[sign] = list(range(k0, math.floor(math.log10(bound)) + 1))
    # one stride for both sides, so that decades are equally spaced on the whole axis
    stride = max([1] + [math.ceil(len(d) / max_per_side) for d in sides.values()])
    for sign, decades in sides.items():
        chosen = decades[::-1][::stride][::-1]  # keep the outermost decade
        # 0 to 10^k0 is ~1 display unit (the linear part), then one unit per decade: drop an
        # innermost decade that would sit closer to 0 than half a stride
        if len(chosen) > 1 and 1 + chosen[0] - k0 < stride / 2:
            chosen = chosen[1:]
        ticks += [sign * 10.0**k for k in chosen]
    return sorted(ticks)


def _tick_label(v, _pos=None):
    if v == 0:
        return "0"
    k = math.log10(abs(v))
    if abs(k - round(k)) > 1e-9:  # not a decade (a linear-part tick)
        return f"{v:.1g}"
    return f"$-10^{{{round(k)}}}$" if v < 0 else f"$10^{{{round(k)}}}$"


def set_symlog_y(ax, values, linthresh):
    """Symlog y axis for ``values`` with thinned decade ticks (no overlapping labels)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    ax.set_yscale("symlog", linthresh=linthresh)
    if v.size:
        lo, hi = float(min(v.min(), 0.0)), float(max(v.max(), 0.0))
        ax.set_yticks(symlog_ticks(lo, hi, linthresh))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_tick_label))
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _missing(ax, panel):
    ax.text(0.5, 0.5, f"{panel['name']}\n{panel['missing'][:120]}", ha="center", va="center", wrap=True,
            fontsize=8, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def entropy_by_layer(panels, path, title):
    """Per model: box plot of attention-row entropies per layer, with the mean and its 95% interval.

    Each panel: ``name``, ``per_layer`` (list of 1-d entropy arrays, one per layer), ``means``,
    ``intervals`` ((L, 2) bootstrap intervals), ``log_n`` (the maximum entropy log n), ``title``.
    """
    widths = [max(len(p.get("per_layer", ())), 6) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(0.55 * sum(widths) + 2, 4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, p in zip(axes[0], panels):
        if "missing" in p:
            _missing(ax, p)
            continue
        layers = np.arange(1, len(p["per_layer"]) + 1)
        ax.boxplot([np.asarray(x) for x in p["per_layer"]], positions=layers, widths=0.6, showfliers=False)
        iv, means = np.asarray(p["intervals"]), np.asarray(p["means"])
        ax.errorbar(layers, means, yerr=[means - iv[:, 0], iv[:, 1] - means],
                    fmt="o", color="#c62828", capsize=4, label="mean, 95% bootstrap interval")
        ax.axhline(p["log_n"], color="grey", ls="--", lw=1, label=f"uniform: log n = {p['log_n']:.2f}")
        ax.set_xlabel("layer")
        ax.set_ylabel("attention entropy H (nats)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title(p["title"], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def r_vs_h(panels, path, title):
    """Per model: R against H at every real query with a trusted R, coloured by layer (symlog R axis).

    Each panel: ``name``, ``entropy`` / ``curvature`` (lists of 1-d arrays, one per layer),
    ``missing`` counts per layer are summed into the title (key ``without_R``), ``title``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False)
    for ax, p in zip(axes[0], panels):
        if "missing" in p:
            _missing(ax, p)
            continue
        nl = len(p["entropy"])
        allr = np.concatenate([np.asarray(r)[np.isfinite(r)] for r in p["curvature"]])
        lt = _linthresh(allr)
        cmap = plt.get_cmap("viridis")
        for k in range(nl):
            h, r = np.asarray(p["entropy"][k]), np.asarray(p["curvature"][k])
            ok = np.isfinite(r)
            ax.scatter(h[ok], r[ok], s=2, alpha=0.35, color=cmap(k / max(nl - 1, 1)), rasterized=True)
        set_symlog_y(ax, allr, lt)
        ax.axhline(0, color="k", lw=0.6)
        sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0.5, nl + 0.5))
        fig.colorbar(sm, ax=ax, label="layer", ticks=range(1, nl + 1, 1 if nl <= 6 else 2))
        ax.set_xlabel("attention entropy H (nats)")
        ax.set_ylabel(f"R (symlog, linear within ±{lt:.2g})")
        ax.set_title(f"{p['title']}: {allr.size} points, {int(p.get('without_R', 0))} without R", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def slice_fields(panels, path, title):
    """Per model (one row): R and H on a 2-d plane of query space (``curvature[i, j]`` at ``(coords[i], coords[j])``).

    Each panel: ``name``, ``coords``, ``curvature``, ``entropy``, ``title``.
    """
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 4.2 * len(panels)), squeeze=False)
    for row, p in zip(axes, panels):
        if "missing" in p:
            _missing(row[0], p)
            row[1].axis("off")
            continue
        coords = p["coords"]
        ext = [coords[0], coords[-1], coords[0], coords[-1]]
        r = np.asarray(p["curvature"], float)
        finite = r[np.isfinite(r)]
        vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
        lt = _linthresh(finite)
        norm = matplotlib.colors.SymLogNorm(linthresh=lt, vmin=-vmax, vmax=vmax, base=10)
        im = row[0].imshow(np.ma.masked_invalid(r).T, origin="lower", extent=ext, cmap="RdBu_r", norm=norm, aspect="auto")
        cb = fig.colorbar(im, ax=row[0], label="R (symlog; grey = not computed)")
        cb.set_ticks(symlog_ticks(-vmax, vmax, lt))
        cb.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_tick_label))
        cb.ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        row[0].set_facecolor("#bdbdbd")
        im2 = row[1].imshow(np.asarray(p["entropy"]).T, origin="lower", extent=ext, cmap="viridis", aspect="auto")
        fig.colorbar(im2, ax=row[1], label="H (nats)")
        for ax, name in zip(row, ("scalar curvature R", "entropy H")):
            ax.plot(0, 0, "k+", ms=10)
            ax.set_xlabel("a (first principal direction of the centred keys)")
            ax.set_ylabel("b (second)")
            ax.set_title(f"{p['title']}\n{name}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
