"""Trains the methods on the same data and seed and prints one comparison table.

    mfrjax-compare --out=/tmp/compare                 # embedded synthetic faces
    mfrjax-compare --out=/tmp/compare_lfw --variant=lfw   # ../shared/data/lfw
    mfrjax-compare --out=/tmp/c --seeds=0,1,2 --parallel=2 --set num_epochs=10

Methods (each config's `<variant>`, so all read the same data block, mfrjax/configs/common.py):
  baseline       triplet loss on full unmasked faces: no masks in training
                 (configs/triplet_upper.py with data.upper_face.enabled=False)
  quintuplet     configs/quintuplet.py (masked positives and negatives)
  triplet-upper  configs/triplet_upper.py (upper half of the face, no masks in training)
  barlow         configs/barlow.py (masked and unmasked views, self-supervised)

Every run is an ordinary training run in `<out>/<method>/seed_<s>` (resumable, skipped
when finished, see mfrjax-sweep). The table gives, per method, the masked-probe
accuracy (masked probes against an unmasked gallery of unseen people), the unmasked
accuracy (unmasked probes, same gallery), and their difference, for k-NN and for every
other classifier that all runs report; mean +- std when there are several seeds. It is
written to <out>/comparison.md and .json.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys

import numpy as np

from mfrjax import cli, configs
from mfrjax.tools import sweep

CLASSIFIERS = '("knn", "svm", "mlp")'
METHODS = (
    ("baseline", "triplet_upper", {"data.upper_face.enabled": "False"}),
    ("quintuplet", "quintuplet", {}),
    ("triplet-upper", "triplet_upper", {}),
    ("barlow", "barlow", {}),
)
MASKED, UNMASKED = "masked_vs_unmasked", "unmasked_vs_unmasked"


def _mean_std(entry: dict, key: str) -> str:
  """'mean ± std' of one column of an entry; the mean alone for a single seed."""
  mean = f"{entry[key + '_mean']:.2f}"
  return mean + (f" ± {entry[key + '_std']:.2f}" if entry["seeds"] > 1 else "")


def table(rows: list[dict]) -> tuple[str, list[dict]]:
  """Markdown table and its JSON rows from [{'method', 'seed', 'final': summary}]."""
  names = list(dict.fromkeys(r["method"] for r in rows))
  shared = set.intersection(*(set(r["final"]) for r in rows))
  clfs = [c for c in ("knn", "svm", "mlp")
          if (MASKED if c == "knn" else f"{MASKED}/{c}") in shared]
  out, lines = [], []
  head = "| method | classifier | masked probe (%) | unmasked (%) | difference (points) | seeds |"
  lines += [head, "|---|---|---|---|---|---|"]
  for name in names:
    runs = [r for r in rows if r["method"] == name]
    for c in clfs:
      suffix = "" if c == "knn" else f"/{c}"
      m = np.array([r["final"][MASKED + suffix]["accuracy"] for r in runs]) * 100
      u = np.array([r["final"][UNMASKED + suffix]["accuracy"] for r in runs]) * 100
      d = m - u
      entry = {"method": name, "classifier": c, "seeds": len(runs),
               "masked_mean": float(m.mean()), "masked_std": float(m.std()),
               "unmasked_mean": float(u.mean()), "unmasked_std": float(u.std()),
               "difference_mean": float(d.mean()), "difference_std": float(d.std())}
      out.append(entry)
      label = "1-NN" if c == "knn" else c.upper()
      cells = [_mean_std(entry, k) for k in ("masked", "unmasked", "difference")]
      lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {len(runs)} |")
  return "\n".join(lines), out


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--out", required=True, help="comparison directory")
  p.add_argument("--variant", default="default", help="config variant: default, lfw, ...")
  p.add_argument("--seeds", default="0", help="comma-separated seeds")
  p.add_argument("--methods", default=",".join(m[0] for m in METHODS),
                 help="subset of: " + ", ".join(m[0] for m in METHODS))
  p.add_argument("--set", action="append", default=[], dest="overrides",
                 help="key=value applied to every run (repeat)")
  p.add_argument("--parallel", type=int, default=1, help="runs at a time")
  p.add_argument("--extra", action="append", default=[], help="extra flag for every run")
  args = p.parse_args(argv)
  wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
  known = {m[0]: m for m in METHODS}
  for w in wanted:
    if w not in known:
      raise SystemExit(f"unknown method {w!r} in --methods; valid: {sorted(known)}")
  common = {"eval.classifiers": CLASSIFIERS, **dict(sweep._kv(o) for o in args.overrides)}
  seeds = [int(s) for s in args.seeds.split(",")]
  jobs = []
  for name in wanted:
    _, cfg, own = known[name]
    config = configs.resolve(cfg + (f":{args.variant}" if args.variant else ""))
    for s in seeds:
      jobs.append((name, s, config, {**common, **own},
                   os.path.join(args.out, name, f"seed_{s}")))
  rows = []
  with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
    futures = [(name, s, pool.submit(sweep.run_one, config, wd, ov, s, args.extra, sweep.log))
               for name, s, config, ov, wd in jobs]
    for name, s, fut in futures:
      rows.append({"method": name, "seed": s, "final": fut.result()["final"]})
  md, entries = table(rows)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "comparison.md"), "w", encoding="utf-8") as f:
    f.write(md + "\n")
  with open(os.path.join(args.out, "comparison.json"), "w", encoding="utf-8") as f:
    json.dump(entries, f, indent=2)
  print(md)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
