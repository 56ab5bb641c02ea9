"""The report as one HTML page: first the answer, then the evidence.

The first screen quotes each claim of the post, gives its verdict, one plain sentence
of what was measured and the deciding figure as a thumbnail that links to the
check's section; checks of the toolkit itself follow apart, then a "reproduce this"
box.  Below, one section per check: the deciding numbers (the summary), the
thresholds, the point accounting and every figure.

:func:`render` writes the same page two ways: with images linked as files next to
it (``index.html``) or embedded as ``data:`` URIs (``report.html``: no external
resource, no link to another file, so it can be mailed and opens offline).  The page
uses no script, no web font and no stylesheet outside itself.
"""

from __future__ import annotations

import base64
import html
import os
import re
import urllib.parse

from figures.style import PAGE_WIDTH_PX, VERDICT_COLOURS, VERDICT_MARK

from . import post

#: how large the page shows a thumbnail (CSS pixels); the file is twice that
THUMB_WIDTH_PX, THUMB_HEIGHT_PX = 180, 130
VERDICT_WORDS = {
    "holds": "holds: true on every case tested",
    "fails": "fails: false on every case tested",
    "partial": "partial: true only on a stated part of the cases",
    "undefined": "undefined: the quantity does not exist there, or the measurement cannot decide",
    "error": "error: the check could not run",
}
esc = html.escape


def anchor(check_id: str) -> str:
    """The HTML id of a check's section (ids are used as they are when they are safe)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", check_id)


def _png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


class _Images:
    """``src`` and size of each image under ``directory``: a relative URL, or a data: URI when embedding."""

    def __init__(self, directory: str, embed: bool):
        self.directory, self.embed = directory, embed

    def tag(self, name: str, alt: str, cls: str = "", width: int | None = None) -> str:
        path = os.path.join(self.directory, name)
        w, h = _png_size(path)
        if width is not None:  # shown smaller than the file (thumbnails)
            w, h = width, round(h * width / w)
        if self.embed:
            with open(path, "rb") as fh:
                src = "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")
        else:
            src = urllib.parse.quote(name)
        cls = f' class="{cls}"' if cls else ""
        return f'<img{cls} src="{src}" alt="{esc(alt)}" width="{w}" height="{h}">'


def _badge(verdict: str) -> str:
    return (f'<span class="badge v-{esc(verdict)}" title="{esc(VERDICT_WORDS.get(verdict, verdict))}">'
            f"{VERDICT_MARK.get(verdict, '')} {esc(verdict)}</span>")


def _said(e: dict, label: str = "Toolkit check: ") -> str:
    if e.get("quote"):
        return f'<blockquote class="quote">“{esc(e["quote"])}”</blockquote>'
    claim = re.sub(r"^\(toolkit\)\s*", "", e["claim"])
    return f'<p class="claim">{label}{esc(claim)}</p>'


def _card(e: dict, images: _Images) -> str:
    """One row of the first screen: verdict and id | the post's words | what was measured | thumbnail."""
    a = anchor(e["id"])
    if e.get("thumbnail"):
        alt = e.get("figure_alt", {}).get(e["figures"][0]) or e["measured"]
        thumb = images.tag(e["thumbnail"], f"{e['verdict']}: {alt}", width=THUMB_WIDTH_PX)
    elif e["status"] == "error":
        thumb = '<span class="nofig">no figure: the check could not run</span>'
    else:
        thumb = '<span class="nofig">no figure: the evidence is a table of numbers</span>'
    return (f'<li class="card" id="card-{a}"><p class="head">{_badge(e["verdict"])}<br><a href="#{a}"><code>{esc(e["id"])}</code></a></p>'
            f'{_said(e, label="")}<p class="measured">{esc(e["measured"])}</p><a class="thumb" href="#{a}">{thumb}</a></li>')


def _minutes(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _tally(entries: list) -> str:
    counts: dict = {}
    for e in entries:
        counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
    parts = [f"{counts[v]} {_badge(v)}" for v in ("holds", "fails", "partial", "undefined", "error") if counts.get(v)]
    return ", ".join(parts)


def _reproduce(report: dict) -> str:
    env = report["environment"]
    seconds = sum(e.get("timing", {}).get("seconds", 0.0) for e in report["checks"])
    versions = ", ".join(f"{k} {env[k]}" for k in ("python", "jax", "jaxlib", "numpy", "scipy", "sympy", "mpmath", "matplotlib")
                         if env.get(k))
    commit = env.get("commit")
    return (
        '<aside class="reproduce" id="reproduce"><h2>Reproduce this</h2>'
        f'<pre>{esc(env.get("command") or "python -m checks --seed " + str(env["seed"]))}</pre>'
        '<p>Install as in README command 2, then run the line above from the toolkit\'s folder; the same seed gives '
        'the same numbers in report.json.</p><dl>'
        f'<dt>seed</dt><dd>{esc(str(env["seed"]))} ({"quick" if env.get("quick") else "full"} run)</dd>'
        f'<dt>toolkit</dt><dd>fisher-curvature-check {esc(str(env.get("toolkit")))}'
        + (f', commit <code>{esc(commit)}</code>' if commit else "") + '</dd>'
        f'<dt>run time</dt><dd>{_minutes(seconds)} for {len(report["checks"])} checks, {esc(str(env["date"]))}</dd>'
        f'<dt>versions</dt><dd>{esc(versions)}</dd>'
        f'<dt>platform</dt><dd>{esc(str(env.get("platform")))}</dd></dl></aside>'
    )


def _thresholds(e: dict) -> str:
    if not e["thresholds"]:
        return ""
    rows = "".join(f"<tr><td><code>{esc(t['name'])}</code></td><td>{esc(str(t['value']))}</td><td>{esc(t['rule'])}</td></tr>"
                   for t in e["thresholds"])
    return ("<h4>Thresholds (fixed in code before the measurement)</h4><table class=\"thr\"><tr><th>name</th><th>value</th>"
            f"<th>rule</th></tr>{rows}</table>")


def _section(e: dict, images: _Images) -> str:
    a = anchor(e["id"])
    out = [f'<section class="check" id="{a}"><h3>{_badge(e["verdict"])} <code>{esc(e["id"])}</code></h3>', _said(e),
           f'<p class="measured">{esc(e["measured"])}</p>']
    if e.get("quote"):
        out.append(f'<p class="claim">What was tested: {esc(e["claim"])}</p>')
    out.append(f'<h4>Deciding numbers</h4><p class="summary">{esc(e["summary"])}</p>')
    if e["status"] == "error":
        out.append(f"<pre>{esc(e.get('traceback') or e['error'])}</pre>")
    out.append(_thresholds(e))
    p = e["points"]
    if p["total"]:
        out.append(f'<p class="points">Curvature points: {p["total"]} ({p["float64"]} float64, {p["high_precision"]} high '
                   f'precision, {p["undefined"]} undefined, {p["not_computed_budget"]} not computed (budget), '
                   f'{p["untrusted"]} untrusted).</p>')
    for f in e["figures"]:
        alt = e.get("figure_alt", {}).get(f) or f"Figure of the check {e['id']}"
        out.append(f'<figure>{images.tag(f, alt)}<figcaption>{esc(alt)}</figcaption></figure>')
    out.append('<p class="up"><a href="#top">↑ back to the claims</a></p></section>')
    return "".join(out)


def _css() -> str:
    badges = "".join(f".v-{v}{{background:{bg};color:{fg}}}" for v, (bg, fg) in VERDICT_COLOURS.items())
    return f"""
*{{box-sizing:border-box}}
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;font-size:16px;line-height:1.45;
color:#1a1a1a;background:#fff;margin:0}}
main{{max-width:{PAGE_WIDTH_PX + 40}px;margin:auto;padding:16px 20px 48px}}
h1{{font-size:1.45em;margin:.2em 0 .2em}} h2{{font-size:1.25em;margin:1.2em 0 .4em}} h3{{font-size:1.15em}}
h4{{font-size:1em;margin:1em 0 .3em}}
.lede{{max-width:66em;margin:.3em 0}}
.badge{{display:inline-block;padding:.05em .5em;border-radius:.3em;font-weight:700;white-space:nowrap}}
{badges}
.tally{{font-size:1.05em;margin:.4em 0}}
.legend{{font-size:.85em;color:#444;margin:.3em 0}}
ol.cards{{list-style:none;padding:0;margin:0;border-top:1px solid #ccc}}
.card{{display:grid;grid-template-columns:9.5em minmax(0,1fr) minmax(0,1.3fr) {THUMB_WIDTH_PX}px;gap:4px 16px;
align-items:start;padding:8px 4px;border-bottom:1px solid #ccc;font-size:.93em}}
.card:nth-child(even){{background:#f6f6f6}}
.cardhead{{font-size:.8em;color:#555;font-weight:700;border:0;padding-bottom:2px}}
.card p{{margin:0}} .card .head{{line-height:1.7}}
.card .thumb img{{display:block;max-width:{THUMB_WIDTH_PX}px;max-height:{THUMB_HEIGHT_PX * 3 // 4}px;width:auto;height:auto;
border:1px solid #ddd;background:#fff}}
.nofig{{display:flex;align-items:center;justify-content:center;width:{THUMB_WIDTH_PX}px;height:{THUMB_HEIGHT_PX // 3}px;
border:1px dashed #999;color:#555;font-size:.82em;text-align:center;padding:4px}}
@media (max-width:860px){{.card{{grid-template-columns:1fr}}}}
.quote{{margin:0;padding-left:.6em;border-left:3px solid #999;font-style:italic;color:#333}}
.claim{{color:#444;font-size:.95em;margin:0}}
.reproduce{{border:1px solid #0072B2;border-radius:6px;padding:4px 16px 10px;margin:20px 0;background:#f3f8fc}}
.reproduce pre{{background:#fff;border:1px solid #ccc;padding:6px 10px;overflow-x:auto}}
.reproduce dl{{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:.9em}}
.reproduce dt{{font-weight:700}} .reproduce dd{{margin:0}}
section.check{{border-top:2px solid #ddd;margin-top:28px;padding-top:4px}}
section.check .quote,section.check .claim{{margin:.4em 0}}
.summary{{font-size:.9em;color:#333}}
table.thr{{border-collapse:collapse;font-size:.85em}} .thr td,.thr th{{border:1px solid #ccc;padding:3px 7px;vertical-align:top}}
figure{{margin:14px 0}} figure img{{max-width:100%;height:auto;display:block}}
figcaption{{font-size:.85em;color:#444;margin-top:4px}}
pre{{white-space:pre-wrap}}
code{{font-size:.95em}}
.up{{font-size:.85em}}
"""


def render(report: dict, directory: str, embed: bool = False) -> str:
    """The page of ``report``; images are read from ``directory`` (embedded as data: URIs when ``embed``)."""
    images = _Images(directory, embed)
    entries = report["checks"]
    claims = [e for e in entries if e.get("quote")]
    toolkit = [e for e in entries if not e.get("quote")]
    env = report["environment"]
    pts = report["points"]
    files = ("" if embed else
             '<p class="legend">In this folder: <a href="report.html">report.html</a> (this page as one file, to send '
             'or keep), <a href="report.json">report.json</a> (every number), <a href="report.md">report.md</a>.</p>')
    head = (
        f'<header id="top"><h1>Is attention curvature a linear function of entropy? The post’s claims, measured</h1>'
        f'<p class="lede">A post by {esc(post.AUTHOR)} on {esc(post.WHERE)}, “{esc(post.TITLE)}”, claims that the scalar '
        "curvature R of the Fisher metric of attention obeys R = C·(α − H) in the attention entropy H, and that a "
        "temperature schedule fixes “entropy collapse”. Below, each claim in the post’s words, the verdict of a numerical "
        "check, and what it measured; a picture or a name leads to the evidence.</p>"
        f'<p class="tally">The post’s {len(claims)} claims tested here: {_tally(claims)}.'
        f' ({"quick" if env.get("quick") else "full"} run, seed {esc(str(env["seed"]))}, {esc(str(env["date"]))[:10]};'
        ' <a href="#reproduce">reproduce</a>)</p>'
        '<p class="legend">' + "; ".join(f"{_badge(v)} {esc(w.split(': ', 1)[1])}" for v, w in VERDICT_WORDS.items()
                                        if v != "error" or any(e["verdict"] == "error" for e in entries)) + ".</p>"
        f"{files}</header>"
    )
    columns = ('<div class="card cardhead" aria-hidden="true"><span>verdict, check</span><span>the post says</span>'
               '<span>what was measured</span><span>deciding figure</span></div>')
    overview = ['<section id="claims"><h2>What the post claims, and what was found</h2>', columns, '<ol class="cards">',
                *(_card(e, images) for e in claims), "</ol>"]
    if toolkit:
        overview += ["<h2>Checks of the toolkit itself (not claims of the post)</h2>", columns.replace("the post says", "what is checked"),
                     '<ol class="cards">',
                     *(_card(e, images) for e in toolkit), "</ol>"]
    overview.append("</section>")
    details = ['<h2 id="evidence">The evidence, check by check</h2>', *(_section(e, images) for e in entries)]
    foot = (f'<p class="points">Curvature points over all checks: {pts["total"]} total = {pts["float64"]} float64 + '
            f'{pts["high_precision"]} high precision + {pts["undefined"]} undefined + {pts["not_computed_budget"]} not '
            f'computed (budget) + {pts["untrusted"]} untrusted.</p>')
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Fisher-curvature checks: the post’s claims, measured</title><style>{_css()}</style></head>"
        f'<body><main>{head}{"".join(overview)}{_reproduce(report)}{"".join(details)}{foot}</main></body></html>\n'
    )
