r"""The processes of one multi-controller JAX program (layer 9): shares, agreement, failures, gathering.

With :func:`jax.distributed.initialize` called in every process, each process runs the same
program and calls :func:`geometry.sweep` the same number of times, in the same order, with the
same arguments.  This module holds what one such call needs from the runtime, and nothing of
the geometry:

* :func:`group` -- who takes part: the processes owning at least one of the sweep's devices
  (*participants*, ranked by process index), and the process that coordinates (the first one);
* :func:`share` -- a contiguous, chunk-aligned part of ``range(N)`` per participant (every row in
  exactly one part, in order, so the parts concatenate to the whole);
* :meth:`Group.publish` / :meth:`Group.wait` -- small string messages through the key-value
  store of JAX's coordination service, under a prefix private to the call
  (``geometry/sweep/<k>/`` for the ``k``-th call);
* :meth:`Group.check` -- raises as soon as another process has published an error or its
  heartbeat (a counter each process increments every :data:`BEAT_INTERVAL` seconds from a
  daemon thread, ``geometry/beat/<i>``) has not moved for :func:`stale_after` seconds (the
  runtime's own ``get_live_nodes`` is a barrier, so it cannot serve a process that only looks);
* :meth:`Group.allgather` -- numpy arrays of unequal length from every process, through
  :func:`jax.experimental.multihost_utils.process_allgather` (collectives: gloo on CPU, NCCL on
  GPU), run only after every process has published that it succeeded, so a collective never
  waits on a process that has already failed.

Failures.  A process that raises publishes the error before it propagates, and every other
process raises at its next check (:class:`ProcessFailedError`, or the same ``ValueError`` /
``TypeError`` prefixed with the process that raised it).  A process that dies (killed, out of
memory) stops sending heartbeats; after the runtime's heartbeat timeout
(``jax.distributed.initialize(heartbeat_timeout_seconds=...)``, 100 s by default;
:func:`geometry.launch.initialize` reads it from the launcher) JAX's coordination service
terminates the other processes with a message naming the dead task; before that (half the
timeout, at least 5 s) :meth:`Group.check` raises :class:`ProcessFailedError` naming it, so the other processes
usually stop with a Python exception (and, with ``jax_enable_recoverability``, survive it).
Either way no process waits for ever.  The runtime's client is reached as
``jax._src.distributed.global_state.client``, as :mod:`jax.experimental.multihost_utils` does.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
import time

import jax
import numpy as np
from jax._src import distributed as _jax_distributed
from jax.experimental import multihost_utils

#: Seconds between two liveness/error checks of the other processes while computing.
CHECK_INTERVAL = 0.5
#: Longest pause between two polls of the key-value store while waiting.
POLL_MAX = 0.05
#: Seconds a process waits for every other one to enter the same call (they run the same program).
HANDSHAKE_TIMEOUT = 600.0

#: Seconds between two heartbeats of a process.
BEAT_INTERVAL = 1.0

_CALLS = itertools.count()


def stale_after() -> float:
    """Seconds without a heartbeat after which a process counts as stopped: half the runtime's heartbeat
    timeout (``GEOMETRY_HEARTBEAT_TIMEOUT``, set by :mod:`geometry.launch`; else JAX's 100 s), at least 5."""
    try:
        timeout = float(os.environ.get("GEOMETRY_HEARTBEAT_TIMEOUT", "100"))
    except ValueError:
        timeout = 100.0
    return max(5.0, 0.5 * timeout)


class _Heartbeat:
    """One daemon thread per process: increments ``geometry/beat/<index>`` every :data:`BEAT_INTERVAL` s."""

    def __init__(self, kv, index: int):
        self.kv, self.key = kv, f"geometry/beat/{index}"
        self.kv.key_value_increment(self.key, 1)
        threading.Thread(target=self._run, name="geometry-heartbeat", daemon=True).start()

    def _run(self):
        while True:
            time.sleep(BEAT_INTERVAL)
            try:
                self.kv.key_value_increment(self.key, 1)
            except Exception:  # noqa: BLE001 (the runtime is gone: this process is ending anyway)
                return


_HEARTBEAT: list = []


class ProcessFailedError(RuntimeError):
    """Another process of the program failed or stopped; ``process`` is its index."""

    def __init__(self, message: str, process: int | None = None):
        super().__init__(message)
        self.process = process


def client():
    """The distributed runtime's client, or ``None`` in a program of one process."""
    return _jax_distributed.global_state.client if jax.process_count() > 1 else None


def share(n: int, align: int, rank: int, ranks: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of participant ``rank`` of ``ranks``: whole blocks of ``align`` rows, split as
    evenly as whole blocks allow; the parts of ranks ``0 .. ranks-1`` partition ``range(n)`` in order."""
    blocks = -(-n // align)
    lo, hi = blocks * rank // ranks, blocks * (rank + 1) // ranks
    return min(lo * align, n), min(hi * align, n)


def split(items: list, rank: int, ranks: int) -> list:
    """The contiguous part of ``items`` that participant ``rank`` of ``ranks`` takes."""
    k = len(items)
    return items[k * rank // ranks : k * (rank + 1) // ranks]


def _error_text(exc: BaseException) -> str:
    return json.dumps({"type": type(exc).__name__, "message": str(exc)})


@dataclasses.dataclass
class Group:
    """The processes of one sweep call.

    ``index``/``count``: this process and the number of processes of the program;
    ``participants``: indices of the processes that compute (own at least one of the devices);
    ``coordinator``: ``participants[0]``; ``prefix``: this call's keys in the key-value store.
    With one process every method is a no-op.
    """

    index: int
    count: int
    participants: tuple
    prefix: str
    kv: object = None
    number: int = 0  # this call's position among the program's sweep calls
    _last_check: float = 0.0
    _beats: dict = dataclasses.field(default_factory=dict)  # process -> (last count seen, local time it changed)

    @property
    def coordinator(self) -> int:
        return self.participants[0]

    @property
    def rank(self) -> int | None:
        """Position among the participants (``None``: this process only waits for the others)."""
        return self.participants.index(self.index) if self.index in self.participants else None

    @property
    def distributed(self) -> bool:
        return self.kv is not None

    # ----------------------------------------------------------------------- messages

    def publish(self, key: str, value: str = "") -> None:
        if self.kv is not None:
            self.kv.key_value_set(f"{self.prefix}/{key}/{self.index}", value)

    def wait(self, key: str, what: str, ids=None, timeout: float | None = None) -> dict:
        """``{process: value}`` of ``key`` once every process in ``ids`` (default: all) has published it.

        Raises when another process published an error or stopped (:meth:`check`), and after
        ``timeout`` seconds (``None``: none) with the processes still missing."""
        ids = tuple(range(self.count)) if ids is None else tuple(ids)
        if self.kv is None:
            return {}
        start, pause = time.monotonic(), 0.002
        while True:
            got = {int(k.rsplit("/", 1)[1]): v for k, v in self.kv.key_value_dir_get(f"{self.prefix}/{key}/")}
            if all(i in got for i in ids):
                return got
            self.check(what, force=True)
            if timeout is not None and time.monotonic() - start > timeout:
                missing = [i for i in ids if i not in got]
                raise ProcessFailedError(
                    f"processes {missing} of {self.count} did not reach '{what}' within {timeout:g} s: every process "
                    "must call geometry.sweep the same number of times, in the same order, with the same arguments",
                    missing[0],
                )
            time.sleep(pause)
            pause = min(2 * pause, POLL_MAX)

    def check(self, what: str, force: bool = False) -> None:
        """Raise if another process published an error or no longer sends heartbeats (at most every
        :data:`CHECK_INTERVAL` seconds unless ``force``)."""
        if self.kv is None:
            return
        now = time.monotonic()
        if not force and now - self._last_check < CHECK_INTERVAL:
            return
        self._last_check = now
        for key, value in self.kv.key_value_dir_get(f"{self.prefix}/error/"):
            proc = int(key.rsplit("/", 1)[1])
            if proc == self.index:
                continue
            err = json.loads(value)
            text = f"process {proc} of {self.count} failed while {what}: {err['type']}: {err['message']}"
            if err["type"] in ("ValueError", "TypeError"):  # bad input: the same error class in every process
                raise (ValueError if err["type"] == "ValueError" else TypeError)(text)
            raise ProcessFailedError(text, proc)
        limit = stale_after()
        for key, value in self.kv.key_value_dir_get("geometry/beat/"):
            proc = int(key.rsplit("/", 1)[1])
            if proc == self.index:
                continue
            seen = self._beats.get(proc)
            if seen is None or seen[0] != value:
                self._beats[proc] = (value, now)
            elif now - seen[1] > limit:
                raise ProcessFailedError(
                    f"process {proc} of {self.count} stopped (no heartbeat for {now - seen[1]:.0f} s) while {what}; "
                    "nothing it had not finished is reported as done", proc)

    def forget_previous(self) -> None:
        """Delete the previous call's keys; safe once every process has entered this call (they all left that one)."""
        if self.kv is not None and self.number and self.index == 0:
            try:
                self.kv.key_value_delete(f"geometry/sweep/{self.number - 1}/")
            except Exception:  # noqa: BLE001 (a few stale keys cost nothing)
                pass

    def fail(self, exc: BaseException) -> None:
        """Tell the other processes that this one failed (best effort: the runtime may be gone)."""
        if self.kv is None or isinstance(exc, ProcessFailedError):
            return
        try:
            self.kv.key_value_set(f"{self.prefix}/error/{self.index}", _error_text(exc))
        except Exception:  # noqa: BLE001 (the coordination service itself may have failed; the error propagates anyway)
            pass

    # ----------------------------------------------------------------------- data

    def allgather(self, arrays: list) -> list:
        """Each of ``arrays`` (1-d numpy, any length; dtypes the same in every process) concatenated over the
        processes in index order.  Every process calls it, after :meth:`wait` on success.

        The arrays travel as one byte buffer per process, padded to a power of two, so repeated
        calls reuse the collective's compiled program instead of compiling one per shape."""
        if self.kv is None:
            return [np.asarray(a) for a in arrays]
        arrays = [np.ascontiguousarray(a) for a in arrays]
        sizes = np.array([a.nbytes for a in arrays], np.int64)
        all_sizes = np.asarray(multihost_utils.process_allgather(sizes))  # (count, len(arrays))
        width = 1 << max(0, int(all_sizes.sum(axis=1).max() - 1).bit_length())
        buf = np.zeros(width, np.uint8)
        if sizes.sum():
            buf[: sizes.sum()] = np.frombuffer(b"".join(a.tobytes() for a in arrays), np.uint8)
        stacked = np.asarray(multihost_utils.process_allgather(buf))  # (count, width)
        out = [[] for _ in arrays]
        for p in range(self.count):
            pos = 0
            for j, a in enumerate(arrays):
                k = int(all_sizes[p, j])
                out[j].append(np.frombuffer(stacked[p, pos : pos + k].tobytes(), a.dtype))
                pos += k
        return [np.concatenate(parts) for parts in out]


def group(devices) -> Group:
    """The :class:`Group` of a sweep over ``devices`` (a new key prefix per call in every process)."""
    count, index = jax.process_count(), jax.process_index()
    participants = tuple(sorted({d.process_index for d in devices}))
    kv = client()
    number = next(_CALLS) if kv is not None else 0
    if kv is not None and not _HEARTBEAT:
        _HEARTBEAT.append(_Heartbeat(kv, index))
    return Group(index, count, participants, f"geometry/sweep/{number}" if kv is not None else "", kv, number)
