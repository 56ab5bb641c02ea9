"""Plots for the checks: pure functions that take arrays and save one PNG each (Agg backend)."""

from ._src.plots import (
    curvature_entropy_fields as curvature_entropy_fields,
    geodesic_distances_vs_entropy as geodesic_distances_vs_entropy,
    low_entropy_loglog as low_entropy_loglog,
    r_vs_h_grid as r_vs_h_grid,
    summary_page as summary_page,
    temperature_rays as temperature_rays,
)

__all__ = ["curvature_entropy_fields", "geodesic_distances_vs_entropy", "low_entropy_loglog", "r_vs_h_grid", "summary_page", "temperature_rays"]
