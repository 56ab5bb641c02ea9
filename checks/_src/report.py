"""Run registered checks and write the report (report.json, report.md, index.html, PNGs) atomically.

The report is built in a temporary directory next to ``out`` and renamed into
place at the end, so an interrupted run leaves the previous report intact.  A
check that raises is recorded with ``"status": "error"`` and its traceback; the
other checks still run.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from importlib import metadata

import numpy as np

from .registry import Context, Result, all_checks

POINT_KEYS = ("total", "float64", "high_precision", "undefined", "not_computed_budget", "untrusted")
SCHEMA_VERSION = 1


def environment(seed: int, quick: bool) -> dict:
    def ver(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    env = {name: ver(name) for name in ("jax", "jaxlib", "numpy", "scipy", "sympy", "mpmath", "matplotlib")}
    env.update(python=sys.version.split()[0], platform=platform.platform(), seed=seed, quick=quick,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return env


def jsonable(obj):
    """Plain JSON: numpy scalars/arrays to Python, NaN to null, +-inf to the strings "inf"/"-inf"."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _normalise_points(points: dict) -> dict:
    out = {k: int(points.get(k, 0)) for k in POINT_KEYS}
    parts = sum(out[k] for k in POINT_KEYS[1:])
    if parts != out["total"]:
        raise ValueError(f"points do not add up: total {out['total']} != sum of categories {parts} ({out})")
    return out


def run_checks(ids=None, seed: int = 0, quick: bool = False, out: str = "report", progress=None, echo=print) -> tuple[dict, int]:
    """Run the checks and write the report to ``out``.  Returns ``(report dict, exit status)``."""
    checks = all_checks()
    known = [c.id for c in checks]
    if ids:
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"unknown check id(s) {unknown}; known ids: {known} (python -m checks --list)")
        checks = [c for c in checks if c.id in ids]
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-building-", dir=parent)
    try:
        entries = []
        for i, chk in enumerate(checks):
            echo(f"[{i + 1}/{len(checks)}] {chk.id} ...")
            ctx = Context(seed=seed, quick=quick, out_dir=tmp, progress=progress)
            t0 = time.perf_counter()
            entry = dict(id=chk.id, claim=chk.claim)
            try:
                res = chk.run(ctx)
                if not isinstance(res, Result):
                    raise TypeError(f"check {chk.id!r} returned {type(res).__name__}, expected checks.Result")
                entry.update(
                    status="ok", error=None, verdict=res.verdict,
                    thresholds=[dict(name=t.name, value=t.value, rule=t.rule) for t in res.thresholds],
                    measurements=res.measurements, figures=list(res.figures),
                    points=_normalise_points(res.points), summary=res.summary,
                )
            except Exception as exc:  # one failing check must not stop the others
                entry.update(
                    status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                    verdict="error", thresholds=[], measurements={}, figures=[],
                    points=_normalise_points({}), summary=f"the check could not run: {type(exc).__name__}: {exc}",
                )
            entry["timing"] = {"seconds": round(time.perf_counter() - t0, 2)}
            echo(f"    {entry['verdict']:9s} {entry['timing']['seconds']:7.1f} s  {entry['summary'][:150]}")
            entries.append(entry)
        totals = _normalise_points({k: sum(e["points"][k] for e in entries) for k in POINT_KEYS})
        report = dict(schema_version=SCHEMA_VERSION, checks=entries, environment=environment(seed, quick), points=totals)
        report = jsonable(report)
        _write_summary_figure(report, tmp)
        with open(os.path.join(tmp, "report.json"), "w") as fh:
            json.dump(report, fh, indent=1, allow_nan=False)
        with open(os.path.join(tmp, "report.md"), "w") as fh:
            fh.write(render_markdown(report))
        with open(os.path.join(tmp, "index.html"), "w") as fh:
            fh.write(render_html(report))
        _swap_into_place(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        running = chk.id if "chk" in locals() and len(entries) < len(checks) else None
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            where = f"during check {running!r}" if running else "while writing the report"
            print(f"\ninterrupted {where}; the previous report in {out}/ was kept unchanged", file=sys.stderr)
        raise
    status = 1 if any(e["status"] == "error" for e in entries) else 0
    return report, status


def _swap_into_place(tmp: str, out: str) -> None:
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-old-", dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _write_summary_figure(report: dict, tmp: str) -> None:
    import figures

    rows = [dict(id=e["id"], verdict=e["verdict"], summary=e["summary"]) for e in report["checks"]]
    counts = {}
    for e in report["checks"]:
        counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
    title = "Fisher-curvature claims: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    figures.summary_page(rows, os.path.join(tmp, "summary.png"), title)
    report["summary_figure"] = "summary.png"


def verdict_table(report: dict) -> str:
    lines = ["| check | verdict | deciding numbers |", "|---|---|---|"]
    for e in report["checks"]:
        lines.append(f"| `{e['id']}` | **{e['verdict']}** | {e['summary'].replace('|', '/')} |")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    env = report["environment"]
    pts = report["points"]
    out = [
        "# Fisher-curvature checks: report",
        "",
        f"seed {env['seed']}, {'quick' if env['quick'] else 'full'} run, {env['date']}; "
        f"python {env['python']}, jax {env['jax']}, numpy {env['numpy']}, mpmath {env['mpmath']}.",
        "",
        verdict_table(report),
        "",
        f"Curvature points: {pts['total']} total = {pts['float64']} float64 + {pts['high_precision']} high precision (double-double or mpmath) + "
        f"{pts['undefined']} undefined + {pts['not_computed_budget']} not computed (time budget) + {pts['untrusted']} untrusted.",
        "",
        "![summary](summary.png)",
        "",
    ]
    for e in report["checks"]:
        out += [f"## `{e['id']}`: {e['verdict']}", "", f"> {e['claim']}", "", e["summary"], ""]
        if e["status"] == "error":
            out += ["**This check failed to run:**", "", "```", e.get("traceback") or e["error"], "```", ""]
            continue
        if e["thresholds"]:
            out += ["| threshold | value | rule |", "|---|---|---|"]
            out += [f"| `{t['name']}` | {t['value']} | {t['rule']} |" for t in e["thresholds"]]
            out.append("")
        p = e["points"]
        out.append(f"Points: {p['total']} ({p['float64']} float64, {p['high_precision']} high precision, {p['undefined']} undefined, "
                   f"{p['not_computed_budget']} budget, {p['untrusted']} untrusted).")
        out.append("")
        out += [f"![{f}]({f})" for f in e["figures"]]
        out.append("")
    return "\n".join(out)


def render_html(report: dict) -> str:
    env = report["environment"]
    colours = {"holds": "#2e7d32", "fails": "#c62828", "partial": "#ef6c00", "undefined": "#6a1b9a", "error": "#424242"}
    esc = html.escape
    rows = "".join(
        f"<tr><td><a href='#{esc(e['id'])}'><code>{esc(e['id'])}</code></a></td>"
        f"<td style='color:white;background:{colours.get(e['verdict'], '#000')}'><b>{esc(e['verdict'])}</b></td>"
        f"<td>{esc(e['summary'])}</td></tr>"
        for e in report["checks"]
    )
    body = []
    for e in report["checks"]:
        body.append(f"<h2 id='{esc(e['id'])}'><code>{esc(e['id'])}</code>: {esc(e['verdict'])}</h2>")
        body.append(f"<blockquote>{esc(e['claim'])}</blockquote><p>{esc(e['summary'])}</p>")
        if e["status"] == "error":
            body.append(f"<pre>{esc(e.get('traceback') or e['error'])}</pre>")
        if e["thresholds"]:
            body.append("<table><tr><th>threshold</th><th>value</th><th>rule</th></tr>" + "".join(
                f"<tr><td><code>{esc(t['name'])}</code></td><td>{esc(str(t['value']))}</td><td>{esc(t['rule'])}</td></tr>"
                for t in e["thresholds"]) + "</table>")
        for f in e["figures"]:
            body.append(f"<p><img src='{esc(f)}' alt='{esc(f)}' style='max-width:100%'></p>")
    pts = report["points"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fisher-curvature checks</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}blockquote{{color:#555}}</style></head><body>
<h1>Fisher-curvature checks</h1>
<p>seed {esc(str(env['seed']))}, {'quick' if env['quick'] else 'full'} run, {esc(str(env['date']))}; python {esc(str(env['python']))},
jax {esc(str(env['jax']))}, numpy {esc(str(env['numpy']))}, mpmath {esc(str(env['mpmath']))}, {esc(str(env['platform']))}</p>
<table><tr><th>check</th><th>verdict</th><th>deciding numbers</th></tr>{rows}</table>
<p>Curvature points: {pts['total']} total = {pts['float64']} float64 + {pts['high_precision']} high precision + {pts['undefined']} undefined
+ {pts['not_computed_budget']} not computed (budget) + {pts['untrusted']} untrusted.</p>
<p><img src="summary.png" alt="summary" style="max-width:100%"></p>
{''.join(body)}
</body></html>
"""
