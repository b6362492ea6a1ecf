"""1-NN (k-NN) identification on unseen identities, overall and per group. NumPy only.

Protocol (as in the paper): the images of every test identity are split into a
gallery and probes by a seeded rule; each probe is assigned the identity of its nearest
gallery embedding (cosine similarity on L2-normalised embeddings). Three pairings are
reported: masked probes against an unmasked gallery (the case that matters), unmasked
against unmasked (no loss on normal faces), and masked against masked.
"""

from __future__ import annotations

import numpy as np

from mfrjax import salts

PROTOCOLS = {
    "masked_vs_unmasked": ("masked", "unmasked"),
    "unmasked_vs_unmasked": ("unmasked", "unmasked"),
    "masked_vs_masked": ("masked", "masked"),
}


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def knn_predict(gallery: np.ndarray, gallery_labels: np.ndarray, probes: np.ndarray,
                k: int = 1, chunk: int = 4096) -> np.ndarray:
  """Predicts a label per probe from its k most cosine-similar gallery embeddings.

  With k > 1 the label is the majority vote; ties go to the label whose best match is
  the most similar (so k = 1 is exactly the nearest neighbour). Among equally similar
  gallery items the one listed first wins.

  Args:
    gallery: (G, D) embeddings.
    gallery_labels: (G,) int labels.
    probes: (P, D) embeddings.
    k: neighbours that vote.
    chunk: probes per similarity block (bounds memory for large sets).

  Returns:
    (P,) predicted labels.
  """
  if len(gallery) == 0:
    raise ValueError("the gallery is empty")
  g = l2_normalize(gallery)
  k = min(k, len(g))
  out = np.empty(len(probes), dtype=np.asarray(gallery_labels).dtype)
  for s in range(0, len(probes), chunk):
    sim = l2_normalize(probes[s:s + chunk]) @ g.T
    # Stable sort on -sim: ties keep gallery order.
    nn_idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    if k == 1:
      out[s:s + chunk] = gallery_labels[nn_idx[:, 0]]
      continue
    for row, idx in enumerate(nn_idx):
      labels = gallery_labels[idx]
      uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
      best = np.flatnonzero(counts == counts.max())
      out[s + row] = uniq[best[np.argmin(first[best])]]  # earliest = most similar
  return out


def identity_ranks(sim: np.ndarray, gallery_labels: np.ndarray, probe_labels: np.ndarray
                   ) -> np.ndarray:
  """Rank of each probe's own identity among the gallery identities.

  Args:
    sim: (P, G) probe x gallery similarities.
    gallery_labels: (G,) identity of each gallery entry (several entries may share one).
    probe_labels: (P,) identity of each probe.

  Returns:
    (P,) float: 1 + the number of other identities whose best entry scores strictly
    higher than the probe's own best entry (ties favour the true identity); inf for a
    probe whose identity is not in the gallery.
  """
  gallery_labels, probe_labels = np.asarray(gallery_labels), np.asarray(probe_labels)
  order = np.argsort(gallery_labels, kind="stable")
  ids, start = np.unique(gallery_labels[order], return_index=True)
  best = np.maximum.reduceat(np.asarray(sim)[:, order], start, axis=1)   # (P, identities)
  col = np.searchsorted(ids, probe_labels)
  enrolled = (col < len(ids)) & (ids[np.minimum(col, len(ids) - 1)] == probe_labels)
  own = best[np.arange(len(probe_labels)), np.minimum(col, len(ids) - 1)]
  rank = 1.0 + (best > own[:, None]).sum(1)
  return np.where(enrolled, rank, np.inf)


def gallery_probe_split(labels: np.ndarray, gallery_fraction: float, seed: int) -> np.ndarray:
  """Boolean mask: True for gallery images, False for probes.

  Each identity's images are permuted with a seeded RNG; the first
  max(1, floor(n * gallery_fraction)) are gallery, the rest probes, and at least one
  image stays a probe when the identity has two or more.
  """
  rng = np.random.default_rng([seed, salts.GALLERY_PROBE])
  is_gallery = np.zeros(len(labels), bool)
  for lab in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == lab))
    n_gal = max(1, int(len(idx) * gallery_fraction))
    if len(idx) > 1:
      n_gal = min(n_gal, len(idx) - 1)
    is_gallery[idx[:n_gal]] = True
  return is_gallery


def result_name(protocol: str, classifier: str) -> str:
  """'masked_vs_unmasked' for k-NN (the headline), 'masked_vs_unmasked/svm' otherwise."""
  return protocol if classifier == "knn" else f"{protocol}/{classifier}"


def evaluate(embeddings: dict[str, np.ndarray], labels: np.ndarray, is_gallery: np.ndarray,
             k: int = 1, predictors: dict | None = None) -> dict[str, dict]:
  """Runs every protocol whose views are present, with every classifier.

  Args:
    embeddings: {'unmasked': (N, D), 'masked': (N, D)}; row i is image i.
    labels: (N,) identity labels.
    is_gallery: (N,) gallery mask (see gallery_probe_split).
    k: neighbours for k-NN (when `predictors` is not given).
    predictors: {classifier name: predict(gallery, gallery_labels, probes)}, e.g. from
      classifiers.make; default k-NN only.

  Returns:
    {result_name(protocol, classifier): {'accuracy', 'num_probes',
      'correct': bool (num_probes,), 'probe_labels': (num_probes,)}}
  """
  if predictors is None:
    predictors = {"knn": lambda g, gl, p: knn_predict(g, gl, p, k=k)}
  labels = np.asarray(labels)
  probe = ~is_gallery
  out = {}
  for clf, predict in predictors.items():
    for name, (probe_view, gallery_view) in PROTOCOLS.items():
      if probe_view not in embeddings or gallery_view not in embeddings:
        continue
      pred = predict(embeddings[gallery_view][is_gallery], labels[is_gallery],
                     embeddings[probe_view][probe])
      correct = np.asarray(pred) == labels[probe]
      out[result_name(name, clf)] = {
          "accuracy": float(correct.mean()) if len(correct) else float("nan"),
          "num_probes": int(len(correct)), "correct": correct, "probe_labels": labels[probe]}
  return out


def per_group(correct: np.ndarray, probe_labels: np.ndarray, groups: np.ndarray,
              train_groups: np.ndarray) -> list[dict]:
  """The paper's per-group table: group, share of train, share of test, accuracy.

  Args:
    correct: (P,) whether each probe was identified.
    probe_labels: (P,) identity of each probe.
    groups: group name per identity (indexed by label).
    train_groups: group name of every *training image* (for the train share).

  Returns:
    One row per group, sorted by name: {'group', 'train_share', 'test_share',
    'accuracy', 'num_probes'}; test_share is the group's share of the probes.
  """
  groups = np.asarray(groups)
  probe_groups = groups[probe_labels]
  train_groups = np.asarray(train_groups)
  rows = []
  for g in sorted(set(probe_groups.tolist()) | set(train_groups.tolist())):
    sel = probe_groups == g
    rows.append({
        "group": str(g),
        "train_share": float(np.mean(train_groups == g)) if len(train_groups) else 0.0,
        "test_share": float(np.mean(sel)) if len(sel) else 0.0,
        "accuracy": float(correct[sel].mean()) if sel.any() else float("nan"),
        "num_probes": int(sel.sum()),
    })
  return rows
