"""Figure functions.  Each takes plain arrays / dicts, writes one PNG to ``path`` and returns ``path``.

Conventions on every figure: entropy H in nats, scalar curvature R dimensionless
(the Fisher metric is dimensionless); the title states the finding.
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.colors

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

VERDICT_COLOURS = {"holds": "#2e7d32", "fails": "#c62828", "partial": "#ef6c00", "undefined": "#6a1b9a", "error": "#424242"}


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _needs_symlog(r):
    r = np.asarray(r)[np.isfinite(r)]
    if r.size == 0:
        return False
    big = np.max(np.abs(r))
    small = np.quantile(np.abs(r), 0.5)
    return big > 100 * max(small, 1e-12)


def r_vs_h_grid(panels, path, title, ncols=4):
    """Small multiples of R against H.

    ``panels``: list of dicts ``{"name", "H", "R", "fit": (a, b) or None, "r2": float, "verdict": str}``.
    A symlog R axis is used where R spans decades.
    """
    n = max(1, len(panels))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        h, r = np.asarray(p["H"]), np.asarray(p["R"])
        ok = np.isfinite(h) & np.isfinite(r)
        ax.scatter(h[ok], r[ok], s=3, alpha=0.5, color="#1565c0", rasterized=True)
        constant = ok.any() and np.ptp(r[ok]) <= 1e-7 * max(np.max(np.abs(r[ok])), 1e-300)
        if p.get("fit") is not None and ok.any() and not constant:
            a, b = p["fit"]
            hh = np.linspace(h[ok].min(), h[ok].max(), 50)
            ax.plot(hh, a + b * hh, color="k", lw=1, label=f"OLS, R²={p.get('r2', float('nan')):.2f}")
            ax.legend(fontsize=7, loc="best")
        if ok.any() and np.ptp(r[ok]) <= 1e-7 * max(np.max(np.abs(r[ok])), 1e-300):
            c = float(np.median(r[ok]))  # constant curvature: do not magnify rounding noise
            ax.set_ylim(c - max(1.0, 0.2 * abs(c)), c + max(1.0, 0.2 * abs(c)))
            ax.text(0.5, 0.85, f"R = {c:.6g} constant (C = 0)", transform=ax.transAxes, ha="center", fontsize=7)
        elif _needs_symlog(r[ok]):
            ax.set_yscale("symlog", linthresh=1.0)
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(f"{p['name']}: {p.get('verdict', '')}", fontsize=8, color=VERDICT_COLOURS.get(p.get("verdict"), "k"))
        ax.set_xlabel("entropy H (nats)", fontsize=7)
        ax.set_ylabel("scalar curvature R", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def curvature_entropy_fields(x1, x2, R, H, keys, path, title):
    """Side-by-side maps of R(x) and H(x) over a 2-D query plane, with the keys' directions.

    ``x1, x2``: 1-d grids; ``R, H``: arrays of shape ``(len(x2), len(x1))``.
    Level sets of H are drawn over the curvature map: if R were a function of H it
    would be constant along each of them.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    rr = np.asarray(R, float)
    lim = float(np.nanmax(np.abs(rr)))
    lin = max(float(np.nanquantile(np.abs(rr), 0.2)), 1e-3)
    norm = matplotlib.colors.SymLogNorm(linthresh=lin, vmin=-lim, vmax=lim)
    im0 = axes[0].pcolormesh(x1, x2, rr, cmap="RdBu_r", norm=norm, shading="auto")
    fig.colorbar(im0, ax=axes[0], label=f"scalar curvature R (symlog, linear for |R| < {lin:.2g})")
    cs = axes[0].contour(x1, x2, H, levels=8, colors="k", linewidths=0.6)
    axes[0].clabel(cs, fontsize=6, fmt="H=%.2f")
    axes[0].set_title("R(x) with level sets of H (black)", fontsize=9)
    im1 = axes[1].pcolormesh(x1, x2, H, cmap="viridis", shading="auto")
    fig.colorbar(im1, ax=axes[1], label="entropy H (nats)")
    axes[1].set_title("H(x)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("query coordinate x1 (dimensionless)")
        ax.set_ylabel("query coordinate x2 (dimensionless)")
        ax.set_aspect("equal")
        k = np.asarray(keys, float)
        k = k / np.max(np.linalg.norm(k, axis=1)) * 0.9 * max(abs(x1[0]), abs(x1[-1]))
        for kk in k:
            ax.annotate("", xy=kk, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="w", lw=0.8))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def temperature_rays(rays, path, title):
    """R against H along temperature rays ``x/T``.  ``rays``: list of ``{"label", "H", "R", "T"}``."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ray in rays:
        axes[0].plot(ray["T"], ray["R"], lw=1, label=ray["label"])
        axes[1].plot(ray["H"], ray["R"], lw=1)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("temperature T (dimensionless)")
    axes[1].set_xlabel("entropy H (nats), increasing with T")
    for ax in axes:
        ax.set_ylabel("scalar curvature R")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_yscale("symlog", linthresh=1.0)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def low_entropy_loglog(rays, path, title):
    """|R| against H on log axes as H -> 0.  ``rays``: ``{"label", "H", "R", "exponent"}``; sign by marker."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for ray in rays:
        h, r = np.asarray(ray["H"]), np.asarray(ray["R"])
        ok = np.isfinite(h) & np.isfinite(r) & (h > 0) & (r != 0)
        (line,) = ax.plot(h[ok], np.abs(r[ok]), lw=1, label=f"{ray['label']} (|R|~H^{ray['exponent']:.2f})")
        neg = ok & (r < 0)
        pos = ok & (r > 0)
        ax.scatter(h[neg], -r[neg], marker="v", s=14, color=line.get_color())
        ax.scatter(h[pos], r[pos], marker="^", s=14, color=line.get_color(), facecolors="none")
    return _save_entropy_log_axes(fig, ax, "|R| (▼ R<0, △ R>0)", title, path)


def geodesic_distances_vs_entropy(rows, path, title):
    """True Fisher-Rao distances against H (log axes).  ``rows``: ``{"label", "H", "step", "same_key", "step_size"}``;
    NaN marks a pair without a converged geodesic (not drawn)."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for row in rows:
        h = np.asarray(row["H"])
        for key, style, what in (("step", "o-", f"x to x + {row['step_size']:g} u"), ("same_key", "s--", "two queries, same key")):
            d = np.asarray(row[key], float)
            ok = np.isfinite(d) & (d > 0)
            ax.plot(h[ok], d[ok], style, ms=3, lw=1, label=f"{row['label']}: {what}")
    ax.axhline(math.pi, color="grey", lw=0.6, ls=":", label="simplex diameter π")
    return _save_entropy_log_axes(fig, ax, "geodesic (Fisher-Rao) distance", title, path)


def _save_entropy_log_axes(fig, ax, ylabel, title, path):
    """Log-log axes with H decreasing to the right (the low-entropy limit on the right), legend, title; saved."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("entropy H (nats), decreasing to the right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def summary_page(rows, path, title):
    """One-page verdict table.  ``rows``: ``{"id", "verdict", "summary"}`` (verdict may be "error")."""
    n = max(1, len(rows))
    fig, ax = plt.subplots(figsize=(12, 0.62 * n + 1.2))
    ax.axis("off")
    for i, row in enumerate(rows):
        y = 1 - (i + 0.5) / n
        v = row["verdict"]
        ax.add_patch(plt.Rectangle((0.0, y - 0.4 / n), 0.1, 0.8 / n, color=VERDICT_COLOURS.get(v, "k"), transform=ax.transAxes))
        ax.text(0.05, y, v, ha="center", va="center", color="w", fontsize=9, weight="bold", transform=ax.transAxes)
        ax.text(0.11, y + 0.15 / n, row["id"], ha="left", va="center", fontsize=9, weight="bold", transform=ax.transAxes)
        text = row.get("summary", "")
        if len(text) > 170:
            text = text[:167] + "..."
        ax.text(0.11, y - 0.2 / n, text, ha="left", va="center", fontsize=7, transform=ax.transAxes)
    ax.set_title(title, fontsize=12)
    return _save(fig, path)
