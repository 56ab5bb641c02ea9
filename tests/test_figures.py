"""Each figure function writes a non-empty PNG from plain arrays."""

import numpy as np

import figures

PNG_MAGIC = b"\x89PNG"


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(4) == PNG_MAGIC


def test_every_figure_function_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 2, 200)
    panels = [dict(name="line", H=h, R=1 - h, fit=(1.0, -1.0), r2=1.0, verdict="holds"),
              dict(name="heavy", H=h, R=rng.standard_cauchy(200) * 1e3, fit=None, verdict="fails")]
    x = np.linspace(-2, 2, 12)
    grid = np.add.outer(x, x)
    paths = [
        figures.r_vs_h_grid(panels, str(tmp_path / "a.png"), "R vs H"),
        figures.curvature_entropy_fields(x, x, np.sin(grid), np.cos(grid) + 2, rng.normal(size=(4, 2)), str(tmp_path / "b.png"), "fields"),
        figures.temperature_rays([dict(label="r", T=np.geomspace(0.1, 10, 20), H=np.linspace(0, 1, 20), R=np.linspace(3, -3, 20))],
                                 str(tmp_path / "c.png"), "rays"),
        figures.low_entropy_loglog([dict(label="r", H=np.geomspace(1e-30, 1e-1, 10), R=-np.geomspace(1e15, 1, 10), exponent=-0.5)],
                                   str(tmp_path / "d.png"), "limit"),
        figures.geodesic_distances_vs_entropy([dict(label="r", H=np.geomspace(1e-6, 0.3, 8), step=np.geomspace(1e-5, 0.1, 8),
                                                     same_key=np.r_[0.5, 0.4, np.full(6, np.nan)], step_size=0.5)],
                                              str(tmp_path / "f.png"), "distances"),
        figures.summary_page([dict(id="x", verdict="fails", summary="because"), dict(id="y", verdict="error", summary="x" * 300)],
                             str(tmp_path / "e.png"), "summary"),
    ]
    for p in paths:
        assert _is_png(p)
