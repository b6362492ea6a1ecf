"""Verification metrics against hand-computed values and brute force; pair-set readers."""

import os
import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from mfrjax.data import pair_sets, sources
from mfrjax.eval import plots, verification
from tests.conftest import write_bin


def test_roc_matches_sklearn_and_a_hand_example():
  scores = np.array([0.9, 0.8, 0.8, 0.4, 0.3, 0.1])
  same = np.array([1, 1, 0, 1, 0, 0], bool)
  far, tar, th = verification.roc(scores, same)
  # Thresholds >= 0.9: 1/3 TAR; >= 0.8: 2/3 TAR, 1/3 FAR; >= 0.4: 1, 1/3; ...
  np.testing.assert_allclose(far, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 1, 1, 1])
  rng = np.random.default_rng(0)
  s = rng.normal(size=500) + rng.integers(0, 2, 500)
  y = rng.integers(0, 2, 500).astype(bool)
  f1, t1, _ = verification.roc(s, y)
  f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
  np.testing.assert_allclose(f1, f2)
  np.testing.assert_allclose(t1, t2)
  res = verification.evaluate_pairs(s, y)
  np.testing.assert_allclose(res["auc"], roc_auc_score(y, s), rtol=1e-9)


def test_tar_at_far_hand_values_and_unmeasurable_targets():
  # 10 negatives at 0.0..0.9, 4 positives.
  neg = np.arange(10) / 10
  pos = np.array([0.95, 0.85, 0.5, 0.05])
  scores = np.r_[neg, pos]
  same = np.r_[np.zeros(10, bool), np.ones(4, bool)]
  t = verification.tar_at_far(scores, same, fars=(0.1, 0.2, 0.01))
  assert t["0.1"] == 0.5    # accept >= 0.85: negative 0.9 (FAR 10%), positives 0.95, 0.85
  assert t["0.2"] == 0.5    # threshold 0.8 adds no positive
  assert t["0.01"] is None  # 10 negatives cannot measure 1%


def brute_kfold(scores, same, folds):
  parts = np.array_split(np.arange(len(scores)), folds)
  accs = []
  for test in parts:
    train = np.setdiff1d(np.arange(len(scores)), test)
    best_t, best = None, -1
    u = sorted(set(scores[train].tolist()))
    # Every distinct decision: below all, between each two neighbours (midpoint), above all.
    for t in [u[0] - 1] + [(a + b) / 2 for a, b in zip(u, u[1:])] + [u[-1] + 1]:
      acc = np.mean((scores[train] > t) == same[train])
      if acc > best:
        best, best_t = acc, t
    accs.append(np.mean((scores[test] > best_t) == same[test]))
  return np.mean(accs)


def test_kfold_accuracy_matches_brute_force():
  rng = np.random.default_rng(1)
  same = rng.integers(0, 2, 300).astype(bool)
  scores = np.round(rng.normal(size=300) + 1.5 * same, 2)  # many ties
  got = verification.kfold_accuracy(scores, same, 10)
  assert got["accuracy"] == pytest.approx(brute_kfold(scores, same, 10), abs=1e-12)
  perfect = verification.kfold_accuracy(np.r_[np.ones(20), np.zeros(20)],
                                        np.r_[np.ones(20, bool), np.zeros(20, bool)], 10)
  assert perfect["accuracy"] == 1.0
  with pytest.raises(ValueError, match="10 folds"):
    verification.kfold_accuracy(np.zeros(5), np.zeros(5, bool), 10)


def test_tracks_and_combined_score():
  rng = np.random.default_rng(2)
  labels = np.repeat(np.arange(20), 5)
  centres = rng.normal(size=(20, 16))
  unmasked = centres[labels] + 0.3 * rng.normal(size=(100, 16))
  masked = centres[labels] + 1.5 * rng.normal(size=(100, 16))  # masks hurt
  first, second, same = verification.sample_pairs(labels, 400, 0)
  assert len(same) == 400 and same.sum() == 200
  assert (labels[first] == labels[second]).tolist() == same.tolist()
  assert not np.any((first == second) & same)
  res = verification.evaluate_tracks({"unmasked": unmasked, "masked": masked}, first, second,
                                     same)
  assert res["standard"]["accuracy"] > res["masked"]["accuracy"]
  np.testing.assert_allclose(res["combined"]["accuracy"],
                             0.25 * res["masked"]["accuracy"] + 0.75 *
                             res["standard"]["accuracy"])
  np.testing.assert_allclose(res["combined"]["tar_at_far"]["0.1"],
                             0.25 * res["masked"]["tar_at_far"]["0.1"] + 0.75 *
                             res["standard"]["tar_at_far"]["0.1"])
  assert res["combined"]["tar_at_far"]["0.001"] is None  # 200 negatives
  # The masked track scores masked `first` against unmasked `second`.
  np.testing.assert_allclose(
      verification.cosine_scores(masked[first], unmasked[second])[:3],
      [np.dot(masked[a], unmasked[b]) / np.linalg.norm(masked[a]) / np.linalg.norm(unmasked[b])
       for a, b in zip(first[:3], second[:3])])


def test_roc_png_is_written(tmp_path):
  rng = np.random.default_rng(0)
  far, tar, _ = verification.roc(rng.normal(size=200), rng.integers(0, 2, 200).astype(bool))
  path = tmp_path / "roc.png"
  plots.write_roc_png(str(path), {"a": (far, tar)})
  img = sources.read_image(str(path))
  assert img.shape[0] > 200 and img.shape[1] > 300


def write_faces(root, names_counts):
  rng = np.random.default_rng(0)
  for name, n in names_counts.items():
    os.makedirs(root / name, exist_ok=True)
    for i in range(1, n + 1):
      img = rng.integers(0, 256, (20, 20), dtype=np.uint8)
      assert sources.cv2.imwrite(str(root / name / f"{name}_{i:04d}.jpg"), img)


def test_lfw_style_pairs_list(tmp_path):
  write_faces(tmp_path, {"Ann": 3, "Bob": 2})
  path = tmp_path / "pairs.txt"
  path.write_text("2\t1\nAnn\t1\t2\nAnn\t3\tBob\t2\n")
  ps = pair_sets.read_pairs_list(str(path), str(tmp_path))
  assert ps.issame.tolist() == [True, False] and len(ps) == 4
  assert ps.describe(ps.first[1]).endswith("Ann/Ann_0003.jpg")
  assert ps.describe(ps.second[1]).endswith("Bob/Bob_0002.jpg")
  assert ps.load(ps.first[0]).shape == (20, 20, 1)
  # The evaluator's own three-column format, paths relative to the root.
  generic = tmp_path / "list.txt"
  generic.write_text("Ann/Ann_0001.jpg Ann/Ann_0002.jpg 1\nAnn/Ann_0001.jpg Bob/Bob_0001.jpg 0\n")
  gs = pair_sets.read_pair_set(f"{generic}@{tmp_path}")
  assert gs.issame.tolist() == [True, False] and gs.first.tolist() == [0, 0]
  bad = tmp_path / "bad.txt"
  bad.write_text("Ann 1 9\n")
  with pytest.raises(FileNotFoundError, match="bad.txt:1: no image .*Ann_0009"):
    pair_sets.read_pairs_list(str(bad), str(tmp_path))
  bad.write_text("Ann 1\n")
  with pytest.raises(ValueError, match="bad.txt:1: expected"):
    pair_sets.read_pairs_list(str(bad), str(tmp_path))


def test_insightface_bin_round_trip_and_bad_files(tmp_path):
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)]
  path = tmp_path / "set.bin"
  write_bin(str(path), images, [True, False, True], ext=".png")
  ps = pair_sets.read_pair_set(str(path))
  assert ps.issame.tolist() == [True, False, True]
  assert ps.first.tolist() == [0, 2, 4] and ps.second.tolist() == [1, 3, 5]
  np.testing.assert_array_equal(ps.load(3), images[3])
  # insightface writes numpy bools too; those are allowed.
  with open(path, "wb") as f:
    pickle.dump(([b for b in ps._images], [np.bool_(True), np.bool_(False), np.bool_(True)]), f)
  assert pair_sets.read_bin(str(path)).issame.tolist() == [True, False, True]

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  evil = tmp_path / "evil.bin"
  evil.write_bytes(pickle.dumps(([Evil()], [True])))
  with pytest.raises(ValueError, match="evil.bin: not an insightface .*refusing"):
    pair_sets.read_bin(str(evil))
  truncated = tmp_path / "cut.bin"
  truncated.write_bytes(path.read_bytes()[:50])
  with pytest.raises(ValueError, match="cut.bin: not an insightface"):
    pair_sets.read_bin(str(truncated))
  odd = tmp_path / "odd.bin"
  odd.write_bytes(pickle.dumps(([b"x"] * 3, [True, False])))
  with pytest.raises(ValueError, match="3 images for 2 pairs"):
    pair_sets.read_bin(str(odd))
  with pytest.raises(FileNotFoundError, match="config.eval.verification.sets"):
    pair_sets.read_pair_set(str(tmp_path / "missing.bin"))


def test_thresholds_by_hand():
  # 4 positives, 6 negatives; accept when score >= t.
  scores = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.5, 0.4, 0.3, 0.1, 0.0])
  issame = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
  t = verification.thresholds(scores, issame, fars=(0.2, 0.1))
  # FAR 0.1 of 6 negatives is below one pair: not measurable, as in tar_at_far.
  assert t["far=0.1"] is None
  # FAR <= 0.2 allows 1 of 6 negatives (0.75): the lowest threshold keeping it at one
  # is 0.7, which also accepts the third positive.
  assert t["far=0.2"] == 0.7
  # Best accuracy: between 0.5 and 0.7 (3 TP + 5 TN = 8 of 10; no other cut does better).
  acc = lambda th: np.mean((scores > th) == issame)  # noqa: E731
  assert acc(t["best_accuracy"]) == 0.8 and 0.5 <= t["best_accuracy"] <= 0.7
  assert "thresholds" in verification.evaluate_pairs(scores, issame, folds=2)
