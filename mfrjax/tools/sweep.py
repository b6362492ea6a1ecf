r"""Seeded sweeps: a grid (or a list) of config overrides x seeds, resumable, summarised.

    mfrjax-sweep --config=configs/barlow.py --out=/tmp/sweep \
        --set optimizer.name=sgd,lars --set grad_reduce=mean,powersgd --seeds=0,1,2

    # Named settings instead of a grid (the paper's Table 1):
    mfrjax-sweep --config=configs/barlow.py --out=/tmp/table1 --seeds=0,1,2 \
        --case "SGD:optimizer.name=sgd;data.pair_sampler=random" \
        --case "PowerSGD:optimizer.name=sgd;data.pair_sampler=random;grad_reduce=powersgd" \
        --case "SGD + new sampler:optimizer.name=sgd;data.pair_sampler=couples"

Every run trains in its own workdir `<out>/<setting>/seed_<s>` through the normal
entry point (`python -m mfrjax.main`), so it checkpoints and resumes like any run: a
run with results.json is finished and is not repeated; an interrupted one resumes from
its latest checkpoint. `--parallel N` runs N at a time. The summary (mean +- std over
seeds of each setting's final metrics) is written as summary.md and summary.csv.
"""

from __future__ import annotations

import concurrent.futures
import csv
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np

from mfrjax import cli

METRICS = ("masked_vs_unmasked", "unmasked_vs_unmasked", "masked_vs_masked")


def parse_settings(grid: list[str], cases: list[str]) -> list[tuple[str, dict[str, str]]]:
  """[(name, {config key: value string})] from --set (cartesian) or --case (explicit)."""
  if grid and cases:
    raise ValueError("use either --set (a grid) or --case (named settings), not both")
  if cases:
    out = []
    for case in cases:
      name, _, body = case.partition(":")
      if not body:
        raise ValueError(f"--case {case!r}: expected 'name:key=value;key=value'")
      out.append((name.strip(), dict(_kv(p) for p in body.split(";") if p.strip())))
    return out
  axes = []
  for item in grid:
    key, _, values = item.partition("=")
    if not values:
      raise ValueError(f"--set {item!r}: expected key=value1,value2,...")
    axes.append([(key.strip(), v.strip()) for v in values.split(",")])
  combos = itertools.product(*axes) if axes else [()]
  return [(",".join(f"{k}={v}" for k, v in combo) or "base", dict(combo)) for combo in combos]


def _kv(text: str) -> tuple[str, str]:
  key, sep, value = text.partition("=")
  if not sep:
    raise ValueError(f"override {text!r}: expected key=value")
  return key.strip(), value.strip()


def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name)


def run_one(config: str, workdir: str, overrides: dict[str, str], seed: int,
            extra: list[str], log) -> dict:
  """Trains one run (or resumes it) unless it has finished; returns its results.json."""
  results = os.path.join(workdir, "results.json")
  if not os.path.exists(results):
    os.makedirs(workdir, exist_ok=True)
    cmd = [sys.executable, "-m", "mfrjax.main", f"--config={config}", f"--workdir={workdir}",
           f"--config.seed={seed}"] + [f"--config.{k}={v}" for k, v in overrides.items()] + extra
    log(f"run: {' '.join(cmd)}")
    with open(os.path.join(workdir, "log.txt"), "a", encoding="utf-8") as f:
      proc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
      raise RuntimeError(f"run failed (exit {proc.returncode}); see {workdir}/log.txt")
  else:
    log(f"done already: {workdir}")
  with open(results, encoding="utf-8") as f:
    return json.load(f)


def metrics_of(results: dict) -> dict[str, float]:
  """The numbers of one run that a sweep summarises: the recognition accuracies (METRICS,
  shown in %), or for a mask-removal run (restoration.py) every score of every evaluation
  group as '<group>/<score>' (IoU, PSNR, SSIM, L1: in their own units)."""
  final = results["final"]
  if all(m in final for m in METRICS):
    return {m: final[m]["accuracy"] for m in METRICS}
  return {f"{g}/{k}": v for g, r in final.items() for k, v in r.items() if k != "images"}


def summarize(rows: list[dict]) -> list[dict]:
  """Mean and std over seeds per setting, in the settings' order."""
  out = []
  names = [k for k in rows[0] if k not in ("setting", "seed")]
  for name in dict.fromkeys(r["setting"] for r in rows):
    runs = [r for r in rows if r["setting"] == name]
    entry = {"setting": name, "seeds": len(runs)}
    for m in names:
      vals = np.array([r[m] for r in runs], float) * (100 if m in METRICS else 1)
      entry[f"{m}_mean"], entry[f"{m}_std"] = float(vals.mean()), float(vals.std())
    out.append(entry)
  return out


def to_markdown(summary: list[dict]) -> str:
  names = [k[:-5] for k in summary[0] if k.endswith("_mean")]
  head = "| setting | seeds | " + " | ".join(
      f"{m} (%)" if m in METRICS else m for m in names) + " |"
  lines = [head, "|" + "---|" * (2 + len(names))]
  for e in summary:
    cells = [f"{e[m + '_mean']:.2f} ± {e[m + '_std']:.2f}" if m in METRICS else
             f"{e[m + '_mean']:.4f} ± {e[m + '_std']:.4f}" for m in names]
    lines.append(f"| {e['setting']} | {e['seeds']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def log(msg: str) -> None:
  """Progress of the runs, one flushed line each (shared with mfrjax-compare)."""
  print(msg, flush=True)


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--config", required=True, help="config file[:variant]")
  p.add_argument("--out", required=True, help="sweep directory")
  p.add_argument("--set", action="append", default=[], dest="grid",
                 help="key=v1,v2 (repeat for a grid)")
  p.add_argument("--case", action="append", default=[],
                 help="'name:key=v;key=v' (repeat for a list of named settings)")
  p.add_argument("--seeds", default="0", help="comma-separated seeds")
  p.add_argument("--parallel", type=int, default=1, help="runs at a time")
  p.add_argument("--extra", action="append", default=[], help="extra flag for every run")
  args = p.parse_args(argv)
  settings = parse_settings(args.grid, args.case)
  seeds = [int(s) for s in args.seeds.split(",")]
  jobs = [(name, ov, s, os.path.join(args.out, slug(name), f"seed_{s}"))
          for name, ov in settings for s in seeds]
  rows = []
  with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
    futures = {pool.submit(run_one, args.config, wd, ov, s, args.extra, log): (name, s)
               for name, ov, s, wd in jobs}
    for fut, (name, s) in futures.items():
      res = fut.result()
      rows.append({"setting": name, "seed": s, **metrics_of(res)})
  summary = summarize(rows)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "summary.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(summary[0]))
    w.writeheader()
    w.writerows(summary)
  with open(os.path.join(args.out, "runs.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  md = to_markdown(summary)
  with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as f:
    f.write(md + "\n")
  print(md)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
