"""The command line and the report: schema, point accounting, determinism, atomic writes, failing checks."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import checks
from checks._src import registry, sweep
from checks._src.report import run_checks
from helpers import assert_points_add_up

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHEAP = "metric-is-fisher"


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "checks", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _validate(report):
    assert set(report) >= {"checks", "environment", "points"}
    env = report["environment"]
    for key in ("jax", "jaxlib", "numpy", "sympy", "mpmath", "matplotlib", "python", "platform", "seed", "date"):
        assert key in env, key
    for e in report["checks"]:
        assert set(e) >= {"id", "claim", "verdict", "status", "error", "thresholds", "measurements", "figures", "points"}
        assert e["status"] in ("ok", "error")
        assert e["verdict"] in ("holds", "fails", "partial", "undefined", "error")
        for t in e["thresholds"]:
            assert set(t) == {"name", "value", "rule"}
    assert_points_add_up(report)


def test_cli_quick_run_reports_every_check_even_when_one_raises(tmp_path):
    """`python -m checks --quick --only boom metric-is-fisher`: schema, html, figures, error status, exit code."""
    plugin = tmp_path / "boom.py"
    plugin.write_text(textwrap.dedent("""
        import checks

        @checks.register("boom", "a check that cannot run", order=1)
        def boom(ctx):
            raise RuntimeError("deliberate failure for the test")
    """))
    out = tmp_path / "rep"
    res = _cli("--quick", "--plugin", str(plugin), "--only", "boom", CHEAP, "--seed", "0", "--out", str(out))
    assert res.returncode != 0
    assert "boom" in res.stderr
    assert "| `metric-is-fisher` |" in res.stdout  # the final verdict table
    report = json.loads((out / "report.json").read_text())
    _validate(report)
    by_id = {e["id"]: e for e in report["checks"]}
    assert list(by_id) == ["boom", CHEAP]
    assert by_id["boom"]["status"] == "error" and "deliberate failure" in by_id["boom"]["error"]
    assert by_id[CHEAP]["status"] == "ok"  # the failing check did not stop the others
    assert "deliberate failure" in (out / "report.md").read_text()
    html = (out / "index.html").read_text()
    assert (out / "summary.png").exists() and (out / "report.html").exists()
    assert html.count('<li class="card"') == 2  # the first screen: one entry per check, the failed one included
    for e in report["checks"]:
        assert e["measured"] and f'id="card-{e["id"]}"' in html
        for f in e["figures"]:
            assert (out / f).exists() and f in html
    assert by_id["boom"]["measured"].startswith("The check could not run: RuntimeError")
    assert by_id[CHEAP]["measured_from"] == "template" and by_id[CHEAP]["quote"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".rep-")]  # no temporary directory left behind


def test_unknown_id_is_a_clear_error(tmp_path):
    res = _cli("--only", "no-such-check", "--out", str(tmp_path / "r"))
    assert res.returncode != 0 and "unknown check id" in res.stderr and "metric-is-fisher" in res.stderr


@pytest.fixture
def temporary_check():
    added = []

    def add(id, fn):
        registry.register(id, "test-only check", order=0)(fn)
        added.append(id)

    yield add
    for id in added:
        registry.REGISTRY.pop(id, None)


def test_interrupted_run_leaves_the_previous_report_intact(tmp_path, temporary_check):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.json").write_text('{"previous": true}')

    def interrupted(ctx):
        raise KeyboardInterrupt

    temporary_check("interrupted", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_checks(ids=["interrupted"], out=str(out), echo=lambda *a: None)
    assert json.loads((out / "report.json").read_text()) == {"previous": True}
    assert os.listdir(tmp_path) == ["rep"]


def test_same_seed_gives_identical_measurements(tmp_path):
    a, sa = run_checks(ids=[CHEAP], seed=3, quick=True, out=str(tmp_path / "a"), echo=lambda *a: None)
    b, sb = run_checks(ids=[CHEAP], seed=3, quick=True, out=str(tmp_path / "b"), echo=lambda *a: None)
    c, _ = run_checks(ids=[CHEAP], seed=4, quick=True, out=str(tmp_path / "c"), echo=lambda *a: None)
    strip = lambda r: [{k: v for k, v in e.items() if k != "timing"} for e in r["checks"]]  # noqa: E731
    assert sa == sb == 0
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)  # the seed matters


def test_register_family_validates_and_joins_the_sweep():
    import geometry

    fam = geometry.exponential_family(lambda eta, xp: -xp.log(-eta[0]), dim=1,
                                      entropy=lambda eta, xp: 1 - xp.log(-eta[0]), name="exponential")
    with pytest.raises(ValueError, match="shape"):
        checks.register_family("bad", fam, lambda rng, n: rng.uniform(size=(n, 2)))
    with pytest.raises(ValueError, match="no entropy"):
        checks.register_family("noent", geometry.exponential_family(lambda eta, xp: -xp.log(-eta[0]), dim=1),
                               lambda rng, n: -rng.uniform(0.1, 10, (n, 1)))
    checks.register_family("exponential", fam, lambda rng, n: -rng.uniform(0.1, 10, (n, 1)))
    try:
        specs = sweep.family_specs(0, quick=True)
        assert ("exponential", "user") in [(s[0], s[1]) for s in specs]
        name, group, f, sampler = specs[-1]
        r, counts = sweep.curvature(f, sampler(np.random.default_rng(0), 30))
        assert counts["total"] == 30 and np.all(r == 0)  # a 1-d manifold has no curvature
    finally:
        checks.unregister_family("exponential")
    assert "exponential" not in checks.user_families()


# --------------------------------------------------------------------------- what the first screen says

def test_every_quote_is_the_posts_words_and_every_check_says_what_it_measured():
    from checks._src import post

    quoted = [c for c in checks.all_checks() if c.quote]
    assert len(quoted) >= 13  # the toolkit's own checks (precision-map, temperature-invariance) have none
    for c in checks.all_checks():
        assert c.measured, f"{c.id}: no 'measured' template"
        if c.quote:
            assert post.missing_passages(c.quote) == [], c.id


def test_register_refuses_a_quote_that_is_not_in_the_post():
    with pytest.raises(ValueError, match="verbatim"):
        registry.Check(id="x", claim="c", run=lambda ctx: None, quote="Curvature is always exactly 42.")
    with pytest.raises(ValueError, match="unknown filter"):
        registry.Check(id="x", claim="c", run=lambda ctx: None, measured="{rays|median}")
    ok = registry.Check(id="x", claim="c", run=lambda ctx: None, quote="Distances blow up. … Entropy plummets.")
    assert ok.quote


def test_measured_template_is_filled_from_the_measurements():
    from checks._src.sentence import TemplateError, fill

    m = {"rays": [{"holds": True, "k": -0.5}, {"holds": False, "k": 2.0}, {"holds": True, "k": None}],
         "adam/literal": {"d": 0.01}, "sgd/literal": {"d": -0.02}, "adam/literal/extra": {"d": 9.0},
         "rho": {"a": -0.3, "b": None, "c": 0.2}, "best": "inf", "MIN": 0.9}
    assert fill("{rays.holds|count} of {rays|len}", m) == "2 of 3"
    assert fill("{rays.k|known}, {rays.k|min:.1f}..{rays.k|max:.1f}, {rays.k|absmax:+.1f}", m) == "2, -0.5..2.0, +2.0"
    assert fill("{*/literal.d|join:+.2f}", m) == "+0.01, -0.02"
    assert fill("{rho|negative} of {rho|known}; {MIN:.0%}; {{literal}}", m) == "1 of 2; 90%; {literal}"
    assert fill("{best:.1e}", m) == "inf"
    for bad, why in (("{nope}", "no key 'nope'"), ("{rho.b:.2f}", "null"), ("{rays.k.x}", "not a mapping"),
                     ("{rays|min}", "not a number"), ("{MIN|len}", "needs a list")):
        with pytest.raises(TemplateError, match=why):
            fill(bad, m)


def test_a_template_that_does_not_fit_falls_back_to_the_summary_and_says_so():
    from checks._src.report import measured_sentence

    chk = registry.Check(id="x", claim="c", run=lambda ctx: None, measured="{missing:.2f} of it")
    entry = dict(status="ok", thresholds=[], measurements={"n": 1}, summary="First part; 0.5 second part. Third.")
    text, source = measured_sentence(chk, entry)
    assert text == "First part." and source.startswith("summary (template:") and "missing" in source


def test_figure_paths_are_made_relative_and_must_exist(tmp_path):
    from checks._src.report import _figure_name

    (tmp_path / "a.png").write_bytes(b"x")
    assert _figure_name(str(tmp_path / "a.png"), str(tmp_path), "c") == "a.png"  # an absolute path from ctx.figure_path
    assert _figure_name("a.png", str(tmp_path), "c") == "a.png"
    with pytest.raises(FileNotFoundError, match="'c' lists figure"):
        _figure_name("b.png", str(tmp_path), "c")
