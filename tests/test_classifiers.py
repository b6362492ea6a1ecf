"""Classifiers on frozen embeddings: k-NN, linear SVM, MLP through the evaluator."""

import numpy as np
import pytest

from mfrjax.eval import classifiers, identification, report


def clusters(seed, n_ids=6, per=6, dim=16, spread=0.05):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(n_ids, dim))
  labels = np.repeat(np.arange(n_ids), per)
  emb = centres[labels] + spread * rng.normal(size=(len(labels), dim))
  return emb, labels


@pytest.mark.parametrize("name", classifiers.CLASSIFIERS)
def test_separable_clusters_are_identified(name):
  emb, labels = clusters(0)
  is_gallery = identification.gallery_probe_split(labels, 0.5, 0)
  predict = classifiers.make([name], seed=0)[name]
  pred = predict(emb[is_gallery], labels[is_gallery], emb[~is_gallery])
  np.testing.assert_array_equal(pred, labels[~is_gallery])


def test_evaluate_reports_each_classifier_and_table():
  emb, labels = clusters(1)
  is_gallery = identification.gallery_probe_split(labels, 0.5, 0)
  views = {"unmasked": emb, "masked": emb + 0.01}
  res = identification.evaluate(views, labels, is_gallery,
                                 predictors=classifiers.make(["knn", "svm", "mlp"], seed=0))
  assert "masked_vs_unmasked" in res and "masked_vs_unmasked/svm" in res
  assert res["unmasked_vs_unmasked/mlp"]["accuracy"] == 1.0
  groups = np.array(["a", "b"] * 3)
  summary = report.summarize(res, groups, groups[labels])
  text = report.format_table(summary)
  assert "masked_vs_unmasked/mlp" in text and "per group" in text


def test_single_identity_gallery_and_unknown_name():
  g, gl = np.ones((2, 3)), np.array([4, 4])
  for name in ("svm", "mlp"):
    assert classifiers.make([name])[name](g, gl, np.ones((3, 3))).tolist() == [4, 4, 4]
  with pytest.raises(ValueError, match="config.eval.classifiers"):
    classifiers.make(["forest"])
  with pytest.raises(ValueError, match="empty"):
    classifiers.make([])


def test_same_seed_same_mlp_predictions():
  emb, labels = clusters(2, spread=1.0)
  is_gallery = identification.gallery_probe_split(labels, 0.5, 0)
  f = classifiers.make(["mlp"], seed=3)["mlp"]
  a = f(emb[is_gallery], labels[is_gallery], emb[~is_gallery])
  b = f(emb[is_gallery], labels[is_gallery], emb[~is_gallery])
  np.testing.assert_array_equal(a, b)
