"""NumPy evaluator on hand-made embeddings with known answers."""

import numpy as np
import pytest

from mfrjax.eval import identification as ident
from mfrjax.eval import report


def test_knn_hand_made():
  gallery = np.array([[1, 0], [0, 1], [-1, 0]], float)
  labels = np.array([10, 20, 30])
  probes = np.array([[0.9, 0.1], [0.2, 5.0], [-3, -0.1], [0.0, -1.0]], float)
  # Last probe: cos to [1,0]=0, [0,1]=-1, [-1,0]=0 -> tie between 10 and 30, first wins.
  assert ident.knn_predict(gallery, labels, probes).tolist() == [10, 20, 30, 10]


def test_knn_k3_majority_and_tie_break():
  gallery = np.array([[1, 0], [0.9, 0.1], [0.8, 0.3], [0.7, 0.7]], float)
  labels = np.array([1, 2, 2, 3])
  probe = np.array([[1.0, 0.0]])
  assert ident.knn_predict(gallery, labels, probe, k=1).tolist() == [1]
  assert ident.knn_predict(gallery, labels, probe, k=3).tolist() == [2]  # 2 votes of 3
  labels_tie = np.array([1, 2, 3, 3])
  # k=2: labels 1 and 2 each have one vote -> the more similar (1) wins.
  assert ident.knn_predict(gallery, labels_tie, probe, k=2).tolist() == [1]


def test_knn_chunking_gives_same_answer():
  rng = np.random.default_rng(0)
  g, p = rng.normal(size=(50, 8)), rng.normal(size=(33, 8))
  lab = rng.integers(0, 10, 50)
  np.testing.assert_array_equal(ident.knn_predict(g, lab, p, chunk=5),
                                ident.knn_predict(g, lab, p, chunk=4096))


def test_knn_matches_brute_force():
  rng = np.random.default_rng(1)
  g, p = rng.normal(size=(40, 5)), rng.normal(size=(20, 5))
  lab = rng.integers(0, 7, 40)
  expected = []
  for x in p:
    sims = [np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y) for y in g]
    expected.append(lab[int(np.argmax(sims))])
  assert ident.knn_predict(g, lab, p).tolist() == expected


def test_gallery_probe_split():
  labels = np.array([0, 0, 0, 0, 1, 1, 2])
  g = ident.gallery_probe_split(labels, 0.5, seed=0)
  assert g[labels == 0].sum() == 2 and g[labels == 1].sum() == 1 and g[labels == 2].sum() == 1
  np.testing.assert_array_equal(g, ident.gallery_probe_split(labels, 0.5, seed=0))


def test_evaluate_protocols_known_answer():
  # Two identities; unmasked embeddings are perfect; masked ones of identity 1 look like 0.
  labels = np.array([0, 0, 1, 1])
  is_gallery = np.array([True, False, True, False])
  unmasked = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], float)
  masked = np.array([[1, 0], [1, 0.2], [1, 0.1], [1, 0.3]], float)
  res = ident.evaluate({"unmasked": unmasked, "masked": masked}, labels, is_gallery)
  assert res["unmasked_vs_unmasked"]["accuracy"] == 1.0
  assert res["masked_vs_unmasked"]["accuracy"] == 0.5   # probe 3 is masked id 1 -> says 0
  assert res["masked_vs_unmasked"]["correct"].tolist() == [True, False]
  # masked vs masked: gallery masked [1,0] (id0), [1,0.1] (id1); probe [1,.2]->id1 (wrong),
  # probe [1,.3]->id1 (right).
  assert res["masked_vs_masked"]["correct"].tolist() == [False, True]


def test_per_group_table_numbers():
  correct = np.array([True, False, True, True])
  probe_labels = np.array([0, 0, 1, 2])
  groups = np.array(["A", "A", "B"])
  train_groups = np.array(["A"] * 3 + ["B"])
  rows = ident.per_group(correct, probe_labels, groups, train_groups)
  a, b = rows
  assert a == {"group": "A", "train_share": 0.75, "test_share": 0.75,
               "accuracy": pytest.approx(2 / 3), "num_probes": 3}
  assert b["accuracy"] == 1.0 and b["test_share"] == 0.25 and b["train_share"] == 0.25


def test_report_table_and_json(tmp_path):
  res = ident.evaluate({"unmasked": np.eye(2), "masked": np.eye(2)}, np.array([0, 0]),
                       np.array([True, False]))
  summary = report.summarize(res, np.array(["g"]), np.array(["g"]))
  text = report.format_table(summary, "title")
  assert "masked_vs_unmasked" in text and "100.00" in text and "per group" in text
  report.write_json(str(tmp_path / "r.json"), summary)
  assert "accuracy" in (tmp_path / "r.json").read_text()


def test_empty_gallery_is_an_error():
  with pytest.raises(ValueError, match="gallery is empty"):
    ident.knn_predict(np.zeros((0, 2)), np.zeros(0), np.ones((1, 2)))
