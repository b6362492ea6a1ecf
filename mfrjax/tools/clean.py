"""Find duplicates, near duplicates, bad images and thin identities in a face set.

    mfrjax-clean --root=/data/faces --out=/tmp/clean [--max_distance=4]
        [--min_size=32] [--blank_std=2] [--min_images=2]

Writes <out>/report.json (every finding: path, reason, detail), <out>/report.csv and
<out>/exclude.txt, then train without them:

    python -m mfrjax.main --config=... --config.data.exclude_list=/tmp/clean/exclude.txt

Nothing is deleted or moved. See mfrjax/prep/clean.py for the checks.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import sys
import time

from mfrjax import cli
from mfrjax.prep import clean
from mfrjax.progress import require_new


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--root", required=True, help="<root>/<identity>/<image> face set")
  p.add_argument("--out", required=True, help="folder for the report and exclusion list")
  p.add_argument("--max_distance", type=int, default=4,
                 help="near duplicates: at most this many of 64 pHash bits differ (-1: off)")
  p.add_argument("--min_size", type=int, default=32, help="shorter side below this: tiny")
  p.add_argument("--blank_std", type=float, default=2.0, help="pixel std below this: blank")
  p.add_argument("--min_images", type=int, default=2,
                 help="identities with fewer usable unmasked images are listed")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  paths = {n: os.path.join(args.out, n) for n in ("report.json", "report.csv", "exclude.txt")}
  require_new(*paths.values())
  t0 = time.perf_counter()
  findings = clean.scan(args.root, min_size=args.min_size, blank_std=args.blank_std,
                        max_distance=args.max_distance, min_images=args.min_images,
                        quiet=args.quiet)
  excluded = clean.exclusion_list(findings, args.root)
  seconds = time.perf_counter() - t0
  with open(paths["report.json"], "w", encoding="utf-8") as f:
    json.dump({"root": os.path.abspath(args.root), "settings": vars(args), "seconds": seconds,
               "findings": [dataclasses.asdict(x) for x in findings],
               "excluded": len(excluded)}, f, indent=2)
  with open(paths["report.csv"], "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["path", "reason", "detail"])
    w.writerows((x.path, x.reason, x.detail) for x in findings)
  with open(paths["exclude.txt"], "w", encoding="utf-8") as f:
    f.write(f"# mfrjax-clean on {os.path.abspath(args.root)}: paths relative to it\n")
    f.writelines(x + "\n" for x in excluded)
  counts = collections.Counter(x.reason for x in findings)
  print(f"scanned {args.root} in {seconds:.1f} s; findings: "
        + (", ".join(f"{r} {n}" for r, n in sorted(counts.items())) or "none"))
  folders = sum(x.reason == "empty" for x in findings)
  print(f"excluded images: {len(excluded) - folders}"
        + (f", empty identity folders: {folders}" if folders else "")
        + f" -> {paths['exclude.txt']}")
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
