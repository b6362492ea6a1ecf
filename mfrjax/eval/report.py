"""Results as text tables and JSON: what a user reads after a run."""

from __future__ import annotations

import json
import math

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
  """Overall accuracies, then the per-group table of each protocol."""
  lines = [title] if title else []
  lines.append(f"{'protocol':<24}{'1-NN acc %':>12}{'probes':>9}")
  for name, e in summary.items():
    lines.append(f"{name:<24}{_pct(e['accuracy']):>12}{e['num_probes']:>9}")
  for name, e in summary.items():
    if "groups" not in e:
      continue
    lines.append("")
    lines.append(f"per group, {name}:")
    lines.append(f"{'group':<16}{'train %':>9}{'test %':>9}{'acc %':>9}{'probes':>9}")
    for row in e["groups"]:
      lines.append(f"{row['group']:<16}{_pct(row['train_share']):>9}{_pct(row['test_share']):>9}"
                   f"{_pct(row['accuracy']):>9}{row['num_probes']:>9}")
  return "\n".join(lines)


def write_json(path: str, obj: dict) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
