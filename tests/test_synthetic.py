"""The embedded synthetic face set: deterministic, masks only the lower face, grouped."""

import numpy as np

from mfrjax.data import sources, synthetic


def test_deterministic_and_seed_dependent():
  a = synthetic.render(0, 3, 2, False, 32)
  assert a.shape == (32, 32, 1) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, synthetic.render(0, 3, 2, False, 32))
  assert not np.array_equal(a, synthetic.render(1, 3, 2, False, 32))
  assert not np.array_equal(a, synthetic.render(0, 3, 3, False, 32))


def test_mask_covers_lower_face_only():
  diffs = []
  for i in range(10):
    clean = synthetic.render(0, i, 0, False, 64).astype(int)[..., 0]
    masked = synthetic.render(0, i, 0, True, 64).astype(int)[..., 0]
    d = np.abs(clean - masked) > 10
    diffs.append((d[:22].mean(), d[36:56].mean()))  # above the eyes vs mouth/chin band
  upper, lower = np.mean(diffs, axis=0)
  assert upper < 0.02, upper
  assert lower > 0.3, lower


def test_identity_traits_are_stable_and_distinct():
  assert synthetic.make_identity(5, 1) == synthetic.make_identity(5, 1)
  assert synthetic.make_identity(5, 1) != synthetic.make_identity(5, 2)


def test_group_shares_follow_the_table():
  fs = sources.SyntheticFaceSet(2000, 1, 16, seed=0)
  names, counts = np.unique(fs.groups, return_counts=True)
  shares = dict(zip(names, counts / counts.sum()))
  for name, _, expected in synthetic.TONE_GROUPS:
    assert abs(shares[name] - expected) < 0.04


def test_faceset_interface():
  fs = sources.SyntheticFaceSet(3, 4, 24, seed=0)
  assert len(fs.labels) == 12 and fs.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
  assert fs.load(5, masked=False).shape == (24, 24, 1)
  np.testing.assert_array_equal(fs.load(5, masked=True), synthetic.render(0, 1, 1, True, 24))
  assert "identity 1 image 1" in fs.describe(5)
