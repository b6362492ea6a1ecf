"""tools/evaluate.py on saved embeddings with known answers."""

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("evaluate_tool", ROOT / "tools" / "evaluate.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_known_answers_and_groups(tmp_path, capsys):
  path = write_npz(tmp_path / "e.npz", labels=np.array([0, 0, 1, 1]),
                   is_gallery=np.array([True, False, True, False]),
                   unmasked=np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]]),
                   masked=np.array([[1, 0], [1, 0.2], [1, 0.1], [1, 0.3]]),
                   identities=np.array(["ann", "bo"]))
  csv = tmp_path / "g.csv"
  csv.write_text("ann,X\nbo,Y\n")
  out = tmp_path / "r.json"
  assert tool.main(["--embeddings", path, "--groups_csv", str(csv), "--json", str(out)]) == 0
  summary = json.loads(out.read_text())
  assert summary["unmasked_vs_unmasked"]["accuracy"] == 1.0
  assert summary["masked_vs_unmasked"]["accuracy"] == 0.5
  rows = {r["group"]: r["accuracy"] for r in summary["masked_vs_unmasked"]["groups"]}
  assert rows == {"X": 1.0, "Y": 0.0}
  assert "per group" in capsys.readouterr().out


def test_bad_files_are_explained(tmp_path):
  with pytest.raises(ValueError, match="needs 'labels'"):
    tool.evaluate_file(write_npz(tmp_path / "a.npz", x=np.zeros(2)))
  with pytest.raises(ValueError, match="'masked' has shape"):
    tool.evaluate_file(write_npz(tmp_path / "b.npz", labels=np.zeros(3), masked=np.zeros((2, 4))))
