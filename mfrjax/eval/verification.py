"""Pair verification: accuracy (10-fold, the LFW protocol), ROC, TAR at FAR. NumPy only.

A pair (a, b) is scored by the cosine similarity of the two L2-normalised embeddings;
"same person" is predicted when the score exceeds a threshold.

- Accuracy: the pairs are cut into `folds` contiguous folds (LFW's pairs.txt lists
  them fold by fold); for each fold the threshold that maximises accuracy on the other
  folds is applied to it; mean and standard deviation over folds are reported.
- ROC: true accept rate against false accept rate over every threshold.
- TAR@FAR: the largest threshold-free TAR whose FAR does not exceed the target. A
  target below 1 / (number of negative pairs) cannot be measured and is reported as
  None, never extrapolated.

Two tracks, as in the masked face recognition challenges (MFR 2021): `masked` pairs
compare a masked image with an unmasked one, `standard` pairs two unmasked images; the
combined score is `0.25 * masked + 0.75 * standard`.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics

from mfrjax import salts

FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
TRACKS = {"masked": ("masked", "unmasked"), "standard": ("unmasked", "unmasked")}
COMBINED_WEIGHTS = {"masked": 0.25, "standard": 0.75}


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity of (N, D) arrays."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
  nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
  return np.sum(a * b, axis=1) / (na * nb)


def roc(scores: np.ndarray, issame: np.ndarray):
  """ROC over every distinct threshold, from accepting nothing to accepting everything.

  Returns:
    (far, tar, thresholds): far[i], tar[i] are the rates of pairs with score >=
    thresholds[i]; thresholds decrease, the first is +inf (far = tar = 0).
  """
  scores = np.asarray(scores, np.float64)
  issame = np.asarray(issame, bool)
  n_pos, n_neg = int(issame.sum()), int((~issame).sum())
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"verification needs positive and negative pairs; got {n_pos} positive, "
                     f"{n_neg} negative")
  # Every distinct score is a point (drop_intermediate=False): the TAR@FAR and threshold
  # searches below need the exact operating points, not a thinned curve.
  far, tar, ths = metrics.roc_curve(issame, scores, drop_intermediate=False)
  return far, tar, np.r_[np.inf, ths[1:]]


def tar_at_far(scores: np.ndarray, issame: np.ndarray, fars=FARS) -> dict[str, float | None]:
  """TAR at each target FAR (see module docstring); None where there are too few negatives."""
  far, tar, _ = roc(scores, issame)
  n_neg = int((~np.asarray(issame, bool)).sum())
  out = {}
  for target in fars:
    if target * n_neg < 1:
      out[f"{target:g}"] = None
      continue
    ok = far <= target + 1e-12
    out[f"{target:g}"] = float(tar[ok].max())
  return out


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> float:
  """The threshold with the highest accuracy (pairs with score > t are 'same').

  Candidates are the midpoints between consecutive distinct scores plus both ends, so
  the optimum over all thresholds is found exactly; ties go to the lowest threshold.
  Counting with cumulative sums over the sorted distinct scores makes it O(n log n), so
  sets of millions of pairs are fine.
  """
  issame = np.asarray(issame, bool)
  u, inv = np.unique(np.asarray(scores, np.float64), return_inverse=True)
  pos = np.bincount(inv, weights=issame, minlength=len(u))
  neg = np.bincount(inv, weights=~issame, minlength=len(u))
  # Candidate j accepts the distinct scores u[j:]: right are the positives there and the
  # negatives below.
  correct = np.r_[np.cumsum(pos[::-1])[::-1], 0.0] + np.r_[0.0, np.cumsum(neg)]
  cands = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2, u[-1] + 1.0]
  return float(cands[int(np.argmax(correct))])


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: int = 10) -> dict:
  """Accuracy with the threshold chosen on the other folds (LFW protocol).

  Returns:
    {'accuracy': mean, 'accuracy_std': std over folds, 'thresholds': per fold}.
  """
  scores = np.asarray(scores, np.float64)
  issame = np.asarray(issame, bool)
  if len(scores) < folds:
    raise ValueError(f"{len(scores)} pairs cannot be cut into {folds} folds")
  parts = np.array_split(np.arange(len(scores)), folds)
  accs, ths = [], []
  for test in parts:
    train = np.setdiff1d(np.arange(len(scores)), test)
    t = best_threshold(scores[train], issame[train])
    accs.append(np.mean((scores[test] > t) == issame[test]))
    ths.append(t)
  return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
          "thresholds": ths}


THRESHOLD_FARS = (1e-2, 1e-3)


def thresholds(scores: np.ndarray, issame: np.ndarray, fars=THRESHOLD_FARS) -> dict:
  """Decision thresholds a deployed model can use (accept a pair when score >= t):

    best_accuracy  best_threshold over all the pairs
    far=<f>        the lowest threshold whose FAR on these pairs is <= f (the operating
                   point of tar_at_far); None where f * negatives < 1
  """
  far, _, ths = roc(scores, issame)
  n_neg = int((~np.asarray(issame, bool)).sum())
  out = {"best_accuracy": best_threshold(scores, issame)}
  for f in fars:
    # far rises as the threshold falls; the last index within the target is the lowest.
    out[f"far={f:g}"] = None if f * n_neg < 1 else float(ths[np.flatnonzero(far <= f + 1e-12)[-1]])
  return out


def evaluate_pairs(scores: np.ndarray, issame: np.ndarray, folds: int = 10,
                   fars=FARS) -> dict:
  """Accuracy (k-fold), AUC, TAR@FAR, decision thresholds and the ROC curve of one set
  of scored pairs."""
  far, tar, _ = roc(scores, issame)
  acc = kfold_accuracy(scores, issame, folds)
  return {"accuracy": acc["accuracy"], "accuracy_std": acc["accuracy_std"],
          "auc": float(metrics.auc(far, tar)), "tar_at_far": tar_at_far(scores, issame, fars),
          "thresholds": thresholds(scores, issame),
          "num_pairs": int(len(scores)), "num_positive": int(np.sum(issame)),
          "roc": {"far": far, "tar": tar}}


def combined(tracks: dict) -> dict:
  """0.25 * masked + 0.75 * standard, for accuracy and every TAR@FAR both tracks have."""
  out = {"accuracy": sum(w * tracks[t]["accuracy"] for t, w in COMBINED_WEIGHTS.items())}
  keys = tracks["masked"]["tar_at_far"]
  out["tar_at_far"] = {
      k: (None if any(tracks[t]["tar_at_far"][k] is None for t in COMBINED_WEIGHTS)
          else sum(w * tracks[t]["tar_at_far"][k] for t, w in COMBINED_WEIGHTS.items()))
      for k in keys}
  return out


def evaluate_tracks(emb: dict[str, np.ndarray], first: np.ndarray, second: np.ndarray,
                    issame: np.ndarray, folds: int = 10, fars=FARS) -> dict:
  """Both tracks and the combined score for pairs (first[i], second[i]) of embedded images.

  Args:
    emb: {'unmasked': (N, D), 'masked': (N, D)} embeddings of the same N images.
    first, second: (P,) row indices into them; the masked track masks `first`.
    issame: (P,) bool.

  Returns:
    {'masked': {...}, 'standard': {...}, 'combined': {...}} (see evaluate_pairs).
  """
  out = {}
  for track, (va, vb) in TRACKS.items():
    s = cosine_scores(emb[va][first], emb[vb][second])
    out[track] = evaluate_pairs(s, issame, folds, fars)
  out["combined"] = combined(out)
  return out


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int):
  """A balanced, seeded set of pairs among `labels` (half same person, half not).

  Positives are drawn uniformly among identities with >= 2 images (then two distinct
  images), negatives as two images of two different identities; pairs are shuffled so
  every fold of `kfold_accuracy` holds both kinds. Duplicates are avoided where the
  data allows.

  Returns:
    (first, second, issame): int64 (P,), int64 (P,), bool (P,), P <= num_pairs.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng([seed, salts.VERIFY_PAIRS])
  by_id = {}
  for i, y in enumerate(labels):
    by_id.setdefault(int(y), []).append(i)
  multi = [np.asarray(v) for v in by_id.values() if len(v) >= 2]
  if not multi or len(by_id) < 2:
    raise ValueError("verification pairs need an identity with 2 images and 2 identities")
  half = num_pairs // 2
  pos, neg = set(), set()
  for _ in range(20 * half):
    if len(pos) >= half:
      break
    g = multi[rng.integers(len(multi))]
    a, b = rng.choice(g, 2, replace=False)
    pos.add((int(a), int(b)))
  for _ in range(20 * half):
    if len(neg) >= half:
      break
    a, b = rng.integers(len(labels), size=2)
    if labels[a] != labels[b]:
      neg.add((int(a), int(b)))
  pairs = [(a, b, True) for a, b in sorted(pos)] + [(a, b, False) for a, b in sorted(neg)]
  pairs = [pairs[i] for i in rng.permutation(len(pairs))]
  first, second, same = (np.asarray(x) for x in zip(*pairs))
  return first.astype(np.int64), second.astype(np.int64), same.astype(bool)


def strip_curves(results: dict) -> dict:
  """The results without ROC arrays (for JSON summaries and tables)."""
  if isinstance(results, dict):
    return {k: strip_curves(v) for k, v in results.items() if k != "roc"}
  return results
