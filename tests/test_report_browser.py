"""The report as a reader gets it: a small report built from a fixture, checked as files and in headless Chromium.

No check is run: four fake entries (a claim of the post that fails, a toolkit check that
holds with two figures, a claim without a figure, a check that could not run) and tiny
PNGs go through the real writer (``checks._src.report.write_report``).  The browser tests
need the Debian package ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs
it where it can) and are skipped with that reason where it is absent.
"""

import base64
import binascii
import html
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from checks._src import page, post
from checks._src.report import POINT_KEYS, write_report


def _png(path, title, rgb, size=(90, 60)):
    """A small PNG with a gradient (not blank) and a Title chunk, as figures.style.save writes."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    a = np.stack([(x * 255 // size[0]) ^ rgb[0], (y * 255 // size[1]) ^ rgb[1], np.full_like(x, rgb[2])], -1).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title)
    Image.fromarray(a).save(path, pnginfo=info)


def _entry(id, verdict, figures=(), quote=None, status="ok"):
    pts = dict.fromkeys(POINT_KEYS, 0)
    pts.update(total=5, float64=5)
    return dict(id=id, claim=f"what {id} tests", quote=quote, status=status, error=None if status == "ok" else "RuntimeError: boom",
                verdict=verdict if status == "ok" else "error", thresholds=[dict(name="SOME_MIN", value=0.9, rule="holds if x >= value")],
                measurements={"x": 0.5}, figures=list(figures), points=pts if status == "ok" else dict.fromkeys(POINT_KEYS, 0),
                summary=f"x = 0.5 vs SOME_MIN = 0.9 for {id}.", timing={"seconds": 1.5},
                measured=f"We measured x = 0.5 for {id}.", measured_from="template")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    _png(d / "law.png", "R is not a function of H", (0, 60, 200))
    _png(d / "tool_a.png", "digits of accuracy", (200, 0, 0))
    _png(d / "tool_b.png", "a second picture", (0, 200, 0), size=(40, 120))
    checks = [
        _entry("law-claim", "fails", ["law.png"], quote="R(d) = C · (α − H)"),
        _entry("toolkit-check", "holds", ["tool_a.png", "tool_b.png"]),
        _entry("no-figure-claim", "partial", quote="Distances blow up."),
        _entry("broken-check", "error", status="error"),
    ]
    env = dict(jax="0.0", jaxlib="0.0", numpy="0.0", scipy="0.0", sympy="0.0", mpmath="0.0", matplotlib="0.0", python="3",
               platform="test", seed=7, quick=True, date="2026-01-01T00:00:00+00:00", toolkit="0.1.0", commit="abc123",
               command="python -m checks --seed 7 --quick")
    totals = {k: sum(e["points"][k] for e in checks) for k in POINT_KEYS}
    report = dict(schema_version=1, checks=checks, environment=env, points=totals)
    write_report(report, str(d))
    return d


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(path):
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p.tags


def _decodes(data: bytes):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def test_report_html_has_no_external_reference_and_every_image_embedded(report_dir):
    text = (report_dir / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?:", text), "report.html must not reference the network"
    assert "url(" not in text and "@import" not in text and "<script" not in text and "<link" not in text
    imgs = 0
    for tag, attrs in _tags(report_dir / "report.html"):
        for key in ("src", "href", "srcset", "poster", "data"):
            if key not in attrs:
                continue
            value = attrs[key]
            if key == "href":
                assert value.startswith("#"), f"<{tag} href={value!r}>: only links inside the page"
            else:
                assert value.startswith("data:image/png;base64,"), f"<{tag} {key}={value[:40]!r}>: not embedded"
                try:
                    _decodes(base64.b64decode(value.split(",", 1)[1], validate=True))
                except (binascii.Error, OSError) as exc:
                    pytest.fail(f"embedded image does not decode: {exc}")
                imgs += 1
    assert imgs == 2 + 3  # the thumbnails of the two checks with figures, and the three figures
    # the anchors link to sections that exist
    ids = {a.get("id") for _, a in _tags(report_dir / "report.html")}
    hrefs = {a["href"][1:] for t, a in _tags(report_dir / "report.html") if "href" in a}
    assert hrefs <= ids


def test_every_image_has_alt_text_and_its_file_exists(report_dir):
    for name in ("index.html", "report.html"):
        imgs = [a for t, a in _tags(report_dir / name) if t == "img"]
        assert imgs and all(a.get("alt", "").strip() for a in imgs), name
    for _, a in (x for x in _tags(report_dir / "index.html") if x[0] == "img"):
        assert _decodes((report_dir / a["src"]).read_bytes())
    # alt text comes from the figure's PNG Title; the entry records it
    report = json.loads((report_dir / "report.json").read_text())
    law = report["checks"][0]
    assert law["figure_alt"] == {"law.png": "R is not a function of H"} and law["thumbnail"] == "thumbs/law.png"


def test_first_screen_has_one_entry_per_check_before_the_evidence(report_dir):
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    report = json.loads((report_dir / "report.json").read_text())
    evidence = text.index('id="evidence"')
    for e in report["checks"]:
        card = text.index(f'id="card-{page.anchor(e["id"])}"')
        assert card < evidence and text.index(f'id="{page.anchor(e["id"])}"') > evidence
    cards = re.findall(r'<li class="card"', text)
    assert len(cards) == len(report["checks"])
    first = text[:evidence]
    assert "“R(d) = C · (α − H)”" in first and "We measured x = 0.5 for law-claim." in first
    toolkit = first.index("Checks of the toolkit itself")  # listed apart, not presented as the post's words
    assert first.index('id="card-toolkit-check"') > toolkit > first.index('id="card-law-claim"')
    assert "“what toolkit-check tests”" not in first
    assert "python -m checks --seed 7 --quick" in first and "abc123" in first  # the reproduce box
    assert post.missing_passages("R(d) = C · (α − H)") == []


# --------------------------------------------------------------------------- in a real browser

def _chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium): the report is not rendered in a browser")

#: appended to a copy of the page: after load, writes what the browser made of it into the DOM
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const cards = [...document.querySelectorAll("#claims li.card")];
  const out = {images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
               cards: cards.length, cards_drawn: cards.filter(c => c.getBoundingClientRect().height > 20).length,
               evidence_top: document.getElementById("evidence").getBoundingClientRect().top};
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""


def _browser(url, *extra, timeout=60):
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--window-size=1280,900", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _probe(report_dir, name):
    probe = report_dir / f"_probe_{name}"
    probe.write_text((report_dir / name).read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    res = _browser(probe.as_uri(), "--dump-dom", "--virtual-time-budget=5000")
    probe.unlink()
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout)
    assert m, f"the page did not finish loading in Chromium: {res.stderr[-1500:]}"
    return json.loads(html.unescape(m.group(1)))


@needs_chromium
@pytest.mark.parametrize("name", ["index.html", "report.html"])
def test_chromium_renders_every_image_and_one_card_per_check(report_dir, name):
    out = _probe(report_dir, name)
    assert out["broken"] == [], f"images that did not load or decode in {name}: {out['broken']}"
    assert out["images"] == 5 and out["cards"] == out["cards_drawn"] == 4
    assert out["evidence_top"] > 0


@needs_chromium
def test_chromium_screenshot_of_the_single_file_is_not_blank(report_dir, tmp_path):
    # the single file alone, copied away from its figures: it must not need them
    alone = tmp_path / "mailed" / "report.html"
    alone.parent.mkdir()
    shutil.copy(report_dir / "report.html", alone)
    shot = tmp_path / "shot.png"
    res = _browser(alone.as_uri(), f"--screenshot={shot}")
    assert shot.exists(), res.stderr[-1500:]
    with Image.open(shot) as im:
        a = np.asarray(im.convert("L"), float)
    assert a.shape == (900, 1280) and a.std() > 10, "the screenshot is blank"
