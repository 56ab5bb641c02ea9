"""Multi-process sweeps on jax.distributed: two processes on localhost, checkpoints, resume, faults, launcher.

* Two processes (``geometry.launch``, CPU collectives, a free port chosen at run time) give, for a
  softmax family and an exponential family with high-precision fallbacks in both shares, the
  one-process sweep bit for bit -- gathered in memory and written to ``out=PATH`` -- and their
  point accounting covers every point exactly once.
* Bad points in one process's share raise the same ``ValueError`` (global index) in both;
  different arguments in the two processes are refused.
* Killing one process mid-sweep stops the other with an error naming it, leaves ``PATH``
  unfinished (nothing presented as complete), and a second run resumes it to the same bits.
* One process: an interrupted sweep resumes to the same bits and skips what was verified; a call
  that differs from what ``PATH`` holds is refused; ``PATH``'s files open with numpy.
* The launcher's exit status reflects a failing process.

Every subprocess has a timeout (the launcher's ``timeout`` and ``subprocess.run(timeout=...)``) and every
worker ends by itself.  The workers share a persistent compilation cache, so only the first run compiles.
"""

import fcntl
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import geometry
from geometry import launch
from geometry._src import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 128
#: Seconds without heartbeat after which the runtime (and a sweep) treats a process as dead.
HEARTBEAT = 3
#: Upper bound for one launcher run of the workers below (compilation included), seconds.
RUN_TIMEOUT = 150

CASES = textwrap.dedent(
    """
    import numpy as np
    import geometry

    def gamma_log_partition(eta, xp):
        return xp.lgamma(eta[0] + 1) - (eta[0] + 1) * xp.log(-eta[1])

    def cases():
        rng = np.random.default_rng(18)
        att = geometry.attention(rng.normal(size=(16, 2)))
        th_att = np.vstack([rng.normal(size=(1500, 2)), 30.0 * rng.normal(size=(12, 2))])  # low entropy: double-double
        rng.shuffle(th_att)
        gam = geometry.exponential_family(gamma_log_partition, dim=2, name="gamma")
        th_gam = np.column_stack([rng.uniform(0.5, 3.0, 500), -rng.uniform(0.5, 3.0, 500)])
        th_gam[[7, 301]] = [[1e4, -2.0], [1e7, -1.0]]  # recomputed in mpmath, one in each process's share
        th_plain = rng.normal(size=(1200, 2))  # all accepted in float64: nothing more to compile when resuming
        return {"attention": (att, th_att), "gamma": (gam, th_gam.reshape(20, 25, 2)), "plain": (att, th_plain)}
    """
)

WORKER = CASES + textwrap.dedent(
    """
    import json, os, signal, sys
    from geometry import launch

    pid, count = launch.initialize()
    assert count == 2, count
    mode, out, res = sys.argv[1], sys.argv[2], sys.argv[3]
    fams = cases()

    def save(name, r, info, stats=None):
        np.savez(os.path.join(res, f"{mode}-{name}-{pid}.npz"), R=r, rel=info.rel_error, status=info.status, dps=info.dps)
        meta = {"counts": info.counts(), "reasons": {str(k): v for k, v in info.reasons.items()}}
        if stats is not None:
            meta.update(process_points=stats.process_points, process_counts={str(k): v for k, v in stats.process_counts.items()},
                        skipped=stats.skipped_points, written=stats.checkpoints_written, processes=stats.processes)
        with open(os.path.join(res, f"{mode}-{name}-{pid}.json"), "w") as f:
            json.dump(meta, f)

    def tick(k):  # in "match", process 1 dies (SIGKILL) at the start of its second checkpoint of "plain"
        done[0] += k
        if mode == "match" and pid == 1 and done[0] > 256:
            os.kill(os.getpid(), signal.SIGKILL)

    done = [0]
    if mode == "match":
        for name in ("attention", "gamma"):
            fam, th = fams[name]
            r, info, st = geometry.sweep(fam, th, chunk_size=CHUNK, progress=False, return_info=True, return_stats=True)
            save(name, r, info, st)
            h, info, st = geometry.sweep(fam, th, chunk_size=CHUNK, progress=False, return_info=True, return_stats=True,
                                         out=os.path.join(out, name), checkpoint_size=CHUNK)
            assert h.complete
            save(name + "-disk", np.asarray(h.R), info, st)
        fam, th = fams["attention"]
        errors = {}
        bad = th.copy()
        bad[1400, 1] = np.nan  # in process 1's share
        for what, args in {"nan": (bad,), "differ": (th if pid == 0 else 2 * th,)}.items():
            try:
                geometry.sweep(fam, *args, chunk_size=CHUNK, progress=False)
            except ValueError as exc:
                errors[what] = str(exc)
        with open(os.path.join(res, f"errors-{pid}.json"), "w") as f:
            json.dump(errors, f)
    fam, th = fams["plain"]
    h, info, st = geometry.sweep(fam, th, chunk_size=CHUNK, progress=tick, return_info=True, return_stats=True,
                                 out=os.path.join(out, "resumed"), checkpoint_size=256)
    save("resumed", np.asarray(h.R), info, st)
    """
).replace("CHUNK", str(CHUNK))

NS: dict = {}
exec(CASES, NS)  # the same families and points as the workers


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("distributed")
    (d / "worker.py").write_text(WORKER)
    (d / "res").mkdir()
    return d


@pytest.fixture(scope="module")
def match_started(workdir):
    """Run "match" in two processes, in the background (the one-process reference is computed meanwhile):
    the sweeps, the error cases, then process 1 killed at its second checkpoint of "plain"."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=_run(workdir, "match")), daemon=True)
    thread.start()
    return thread, box


@pytest.fixture(scope="module")
def reference(match_started):
    """The one-process sweep of every case (same chunk size): R and its CurvatureInfo."""
    out = {}
    for name, (fam, th) in NS["cases"]().items():
        out[name] = geometry.sweep(fam, th, chunk_size=CHUNK, progress=False, return_info=True)
    return out


@pytest.fixture(scope="module")
def match_run(match_started, reference):
    thread, box = match_started
    thread.join(RUN_TIMEOUT + 30)  # the launcher's own timeout ends the workers before this
    assert "result" in box, "the two-process run did not finish"
    return box["result"]


def _run(workdir, mode, timeout=RUN_TIMEOUT):
    """The worker in ``mode`` as two processes; ``(exit status, stdout, stderr, seconds)``."""
    out, err = io.BytesIO(), io.BytesIO()
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=str(workdir / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    t0 = time.monotonic()
    rc = launch.launch([str(workdir / "worker.py"), mode, str(workdir / "out"), str(workdir / "res")], 2,
                       heartbeat_timeout=HEARTBEAT, grace=20, timeout=timeout, env=env, out=out, err=err)
    return rc, out.getvalue().decode(), err.getvalue().decode(), time.monotonic() - t0


def _load(workdir, stem, pid):
    data = np.load(workdir / "res" / f"{stem}-{pid}.npz")
    with open(workdir / "res" / f"{stem}-{pid}.json") as f:
        return data, json.load(f)


def _assert_bitwise(data, r_ref, info_ref):
    for got, ref in ((data["R"], r_ref), (data["rel"], info_ref.rel_error), (data["status"], info_ref.status), (data["dps"], info_ref.dps)):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        assert np.array_equal(got, ref, equal_nan=True)


def test_two_processes_give_the_one_process_bits_and_account_every_point_once(workdir, reference, match_run):
    rc, out, err, _ = match_run
    assert (workdir / "res" / "errors-0.json").exists() and (workdir / "res" / "errors-1.json").exists(), (out + err)[-4000:]
    for name in ("attention", "gamma"):
        r_ref, info_ref = reference[name]
        n = r_ref.size
        assert info_ref.counts()["high_precision"] >= 2  # the fallback tiers ran, in both shares (below)
        for stem in (f"match-{name}", f"match-{name}-disk"):
            shares = []
            for pid in (0, 1):
                data, meta = _load(workdir, stem, pid)
                _assert_bitwise(data, r_ref, info_ref)
                assert meta["counts"] == info_ref.counts()
                assert {int(k): v for k, v in meta["reasons"].items()} == info_ref.reasons
                assert meta["processes"] == 2
                shares.append(meta["process_points"])
                per = meta["process_counts"]
                # each process accounted its own share; together every point exactly once
                assert sorted(per) == ["0", "1"] and sum(c["total"] for c in per.values()) == n
                assert all(c["high_precision"] >= 1 for c in per.values()), per
                for k in info_ref.counts():
                    assert sum(c[k] for c in per.values()) == info_ref.counts()[k]
            assert sum(shares) == n and min(shares) > 0
        h = geometry.open_sweep(workdir / "out" / name)
        acc = json.loads((workdir / "out" / name / store.ACCOUNTING).read_text())
        assert h.complete and acc["covered_exactly_once"] and acc["counts"] == info_ref.counts()
        assert sum(c["total"] for c in acc["by_process"].values()) == n
        # the layout a user reads with numpy alone
        assert np.array_equal(np.load(workdir / "out" / name / "R.npy", mmap_mode="r"), r_ref, equal_nan=True)
    errors = [json.loads((workdir / "res" / f"errors-{pid}.json").read_text()) for pid in (0, 1)]
    assert "flat index 1400" in errors[1]["nan"] and "NaN" in errors[1]["nan"]
    assert "process 1 of 2" in errors[0]["nan"] and "flat index 1400" in errors[0]["nan"]
    for e in errors:
        assert "different arguments in process" in e["differ"]


def test_a_killed_process_stops_the_other_and_a_second_run_resumes_to_the_same_bits(workdir, reference, match_run):
    rc, out, err, seconds = match_run
    assert rc != 0
    assert "process 1 was killed by SIGKILL (first to fail)" in err, err[-3000:]
    # the survivor stopped by itself (no terminate from the launcher), with an error naming process 1
    assert "terminating process 0" not in err, err[-3000:]
    named = ("process 1 of 2 stopped", "tasks are unhealthy (stopped sending heartbeats):\n[0] 1")
    assert any(s in err for s in named), err[-3000:]
    path = workdir / "out" / "resumed"
    with pytest.raises(ValueError, match="unfinished"):
        geometry.open_sweep(path)
    partial = geometry.open_sweep(path, partial=True)
    counts = partial.counts()
    assert not partial.complete and 0 < counts["pending"] < counts["total"]
    assert not (path / store.ACCOUNTING).exists()
    status = partial.status  # rows written but not yet marked complete show as pending too
    assert np.sum(status == store.PENDING) == counts["pending"] and np.all(status >= store.PENDING)

    rc, out, err, _ = _run(workdir, "resume")
    assert rc == 0, (out + err)[-4000:]
    r_ref, info_ref = reference["plain"]
    skipped = 0
    for pid in (0, 1):
        data, meta = _load(workdir, "resume-resumed", pid)
        _assert_bitwise(data, r_ref, info_ref)
        assert meta["counts"] == info_ref.counts()
        skipped += meta["skipped"]
    assert skipped == r_ref.size - counts["pending"]  # the checkpoints done before the kill were verified and kept
    assert geometry.open_sweep(path).counts() == info_ref.counts()


def test_an_interrupted_sweep_resumes_and_a_different_call_is_refused(tmp_path, reference):
    fam, th = NS["cases"]()["gamma"]
    r_ref, info_ref = reference["gamma"]
    path = tmp_path / "sweep"
    seen = [0]

    def interrupt(k):
        seen[0] += k
        if seen[0] > 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        geometry.sweep(fam, th, chunk_size=CHUNK, progress=interrupt, out=path, checkpoint_size=256)
    with pytest.raises(ValueError, match="unfinished"):
        geometry.open_sweep(path)
    assert geometry.open_sweep(path, partial=True).counts()["pending"] == r_ref.size - 256
    for kw, field in [({"rtol": 1e-6}, "options.rtol"), ({"method": "hessian"}, "options.method"),
                      ({"checkpoint_size": 512}, "options.checkpoint_size"), ({"chunk_size": 64}, "options.chunk_size")]:
        with pytest.raises(ValueError, match=field):
            geometry.sweep(fam, th, **{"chunk_size": CHUNK, "checkpoint_size": 256, **kw}, progress=False, out=path)
    other = geometry.exponential_family(lambda eta, xp: NS["gamma_log_partition"](eta, xp) + 0.0 * eta[0], dim=2, name="gamma")
    with pytest.raises(ValueError, match="family.digest"):
        geometry.sweep(other, th, chunk_size=CHUNK, checkpoint_size=256, progress=False, out=path)
    moved = th.copy()
    moved[0, 0, 0] += 1e-12
    with pytest.raises(ValueError, match=r"theta differs .* rows 0\.\.255"):
        geometry.sweep(fam, moved, chunk_size=CHUNK, checkpoint_size=256, progress=False, out=path)
    with pytest.raises(ValueError, match="points.shape"):
        geometry.sweep(fam, th.reshape(-1, 2), chunk_size=CHUNK, checkpoint_size=256, progress=False, out=path)
    h, info, st = geometry.sweep(fam, th, chunk_size=CHUNK, checkpoint_size=256, progress=False, out=path,
                                 return_info=True, return_stats=True)
    assert st.skipped_points == 256 and st.checkpoints_written == 1
    assert h.complete and h.R.shape == r_ref.shape
    _assert_bitwise({"R": h.R, "rel": h.rel_error, "status": h.status, "dps": h.dps}, r_ref, info_ref)
    assert info.counts() == info_ref.counts() and info.reasons == info_ref.reasons
    # a checkpoint whose stored bytes were damaged is recomputed, not trusted
    with open(path / "R.npy", "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)
    h, st = geometry.sweep(fam, th, chunk_size=CHUNK, checkpoint_size=256, progress=False, out=path, return_stats=True)
    assert st.checkpoints_written == 1 and np.array_equal(h.R, r_ref)


def test_sweep_to_disk_arguments_are_checked(tmp_path):
    fam = geometry.categorical(3)
    th = np.zeros((4, 2))
    with pytest.raises(TypeError, match="out must be"):
        geometry.sweep(fam, th, out=3)
    with pytest.raises(ValueError, match="checkpoint_size only applies with out"):
        geometry.sweep(fam, th, checkpoint_size=10)
    with pytest.raises(ValueError, match="checkpoint_size must be"):
        geometry.sweep(fam, th, checkpoint_size=0, out=tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "data.txt").write_text("mine")
    with pytest.raises(ValueError, match="does not hold a geometry.sweep"):
        geometry.sweep(fam, th, out=tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="does not hold a geometry.sweep"):
        geometry.open_sweep(tmp_path / "b")
    h = geometry.sweep(fam, np.zeros((0, 2)), out=tmp_path / "empty", progress=False)
    assert h.complete and h.R.shape == (0,) and h.counts()["total"] == 0
    h = geometry.sweep(fam, th, out=tmp_path / "c", progress=False)
    with open(tmp_path / "c" / store.LOCK) as held:  # another sweep writing there now
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="being written by another running sweep"):
            geometry.sweep(fam, th, out=tmp_path / "c", progress=False)
    assert geometry.sweep(fam, th, out=tmp_path / "c", progress=False).complete


def test_launcher_exit_status_reflects_a_failing_process(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(
        """
        import os, sys
        i = int(os.environ["GEOMETRY_PROCESS_ID"])
        print(f"process {i} of {os.environ['GEOMETRY_NUM_PROCESSES']} at {os.environ['GEOMETRY_COORDINATOR_ADDRESS']}")
        sys.exit(3 if i == 1 else 0)
        """))
    proc = subprocess.run([sys.executable, "-m", "geometry.launch", "--processes", "2", "--timeout", "60", str(script)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 3, proc.stderr
    assert "[0] process 0 of 2 at 127.0.0.1:" in proc.stdout and "[1] process 1 of 2" in proc.stdout
    assert "process 1 exited with status 3" in proc.stderr
    assert launch.main(["-n", "2", "--timeout", "60", "-m", "json.tool", "--help"]) == 0  # -m MODULE, all succeed


def test_family_fingerprint_sees_leaves_static_fields_and_user_functions():
    keys = np.random.default_rng(5).normal(size=(6, 2))
    digest = store.family_digest
    assert digest(geometry.attention(keys)) == digest(geometry.attention(keys.copy()))  # values, not identity
    nudged = keys.copy()
    nudged[3, 1] = np.nextafter(nudged[3, 1], np.inf)
    assert digest(geometry.attention(nudged)) != digest(geometry.attention(keys))  # one ulp of one key
    assert digest(geometry.attention(keys, scale=0.5)) != digest(geometry.attention(keys))
    assert digest(geometry.categorical(3)) != digest(geometry.categorical(3, temperature=2.0))

    def family(c):
        return geometry.exponential_family(lambda eta, xp: NS["gamma_log_partition"](eta, xp) + c * eta[0], dim=2, name="g")

    assert digest(family(0.0)) == digest(family(0.0))  # a closure over the same value
    assert digest(family(0.0)) != digest(family(1e-300))  # ... and over another one
