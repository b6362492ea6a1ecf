"""mfrjax-clean: every kind of finding on a set the test builds, the exclusion list
the loader honours, the banded near-duplicate search against brute force."""

import json

import cv2
import numpy as np
import pytest

from mfrjax.data import sources
from mfrjax.prep import clean
from mfrjax.tools import clean as tool


def face(seed, size=64):
  rng = np.random.default_rng(seed)
  img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (9, 9), 3)
  return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def build(tmp_path):
  root = tmp_path / "faces"
  for d in ("A", "B", "C", "D"):  # D stays empty: the loader refuses it unless excluded
    (root / d).mkdir(parents=True)
  a1 = face(1)
  cv2.imwrite(str(root / "A" / "a1.png"), a1)
  cv2.imwrite(str(root / "A" / "a2.bmp"), a1)                        # same pixels
  cv2.imwrite(str(root / "A" / "a3.jpg"), cv2.resize(cv2.resize(a1, (48, 48)), (64, 64)),
              [cv2.IMWRITE_JPEG_QUALITY, 70])                        # re-saved copy
  cv2.imwrite(str(root / "A" / "a4.png"), face(4))
  (root / "A" / "a5.jpg").write_bytes(b"not a jpeg")
  cv2.imwrite(str(root / "A" / "a6.png"), face(6, size=16))          # tiny
  cv2.imwrite(str(root / "A" / "a7.png"), np.full((64, 64, 3), 128, np.uint8))  # blank
  cv2.imwrite(str(root / "B" / "b1.png"), face(10))                  # alone
  c1 = face(20)
  cv2.imwrite(str(root / "C" / "c1.png"), c1)
  cv2.imwrite(str(root / "C" / "c2.png"), face(21))
  masked = c1.copy()
  masked[40:] = (c1[40:] * 0.95).astype(np.uint8)                    # its own masked copy
  cv2.imwrite(str(root / "C" / "c1_mask1.png"), masked)
  cv2.imwrite(str(root / "C" / "c1_mask2.jpg"), masked, [cv2.IMWRITE_JPEG_QUALITY, 90])
  return root


def test_findings_and_exclusions(tmp_path, capsys):
  root = build(tmp_path)
  out = tmp_path / "report"
  assert tool.main([f"--root={root}", f"--out={out}", "--quiet"]) == 0
  found = {(f["path"], f["reason"]) for f in
           json.loads((out / "report.json").read_text())["findings"]}
  assert found == {("A/a2.bmp", "duplicate"), ("A/a3.jpg", "near-dup"),
                   ("A/a5.jpg", "unreadable"), ("A/a6.png", "tiny"), ("A/a7.png", "blank"),
                   ("C/c1_mask2.jpg", "near-dup"), ("B", "too-few"), ("D", "empty")}
  assert "excluded images: 7, empty identity folders: 1" in capsys.readouterr().out
  excluded = [x for x in (out / "exclude.txt").read_text().splitlines()
              if not x.startswith("#")]
  assert sorted(excluded) == sorted(["A/a2.bmp", "A/a3.jpg", "A/a5.jpg", "A/a6.png",
                                     "A/a7.png", "C/c1_mask2.jpg", "B/b1.png", "D"])
  with pytest.raises(ValueError, match="faces/D' has no images"):
    sources.FolderFaceSet(str(root), mask_source="render")  # what the exclusion list fixes
  fs = sources.FolderFaceSet(str(root), mask_source="render", exclude_list=str(out / "exclude.txt"))
  assert fs.identities == ("A", "C")
  assert [p.split("faces/")[1] for p in fs.paths] == ["A/a1.png", "A/a4.png", "C/c1.png",
                                                      "C/c2.png"]
  assert fs.num_excluded == 7
  with pytest.raises(FileExistsError, match="nothing is overwritten"):
    tool.main([f"--root={root}", f"--out={out}", "--quiet"])
  with pytest.raises(FileNotFoundError, match="config.data.exclude_list"):
    sources.FolderFaceSet(str(root), mask_source="render", exclude_list=str(tmp_path / "no.txt"))


def test_masked_variants_are_filtered_too(tmp_path):
  root = build(tmp_path)
  (tmp_path / "ex.txt").write_text("C/c1_mask2.jpg\nA/a5.jpg\nA/a6.png\nA/a7.png\nA/a2.bmp\n"
                                   "A/a3.jpg\nB/b1.png\nD\n")
  for f in ("a1", "a4"):
    cv2.imwrite(str(root / "A" / f"{f}_mask.png"), face(30))
  cv2.imwrite(str(root / "C" / "c2_mask.png"), face(31))
  fs = sources.FolderFaceSet(str(root), exclude_list=str(tmp_path / "ex.txt"))
  assert [len(m) for m in fs.masked_paths] == [1, 1, 1, 1]  # c1 keeps only c1_mask1


def test_banded_search_equals_brute_force():
  rng = np.random.default_rng(0)
  base = [int(x) for x in rng.integers(0, 2 ** 63, 60, dtype=np.int64)]
  hashes = list(base)
  for h in base[:30]:  # planted neighbours at 1..6 bits
    flips = rng.choice(64, int(rng.integers(1, 7)), replace=False)
    for b in flips:
      h ^= 1 << int(b)
    hashes.append(h)
  for t in (0, 2, 4, 6):
    got = clean.near_duplicates(hashes, t)
    want = {}
    for j in range(len(hashes)):
      cands = [(clean.hamming(hashes[i], hashes[j]), i) for i in range(j)
               if clean.hamming(hashes[i], hashes[j]) <= t]
      if cands:
        d, i = min(cands)
        want[j] = (i, d)
    assert got == want


def test_phash_is_stable_under_resaving_and_differs_between_faces():
  a = face(1)
  b = cv2.imdecode(cv2.imencode(".jpg", cv2.resize(a, (40, 40)), [cv2.IMWRITE_JPEG_QUALITY, 60])[1],
                   cv2.IMREAD_COLOR)
  assert clean.hamming(clean.phash(a), clean.phash(b)) <= 4
  assert clean.hamming(clean.phash(a), clean.phash(face(2))) > 12


def test_orl_is_clean_enough(shared_data, tmp_path):
  findings = clean.scan(str(shared_data / "orl"), quiet=True)
  assert not [f for f in findings if f.reason in ("unreadable", "tiny", "blank", "too-few")]
