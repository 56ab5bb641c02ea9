"""Run the fix experiment from the command line and print the four verdicts.

    python -m checks._src.fix --full --out report/fix      # >= 5 seeds, both optimizers, all arms
    python -m checks._src.fix --quick --out /tmp/fixq      # the CI configuration
"""

from __future__ import annotations

import argparse
import json
import os
import time

import geometry  # noqa: F401  (enables float64 before JAX is used)

from . import experiment as E
from . import verdicts as V


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m checks._src.fix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_const", dest="preset", const="full", help="5 seeds per arm (default)")
    g.add_argument("--quick", action="store_const", dest="preset", const="quick", help="CI configuration")
    g.add_argument("--default", action="store_const", dest="preset", const="default",
                   help="the configuration of `python -m checks` without --quick")
    ap.add_argument("--seed", type=int, default=0, help="first seed (seeds are seed, seed+1, ...)")
    ap.add_argument("--out", default="report/fix", help="output directory for figures and fix_experiment.json")
    args = ap.parse_args(argv)
    preset = args.preset or "full"
    os.makedirs(args.out, exist_ok=True)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    res = E.run(E.PRESETS[preset], seed=args.seed, bar=lambda total, desc: tqdm(total=total, desc=desc))
    res["preset"] = preset
    res["figures"] = V.write_outputs(res, lambda name: os.path.join(args.out, name))
    verdicts = {}
    for cid, judge in V.JUDGES.items():
        r = judge(res)
        verdicts[cid] = dict(verdict=r.verdict, summary=r.summary,
                             thresholds=[(t.name, t.value, t.rule) for t in r.thresholds])
        print(f"\n{cid}: {r.verdict.upper()}")
        for t in r.thresholds:
            print(f"  threshold {t.name} = {t.value:g} ({t.rule})")
        print(f"  {r.summary}")
    with open(os.path.join(args.out, "fix_verdicts.json"), "w") as fh:
        json.dump(verdicts, fh, indent=1)
    print(f"\n[fix] preset {preset}: {time.perf_counter() - t0:.0f} s; outputs in {args.out}")


if __name__ == "__main__":
    main()
