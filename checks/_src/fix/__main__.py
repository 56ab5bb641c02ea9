"""Run the fix experiment from the command line and print the four verdicts.

    python -m checks._src.fix --full --out report/fix      # 128 seeds per arm and optimizer
    python -m checks._src.fix --default --out /tmp/fixd    # the configuration of `python -m checks`
    python -m checks._src.fix --quick --out /tmp/fixq      # the CI configuration (provisional verdicts)
    python -m checks._src.fix --seeds 8                    # refused before the main runs if the pilot
                                                           # predicts a missed power target
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import geometry  # noqa: F401  (enables float64 before JAX is used)

from . import experiment as E
from . import plan as P
from . import verdicts as V


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m checks._src.fix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_const", dest="preset", const="full", help="128 seeds per arm (default)")
    g.add_argument("--quick", action="store_const", dest="preset", const="quick", help="CI configuration")
    g.add_argument("--default", action="store_const", dest="preset", const="default",
                   help="the configuration of `python -m checks` without --quick")
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds per arm instead of the preset's; checked against the power targets before training")
    ap.add_argument("--seed", type=int, default=0, help="first seed (seeds are seed, seed+1, ...)")
    ap.add_argument("--out", default="report/fix", help="output directory for figures and fix_experiment.json")
    args = ap.parse_args(argv)
    preset = args.preset or "full"
    cfg = E.PRESETS[preset]
    if args.seeds is not None:
        cfg = dataclasses.replace(cfg, n_seeds=args.seeds, max_seeds=args.seeds, strict_power=True)
    os.makedirs(args.out, exist_ok=True)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    try:
        res = E.run(cfg, seed=args.seed, bar=lambda total, desc: tqdm(total=total, desc=desc))
    except P.UnderpoweredError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    print("\npower: achieved half-width vs target (default run plan)")
    for a in res["achieved"]:
        print(f"  {a['optimizer']}/{a['arm']} {a['metric']} ({a['n_seeds']} seeds): {a['half_width']:.4g} vs target "
              f"{a['target']:g} ({'met' if a['met'] else 'MISSED'}; pilot predicted {a['predicted']:.3g})")
    tm = res["timing"]
    old = tm.get("one_at_a_time")
    print(f"\nseeds per second: batched {tm['batched']['runs_per_s']:.2f} runs/s"
          + (f", one-at-a-time loop {old['seeds_per_s']:.2f} seeds/s" if old else ""))
    with open(os.path.join(args.out, "fix_verdicts.json"), "w") as fh:
        json.dump(verdicts, fh, indent=1)
    print(f"\n[fix] preset {preset}: {time.perf_counter() - t0:.0f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
