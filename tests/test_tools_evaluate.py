"""mfrjax-eval on saved embeddings with known answers."""

import json

import numpy as np
import pytest

from mfrjax.tools import evaluate as tool


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


def test_feature_concatenation_and_verification(tmp_path, capsys):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 4)
  idx = np.arange(40)
  # Model A sees dims 0-7 of the identity code, model B dims 8-15: each alone is noisy,
  # together they describe the person better.
  code = rng.normal(size=(10, 16))
  def run(cols, seed):
    r = np.random.default_rng(seed)
    u = code[labels][:, cols] + 0.9 * r.normal(size=(40, 8))
    return dict(labels=labels, image_index=idx, unmasked=u * r.uniform(1, 9),  # any scale
                masked=u + 0.9 * r.normal(size=(40, 8)))
  a = write_npz(tmp_path / "a.npz", **run(slice(0, 8), 1))
  b = write_npz(tmp_path / "b.npz", **run(slice(8, 16), 2))
  _, views, _ = tool.load(f"{a},{b}")
  assert views["unmasked"].shape == (40, 16)
  # Each half is L2-normalised before concatenation: both models weigh the same.
  np.testing.assert_allclose(np.linalg.norm(views["unmasked"][:, :8], axis=1), 1.0)
  out = tmp_path / "r.json"
  assert tool.main(["--embeddings", f"{a},{b}", "--pairs", "200", "--json", str(out)]) == 0
  both = json.loads(out.read_text())
  alone = [tool.verify(tool.load(p)[1], labels, 200, 10, 0) for p in (a, b)]
  acc = lambda r: r["standard"]["accuracy"]  # noqa: E731
  assert acc(both["verification"]["pairs"]) > max(acc(r) for r in alone)
  assert "combined" in capsys.readouterr().out
  other = write_npz(tmp_path / "c.npz", **{**run(slice(0, 8), 3), "image_index": idx[::-1]})
  with pytest.raises(ValueError, match="holds other images"):
    tool.load(f"{a},{other}")
