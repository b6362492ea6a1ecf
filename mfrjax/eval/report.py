"""Results as text tables and JSON: what a user reads after a run."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from mfrjax.eval import identification


def summarize(results: dict, groups: np.ndarray | None, train_groups: np.ndarray | None,
              ) -> dict:
  """JSON-ready summary: accuracy per protocol, plus per-group rows when groups exist."""
  out = {}
  for name, r in results.items():
    entry = {"accuracy": r["accuracy"], "num_probes": r["num_probes"]}
    if groups is not None:
      entry["groups"] = identification.per_group(r["correct"], r["probe_labels"], groups,
                                                 train_groups if train_groups is not None
                                                 else np.array([]))
    out[name] = entry
  return out


def _pct(x: float) -> str:
  return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def format_table(summary: dict, title: str = "") -> str:
  """Overall accuracies, then one per-group table: a row per result (protocol and
  classifier), a column per group, after the groups' shares of train and test."""
  lines = [title] if title else []
  lines.append(f"{'protocol[/classifier]':<28}{'acc %':>8}{'probes':>9}")
  for name, e in summary.items():
    lines.append(f"{name:<28}{_pct(e['accuracy']):>8}{e['num_probes']:>9}")
  with_groups = {n: e["groups"] for n, e in summary.items() if "groups" in e}
  if not with_groups:
    return "\n".join(lines)
  first = next(iter(with_groups.values()))
  names = [row["group"] for row in first]
  width = max(9, *(len(g) + 2 for g in names))
  lines += ["", "per group (accuracy %; shares of training images and of test probes):",
            f"{'':<28}" + "".join(f"{g:>{width}}" for g in names)]
  lines.append(f"{'train share %':<28}" + "".join(f"{_pct(r['train_share']):>{width}}"
                                                  for r in first))
  lines.append(f"{'test share %':<28}" + "".join(f"{_pct(r['test_share']):>{width}}"
                                                 for r in first))
  for name, rows in with_groups.items():
    lines.append(f"{name:<28}" + "".join(f"{_pct(r['accuracy']):>{width}}" for r in rows))
  return "\n".join(lines)


def format_verification(ver: dict, fars=("0.1", "0.01", "0.001", "0.0001")) -> str:
  """One row per set and track (masked, standard, combined): accuracy, AUC, TAR@FAR."""
  head = f"{'set':<22}{'track':<10}{'acc %':>14}{'AUC %':>8}" + "".join(
      f"{'TAR@' + f:>12}" for f in fars)
  lines = ["verification (10-fold accuracy; TAR at FAR, n/a: too few negative pairs):", head]
  for name, tracks in ver.items():
    for track in ("masked", "standard", "combined"):
      r = tracks[track]
      acc = _pct(r["accuracy"]) + (f" +-{100 * r['accuracy_std']:4.1f}"
                                   if "accuracy_std" in r else " " * 6)
      auc = _pct(r["auc"]) if "auc" in r else " " * 6
      tars = "".join(f"{_pct(r['tar_at_far'].get(f)):>12}" for f in fars)
      lines.append(f"{name[:21]:<22}{track:<10}{acc:>14}{auc:>8}{tars}")
  return "\n".join(lines)


def strict_json(obj):
  """`obj` with NaN and infinities as None (null): strict JSON, which Python's default
  NaN literal is not (other JSON readers refuse it). NumPy scalars become Python ones."""
  if isinstance(obj, dict):
    return {k: strict_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict_json(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json(path: str, obj: dict) -> None:
  """Strict JSON (strict_json), written whole or not at all (a temporary file, renamed)."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(strict_json(obj), f, indent=2, sort_keys=True, allow_nan=False)
  os.replace(tmp, path)
