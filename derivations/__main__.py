"""``python -m derivations [--out DIR] [--only SLUG ...]``: run the exact derivations and write the documents."""

from __future__ import annotations

import argparse
import sys
import time

from ._src.report import write_documents
from ._src.theorems import DERIVATIONS, run_all

DEFAULT_OUT = "report/derivations"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m derivations", description=__doc__)
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output directory for the Markdown documents (default {DEFAULT_OUT})")
    ap.add_argument(
        "--only", nargs="+", metavar="SLUG", choices=list(DERIVATIONS) + ["where-the-lemma-fails"],
        help="run only these derivations (the lemma walk-through needs all of them)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    done = run_all(args.only)
    paths = write_documents(done, args.out)
    exact = sum(d.seconds for d in done.values())
    numeric = sum(d.numeric_seconds for d in done.values())
    print(f"total: exact derivations {exact:.1f} s, numeric comparisons {numeric:.1f} s, wall {time.perf_counter() - t0:.1f} s")
    for d in done.values():
        for r in d.numeric:
            print(f"  {d.slug}: {r['family']}: {r['points']} points, max rel diff {r['max_rel_diff']:.2e} (NUMERIC_RTOL {r['threshold']:.0e}) {'ok' if r['ok'] else 'EXCEEDED'}")
    print(f"wrote {len(paths)} documents to {args.out}/")
    bad = [d.slug for d in done.values() if not d.proven or any(not r["ok"] for r in d.numeric)]
    if bad:
        print(f"NOT PROVEN or numeric mismatch: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
