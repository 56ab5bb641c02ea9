"""Plots for the checks: pure functions that take arrays and save one PNG each (Agg backend).

Importing this package installs the shared look of :mod:`figures.style` (sizes, fonts,
the colour-blind-safe palette) as matplotlib's defaults.
"""

from . import style as style
from ._src.plots import (
    curvature_entropy_fields as curvature_entropy_fields,
    geodesic_distances_vs_entropy as geodesic_distances_vs_entropy,
    low_entropy_loglog as low_entropy_loglog,
    r_vs_h_grid as r_vs_h_grid,
    sectional_at_fixed_entropy as sectional_at_fixed_entropy,
    summary_page as summary_page,
    temperature_rays as temperature_rays,
)

style.install()

__all__ = ["curvature_entropy_fields", "geodesic_distances_vs_entropy", "low_entropy_loglog", "r_vs_h_grid", "sectional_at_fixed_entropy",
           "style", "summary_page", "temperature_rays"]
