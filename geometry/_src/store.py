r"""Sweep results on disk (layer 9): the directory ``PATH`` of ``geometry.sweep(..., out=PATH)``.

Layout of ``PATH`` (every file a plain ``.npy`` or JSON file):

``manifest.json``
    what the directory holds: the *fingerprint* (below) and its parts, the checkpoint grid
    (``points``, ``checkpoint_size``), the data offset of every ``.npy`` file, versions.
``R.npy`` (float64), ``rel_error.npy`` (float64), ``status.npy`` (int8), ``dps.npy`` (int32)
    one entry per point, of shape ``theta.shape[:-1]`` -- 21 bytes a point; open with
    ``np.load(PATH / "R.npy", mmap_mode="r")``.  The values are those of
    :class:`geometry.CurvatureInfo`; ``status`` is :data:`PENDING` (-1) for points not computed yet.
``progress/process-<i>.jsonl``
    one JSON line per *completed checkpoint*, appended by the process ``i`` that computed it:
    ``unit``, rows ``[start, stop)``, ``input`` (SHA-256 of the rows of ``theta`` it read, with
    their dtype and shape), ``output`` (CRC-32 of the bytes it wrote to each ``.npy``), ``counts``
    (``CurvatureInfo.counts()`` of its rows), ``reasons`` (``{flat index: reason}``), timings.
``accounting.json``
    written last, once every checkpoint is complete: ``complete: true``, the counts over all
    points, per process (``by_process``) and the check that the checkpoints cover every point
    exactly once.  Without it the directory holds an unfinished sweep.
``reasons.json``
    ``{flat index: reason}`` of every point without a trusted value (with ``accounting.json``).
``lock``
    held (``flock``) by the coordinating process while a sweep writes here.

Checkpoints.  Points are cut into checkpoints of ``checkpoint_size`` rows (``unit`` ``u`` is rows
``[u * size, (u + 1) * size)``), independent of the number of processes.  A checkpoint is
*complete* when its line is in ``progress/``; the line is appended only after its results are
written and synced to disk (``fdatasync``: write, flush, then mark), and the line itself is
flushed and synced.  The writing runs in a background thread, one checkpoint behind the
computation (so hashing and syncing overlap it); a checkpoint computed before an interruption is
still written and marked.  A torn last line (a process killed while writing it) is ignored, and
the rows of a checkpoint written but not marked count as not computed.  A complete
checkpoint is *verified* before it is skipped: the rows of the new ``theta`` must hash to its
``input`` digest (else the call is refused: the points differ) and the stored bytes to its
``output`` checksums (else it is recomputed).

Fingerprint.  A call may resume ``PATH`` only if these agree with ``manifest.json`` (else it is
refused with the fields that differ): the family (its class, and a SHA-256 over its dataclass
fields: array leaves by dtype, shape and bytes; static fields by value; user functions by
qualified name, bytecode, constants, defaults, closure values and the data or functions of the
module globals they name); the points' shape and dtype (their bytes are checked per
checkpoint, above); the options (``method`` and the route it selects, ``rtol``, the chunk size
per device, ``checkpoint_size``, ``time_budget``); and what could change the last bits (JAX and
jaxlib versions, the device kind, x64 mode, a SHA-256 of geometry's numerical sources).  The
number of processes and of devices is recorded but not compared: results do not depend on it,
so a sweep started on 4 processes may be finished on 2.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import functools
import hashlib
import json
import os
import pathlib
import time
import types
import zlib
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from .tiers import STATUS_NAMES

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock file
    fcntl = None

LAYOUT_VERSION = 1
#: ``status`` of a point whose checkpoint is not complete yet.
PENDING = -1
#: The per-point files: name -> dtype.
FIELDS = {"R": np.dtype(np.float64), "rel_error": np.dtype(np.float64), "status": np.dtype(np.int8),
          "dps": np.dtype(np.int32)}
MANIFEST, ACCOUNTING, REASONS, PROGRESS, LOCK = "manifest.json", "accounting.json", "reasons.json", "progress", "lock"
#: Sources whose code decides the values (hashed into the fingerprint).
NUMERICAL_SOURCES = ("mathns", "quadrature", "families", "fisher", "linalg", "tensors", "routes", "mapping", "tiers",
                     "ddouble", "highprec", "engine")
_WRITE_BLOCK = 1 << 24
#: ``fdatasync`` where the platform has it (the files are preallocated: only their data must reach the disk).
_datasync = getattr(os, "fdatasync", os.fsync)


# --------------------------------------------------------------------------- fingerprints


def _tag(h, text: str) -> None:
    h.update(text.encode("utf-8", "backslashreplace") + b"\0")


def _feed(h, obj, seen: set, depth: int) -> None:
    """Feed a canonical description of ``obj`` to the hash ``h`` (identity-free: no addresses)."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)) and not isinstance(obj, np.ndarray):
        _tag(h, f"{type(obj).__name__}:{obj!r}")
        return
    if isinstance(obj, (np.ndarray, jax.Array)):
        a = np.ascontiguousarray(np.asarray(obj))
        _tag(h, f"array:{a.dtype.str}:{a.shape}")
        h.update(a.tobytes())
        return
    if id(obj) in seen or depth > 8:
        _tag(h, f"seen:{type(obj).__qualname__}")
        return
    seen = seen | {id(obj)}
    if isinstance(obj, (tuple, list)):
        _tag(h, f"{type(obj).__name__}:{len(obj)}")
        for x in obj:
            _feed(h, x, seen, depth + 1)
    elif isinstance(obj, (set, frozenset)):  # iteration order depends on the process's hash seed
        _tag(h, f"{type(obj).__name__}:{len(obj)}")
        for x in sorted(obj, key=repr):
            _feed(h, x, seen, depth + 1)
    elif isinstance(obj, dict):
        _tag(h, f"dict:{len(obj)}")
        for k in sorted(obj, key=repr):
            _feed(h, k, seen, depth + 1)
            _feed(h, obj[k], seen, depth + 1)
    elif isinstance(obj, type):
        _tag(h, f"class:{obj.__module__}.{obj.__qualname__}")
    elif isinstance(obj, types.ModuleType):
        _tag(h, f"module:{obj.__name__}")
    elif dataclasses.is_dataclass(obj):
        _tag(h, f"dataclass:{type(obj).__module__}.{type(obj).__qualname__}")
        for f in dataclasses.fields(obj):
            _tag(h, f.name)
            _feed(h, getattr(obj, f.name), seen, depth + 1)
    elif isinstance(obj, types.FunctionType):
        _feed_function(h, obj, seen, depth)
    elif isinstance(obj, types.MethodType):
        _tag(h, "method")
        _feed(h, obj.__func__, seen, depth + 1)
        _feed(h, obj.__self__, seen, depth + 1)
    elif isinstance(obj, functools.partial):
        _tag(h, "partial")
        _feed(h, (obj.func, obj.args, obj.keywords), seen, depth + 1)
    elif isinstance(obj, (types.BuiltinFunctionType, np.ufunc)):
        _tag(h, f"builtin:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj.__name__)}")
    elif hasattr(obj, "__dict__"):
        _tag(h, f"object:{type(obj).__module__}.{type(obj).__qualname__}")
        _feed(h, vars(obj), seen, depth + 1)
    else:
        text = repr(obj)
        _tag(h, f"{type(obj).__qualname__}:" + ("" if " at 0x" in text else text))


def _code_names(code) -> set:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


def _feed_code(h, code) -> None:
    _tag(h, f"code:{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}:{code.co_argcount}")
    h.update(code.co_code)
    _tag(h, repr(code.co_names))
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _feed_code(h, c)
        else:
            _tag(h, f"{type(c).__name__}:{c!r}")


def _feed_function(h, fn, seen, depth) -> None:
    _tag(h, f"function:{fn.__module__}.{fn.__qualname__}")
    _feed_code(h, fn.__code__)
    _feed(h, fn.__defaults__, seen, depth + 1)
    _feed(h, fn.__kwdefaults__, seen, depth + 1)
    for cell in fn.__closure__ or ():
        try:
            _feed(h, cell.cell_contents, seen, depth + 1)
        except ValueError:  # an empty cell
            _tag(h, "empty-cell")
    # module globals the code names: data and functions count (a changed constant changes the family)
    for name in sorted(_code_names(fn.__code__)):
        if name in fn.__globals__:
            value = fn.__globals__[name]
            _tag(h, f"global:{name}")
            if isinstance(value, (types.FunctionType, np.ndarray, jax.Array, int, float, complex, str, bytes, tuple, list,
                                  dict, functools.partial)) or dataclasses.is_dataclass(value):
                _feed(h, value, seen, depth + 1)
            elif isinstance(value, (type, types.ModuleType)):
                _feed(h, value, seen, depth + 1)


def family_digest(family) -> str:
    """SHA-256 (hex) of a family: class, array leaves (dtype, shape, bytes), static fields, user functions."""
    h = hashlib.sha256()
    _feed(h, family, set(), 0)
    return h.hexdigest()


def rows_digest(block: np.ndarray) -> str:
    """SHA-256 (hex) of rows of ``theta``: dtype, shape and bytes."""
    block = np.ascontiguousarray(block)
    h = hashlib.sha256(f"{block.dtype.str}:{block.shape}".encode())
    h.update(block.data if block.size else b"")
    return h.hexdigest()


def sample_digest(rows) -> str:
    """SHA-256 of at most 64 evenly spaced rows (a cheap check that processes were given the same points)."""
    n = rows.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, 64)).astype(np.int64)) if n else np.zeros(0, np.int64)
    return rows_digest(np.asarray(rows[idx]) if n else np.zeros((0,) + rows.shape[1:], rows.dtype))


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    here = pathlib.Path(__file__).parent
    h = hashlib.sha256()
    for name in NUMERICAL_SOURCES:
        _tag(h, name)
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()


def manifest(family, route_name: str, method, lead: tuple, dtype, *, rtol: float, chunk: int, checkpoint: int,
             time_budget, devices) -> dict:
    """The description of a sweep that ``PATH`` must match to be resumed (``fingerprint`` hashes ``compare``)."""
    import jaxlib  # noqa: PLC0415 (jaxlib is JAX's own dependency; only its version is read)

    compare = {
        "layout": LAYOUT_VERSION,
        "family": {"class": f"{type(family).__module__}.{type(family).__qualname__}", "name": family.name,
                   "dim": int(family.dim), "digest": family_digest(family)},
        "points": {"shape": [int(s) for s in lead], "dtype": np.dtype(dtype).str},
        "options": {"method": method, "route": route_name, "rtol": float(rtol), "chunk_size": int(chunk),
                    "checkpoint_size": int(checkpoint), "time_budget": time_budget},
        "numerics": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "device_kind": sorted({d.device_kind for d in devices}),
                     "platform": sorted({d.platform for d in devices}),
                     "x64": bool(jax.config.jax_enable_x64), "code": code_digest()},
    }
    fp = hashlib.sha256(json.dumps(compare, sort_keys=True).encode()).hexdigest()
    n = int(np.prod(lead, dtype=np.int64))
    return {"fingerprint": fp, "compare": compare, "points": n, "checkpoint_size": int(checkpoint),
            "checkpoints": -(-n // checkpoint) if n else 0}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(stored: dict, asked: dict, names=("PATH holds", "this call")) -> list[str]:
    """``"field: <names[0]> a, <names[1]> b"`` for every (dotted) field where two descriptions differ."""
    a, b = _flatten(stored), _flatten(asked)
    return [f"{k}: {names[0]} {a.get(k)!r}, {names[1]} {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# --------------------------------------------------------------------------- small file helpers


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: pathlib.Path, obj) -> None:
    """Atomically: a temporary file, flushed and fsync-ed, renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: pathlib.Path):
    with open(path) as f:
        return json.load(f)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _create_npy(path: pathlib.Path, dtype: np.dtype, shape: tuple, fill=None) -> int:
    """A ``.npy`` file of ``shape``, data zero (sparse) or ``fill``; returns the data offset."""
    n = int(np.prod(shape, dtype=np.int64))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype.str, "fortran_order": False, "shape": tuple(shape)})
        offset = f.tell()
        f.truncate(offset + n * dtype.itemsize)
        if fill is not None and n:
            block = np.full(min(n, _WRITE_BLOCK), fill, dtype).tobytes()
            for start in range(0, n, _WRITE_BLOCK):
                k = min(_WRITE_BLOCK, n - start)
                os.pwrite(f.fileno(), block[: k * dtype.itemsize], offset + start * dtype.itemsize)
        f.flush()
        os.fsync(f.fileno())
    return offset


# --------------------------------------------------------------------------- the store


class Store:
    """One sweep directory: its manifest, per-point files, checkpoint records and accounting."""

    def __init__(self, path: pathlib.Path, man: dict):
        self.path, self.manifest = path, man
        self.size = int(man["checkpoint_size"])
        self.points = int(man["points"])
        self.checkpoints = int(man["checkpoints"])
        self._fds: dict = {}
        self._log = None
        self._lock = None
        self._writer = None
        self.write_seconds = 0.0  # time spent hashing, writing and syncing checkpoints (in the writer thread)

    # ---- opening

    @classmethod
    def create_or_open(cls, path, man: dict) -> "Store":
        """The coordinator's entry: create ``path`` for ``man`` or open it to resume; refuse a mismatch."""
        path = pathlib.Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"out={str(path)!r} exists and is not a directory; pass a directory path for the sweep results")
        if path.is_dir() and not (path / MANIFEST).exists() and any(path.iterdir()):
            raise ValueError(
                f"out={str(path)!r} is a non-empty directory without {MANIFEST}: it does not hold a geometry.sweep; "
                "pass a new or empty directory (nothing there is overwritten)")
        path.mkdir(parents=True, exist_ok=True)
        store = cls(path, man)
        store._take_lock()
        try:
            if (path / MANIFEST).exists():
                stored = read_json(path / MANIFEST)
                diff = differences(stored.get("compare", {}), man["compare"])
                if diff or stored.get("fingerprint") != man["fingerprint"]:
                    raise ValueError(
                        f"out={str(path)!r} holds a different sweep; refusing to mix results. Differences:\n  "
                        + "\n  ".join(diff or ["fingerprint"])
                        + "\nCall sweep with the same family, points and options to resume, or pass a new out= directory.")
                store.manifest = stored
            else:
                store._create()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def attach(cls, path) -> "Store":
        """A non-coordinating process's entry, after the coordinator created or checked ``path``."""
        path = pathlib.Path(path)
        return cls(path, read_json(path / MANIFEST))

    def _take_lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            self._lock = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise ValueError(
                    f"out={str(self.path)!r} is being written by another running sweep (its lock file is held); wait for "
                    "it to finish or pass another directory") from None
            # a filesystem without flock (some network filesystems): go on without the lock
        self._lock = fd

    def _create(self) -> None:
        shape = tuple(self.manifest["compare"]["points"]["shape"])
        (self.path / PROGRESS).mkdir(exist_ok=True)
        offsets = {}
        for name, dtype in FIELDS.items():
            offsets[name] = _create_npy(self.path / f"{name}.npy", dtype, shape, PENDING if name == "status" else None)
        self.manifest = dict(self.manifest, offsets=offsets, created=_now(), layout=LAYOUT_VERSION)
        write_json(self.path / MANIFEST, self.manifest)  # last: a directory with a manifest has every file

    # ---- the grid

    def unit_rows(self, unit: int) -> tuple[int, int]:
        return unit * self.size, min((unit + 1) * self.size, self.points)

    # ---- records

    def records(self) -> dict:
        """``{unit: record}`` of the complete checkpoints (well-formed lines only; the last written wins)."""
        out = {}
        logs = sorted((self.path / PROGRESS).glob("process-*.jsonl"))
        for log in logs:
            with open(log, "rb") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        unit = int(rec["unit"])
                        ok = (0 <= unit < self.checkpoints and (rec["start"], rec["stop"]) == self.unit_rows(unit)
                              and set(rec["output"]) == set(FIELDS) and int(rec["counts"]["total"]) == rec["stop"] - rec["start"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn line (killed while writing) or a foreign one: not a completion
                    if ok and (unit not in out or rec.get("written", 0) >= out[unit].get("written", 0)):
                        out[unit] = rec
        return out

    def _offset(self, name: str, row: int) -> int:
        return int(self.manifest["offsets"][name]) + row * FIELDS[name].itemsize

    def read(self, name: str, start: int, stop: int) -> bytes:
        with open(self.path / f"{name}.npy", "rb") as f:
            return os.pread(f.fileno(), (stop - start) * FIELDS[name].itemsize, self._offset(name, start))

    def verify(self, rec: dict, block: np.ndarray) -> str:
        """``"ok"``, ``"input"`` (the rows of ``theta`` differ from those it was computed from) or ``"output"``
        (the stored bytes do not match what was written: recompute)."""
        if rows_digest(block) != rec["input"]:
            return "input"
        for name in FIELDS:
            if zlib.crc32(self.read(name, rec["start"], rec["stop"])) != rec["output"][name]:
                return "output"
        return "ok"

    def submit(self, *args):
        """:meth:`write` in the background (one thread: checkpoints are marked in order), so hashing and
        syncing overlap the next checkpoint's computation; returns its future (``result()`` re-raises)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geometry-checkpoint")
        return self._writer.submit(self.write, *args)

    def write(self, unit: int, block: np.ndarray, values: dict, counts: dict, reasons: dict, process: int, extra: dict) -> None:
        """Write one checkpoint's values, sync them to disk, then append (and sync) its completion record."""
        t0 = time.perf_counter()
        start, stop = self.unit_rows(unit)
        crc = {}
        for name, dtype in FIELDS.items():
            data = np.ascontiguousarray(values[name], dtype).tobytes()
            if name not in self._fds:
                self._fds[name] = os.open(self.path / f"{name}.npy", os.O_WRONLY)
            fd = self._fds[name]
            view, pos, offset = memoryview(data), 0, self._offset(name, start)
            while pos < len(data):
                pos += os.pwrite(fd, view[pos:], offset + pos)
            crc[name] = zlib.crc32(data)
        for fd in self._fds.values():
            _datasync(fd)
        if self._log is None:
            log = self.path / PROGRESS / f"process-{process:05d}.jsonl"
            self._log = open(log, "a")
            if log.stat().st_size:  # a line torn by a kill must not swallow the next one
                with open(log, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        self._log.write("\n")
        rec = {"unit": unit, "start": start, "stop": stop, "input": rows_digest(block), "output": crc, "counts": counts,
               "reasons": {str(k): v for k, v in sorted(reasons.items())}, "process": process,
               "written": datetime.datetime.now(datetime.timezone.utc).timestamp(), **extra}
        self._log.write(json.dumps(rec, sort_keys=True) + "\n")
        self._log.flush()
        _datasync(self._log.fileno())
        self.write_seconds += time.perf_counter() - t0

    # ---- the end

    def finish(self, processes: int) -> dict:
        """Check that the complete checkpoints cover every point exactly once; write ``reasons.json`` and, last,
        ``accounting.json`` (``complete: true``).  Raises if a checkpoint is missing."""
        recs = self.records()
        missing = [u for u in range(self.checkpoints) if u not in recs]
        if missing:
            raise RuntimeError(f"{len(missing)} of {self.checkpoints} checkpoints of {self.path} are not complete "
                               f"(first: {missing[0]}); the sweep is not finished")
        total = {"total": 0, **{name: 0 for name in STATUS_NAMES.values()}}
        by_process: dict = {}
        reasons = {}
        covered = 0
        for u in range(self.checkpoints):
            rec = recs[u]
            covered += rec["stop"] - rec["start"]
            per = by_process.setdefault(str(rec["process"]), {k: 0 for k in total})
            for k in total:
                total[k] += int(rec["counts"].get(k, 0))
                per[k] += int(rec["counts"].get(k, 0))
            reasons.update(rec["reasons"])
        if covered != self.points or total["total"] != self.points or sum(total[n] for n in STATUS_NAMES.values()) != self.points:
            raise RuntimeError(f"accounting of {self.path} does not add up: {covered} rows covered, counts {total}, "
                               f"{self.points} points")
        write_json(self.path / REASONS, {k: reasons[k] for k in sorted(reasons, key=int)})
        acc = {"complete": True, "points": self.points, "counts": total, "by_process": by_process,
               "checkpoints": self.checkpoints, "checkpoint_size": self.size, "covered_exactly_once": True,
               "processes_last_call": processes, "fingerprint": self.manifest["fingerprint"], "finished": _now()}
        write_json(self.path / ACCOUNTING, acc)
        return acc

    def close(self) -> None:
        """Finish the checkpoint being written (its results are complete), then release the files and the lock."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


def load_accounting(path) -> dict | None:
    p = pathlib.Path(path) / ACCOUNTING
    return read_json(p) if p.exists() else None
