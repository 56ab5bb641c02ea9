r"""Run a script as N local processes of one ``jax.distributed`` program, and join such a program.

Command line (local runs and tests)::

    python -m geometry.launch --processes N [options] SCRIPT [ARGS...]
    python -m geometry.launch --processes N [options] -m MODULE [ARGS...]

starts N copies of ``python SCRIPT ARGS...`` with the coordinator address (a free port on
127.0.0.1 chosen at run time), the process ids and CPU collectives (gloo) in their environment,
forwards their output line by line prefixed ``[i]`` (stdout to stdout, stderr to stderr), and
exits with status 0 only if every process exits with 0.  When one process fails, the others get
``--grace`` seconds to stop by themselves (a sweep notices a failed peer; the JAX runtime stops
the others within its heartbeat timeout), then are terminated; the summary names each failed
process and how it ended.  Options: ``--port``, ``--heartbeat-timeout`` (seconds, default 10),
``--grace``, ``--timeout`` (seconds for the whole run, default none), ``--cpus-per-process K``
(pin process ``i`` to cores ``i*K .. i*K+K-1``; 0 = no pinning).

In SCRIPT, call :func:`initialize` before any other JAX computation::

    from geometry import launch
    launch.initialize()            # this launcher's environment, else the cluster's, else one process
    import geometry
    handle = geometry.sweep(family, theta, out="results/")   # each process computes its share

On a cluster the same SCRIPT runs under the cluster's launcher (``srun python SCRIPT`` under
SLURM, ``mpirun`` with Open MPI, ...): :func:`initialize` then calls
``jax.distributed.initialize()``, which reads the cluster's environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ENV_COORDINATOR = "GEOMETRY_COORDINATOR_ADDRESS"
ENV_PROCESSES = "GEOMETRY_NUM_PROCESSES"
ENV_PROCESS_ID = "GEOMETRY_PROCESS_ID"
ENV_HEARTBEAT = "GEOMETRY_HEARTBEAT_TIMEOUT"
#: Heartbeat timeout (seconds) of local runs: a dead process is noticed after this long.
DEFAULT_HEARTBEAT = 10
#: Seconds to wait for the processes to connect to the coordinator.
INIT_TIMEOUT = 120

__all__ = ["initialize", "launch", "main"]


def initialize(heartbeat_timeout: int | None = None, initialization_timeout: int | None = None) -> tuple[int, int]:
    """Join the ``jax.distributed`` program this process belongs to; returns ``(process_id, num_processes)``.

    * Started by ``python -m geometry.launch``: connects with the coordinator address, process id
      and count it set, CPU collectives ``gloo`` and its heartbeat timeout.
    * Otherwise ``jax.distributed.initialize()`` with no arguments, which detects a cluster
      (SLURM, Open MPI, Kubernetes, Cloud TPU; or ``JAX_COORDINATOR_ADDRESS`` and the count and id
      it needs); where there is none, the program is one process and nothing is initialised.
    * Already initialised: nothing changes.

    Call it before any other JAX computation.  ``heartbeat_timeout``: seconds without a heartbeat
    after which a process counts as dead (default: the launcher's, else JAX's 100).
    """
    import jax  # noqa: PLC0415 (the launcher itself runs without JAX)

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    kw = {}
    if heartbeat_timeout is not None or os.environ.get(ENV_HEARTBEAT):
        kw["heartbeat_timeout_seconds"] = int(heartbeat_timeout if heartbeat_timeout is not None else os.environ[ENV_HEARTBEAT])
    if initialization_timeout is not None:
        kw["initialization_timeout"] = int(initialization_timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if os.environ.get(ENV_PROCESS_ID) is not None:
        kw.setdefault("initialization_timeout", INIT_TIMEOUT)
        jax.distributed.initialize(coordinator_address=os.environ[ENV_COORDINATOR],
                                   num_processes=int(os.environ[ENV_PROCESSES]),
                                   process_id=int(os.environ[ENV_PROCESS_ID]), **kw)
    else:
        try:
            jax.distributed.initialize(**kw)
        except ValueError as exc:  # no cluster found: "coordinator_address should be defined" and the like
            if "should be defined" not in str(exc) and "must be defined" not in str(exc):
                raise
            return 0, 1
    return jax.process_index(), jax.process_count()


# --------------------------------------------------------------------------- the launcher


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(stream, sink, prefix: bytes, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sink.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            sink.flush()
    stream.close()


def _describe(rc: int) -> str:
    if rc == -signal.SIGINT:
        return "was interrupted (SIGINT)"
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _pin(cores):
    def pin():
        os.sched_setaffinity(0, cores)

    return pin


def launch(command: list[str], processes: int, *, port: int | None = None, heartbeat_timeout: int = DEFAULT_HEARTBEAT,
           grace: float | None = None, timeout: float | None = None, cpus_per_process: int = 0,
           env: dict | None = None, out=None, err=None) -> int:
    """Run ``python *command`` as ``processes`` processes of one program; the exit status (0: all succeeded).

    ``command``: ``[SCRIPT, *ARGS]`` or ``["-m", MODULE, *ARGS]``.  See the module docstring."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if not command:
        raise ValueError("command must name a SCRIPT (or -m MODULE) to run")
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    port = port or free_port()
    grace = heartbeat_timeout + 10.0 if grace is None else grace
    ncpu = os.cpu_count() or 1
    lock = threading.Lock()
    procs, threads = [], []
    base = dict(os.environ if env is None else env)
    base.update({ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_PROCESSES: str(processes), ENV_HEARTBEAT: str(heartbeat_timeout),
                 "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
                 "PYTHONUNBUFFERED": "1"})
    for i in range(processes):
        child_env = dict(base, **{ENV_PROCESS_ID: str(i)})
        cores = {(i * cpus_per_process + j) % ncpu for j in range(cpus_per_process)}
        # every child is started before any forwarding thread: preexec_fn (the pinning) is safe without threads
        procs.append(subprocess.Popen([sys.executable, *command], env=child_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, preexec_fn=_pin(cores) if cores else None))
    for i, p in enumerate(procs):
        for stream, sink in ((p.stdout, out), (p.stderr, err)):
            t = threading.Thread(target=_forward, args=(stream, sink, f"[{i}] ".encode(), lock), daemon=True)
            t.start()
            threads.append(t)

    def note(text: str) -> None:
        with lock:
            err.write(f"geometry.launch: {text}\n".encode())
            err.flush()

    start, failed_at, stopping = time.monotonic(), None, None
    codes: dict = {}
    first = None
    try:
        while len(codes) < processes:
            for i, p in enumerate(procs):
                if i not in codes and p.poll() is not None:
                    codes[i] = p.returncode
                    if p.returncode != 0 and first is None:
                        first, failed_at = i, time.monotonic()
                        if len(codes) < processes:
                            note(f"process {i} {_describe(p.returncode)}; waiting up to {grace:g} s for the others to stop")
            now = time.monotonic()
            reason = None
            if failed_at is not None and now - failed_at > grace:
                reason = f"still running {grace:g} s after process {first} failed"
            elif timeout is not None and now - start > timeout:
                reason = f"still running after the launcher's timeout of {timeout:g} s"
            if reason and stopping is None:
                stopping = now
                for i, p in enumerate(procs):
                    if i not in codes:
                        note(f"terminating process {i}: {reason}")
                        p.terminate()
            if stopping is not None and now - stopping > 5.0:
                for i, p in enumerate(procs):
                    if i not in codes:
                        p.kill()
            time.sleep(0.05)
    except KeyboardInterrupt:
        note("interrupted: forwarding SIGINT to every process")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        codes = {i: p.returncode for i, p in enumerate(procs)}
        first = next((i for i, c in codes.items() if c != 0), None)
    for t in threads:
        t.join(timeout=5.0)
    bad = {i: c for i, c in sorted(codes.items()) if c != 0}
    if not bad:
        return 0
    note("; ".join(f"process {i} {_describe(c)}" + (" (first to fail)" if i == first else "") for i, c in bad.items()))
    rc = codes[first] if first is not None else next(iter(bad.values()))
    return min(rc, 255) if rc > 0 else 128 - rc  # a signal: the shell's convention


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m geometry.launch",
        description="Run SCRIPT as N local processes of one jax.distributed program (CPU collectives: gloo).")
    parser.add_argument("--processes", "-n", type=int, required=True, help="number of processes")
    parser.add_argument("--port", type=int, default=None, help="coordinator port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--heartbeat-timeout", type=int, default=DEFAULT_HEARTBEAT,
                        help=f"seconds without heartbeat after which a process counts as dead (default {DEFAULT_HEARTBEAT})")
    parser.add_argument("--grace", type=float, default=None,
                        help="seconds the others get to stop after one fails, then they are terminated (default heartbeat + 10)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the whole run, then every process is terminated")
    parser.add_argument("--cpus-per-process", type=int, default=0, help="pin process i to cores i*K..i*K+K-1 (default 0: no pinning)")
    parser.add_argument("command", nargs="*", metavar="SCRIPT [ARGS...] | -m MODULE [ARGS...]",
                        help="what each process runs with this Python")
    argv = list(sys.argv[1:] if argv is None else argv)
    # the launcher's options end where SCRIPT (or -m MODULE) begins; everything after belongs to it
    takes_value = {"--processes", "-n", "--port", "--heartbeat-timeout", "--grace", "--timeout", "--cpus-per-process"}
    i = 0
    while i < len(argv) and argv[i] != "-m" and argv[i].startswith("-"):
        i += 2 if argv[i] in takes_value else 1
    args = parser.parse_args(argv[:i])
    command = argv[i:]
    if args.processes < 1:
        parser.error(f"--processes must be >= 1, got {args.processes}")
    if not command or command == ["-m"]:
        parser.error("name a SCRIPT (or -m MODULE) to run")
    if command[0] != "-m" and not os.path.exists(command[0]):
        parser.error(f"SCRIPT {command[0]!r} does not exist")
    return launch(command, args.processes, port=args.port, heartbeat_timeout=args.heartbeat_timeout, grace=args.grace,
                  timeout=args.timeout, cpus_per_process=args.cpus_per_process)


if __name__ == "__main__":
    sys.exit(main())
