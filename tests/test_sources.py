"""Folder face sets: layouts, masked variants, bad input, real data, splits, groups."""

import cv2
import numpy as np
import pytest

from mfrjax.data import sources


def write(path, value=128, size=20, ext_ok=True):
  path.parent.mkdir(parents=True, exist_ok=True)
  img = np.full((size, size, 3), value, np.uint8)
  assert cv2.imwrite(str(path), img)


def test_masked_variants_beside(tmp_path):
  for person in ("alice", "bob"):
    for i in (1, 2, 10):
      write(tmp_path / person / f"{person}_{i}.jpg")
      write(tmp_path / person / f"{person}_{i}_mask_surgical.jpg", value=10)
  fs = sources.FolderFaceSet(str(tmp_path))
  assert fs.identities == ("alice", "bob")
  assert fs.labels.tolist() == [0, 0, 0, 1, 1, 1]
  # 'alice_1' must not claim 'alice_10_mask...': each image has exactly its own variant.
  for p, m in zip(fs.paths, fs.masked_paths):
    assert len(m) == 1 and m[0].replace("_mask_surgical", "") == p
  assert fs.load(0, masked=True).mean() < 20 and fs.load(0, masked=False).mean() > 100


def test_masked_variants_in_parallel_root(tmp_path):
  write(tmp_path / "raw" / "p1" / "a.png")
  write(tmp_path / "masked" / "p1" / "a_n95.png", value=5)
  fs = sources.FolderFaceSet(str(tmp_path / "raw"), masked_root=str(tmp_path / "masked"))
  assert fs.masked_paths[0] == (str(tmp_path / "masked" / "p1" / "a_n95.png"),)


def test_missing_variants_name_an_image_and_the_fix(tmp_path):
  write(tmp_path / "p1" / "a.jpg")
  write(tmp_path / "p1" / "b.jpg")
  write(tmp_path / "p1" / "b_mask.jpg")
  with pytest.raises(ValueError, match=r"1 of 2 images.*a\.jpg.*mask_source='render'"):
    sources.FolderFaceSet(str(tmp_path))
  fs = sources.FolderFaceSet(str(tmp_path), mask_source="render")
  assert not fs.masked_files and len(fs.labels) == 2


def test_empty_identity_folder_is_named(tmp_path):
  write(tmp_path / "p1" / "a.jpg")
  (tmp_path / "empty_person").mkdir()
  (tmp_path / "empty_person" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="empty_person.*has no images"):
    sources.FolderFaceSet(str(tmp_path), mask_source="render")


def test_bad_root_and_mask_source(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.data.root"):
    sources.FolderFaceSet(str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="config.data.mask_source"):
    sources.FolderFaceSet(str(tmp_path), mask_source="paint")


def test_corrupt_and_empty_images_are_named(tmp_path):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"\xff\xd8 not really a jpeg")
  with pytest.raises(sources.ImageReadError, match="bad.jpg"):
    sources.read_image(str(bad))
  empty = tmp_path / "empty.png"
  empty.write_bytes(b"")
  with pytest.raises(sources.ImageReadError, match="empty.png"):
    sources.read_image(str(empty))
  with pytest.raises(sources.ImageReadError, match="gone.png.*No such file"):
    sources.read_image(str(tmp_path / "gone.png"))
  with pytest.raises(sources.ImageReadError, match="Is a directory"):
    sources.read_image(str(tmp_path))


def test_reads_orl_pgm(shared_data):
  fs = sources.FolderFaceSet(str(shared_data / "orl"), mask_source="render")
  assert len(fs.identities) == 40 and len(fs.labels) == 400
  img = fs.load(0, masked=False)
  assert img.shape == (112, 92, 1) and img.dtype == np.uint8 and img.std() > 10


def test_reads_lfw_folders(shared_data):
  fs = sources.FolderFaceSet(str(shared_data / "lfw"), mask_source="render")
  assert len(fs.identities) > 4000 and len(fs.labels) > 10000 - 100
  counts = np.bincount(fs.labels)
  assert counts.max() > 500  # George_W_Bush-sized identity
  assert fs.load(int(np.argmax(fs.labels == np.argmax(counts))), False).shape[:2] == (250, 250)


def test_split_identities_is_seeded_disjoint_and_eligible():
  labels = np.repeat(np.arange(50), [1 if i % 5 == 0 else 4 for i in range(50)])
  train, test = sources.split_identities(labels, 50, 0.25, seed=3)
  assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 50
  assert len(test) == 10  # 25% of the 40 identities with >= 2 images
  assert all(i % 5 != 0 for i in test)  # single-image identities never test
  again = sources.split_identities(labels, 50, 0.25, seed=3)
  np.testing.assert_array_equal(test, again[1])
  assert not np.array_equal(test, sources.split_identities(labels, 50, 0.25, seed=4)[1])


def test_groups_csv(tmp_path):
  f = tmp_path / "groups.csv"
  f.write_text("identity,group\nalice,A\nbob, B\nzed,C\n")
  assert sources.read_groups_csv(str(f), ("alice", "bob", "carol")) == ("A", "B", "unknown")
  f.write_text("alice\n")
  with pytest.raises(ValueError, match="groups.csv:1"):
    sources.read_groups_csv(str(f), ("alice",))
