"""Run registered checks and write the report (report.json, report.md, index.html, report.html, PNGs) atomically.

The report is built in a temporary directory next to ``out`` and renamed into
place at the end, so an interrupted run leaves the previous report intact.  A
check that raises is recorded with ``"status": "error"`` and its traceback; the
other checks still run.

Besides the measurements, each entry of ``report.json`` carries what the first
screen of the HTML shows: ``quote`` (the post's words, or null for a check of the
toolkit itself), ``measured`` (one plain sentence filled in from the measurements,
:mod:`.sentence`), ``thumbnail`` (a small copy of the deciding figure, the first
one) and ``figure_alt`` (each figure's alt text, from the PNG's Title).  The HTML
itself is :mod:`.page`: ``index.html`` links the PNGs, ``report.html`` is the same
page with every image embedded, one file that opens anywhere offline.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata

import numpy as np

from . import page, sentence
from .registry import Check, Context, Result, all_checks

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
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               toolkit=ver("fisher-curvature-check"), commit=_git_commit())
    return env


def _git_commit() -> str | None:
    """``HEAD`` of the toolkit's checkout, with ``+local changes`` when the tree differs from it; None outside git."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=10)
        return head.stdout.strip() + (" +local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def command_line(ids=None, seed: int = 0, quick: bool = False) -> str:
    """The ``python -m checks`` command that reproduces a run with these arguments."""
    parts = ["python -m checks", f"--seed {seed}"] + (["--quick"] if quick else [])
    if ids:
        parts.append("--only " + " ".join(ids))
    return " ".join(parts)


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
            entry = dict(id=chk.id, claim=chk.claim, quote=chk.quote)
            try:
                res = chk.run(ctx)
                if not isinstance(res, Result):
                    raise TypeError(f"check {chk.id!r} returned {type(res).__name__}, expected checks.Result")
                entry.update(
                    status="ok", error=None, verdict=res.verdict,
                    thresholds=[dict(name=t.name, value=t.value, rule=t.rule) for t in res.thresholds],
                    measurements=res.measurements, figures=[_figure_name(f, tmp, chk.id) for f in res.figures],
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
        env = environment(seed, quick)
        env["command"] = command_line(ids, seed, quick)
        report = dict(schema_version=SCHEMA_VERSION, checks=entries, environment=env, points=totals)
        report = jsonable(report)
        for e, chk in zip(report["checks"], checks):
            e["measured"], e["measured_from"] = measured_sentence(chk, e)
            if e["measured_from"].startswith("summary (template"):
                echo(f"warning: {chk.id}: its 'measured' template does not fit the measurements "
                     f"({e['measured_from'][19:-1]}); the report shows the summary's first sentence")
        write_report(report, tmp)
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


def _figure_name(f, directory: str, check_id: str) -> str:
    """A figure as its path relative to the report directory; it must have been written there."""
    f = os.fspath(f)
    rel = os.path.relpath(f, directory) if os.path.isabs(f) else os.path.normpath(f)
    if rel.startswith(os.pardir) or not os.path.isfile(os.path.join(directory, rel)):
        raise FileNotFoundError(f"check {check_id!r} lists figure {f!r}, which is not a file in the report directory "
                                "(write it with ctx.figure_path(name))")
    return rel.replace(os.sep, "/")


_FIRST_SENTENCE = re.compile(r"^(.+?[.;])(?:\s|$)")


def first_sentence(text: str) -> str:
    m = _FIRST_SENTENCE.match(text.strip())
    return (m.group(1)[:-1] + "." if m else text.strip()) if text else ""


def measured_sentence(chk: Check, entry: dict) -> tuple[str, str]:
    """The plain sentence of what ``entry`` measured and where it came from (``template``, ``summary`` or ``error``).

    The check's ``measured`` template is filled from the measurements and the thresholds (by
    name); if it does not fit them, the first sentence of the summary is used and the reason
    returned as ``summary (template: ...)``.
    """
    if entry["status"] == "error":
        return f"The check could not run: {entry['error']}", "error"
    if chk.measured:
        ns = {t["name"]: t["value"] for t in entry["thresholds"]}
        ns.update(entry["measurements"])
        try:
            return sentence.fill(chk.measured, ns), "template"
        except sentence.TemplateError as exc:
            return first_sentence(entry["summary"]), f"summary (template: {exc})"
    return first_sentence(entry["summary"]), "summary"


THUMB_DIR = "thumbs"
#: thumbnails are stored at twice the width the page shows them (sharp on high-density screens)
THUMB_SIZE = (2 * page.THUMB_WIDTH_PX, 2 * page.THUMB_HEIGHT_PX)


def _thumbnail(directory: str, name: str) -> str:
    """A small PNG copy of figure ``name`` under ``thumbs/`` (256 colours: a few tens of kB)."""
    from PIL import Image

    os.makedirs(os.path.join(directory, THUMB_DIR), exist_ok=True)
    rel = f"{THUMB_DIR}/{os.path.basename(name)}"
    with Image.open(os.path.join(directory, name)) as im:
        im = im.convert("RGB")
        im.thumbnail(THUMB_SIZE, Image.Resampling.LANCZOS)
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            os.path.join(directory, rel), optimize=True)
    return rel


def _png_title(path: str) -> str | None:
    from PIL import Image

    with Image.open(path) as im:
        title = getattr(im, "text", {}).get("Title")
    return " ".join(title.split()) if title else None


def write_report(report: dict, directory: str) -> None:
    """Write ``report.json``, ``report.md``, ``index.html``, ``report.html``, ``summary.png`` and the
    thumbnails into ``directory``, which already holds every check's figures.

    Adds ``thumbnail`` and ``figure_alt`` to each entry (and ``measured`` where it is missing).
    """
    for e in report["checks"]:
        e.setdefault("quote", None)
        if "measured" not in e:
            e["measured"], e["measured_from"] = (first_sentence(e["summary"]), "summary")
        e["thumbnail"] = _thumbnail(directory, e["figures"][0]) if e["figures"] else None
        e["figure_alt"] = {f: _png_title(os.path.join(directory, f)) or f"Figure of the check {e['id']}: {e['measured']}"
                           for f in e["figures"]}
    _write_summary_figure(report, directory)
    with open(os.path.join(directory, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, allow_nan=False)
    with open(os.path.join(directory, "report.md"), "w") as fh:
        fh.write(render_markdown(report))
    with open(os.path.join(directory, "index.html"), "w") as fh:
        fh.write(page.render(report, directory))
    with open(os.path.join(directory, "report.html"), "w") as fh:
        fh.write(page.render(report, directory, embed=True))


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

    rows = [dict(id=e["id"], verdict=e["verdict"], summary=e.get("measured") or e["summary"]) for e in report["checks"]]
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
        "## The post's claims at a glance",
        "",
        *[f"- **{e['verdict']}** `{e['id']}`: " + (f"“{e['quote']}” " if e.get("quote") else f"(toolkit) {e['claim']}. ")
          + f"— {e['measured']}" for e in report["checks"]],
        "",
        f"Reproduce: `{env.get('command', 'python -m checks')}` (commit {env.get('commit')}; install as in README command 2).",
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
        out += [f"![{e.get('figure_alt', {}).get(f, f)}]({f})" for f in e["figures"]]
        out.append("")
    return "\n".join(out)
