"""mfrjax-compare: the table, and a real two-method run through the entry point."""

import json

import pytest

from mfrjax.tools import compare

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def final(masked, unmasked, svm=None):
  out = {"masked_vs_unmasked": {"accuracy": masked}, "unmasked_vs_unmasked": {"accuracy": unmasked}}
  if svm is not None:
    out["masked_vs_unmasked/svm"] = {"accuracy": svm[0]}
    out["unmasked_vs_unmasked/svm"] = {"accuracy": svm[1]}
  return out


def test_table_means_stds_and_differences():
  rows = [{"method": "a", "seed": 0, "final": final(0.5, 0.7, (0.4, 0.6))},
          {"method": "a", "seed": 1, "final": final(0.3, 0.7, (0.2, 0.6))},
          {"method": "b", "seed": 0, "final": final(0.6, 0.6)}]
  md, entries = compare.table(rows)
  assert [e["classifier"] for e in entries] == ["knn", "knn"]  # b has no SVM results
  a = entries[0]
  assert a["masked_mean"] == pytest.approx(40.0) and a["masked_std"] == pytest.approx(10.0)
  assert a["difference_mean"] == pytest.approx(-30.0)
  assert "| a | 1-NN | 40.00 ± 10.00 | 70.00 ± 0.00 | -30.00 ± 10.00 | 2 |" in md
  assert "| b | 1-NN | 60.00 | 60.00 | 0.00 | 1 |" in md


def test_unknown_method_is_refused(tmp_path):
  with pytest.raises(SystemExit, match="unknown method 'arcface'"):
    compare.main(["--out", str(tmp_path), "--methods=arcface"])


def test_two_methods_on_the_smoke_data(tmp_path, capsys):
  assert compare.main(["--out", str(tmp_path), "--variant=smoke",
                       "--methods=baseline,triplet-upper"]) == 0
  md = (tmp_path / "comparison.md").read_text()
  assert "| baseline | 1-NN |" in md and "| triplet-upper | MLP |" in md
  entries = json.loads((tmp_path / "comparison.json").read_text())
  assert len(entries) == 6
  # The baseline really ran on full faces, the other on the upper half.
  log = (tmp_path / "baseline" / "seed_0" / "log.txt").read_text()
  assert "'data.upper_face.enabled': False" in log
  log = (tmp_path / "triplet-upper" / "seed_0" / "log.txt").read_text()
  assert "'data.upper_face.enabled': True" in log
