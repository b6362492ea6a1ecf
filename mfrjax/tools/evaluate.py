"""Runs the NumPy evaluator on saved embeddings (no JAX, no model).

    mfrjax-eval --embeddings=/tmp/mfr/embeddings.npz [--groups_csv=groups.csv]
        [--k=1] [--gallery_fraction=0.5 --seed=0] [--pairs=2000 --folds=10] [--json=out.json]

Feature concatenation (the paper's Table 2): give several runs' files, comma-separated,
and each image is described by the concatenation of its L2-normalised embeddings from
every model (they must hold the same images in the same order: runs of the same data
block and seed do):

    mfrjax-eval --embeddings=/tmp/arc/embeddings.npz,/tmp/cos/embeddings.npz

Besides 1-NN identification, `--pairs` seeded pairs among the identities are verified
(masked and standard track, combined score; eval/verification.py).

The .npz holds what a training run writes (`<workdir>/embeddings.npz`) or what any
other model produced: `unmasked` and/or `masked` (N, D) float arrays, `labels` (N,) int
identity labels; optionally `is_gallery` (N,) bool (else a seeded split is drawn),
`identities` (names, indexed by label) and `groups` (one per identity).
"""

from __future__ import annotations

import sys
import zipfile

import numpy as np

from mfrjax import cli
from mfrjax.data import sources
from mfrjax.eval import identification, report, verification


def _load_one(path: str):
  try:
    with np.load(path, allow_pickle=False) as f:
      data = {key: f[key] for key in f.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: not a NumPy .npz of embeddings ({e})") from e
  views = {v: data[v] for v in ("unmasked", "masked") if v in data}
  if not views or "labels" not in data:
    raise ValueError(f"{path}: needs 'labels' and at least one of 'unmasked', 'masked'; "
                     f"found {sorted(data)}")
  labels = data["labels"].astype(np.int64)
  for v, x in views.items():
    if x.ndim != 2 or len(x) != len(labels):
      raise ValueError(f"{path}: '{v}' has shape {x.shape}, expected ({len(labels)}, D)")
    if not np.isfinite(x).all():
      bad = int((~np.isfinite(x).all(axis=1)).sum())
      raise ValueError(f"{path}: '{v}' has {bad} embedding(s) with NaN or Inf values; "
                       "a model that diverged gives no meaningful numbers")
  return data, views, labels


def load(paths: str):
  """One file, or several (comma-separated) whose L2-normalised embeddings are concatenated.

  Returns:
    (data of the first file, {view: (N, D_total)}, labels)
  """
  parts = [_load_one(p) for p in paths.split(",")]
  data, views, labels = parts[0]
  if len(parts) == 1:
    return data, views, labels
  first = paths.split(",")[0]
  for path, (d, v, y) in zip(paths.split(",")[1:], parts[1:]):
    same_images = np.array_equal(y, labels) and np.array_equal(
        d.get("image_index", np.arange(len(y))), data.get("image_index", np.arange(len(labels))))
    if not same_images:
      raise ValueError(f"{path} holds other images than {first} (labels or image_index "
                       "differ): concatenation needs runs of the same data block and seed")
    if set(v) != set(views):
      raise ValueError(f"{path} has views {sorted(v)}, {first} has {sorted(views)}")
  views = {v: np.concatenate([identification.l2_normalize(p[1][v]) for p in parts], axis=1)
           for v in views}
  return data, views, labels


def verify(views: dict, labels: np.ndarray, pairs: int, folds: int, seed: int) -> dict:
  """Both verification tracks on seeded pairs among `labels` (needs both views)."""
  if set(views) != {"unmasked", "masked"}:
    raise ValueError("verification needs both 'unmasked' and 'masked' embeddings")
  first, second, same = verification.sample_pairs(labels, pairs, seed)
  return verification.strip_curves(
      verification.evaluate_tracks(views, first, second, same, folds))


def evaluate_file(path: str, k: int = 1, groups_csv: str = "", gallery_fraction: float = 0.5,
                  seed: int = 0) -> dict:
  """Loads `path` (or comma-separated paths, concatenated) and returns the evaluator's
  identification summary (as written to results.json)."""
  data, views, labels = load(path)
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
  p = cli.parser(__doc__)
  p.add_argument("--embeddings", required=True,
                 help=".npz file, or several comma-separated to concatenate (module doc)")
  p.add_argument("--groups_csv", default="", help="identity,group CSV for per-group rows")
  p.add_argument("--k", type=int, default=1, help="neighbours for k-NN (default 1)")
  p.add_argument("--gallery_fraction", type=float, default=0.5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--pairs", type=int, default=2000,
                 help="verification pairs among the identities (0: none)")
  p.add_argument("--folds", type=int, default=10, help="folds for verification accuracy")
  p.add_argument("--json", default="", help="also write the summary here")
  args = p.parse_args(argv)
  summary = evaluate_file(args.embeddings, args.k, args.groups_csv, args.gallery_fraction,
                          args.seed)
  print(report.format_table(summary, f"{args.embeddings}:"))
  out = dict(summary)
  _, views, labels = load(args.embeddings)
  if args.pairs > 0 and set(views) == {"unmasked", "masked"}:
    ver = {"pairs": verify(views, labels, args.pairs, args.folds, args.seed)}
    print(report.format_verification(ver))
    out["verification"] = ver
  if args.json:
    report.write_json(args.json, out)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
