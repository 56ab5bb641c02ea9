"""``python -m checks``: run the registered checks and write the report."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys

from .registry import all_checks


def _load_plugin(spec: str) -> None:
    """Import a module name or a .py file (which typically calls ``checks.register_family``)."""
    if spec.endswith(".py") or os.path.sep in spec:
        if not os.path.isfile(spec):
            raise SystemExit(f"--plugin {spec!r}: no such file")
        mod_spec = importlib.util.spec_from_file_location(f"checks_plugin_{abs(hash(spec))}", spec)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        importlib.import_module(spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m checks", description="Measure every claim, write report.md/.json, index.html, the self-contained report.html and figures.")
    p.add_argument("--quick", action="store_true", help="reduced sweeps and fewer seeds (CI; the fix verdicts are marked provisional): about 3 minutes on 2 cores")
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these check ids (see --list)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random sweep (same seed => same numbers)")
    p.add_argument("--out", default="report", help="output directory (default: report/)")
    p.add_argument("--list", action="store_true", help="list the check ids and exit")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="import this .py file or module first (e.g. one that calls checks.register_family); repeatable")
    args = p.parse_args(argv)
    for spec in args.plugin:
        _load_plugin(spec)
    if args.list:
        for c in all_checks():
            print(f"{c.id:28s} {c.claim}")
        return 0
    from .report import run_checks, verdict_table

    # a terminated run (SIGTERM) unwinds like Ctrl-C: the half-built report is removed, the old one stays
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    try:
        report, status = run_checks(ids=args.only, seed=args.seed, quick=args.quick, out=args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(verdict_table(report))
    pts = report["points"]
    print(f"\npoints: {pts}")
    print(f"report written to {os.path.abspath(args.out)}/ (report.html: one self-contained file to open or send; index.html, report.md, report.json, figures)")
    failed = [e["id"] for e in report["checks"] if e["status"] == "error"]
    if failed:
        print(f"error: {len(failed)} check(s) could not run: {', '.join(failed)} (see report.md for the tracebacks)", file=sys.stderr)
    return status
