"""Figure functions.  Each takes plain arrays / dicts, writes one PNG to ``path`` and returns ``path``.

Conventions on every figure: entropy H in nats, scalar curvature R and Fisher--Rao
distances dimensionless (the Fisher metric of a dimensionless parameter); the title
states the finding; sizes, fonts and colours come from :mod:`figures.style` (drawn
to be read at the report's page width, colour-blind-safe, a verdict always spelled
out next to its colour).
"""

from __future__ import annotations

import math

import matplotlib.colors
import matplotlib.patheffects
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from .. import style

#: most panels side by side in a grid: four 2.75-inch panels fill the page width
MAX_COLS = 4
R_LABEL = "scalar curvature R (dimensionless)"
H_LABEL = "entropy H (nats)"


def _needs_symlog(r):
    r = np.asarray(r)[np.isfinite(r)]
    if r.size == 0:
        return False
    big = np.max(np.abs(r))
    small = np.quantile(np.abs(r), 0.5)
    return big > 100 * max(small, 1e-12)


def _verdict_title(name, verdict):
    if not verdict:
        return name
    return f"{style.VERDICT_MARK.get(verdict, '')} {name}: {verdict}"


def r_vs_h_grid(panels, path, title, ncols=MAX_COLS):
    """Small multiples of R against H, at most :data:`MAX_COLS` per row (readable at page width).

    ``panels``: list of dicts ``{"name", "H", "R", "fit": (a, b) or None, "r2": float, "verdict": str}``.
    A symlog R axis (labels every few decades, never overlapping) is used where R spans decades.
    """
    n = max(1, len(panels))
    ncols = max(1, min(ncols, MAX_COLS, n))
    nrows = math.ceil(n / ncols)
    fig, axes = style.subplots(nrows, ncols, panel=(2.75, 2.15))
    for ax, p in zip(axes.flat, panels):
        h, r = np.asarray(p["H"], float), np.asarray(p["R"], float)
        ok = np.isfinite(h) & np.isfinite(r)
        ax.scatter(h[ok], r[ok], s=4, alpha=0.5, color=style.OKABE_ITO["blue"], rasterized=True, lw=0)
        constant = ok.any() and np.ptp(r[ok]) <= 1e-7 * max(np.max(np.abs(r[ok])), 1e-300)
        if p.get("fit") is not None and ok.any() and not constant:
            a, b = p["fit"]
            hh = np.linspace(h[ok].min(), h[ok].max(), 200)
            ax.plot(hh, a + b * hh, color="k", lw=1.2, label=f"OLS fit, R² = {p.get('r2', float('nan')):.2f}")
            ax.legend(loc="best", handlelength=1.2, borderpad=0.3)
        if constant:
            c = float(np.median(r[ok]))  # constant curvature: do not magnify rounding noise
            ax.set_ylim(c - max(1.0, 0.2 * abs(c)), c + max(1.0, 0.2 * abs(c)))
            ax.text(0.5, 0.82, f"R = {c:.6g} at every point", transform=ax.transAxes, ha="center", fontsize=9)
        elif _needs_symlog(r[ok]):
            style.symlog(ax, r[ok], max_ticks=5)
        else:
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.set_title(_verdict_title(p["name"], p.get("verdict", "")), fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.supxlabel(H_LABEL, fontsize=10)
    fig.supylabel(R_LABEL, fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return style.save(fig, path)


def _outlined(colour="w"):
    return [matplotlib.patheffects.withStroke(linewidth=2.2, foreground="k" if colour == "w" else "w")]


def curvature_entropy_fields(x1, x2, R, H, keys, path, title):
    """Side-by-side maps of R(x) and H(x) over a 2-D query plane, with the keys' directions.

    ``x1, x2``: 1-d grids; ``R, H``: arrays of shape ``(len(x2), len(x1))``.
    Level sets of H are drawn over the curvature map: if R were a function of H it
    would be constant along each of them.
    """
    fig, axes = plt.subplots(1, 2, figsize=(style.MAX_WIDTH_IN, 4.6))
    rr = np.asarray(R, float)
    lim = float(np.nanmax(np.abs(rr)))
    lin = max(float(np.nanquantile(np.abs(rr), 0.2)), 1e-3)
    norm = matplotlib.colors.SymLogNorm(linthresh=lin, vmin=-lim, vmax=lim)
    im0 = axes[0].pcolormesh(x1, x2, rr, cmap=style.DIVERGING_CMAP, norm=norm, shading="auto")
    cb = fig.colorbar(im0, ax=axes[0], label=f"R (dimensionless; symlog, linear for |R| < {lin:.2g})")
    cb.ax.yaxis.set_major_locator(matplotlib.ticker.SymmetricalLogLocator(linthresh=lin, base=10, subs=[1.0]))
    cs = axes[0].contour(x1, x2, H, levels=6, colors="k", linewidths=0.8)
    axes[0].clabel(cs, fontsize=8, fmt="H=%.2f")
    axes[0].set_title("R(x), with level sets of H (black lines)")
    im1 = axes[1].pcolormesh(x1, x2, H, cmap=style.SEQUENTIAL_CMAP, shading="auto")
    fig.colorbar(im1, ax=axes[1], label=H_LABEL)
    axes[1].set_title("H(x)")
    for ax in axes:
        ax.set_xlabel("query coordinate x1 (dimensionless)")
        ax.set_ylabel("query coordinate x2 (dimensionless)")
        ax.set_aspect("equal")
        k = np.asarray(keys, float)
        k = k / np.max(np.linalg.norm(k, axis=1)) * 0.9 * max(abs(x1[0]), abs(x1[-1]))
        for kk in k:
            ax.annotate("", xy=kk, xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color="w", lw=1.2, path_effects=_outlined()))
    axes[1].text(0.02, 0.02, "arrows: key directions", transform=axes[1].transAxes, fontsize=8, color="w",
                 path_effects=_outlined())
    fig.suptitle(title)
    fig.tight_layout()
    return style.save(fig, path)


def _ray_style(i):
    """Colour and line style of the i-th line: distinct pairs for 28 lines, and apart in greyscale too."""
    return dict(color=style.PALETTE[i % len(style.PALETTE)], ls=style.LINESTYLES[i % len(style.LINESTYLES)])


def temperature_rays(rays, path, title):
    """R against T and against H along temperature rays ``x/T``.  ``rays``: list of ``{"label", "H", "R", "T"}``."""
    fig, axes = plt.subplots(1, 2, figsize=(style.MAX_WIDTH_IN, 4.4))
    allr = np.concatenate([np.asarray(r["R"], float) for r in rays]) if rays else np.zeros(1)
    for i, ray in enumerate(rays):
        axes[0].plot(ray["T"], ray["R"], label=ray["label"], **_ray_style(i))
        axes[1].plot(ray["H"], ray["R"], **_ray_style(i))
    axes[0].set_xscale("log")
    axes[0].set_xlabel("temperature T (dimensionless)")
    axes[1].set_xlabel("entropy H (nats), increasing with T")
    for ax in axes:
        ax.set_ylabel(R_LABEL)
        ax.axhline(0, color="grey", lw=0.5)
        style.symlog(ax, allr, linthresh=1.0)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, frameon=False)
    rows = math.ceil(len(rays) / 3)
    fig.tight_layout(rect=(0, min(0.4, 0.045 * rows + 0.01), 1, 1))
    return style.save(fig, path)


def low_entropy_loglog(rays, path, title):
    """|R| against H on log axes as H -> 0.  ``rays``: ``{"label", "H", "R", "exponent"}``; sign by marker."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, ray in enumerate(rays):
        h, r = np.asarray(ray["H"], float), np.asarray(ray["R"], float)
        ok = np.isfinite(h) & np.isfinite(r) & (h > 0) & (r != 0)
        st = _ray_style(i)
        (line,) = ax.plot(h[ok], np.abs(r[ok]), lw=1.6 if i == 0 else 1.2, zorder=3 - 0.01 * i,
                          label=f"{ray['label']}: |R| ~ H^{round(ray['exponent'], 2) + 0.0:.2f}", **st)
        neg = ok & (r < 0)
        pos = ok & (r > 0)
        size = 30 - 4 * (i % 4)  # overlapping rays stay visible: larger markers under smaller ones
        ax.scatter(h[neg], -r[neg], marker="v", s=size, color=line.get_color(), zorder=4)
        ax.scatter(h[pos], r[pos], marker="^", s=size, color=line.get_color(), facecolors="none", zorder=4)
    return _save_entropy_log_axes(fig, ax, "|R| (dimensionless); ▼ R < 0, △ R > 0", title, path)


def geodesic_distances_vs_entropy(rows, path, title):
    """True Fisher-Rao distances against H (log axes).  ``rows``: ``{"label", "H", "step", "same_key", "step_size"}``;
    NaN marks a pair without a converged geodesic (not drawn)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    i = 0
    for row in rows:
        h = np.asarray(row["H"])
        for key, marker, what in (("step", "o", f"x to x + {row['step_size']:g} u"), ("same_key", "s", "two queries, same key")):
            d = np.asarray(row[key], float)
            ok = np.isfinite(d) & (d > 0)
            ax.plot(h[ok], d[ok], marker=marker, ms=4, label=f"{row['label']}: {what}", **_ray_style(i))
            i += 1
    ax.axhline(math.pi, color="grey", lw=0.8, ls=":", label="simplex diameter π")
    return _save_entropy_log_axes(fig, ax, "Fisher-Rao distance (dimensionless)", title, path)


def sectional_at_fixed_entropy(levels, path, title):
    """Sectional curvature on random planes at points of fixed entropy, one column per level (symmetric-log
    y axis, so both signs show).  ``levels``: ``{"H", "K", "determined"}``, ``determined`` a per-plane flag
    (converged, sign certain); only determined planes are drawn (the others have no trusted value)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rng = np.random.default_rng(0)  # horizontal jitter only, so that the points of one level do not overlap
    for i, lev in enumerate(levels):
        k, det = np.asarray(lev["K"], float), np.asarray(lev["determined"], bool)
        x = i + rng.uniform(-0.25, 0.25, size=k.size)
        ax.scatter(x[det], k[det], s=14, color=style.PALETTE[i % len(style.PALETTE)])
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xticks(range(len(levels)), [f"H = {lev['H']:g}\n{int(np.sum(lev['determined']))} of {len(lev['K'])} planes"
                                       for lev in levels])
    ax.set_xlabel("points of fixed attention entropy (nats), random planes")
    ax.set_ylabel("sectional curvature K(u, v) (symmetric log)")
    ax.set_title(title)
    fig.tight_layout()
    return style.save(fig, path)


def _save_entropy_log_axes(fig, ax, ylabel, title, path):
    """Log-log axes with H decreasing to the right (the low-entropy limit on the right), legend, title; saved."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    style.log_decades(ax, "x", max_ticks=7)
    style.log_decades(ax, "y", max_ticks=7)
    ax.set_xlabel("entropy H (nats), decreasing to the right")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return style.save(fig, path)


def summary_page(rows, path, title):
    """One-page verdict table.  ``rows``: ``{"id", "verdict", "summary"}`` (verdict may be "error"; the summary is
    wrapped to two lines)."""
    import textwrap

    n = max(1, len(rows))
    fig, ax = plt.subplots(figsize=(style.MAX_WIDTH_IN, 0.72 * n + 0.8))
    ax.axis("off")
    for i, row in enumerate(rows):
        y = 1 - (i + 0.5) / n
        v = row["verdict"]
        bg, fg = style.VERDICT_COLOURS.get(v, ("#000000", "#FFFFFF"))
        ax.add_patch(plt.Rectangle((0.0, y - 0.4 / n), 0.11, 0.8 / n, color=bg, transform=ax.transAxes))
        ax.text(0.055, y, f"{style.VERDICT_MARK.get(v, '')} {v}", ha="center", va="center", color=fg, fontsize=10,
                weight="bold", transform=ax.transAxes)
        ax.text(0.12, y + 0.27 / n, row["id"], ha="left", va="center", fontsize=10, weight="bold", transform=ax.transAxes)
        text = row.get("summary", "")
        lines = textwrap.wrap(text, 130)
        if len(lines) > 2:
            lines = lines[:2]
            lines[1] = lines[1][:127] + "..."
        ax.text(0.12, y + 0.12 / n, "\n".join(lines), ha="left", va="top", fontsize=8.5, transform=ax.transAxes,
                linespacing=1.15)
    ax.set_title(title, fontsize=12)
    return style.save(fig, path)
