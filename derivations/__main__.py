"""``python -m derivations [--out DIR] [--only SLUG ...] [--plugin FILE.py ...]``: run the exact derivations and write the documents.

With ``--plugin`` (repeatable; the plugin files of ``python -m checks --plugin``, which call
``checks.register_family``) the families those files register are derived instead: exact metric,
Christoffel symbols and scalar curvature R with sympy, and R against ``geometry.scalar_curvature``
at 24 sampled points, one document each in ``DIR/plugins/<family>.md`` plus ``DIR/plugins/index.md``
(families without a closed form, e.g. densities or plain-JAX functions, are listed there with the
reason).  ``--plugin`` alone runs only the plugin families and leaves the shipped documents in DIR
untouched; add ``--only SLUG ...`` to run those shipped derivations too (``DIR/index.md`` then lists
the user families in a section of its own).  Exit status 1 when an exact check fails, a numeric
comparison exceeds ``NUMERIC_RTOL`` or a derivation fails.
"""

from __future__ import annotations

import argparse
import sys
import time

from ._src.report import write_documents, write_plugin_documents
from ._src.theorems import DERIVATIONS, run_all

DEFAULT_OUT = "report/derivations"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m derivations", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output directory for the Markdown documents (default {DEFAULT_OUT})")
    ap.add_argument(
        "--only", nargs="+", metavar="SLUG", choices=list(DERIVATIONS) + ["where-the-lemma-fails"],
        help="run only these derivations (the lemma walk-through needs all of them); with --plugin: run these as well",
    )
    ap.add_argument(
        "--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
        help="import this .py file or module (it calls checks.register_family) and derive every family it registers "
             "into DIR/plugins/; repeatable; without --only the shipped derivations are not run",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    plugins = None
    if args.plugin:
        from ._src.plugins import load_plugin_families, run_plugins

        families = load_plugin_families(args.plugin)
        if not families:
            print(f"warning: {', '.join(args.plugin)} registered no family (call checks.register_family)", file=sys.stderr)
        plugins = run_plugins(families)
        ppaths = write_plugin_documents(plugins, args.out)
        print(f"wrote {len(ppaths)} documents to {args.out}/plugins/")
    done = {}
    if not args.plugin or args.only:
        done = run_all(args.only)
        paths = write_documents(done, args.out, plugins)
        print(f"wrote {len(paths)} documents to {args.out}/")
    exact = sum(d.seconds for d in done.values()) + sum(r.derivation.seconds for r in plugins or () if r.derivation)
    numeric = sum(d.numeric_seconds for d in done.values()) + sum(r.derivation.numeric_seconds for r in plugins or () if r.derivation)
    print(f"total: exact derivations {exact:.1f} s, numeric comparisons {numeric:.1f} s, wall {time.perf_counter() - t0:.1f} s")
    for d in done.values():
        for r in d.numeric:
            print(f"  {d.slug}: {r['family']}: {r['points']} points, max rel diff {r['max_rel_diff']:.2e} (NUMERIC_RTOL {r['threshold']:.0e}) {'ok' if r['ok'] else 'EXCEEDED'}")
    bad = [d.slug for d in done.values() if not d.proven or any(not r["ok"] for r in d.numeric)]
    bad += [f"plugins/{r.slug}" for r in plugins or () if not r.ok or (r.derivation is not None and not r.derivation.proven)]
    if bad:
        print(f"NOT PROVEN, numeric mismatch or failed: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
