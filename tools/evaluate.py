"""Runs the NumPy evaluator on saved embeddings (no JAX, no model).

    python tools/evaluate.py --embeddings=/tmp/mfr/embeddings.npz [--groups_csv=groups.csv]
        [--k=1] [--gallery_fraction=0.5 --seed=0] [--json=out.json]

The .npz holds what a training run writes (`<workdir>/embeddings.npz`) or what any
other model produced: `unmasked` and/or `masked` (N, D) float arrays, `labels` (N,) int
identity labels; optionally `is_gallery` (N,) bool (else a seeded split is drawn),
`identities` (names, indexed by label) and `groups` (one per identity).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mfrjax.data import sources
from mfrjax.eval import identification, report


def evaluate_file(path: str, k: int = 1, groups_csv: str = "", gallery_fraction: float = 0.5,
                  seed: int = 0) -> dict:
  """Loads `path` and returns the evaluator's summary (as written to results.json)."""
  with np.load(path, allow_pickle=False) as f:
    data = {key: f[key] for key in f.files}
  views = {v: data[v] for v in ("unmasked", "masked") if v in data}
  if not views or "labels" not in data:
    raise ValueError(f"{path}: needs 'labels' and at least one of 'unmasked', 'masked'; "
                     f"found {sorted(data)}")
  labels = data["labels"].astype(np.int64)
  for v, x in views.items():
    if x.ndim != 2 or len(x) != len(labels):
      raise ValueError(f"{path}: '{v}' has shape {x.shape}, expected ({len(labels)}, D)")
  is_gallery = data["is_gallery"].astype(bool) if "is_gallery" in data else \
      identification.gallery_probe_split(labels, gallery_fraction, seed)
  groups = None
  if groups_csv:
    if "identities" not in data:
      raise ValueError(f"{path}: --groups_csv needs an 'identities' array to match names")
    groups = np.asarray(sources.read_groups_csv(groups_csv, tuple(data["identities"].tolist())))
  elif "groups" in data and len(data["groups"]):
    groups = data["groups"]
  results = identification.evaluate(views, labels, is_gallery, k=k)
  # Training-set shares are unknown from embeddings alone: the table shows test shares.
  return report.summarize(results, groups, None if groups is None else np.array([]))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--embeddings", required=True, help=".npz file (see module doc)")
  p.add_argument("--groups_csv", default="", help="identity,group CSV for per-group rows")
  p.add_argument("--k", type=int, default=1, help="neighbours for k-NN (default 1)")
  p.add_argument("--gallery_fraction", type=float, default=0.5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default="", help="also write the summary here")
  args = p.parse_args(argv)
  summary = evaluate_file(args.embeddings, args.k, args.groups_csv, args.gallery_fraction,
                          args.seed)
  print(report.format_table(summary, f"{args.embeddings}:"))
  if args.json:
    report.write_json(args.json, summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
