"""The look shared by every figure of the report: sizes, fonts, a colour-blind-safe palette, saving.

The report page shows a figure at its natural pixel size, never wider than
``PAGE_WIDTH_PX``; a figure is therefore drawn at most ``MAX_WIDTH_IN`` inches
wide at ``DPI`` so that it is shown 1:1 and a 9 pt tick label stays 12.5 px tall.
Importing :mod:`figures` installs :data:`RC` (fonts, sizes, the palette as the
colour cycle), so every figure module gets the same defaults without repeating
them.

Colours are the Okabe--Ito palette (Okabe & Ito 2008, "Color Universal Design"),
distinguishable under the common colour-vision deficiencies; a verdict is never
shown by colour alone (:data:`VERDICT_MARK` gives it a symbol).  Sequential maps
are ``viridis``, diverging maps ``RdBu_r`` (both readable without red--green
discrimination).
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: width of the report's column in CSS pixels; figures are drawn to fit it at 1:1
PAGE_WIDTH_PX = 1100
DPI = 100
MAX_WIDTH_IN = PAGE_WIDTH_PX / DPI

#: Okabe--Ito, by name
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
}
#: the colour cycle of every figure (yellow is left out: it is invisible on white as a line)
PALETTE = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish green", "orange", "reddish purple", "sky blue", "black")]
#: line styles and markers that go with PALETTE, so that lines stay apart in greyscale too
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "v", "D", "x", "+"]
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"

#: verdict -> (background, text colour); the HTML badges use the same pairs (contrast >= 4.5:1)
VERDICT_COLOURS = {
    "holds": ("#0072B2", "#FFFFFF"),
    "fails": ("#D55E00", "#000000"),
    "partial": ("#F0E442", "#000000"),
    "undefined": ("#6B6B6B", "#FFFFFF"),
    "error": ("#000000", "#FFFFFF"),
}
#: verdict -> a symbol shown next to the word wherever a verdict is drawn
VERDICT_MARK = {"holds": "✓", "fails": "✗", "partial": "◐", "undefined": "?", "error": "!"}

RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "figure.titlesize": 11,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "image.cmap": SEQUENTIAL_CMAP,
    "axes.grid": False,
    "legend.framealpha": 0.85,
    "lines.linewidth": 1.4,
}

#: smallest font any figure may use (points): 8 pt is 11 px at DPI
MIN_FONT_PT = 8


def install() -> None:
    """Make :data:`RC` the matplotlib defaults (called when :mod:`figures` is imported)."""
    matplotlib.rcParams.update(RC)


def subplots(nrows=1, ncols=1, panel=(3.4, 2.6), **kw):
    """``plt.subplots`` with panels of ``panel`` inches, the whole figure capped at MAX_WIDTH_IN wide."""
    width = min(MAX_WIDTH_IN, panel[0] * ncols)
    height = panel[1] * nrows * width / (panel[0] * ncols)
    kw.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def save(fig, path, alt: str | None = None) -> str:
    """Save ``fig`` as a PNG at :data:`DPI` and close it; returns ``path``.

    ``alt`` (default: the figure's suptitle, else its first axes' title) is stored as the
    PNG's ``Title`` text chunk; the report uses it as the image's alt text.
    """
    if alt is None:
        alt = _title_of(fig)
    metadata = {"Title": " ".join(alt.split())} if alt else None
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return path


def _title_of(fig) -> str:
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text():
        return sup.get_text()
    for ax in fig.axes:
        if ax.get_title():
            return ax.get_title()
    return ""


def _power(sign: float, k: int) -> str:
    return ("−" if sign < 0 else "") + f"$10^{{{k}}}$"


def symlog(ax, values, axis: str = "y", linthresh: float | None = None, max_ticks: int = 7) -> float:
    """A symmetric-log axis whose tick labels cannot overlap; returns the linear threshold used.

    Ticks are 0 and signed powers of ten, every ``step``-th decade, with ``step`` chosen
    so that at most ``max_ticks`` labels are drawn; the decade at ``linthresh`` itself is
    skipped because on the axis it sits next to the label 0.  ``linthresh`` defaults to
    the 20 % quantile of the finite ``|values|`` (at least 1e-3).
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    a = np.abs(v[v != 0])
    if linthresh is None:
        linthresh = float(max(np.quantile(a, 0.2), 1e-3)) if a.size else 1.0
    set_scale = ax.set_yscale if axis == "y" else ax.set_xscale
    set_scale("symlog", linthresh=linthresh)
    k0 = math.floor(math.log10(linthresh)) + 1
    top = {s: (math.ceil(math.log10(np.max(a[np.sign(v[v != 0]) == s]))) if np.any(np.sign(v[v != 0]) == s) else None)
           for s in (1.0, -1.0)}
    decades = [(s, k) for s in (-1.0, 1.0) if top[s] is not None for k in range(k0, max(top[s], k0) + 1)]
    step = max(1, math.ceil(len(decades) / max(1, max_ticks - 1)))
    # keep the same decades on both sides: every step-th exponent counted from the largest
    ticks, labels = [0.0], ["0"]
    for s in (-1.0, 1.0):
        if top[s] is None:
            continue
        for k in range(max(top[s], k0), k0 - 1, -step):
            ticks.append(s * 10.0**k)
            labels.append(_power(s, k))
    order = np.argsort(ticks)
    locator = matplotlib.ticker.FixedLocator([ticks[i] for i in order])
    formatter = matplotlib.ticker.FixedFormatter([labels[i] for i in order])
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(locator)
    target.set_major_formatter(formatter)
    target.set_minor_locator(matplotlib.ticker.NullLocator())
    return linthresh


def log_decades(ax, axis: str = "x", max_ticks: int = 6) -> None:
    """On a log axis already set, label at most ``max_ticks`` decades (every n-th power of ten)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    if not (lo > 0 and hi > 0):
        return
    n = math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) + 1
    step = max(1, math.ceil(n / max_ticks))
    target.set_major_locator(matplotlib.ticker.LogLocator(base=10.0 ** step, numticks=max_ticks + 2))
    target.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation(base=10.0))
    target.set_minor_locator(matplotlib.ticker.NullLocator())
