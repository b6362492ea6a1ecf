"""Landmark-placed masks (prep/masking.py) and the folder tool (mfrjax-mask)."""

import csv

import cv2
import numpy as np
import pytest

from mfrjax.data import sources
from mfrjax.prep import landmarks, mask_dataset, masking
from mfrjax.tools import mask_faces as tool


def face(c=3, size=112, seed=0):
  rng = np.random.default_rng(seed)
  img = cv2.GaussianBlur(rng.integers(60, 200, (size, size, c)).astype(np.uint8), (7, 7), 2)
  return img.reshape(size, size, c)


def test_mask_is_seeded_local_and_covers_nose_and_mouth_not_eyes():
  img = face()
  lm = masking.template_landmarks(112, 112)
  a, seg, info = masking.apply_mask(img, lm, 3)
  b, seg_b, _ = masking.apply_mask(img, lm, 3)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(seg, seg_b)
  c, _, _ = masking.apply_mask(img, lm, 4)
  assert not np.array_equal(a, c)
  assert info.mask_type in masking.MASK_TYPES
  alpha = masking.soft_alpha((112, 112), masking.outline(lm, info.mask_type,
                                                         np.random.default_rng(0)))
  for (x, y) in lm[2:]:                       # nose tip and mouth corners are covered
    assert seg[int(round(y)), int(round(x))] == 255
  for (x, y) in lm[:2]:                       # the eyes are not
    assert seg[int(round(y)), int(round(x))] == 0
  outside = (seg == 0) & (cv2.dilate(seg, np.ones((3, 3), np.uint8)) == 0)
  np.testing.assert_array_equal(a[outside], img[outside])  # nothing changes off the mask
  assert ((alpha > 0.05) & (alpha < 0.95)).any()            # anti-aliased edge


@pytest.mark.parametrize("kind", masking.MASK_TYPES)
def test_every_mask_type_draws_on_grey_and_colour(kind):
  for c in (1, 3):
    out, seg, info = masking.apply_mask(face(c), masking.template_landmarks(112, 112), 1,
                                        (kind,))
    assert info.mask_type == kind and out.shape == (112, 112, c)
    assert 0.1 < (seg > 0).mean() < 0.5


def test_mask_is_lit_like_the_face():
  img = np.full((112, 112, 3), 60, np.uint8)
  img[:, :56] = 200                           # light from the left
  out, seg, _ = masking.apply_mask(img, masking.template_landmarks(112, 112), 0, ("n95",))
  inside = seg > 0
  left, right = inside.copy(), inside.copy()
  left[:, 50:] = False
  right[:, :62] = False
  assert out[left].mean() > out[right].mean() + 20
  dim, _, _ = masking.apply_mask(img // 3, masking.template_landmarks(112, 112), 0, ("n95",))
  assert dim[inside].mean() < out[inside].mean()          # a dim photo, a dim mask


def write_set(root, n_ids=2, per=2):
  fs = sources.SyntheticFaceSet(n_ids, per, 64, seed=0)
  for i in range(len(fs.labels)):
    d = root / fs.identities[fs.labels[i]]
    d.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(d / f"img{i}.png"), fs.load(i, False))
  return fs


def test_folder_tool_output_is_worker_independent_and_loads_as_masked_root(tmp_path, capsys):
  write_set(tmp_path / "faces")
  for w, name in ((1, "m1"), (2, "m2")):
    assert tool.main([f"--root={tmp_path / 'faces'}", f"--out={tmp_path / name}",
                      f"--workers={w}", "--quiet", "--box=0.9"]) == 0
  assert "written: 4" in capsys.readouterr().out
  for rel in ("synthetic_00000/img0_mask.png", "synthetic_00001/img3_mask.png"):
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m1" / rel)),
                                  cv2.imread(str(tmp_path / "m2" / rel)))
    assert set(np.unique(cv2.imread(str(tmp_path / "m1.seg" / rel), 0))) <= {0, 255}
  rows = list(csv.DictReader(open(tmp_path / "m1.manifest.csv")))
  assert len(rows) == 4 and rows[0]["landmark_source"] == "template:box=0.9"
  assert rows[0]["mask_type"] in masking.MASK_TYPES
  fs = sources.FolderFaceSet(str(tmp_path / "faces"), masked_root=str(tmp_path / "m1"))
  assert fs.load(0, True).shape == (64, 64, 1)
  with pytest.raises(FileExistsError, match="nothing is overwritten"):
    mask_dataset.mask_folder(str(tmp_path / "faces"), str(tmp_path / "m1"))


def test_jpg_masked_images_keep_png_maps_and_load_as_masked_root(tmp_path):
  write_set(tmp_path / "faces")
  for fmt in ("png", "jpg"):
    assert tool.main([f"--root={tmp_path / 'faces'}", f"--out={tmp_path / fmt}", "--quiet",
                      "--box=0.9", f"--format={fmt}"]) == 0
  rows = list(csv.DictReader(open(tmp_path / "jpg.manifest.csv")))
  assert rows[0]["output"] == "synthetic_00000/img0_mask.jpg"
  assert rows[0]["segmentation"] == "synthetic_00000/img0_mask.png"   # maps stay lossless
  png = cv2.imread(str(tmp_path / "png" / "synthetic_00000/img0_mask.png"), 0)
  jpg = cv2.imread(str(tmp_path / "jpg" / "synthetic_00000/img0_mask.jpg"), 0)
  assert 0 < np.abs(png.astype(int) - jpg.astype(int)).mean() < 2.0  # JPEG at quality 95
  np.testing.assert_array_equal(cv2.imread(str(tmp_path / "png.seg/synthetic_00000/img0_mask.png")),
                                cv2.imread(str(tmp_path / "jpg.seg/synthetic_00000/img0_mask.png")))
  fs = sources.FolderFaceSet(str(tmp_path / "faces"), masked_root=str(tmp_path / "jpg"))
  np.testing.assert_array_equal(fs.load(0, True)[..., 0], jpg)
  with pytest.raises(ValueError, match="unknown --format='gif'"):
    mask_dataset.mask_folder(str(tmp_path / "faces"), str(tmp_path / "gif"), image_format="gif")
  assert not (tmp_path / "gif").exists()


def test_landmark_file_reports_missing_and_bad_landmarks(tmp_path, monkeypatch):
  write_set(tmp_path / "faces")
  lm = masking.template_landmarks(64, 64, 0.9)
  lines = ["path," + ",".join(f"{a}{k}" for k in range(1, 6) for a in "xy"),
           "synthetic_00000/img0.png," + ",".join(map(str, lm.ravel())),
           "synthetic_00000/img1.png," + ",".join(["500"] * 10),      # outside
           "synthetic_00001/img2.png," + ",".join(["30"] * 10)]       # eyes on top of each other
  (tmp_path / "lm.csv").write_text("\n".join(lines) + "\n")
  s = mask_dataset.mask_folder(str(tmp_path / "faces"), str(tmp_path / "out"),
                               landmarks=str(tmp_path / "lm.csv"), quiet=True)
  assert s.written == 1
  assert dict(s.skipped) == {"synthetic_00000/img1.png": "landmarks outside the image",
                             "synthetic_00001/img2.png": "eyes less than 4 px apart",
                             "synthetic_00001/img3.png": "no landmarks in the file"}
  (tmp_path / "bad.csv").write_text("a.png,1,2,3\n")
  with pytest.raises(ValueError, match="bad.csv:1: expected path and 10 numbers"):
    landmarks.read_csv(str(tmp_path / "bad.csv"))
  monkeypatch.setattr(landmarks, "available", lambda: False)   # as without the extra
  with pytest.raises(landmarks.MissingExtra, match=r"pip install 'mfrjax\[landmarks\]'"):
    mask_dataset.mask_folder(str(tmp_path / "faces"), str(tmp_path / "o2"), landmarks="detector")
  assert not (tmp_path / "o2").exists()


def test_two_inputs_with_one_output_name_do_not_overwrite(tmp_path):
  write_set(tmp_path / "faces")
  src = tmp_path / "faces" / "synthetic_00000" / "img0.png"
  (src.parent / "img0.jpg").write_bytes(src.read_bytes())    # a.jpg beside a.png
  s = mask_dataset.mask_folder(str(tmp_path / "faces"), str(tmp_path / "out"), quiet=True)
  assert s.written == 4
  assert s.skipped == [("synthetic_00000/img0.png", "same output name as "
                        "synthetic_00000/img0.jpg")]
  rows = list(csv.DictReader(open(tmp_path / "out.manifest.csv")))
  assert len({r["output"] for r in rows}) == len(rows) == 4


def test_preview_writes_a_contact_sheet(tmp_path):
  write_set(tmp_path / "faces", 3, 2)
  out = tmp_path / "sheet.png"
  assert tool.main([f"--root={tmp_path / 'faces'}", "--preview=4", f"--preview_out={out}"]) == 0
  sheet = cv2.imread(str(out))
  assert sheet.shape == (4 * 112, 3 * 112, 3)


def _outline_by_points(lm, mask_type, rng):
  """The rounded outline point by point, as masking.outline drew it before its unit
  shape was computed once per family: the masks must keep their pixels."""
  eye_l, eye_r, nose, mouth_l, mouth_r = lm
  eyes, mouth = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
  iod = float(np.linalg.norm(eye_r - eye_l))
  up = (eyes - mouth) / max(float(np.linalg.norm(eyes - mouth)), 1e-6)
  right = np.array([-up[1], up[0]])
  if right @ (eye_r - eye_l) < 0:
    right = -right
  top = nose + (eyes - nose) * rng.uniform(0.45, 0.6)
  chin = mouth - up * (float(np.linalg.norm(mouth - nose)) * rng.uniform(1.6, 1.9) + 0.2 * iod)
  half_w = iod * rng.uniform(1.15, 1.3)
  centre, half_h = (top + chin) / 2, float(np.linalg.norm(chin - top)) / 2
  roundness = {"surgical": 0.25, "n95": 0.9, "cloth": 0.7}[mask_type]
  pts = []
  for a in np.linspace(0, np.pi, 25):
    x, y = np.cos(a), np.sin(a)
    x = np.sign(x) * abs(x) ** (1 - 0.5 * (1 - roundness))
    pts.append(centre + right * half_w * x - up * half_h * y)
  for t in np.linspace(-1, 1, 15):
    lift = (1 - abs(t)) ** 1.5 * 0.25 * iod
    pts.append(centre - right * half_w * (-t) * 0.98 + up * (half_h * 0.9 + lift))
  return np.array(pts, np.float32)


@pytest.mark.parametrize("mask_type", ["surgical", "n95", "cloth"])
def test_rounded_outline_is_the_point_by_point_shape_exactly(mask_type):
  base = masking.template_landmarks(112, 112)
  for k in range(20):
    lm = base + np.random.default_rng(k).normal(0, 3, (5, 2)).astype(np.float32)
    got = masking.outline(lm, mask_type, np.random.default_rng([k, 1]))
    want = _outline_by_points(lm, mask_type, np.random.default_rng([k, 1]))
    assert got.dtype == np.float32 and got.shape == (40, 2)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("pattern,kind", [("pleats", "surgical"), ("rim", "n95"),
                                          ("seam", "kn95"), ("stripes", "cloth"),
                                          ("dots", "cloth"), ("checks", "cloth")])
def test_texture_is_the_full_grid_pattern_exactly(pattern, kind, monkeypatch):
  """Each pattern on its axis, broadcast, gives the very pixels of the same code on the
  full (H, W) grid, which is how `_texture` drew every mask before: masks keep their pixels
  (and the full-grid code is the old one: 3,000 masks compared, commit message)."""
  cases = []
  for k, (h, w) in enumerate([(48, 48), (64, 64), (112, 112), (97, 131)] * 5):
    lm = masking.template_landmarks(h, w) + np.random.default_rng(k).normal(
        0, 3, (5, 2)).astype(np.float32)
    info = masking.MaskInfo(kind, tuple(int(c) for c in np.random.default_rng(k).integers(
        30, 230, 3)), pattern)
    cases.append((k, h, w, lm, info))
  got = [masking._texture(h, w, info, lm, np.random.default_rng([k, 2]))
         for k, h, w, lm, info in cases]
  monkeypatch.setattr(masking, "_grid", lambda h, w: np.mgrid[0:h, 0:w].astype(np.float32))
  for (k, h, w, lm, info), g in zip(cases, got):
    want = masking._texture(h, w, info, lm, np.random.default_rng([k, 2]))
    assert g.shape == (h, w, 3) and g.dtype == np.float32
    np.testing.assert_array_equal(g, want)
