"""Figure of the ``precision-map`` check: digits of accuracy against entropy, one panel per family.

Digits are ``-log10(|R - R_ref| / |R_ref|)`` against the mpmath oracle, capped at 16;
a NaN/inf result counts as 0.  Entropy H in nats on a log axis (decreasing to the
right: toward the vertex); the Gaussian panel uses sigma instead (its differential
entropy is negative there).
"""

from __future__ import annotations

import math

import numpy as np

from . import style

STYLE = {
    "default": dict(color=style.OKABE_ITO["blue"], marker="o", lw=2.2, label="default (precision-controlled)"),
    "levi-civita": dict(color=style.OKABE_ITO["vermillion"], marker="x", lw=1.3, ls="--", label="naive float64: autodiff Levi-Civita"),
    "hessian": dict(color=style.OKABE_ITO["reddish purple"], marker="^", lw=1.3, ls=":", label="naive float64: autodiff Hessian"),
}


def precision_map_figure(rows, path, digits_required, blowup_factor, ncols=3):
    """One panel per family row (the ``precision-map`` measurements); returns ``path``.

    Each row: ``family``, ``x_axis`` ("H" or "sigma"), ``x_values``, and per method
    ``{"digits": [...], "R": [...]}``; ``R_ref``; ``phantom_blowup`` (or None): where
    naive Levi-Civita reports ``|R| > blowup_factor * |R_true|``, annotated on the panel.
    """
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = style.subplots(nrows, ncols, panel=(3.65, 2.9))
    for ax, row in zip(axes.flat, rows):
        xv = np.asarray(row["x_values"], np.float64)
        for method in ("levi-civita", "hessian", "default"):
            if method not in row:  # --quick runs skip the naive Hessian
                continue
            ax.plot(xv, row[method]["digits"], ms=4, **STYLE[method])
        ax.axhline(digits_required, color="grey", ls="--", lw=1)
        ax.text(xv.min(), digits_required - 1.6, f"required {digits_required:g}", fontsize=8, color="dimgrey", ha="right")
        ax.set_xscale("log")
        ax.invert_xaxis()
        style.log_decades(ax, "x", max_ticks=5)
        ax.set_ylim(-0.5, 17.5)
        ax.set_xlabel("σ at μ = 1 (dimensionless)" if row["x_axis"] == "sigma" else "entropy H (nats)")
        ax.set_ylabel("correct digits of R")
        exact = row.get("exact")
        title = row["family"] + (f"   true R = {exact:g}" if exact is not None else "")
        ax.set_title(title)
        p = row.get("phantom_blowup")
        if p:
            bounded = row.get("exact") is not None  # true R constant: any growth is an artefact
            what = "a blow-up that is not there" if bounded else f"wrong by {p['max_ratio']:.0e}x"
            ax.annotate(
                f"naive R = {p['R_naive']:.2g}\n(true {p['R_true']:.3g}):\n{what}",
                xy=(p["x_at_max"], 0.0), xytext=(0.40, 0.55), textcoords="axes fraction", fontsize=8, color=STYLE["levi-civita"]["color"],
                arrowprops=dict(arrowstyle="->", color=STYLE["levi-civita"]["color"], lw=0.9),
            )
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Correct digits of the scalar curvature R against the mpmath oracle\n"
                 f"(phantom blow-up: naive |R| > {blowup_factor:g} × true |R|)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return style.save(fig, path)
