"""Classifiers fitted on frozen gallery embeddings and scored on probes (as in the seeds).

  knn  k nearest gallery embeddings by cosine similarity (identification.knn_predict).
  svm  a linear SVM (scikit-learn LinearSVC, one-vs-rest) on L2-normalised embeddings.
  mlp  a small MLP head (one hidden ReLU layer, scikit-learn, Adam) on the same inputs.

Each is a `predict(gallery, gallery_labels, probes) -> labels` function, so the
evaluator runs any of them through the same protocols and per-group tables.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from mfrjax.eval import identification

CLASSIFIERS = ("knn", "svm", "mlp")


def _single_class(gallery_labels, probes):
  """A one-class gallery needs no fit (and scikit-learn refuses it)."""
  if len(np.unique(gallery_labels)) == 1:
    return np.full(len(probes), gallery_labels[0])
  return None


def svm_predict(gallery, gallery_labels, probes, *, c: float, seed: int) -> np.ndarray:
  from sklearn.svm import LinearSVC
  one = _single_class(gallery_labels, probes)
  if one is not None:
    return one
  clf = LinearSVC(C=c, random_state=seed, max_iter=5000)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning on tiny galleries
    clf.fit(identification.l2_normalize(gallery), gallery_labels)
  return clf.predict(identification.l2_normalize(probes))


def mlp_predict(gallery, gallery_labels, probes, *, hidden: int, seed: int) -> np.ndarray:
  from sklearn.neural_network import MLPClassifier
  one = _single_class(gallery_labels, probes)
  if one is not None:
    return one
  clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=500, random_state=seed)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    clf.fit(identification.l2_normalize(gallery), gallery_labels)
  return clf.predict(identification.l2_normalize(probes))


def make(names, *, k: int = 1, svm_c: float = 1.0, mlp_hidden: int = 256, seed: int = 0
         ) -> dict:
  """{name: predict function} for `config.eval.classifiers`; unknown names are refused."""
  out = {}
  for name in names:
    if name == "knn":
      out[name] = functools.partial(identification.knn_predict, k=k)
    elif name == "svm":
      out[name] = functools.partial(svm_predict, c=svm_c, seed=seed)
    elif name == "mlp":
      out[name] = functools.partial(mlp_predict, hidden=mlp_hidden, seed=seed)
    else:
      raise ValueError(f"unknown classifier {name!r} in config.eval.classifiers; valid: "
                       f"{CLASSIFIERS}")
  if not out:
    raise ValueError("config.eval.classifiers is empty; valid names: " + ", ".join(CLASSIFIERS))
  return out


def from_config(eval_cfg, seed: int) -> dict:
  return make(eval_cfg.classifiers, k=eval_cfg.k, svm_c=eval_cfg.svm_c,
              mlp_hidden=eval_cfg.mlp_hidden, seed=seed)
