"""Five-point alignment (prep/align.py), landmarks (prep/landmarks.py), mfrjax-align.

The detector tests run where the `landmarks` extra is installed (CI installs it) and skip
with the install command otherwise.
"""

import csv
import json
import sys

import cv2
import numpy as np
import pytest

from mfrjax.prep import align, landmarks, mask_dataset, masking
from mfrjax.tools import align_faces as tool

needs_detector = pytest.mark.skipif(
    not landmarks.available(), reason=f"landmark detector not installed: {landmarks.INSTALL}")


def similarity_matrix(angle_deg, scale, tx, ty):
  a = np.deg2rad(angle_deg)
  return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                   [scale * np.sin(a), scale * np.cos(a), ty]])


def lstsq_similarity(src, dst):
  """Reference: x' = a x - b y + tx, y' = b x + a y + ty by linear least squares."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(src, dst):
    rows += [[x, -y, 1, 0], [y, x, 0, 1]]
    rhs += [u, v]
  a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
  return np.array([[a, -b, tx], [b, a, ty]])


def test_similarity_recovers_a_transform_and_matches_least_squares():
  m = similarity_matrix(17, 1.8, 30.5, -12.0)
  src = masking.TEMPLATE_112.astype(np.float64)
  dst = landmarks.transform(m, src)
  np.testing.assert_allclose(landmarks.similarity(src, dst), m, atol=1e-9)
  noisy = dst + np.random.default_rng(0).normal(0, 2.0, dst.shape)
  np.testing.assert_allclose(landmarks.similarity(src, noisy), lstsq_similarity(src, noisy),
                             atol=1e-9)


def test_mirrored_or_shuffled_points_are_bad_landmarks():
  good = landmarks.transform(similarity_matrix(-8, 2.2, 40, 50), masking.TEMPLATE_112)
  img = np.zeros((250, 250, 3), np.uint8)
  assert align.align(img, good)[1] < 1e-6
  mirrored = good[[1, 0, 2, 4, 3]]            # left/right swapped: a reflection
  assert align.align(img, mirrored)[1] > align.MAX_RESIDUAL
  upside = good[[3, 4, 2, 0, 1]]              # eyes and mouth swapped
  assert align.align(img, upside)[1] > align.MAX_RESIDUAL


@pytest.mark.parametrize("size,shape", [("112x112", (112, 112)), ("96x112", (112, 96))])
def test_align_puts_the_landmarks_on_the_template(size, shape):
  m = similarity_matrix(12, 2.0, 35, 20)
  lm = landmarks.transform(m, masking.TEMPLATE_112 + np.array([0.3, -0.4]))
  img = np.zeros((300, 300), np.uint8)
  for x, y in lm:                             # a bright dot on each landmark
    cv2.circle(img, (int(round(x)), int(round(y))), 5, 255, -1)
  out, residual = align.align(img[..., None], lm, size)
  assert out.shape == (*shape, 1) and residual < 0.8
  pts, _ = align.template(size)
  for x, y in pts:
    assert out[int(round(y)), int(round(x)), 0] > 200
  colour, _ = align.align(np.repeat(img[..., None], 3, 2), lm, size)
  assert colour.shape == (*shape, 3)
  with pytest.raises(ValueError, match="unknown crop size"):
    align.align(img, lm, "128x128")


def test_fit_says_where_each_point_lands_in_the_crop():
  """A face off the template (nose 6 px right, 3 down): the crop's points are where the
  warped image has them, not the template's (config.data.mask_landmarks uses them)."""
  face = masking.TEMPLATE_112.copy()
  face[2] += (6.0, 3.0)
  lm = landmarks.transform(similarity_matrix(-8, 1.7, 30, 25), face)
  img = np.zeros((260, 260), np.uint8)
  cv2.circle(img, (int(round(lm[2, 0])), int(round(lm[2, 1]))), 3, 255, -1)   # the nose
  m, placed, residual = align.fit(lm)
  crop = align.warp(img, m)
  ys, xs = np.nonzero(crop > 128)
  np.testing.assert_allclose((xs.mean(), ys.mean()), placed[2], atol=0.7)
  assert np.abs(placed[2] - masking.TEMPLATE_112[2]).max() > 3        # not the template
  np.testing.assert_allclose(residual, np.sqrt(((placed - masking.TEMPLATE_112) ** 2
                                                ).sum(1).mean()), rtol=1e-5)
  np.testing.assert_array_equal(align.align(img, lm)[0], crop)


def test_five_point_model_places_nose_and_mouth_by_the_reference():
  m = similarity_matrix(5, 1.5, 20, 30)
  eyes_nose = landmarks.transform(m, landmarks.FIVE_POINT_REF)
  half = np.array([6.0, 0.0])
  # dlib order: right-eye outer, right-eye inner, left-eye outer, left-eye inner, nose base.
  dlib5 = np.stack([eyes_nose[1] + half, eyes_nose[1] - half, eyes_nose[0] - half,
                    eyes_nose[0] + half, eyes_nose[2]])
  five = landmarks.from_five_point_model(dlib5)
  np.testing.assert_allclose(five[:2], eyes_nose[:2], atol=1e-4)
  np.testing.assert_allclose(five[2:], landmarks.transform(m, masking.TEMPLATE_112[2:]),
                             atol=1e-3)
  p68 = np.arange(136, dtype=np.float64).reshape(68, 2)
  np.testing.assert_allclose(landmarks.from_68_point_model(p68),
                             [p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48],
                              p68[54]])


def test_check_and_csv_round_trip(tmp_path):
  assert landmarks.check(None, 10, 10) == "no landmarks"
  assert landmarks.check(np.full((5, 2), np.nan), 10, 10) == "landmarks not five finite points"
  assert landmarks.check(masking.TEMPLATE_112, 112, 112) is None
  table = {"a/1.jpg": masking.TEMPLATE_112, "b/2.png": masking.TEMPLATE_112 * 2}
  landmarks.write_csv(str(tmp_path / "lm.csv"), table)
  back = landmarks.read_csv(str(tmp_path / "lm.csv"))
  assert list(back) == list(table)
  for k in table:
    np.testing.assert_allclose(back[k], table[k], atol=0.006)


def test_missing_extra_names_the_install_command(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "dlib", None)     # `import dlib` raises ImportError
  with pytest.raises(landmarks.MissingExtra, match=r"pip install 'mfrjax\[landmarks\]'"):
    landmarks.Detector()
  monkeypatch.setattr(landmarks, "available", lambda: False)
  with pytest.raises(landmarks.MissingExtra, match="--landmarks=detector"):
    align.align_folder(str(tmp_path), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  with pytest.raises(FileNotFoundError, match="no such file"):
    landmarks.Source(str(tmp_path / "nope.csv"))


def write_faces(root):
  """Three identities of a drawn face placed by a known similarity; returns their points."""
  table = {}
  for i, (angle, scale) in enumerate([(0, 1.5), (10, 2.0), (-15, 1.2)]):
    m = similarity_matrix(angle, scale, 40 + 5 * i, 30)
    lm = landmarks.transform(m, masking.TEMPLATE_112)
    img = np.full((260, 260, 3), 90, np.uint8)
    for k, (x, y) in enumerate(lm):
      cv2.circle(img, (int(round(x)), int(round(y))), 4, (40 * k, 255, 255 - 40 * k), -1)
    d = root / f"id{i}"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "a.jpg"), img)
    table[f"id{i}/a.jpg"] = lm
  return table


def test_align_folder_from_a_landmarks_file_reports_every_skip(tmp_path, capsys):
  table = write_faces(tmp_path / "raw")
  (tmp_path / "raw" / "id0" / "a.png").write_bytes(b"")                 # same output name
  (tmp_path / "raw" / "id1" / "broken.jpg").write_bytes(b"not a jpeg")  # unreadable
  cv2.imwrite(str(tmp_path / "raw" / "id2" / "nolm.png"), np.zeros((50, 50), np.uint8))
  rows = dict(table)
  rows["id1/a.jpg"] = table["id1/a.jpg"][[1, 0, 2, 4, 3]]               # mirrored: bad
  landmarks.write_csv(str(tmp_path / "lm.csv"), rows)
  assert tool.main([f"--root={tmp_path / 'raw'}", f"--out={tmp_path / 'al'}", "--quiet",
                    f"--landmarks={tmp_path / 'lm.csv'}"]) == 0
  out = capsys.readouterr().out
  assert "written: 2" in out and "skipped: 4" in out
  assert "same output name as id0/a.jpg" in out
  assert "bad landmarks: fit residual over 12 px" in out
  assert "no landmarks in the file" in out and "unreadable" in out
  crop = cv2.imread(str(tmp_path / "al" / "id2" / "a.png"))
  assert crop.shape == (112, 112, 3)
  for k, (x, y) in enumerate(masking.TEMPLATE_112):     # every dot lands on its template spot
    np.testing.assert_allclose(crop[int(round(y)), int(round(x))], (40 * k, 255, 255 - 40 * k),
                               atol=40)
  used = landmarks.read_csv(str(tmp_path / "al.landmarks.csv"))
  assert sorted(used) == ["id0/a.jpg", "id2/a.jpg"]
  # The same points in each crop, keyed by the crop: on the template (an exact fit here).
  in_crops = landmarks.read_csv(str(tmp_path / "al.crop_landmarks.csv"))
  assert sorted(in_crops) == ["id0/a.png", "id2/a.png"]
  for lm in in_crops.values():
    np.testing.assert_allclose(lm, masking.TEMPLATE_112, atol=0.5)
  manifest = list(csv.DictReader(open(tmp_path / "al.manifest.csv")))
  assert manifest[0]["landmark_source"] == "csv" and float(manifest[0]["residual_px"]) < 0.5
  with pytest.raises(FileExistsError, match="nothing is overwritten"):
    tool.main([f"--root={tmp_path / 'raw'}", f"--out={tmp_path / 'al'}",
               f"--landmarks={tmp_path / 'lm.csv'}"])
  # The landmarks the aligner used place masks on the unaligned photos.
  s = mask_dataset.mask_folder(str(tmp_path / "raw"), str(tmp_path / "masked"), quiet=True,
                               landmarks=str(tmp_path / "al.landmarks.csv"))
  assert s.written == 2


def test_jpg_crops_are_the_png_crops_up_to_jpeg_loss(tmp_path):
  table = write_faces(tmp_path / "raw")
  landmarks.write_csv(str(tmp_path / "lm.csv"), table)
  common = [f"--root={tmp_path / 'raw'}", f"--landmarks={tmp_path / 'lm.csv'}", "--quiet"]
  assert tool.main(common + [f"--out={tmp_path / 'png'}"]) == 0
  assert tool.main(common + [f"--out={tmp_path / 'jpg'}", "--format=jpg"]) == 0
  for rel in table:
    name = rel.replace(".jpg", "")
    png = cv2.imread(str(tmp_path / "png" / f"{name}.png"))
    with open(tmp_path / "jpg" / f"{name}.jpg", "rb") as f:
      assert f.read(3) == b"\xff\xd8\xff"                # a JPEG, whatever its name says
    jpg = cv2.imread(str(tmp_path / "jpg" / f"{name}.jpg"))
    assert jpg.shape == png.shape == (112, 112, 3)
    diff = np.abs(jpg.astype(int) - png.astype(int))
    assert diff.mean() < 2.0 and diff.max() > 0            # quality 95: close, not identical
  # The crop landmarks name the .jpg files, so mask_landmarks and the mask tool find them.
  assert sorted(landmarks.read_csv(str(tmp_path / "jpg.crop_landmarks.csv"))) == [
      f"id{i}/a.jpg" for i in range(3)]
  low = tmp_path / "low"
  assert tool.main(common + [f"--out={low}", "--format=jpg", "--quality=20"]) == 0
  small, large = (d / "id0" / "a.jpg" for d in (low, tmp_path / "jpg"))
  assert small.stat().st_size < large.stat().st_size
  with pytest.raises(ValueError, match=r"--quality=0 must be in \[1, 100\]"):
    align.align_folder(str(tmp_path / "raw"), str(tmp_path / "q0"), image_format="jpg",
                       quality=0, landmarks=str(tmp_path / "lm.csv"))
  assert not (tmp_path / "q0").exists()


def test_align_tool_help(capsys):
  with pytest.raises(SystemExit) as e:
    tool.main(["--help"])
  assert e.value.code == 0
  assert "--max_residual" in capsys.readouterr().out


@needs_detector
@pytest.mark.parametrize("model", landmarks.MODELS)
def test_detector_finds_ordered_landmarks_on_real_faces(shared_data, model):
  det = landmarks.Detector(model)
  lfw = sorted((shared_data / "lfw").glob("*/*.jpg"))[:12]
  found = 0
  for path in lfw:
    d = det(cv2.imread(str(path)))
    if d is None:
      continue
    found += 1
    eye_l, eye_r, nose, mouth_l, mouth_r = d.five
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    x0, y0, x1, y1 = d.box
    assert 60 < (x0 + x1) / 2 < 190 and 60 < (y0 + y1) / 2 < 190   # LFW's central face
    assert align.align(cv2.imread(str(path)), d.five)[1] < align.MAX_RESIDUAL
  assert found >= 10
  assert det(np.full((200, 200, 3), 128, np.uint8)) is None


@needs_detector
def test_five_and_68_point_models_agree(shared_data):
  d68, d5 = landmarks.Detector("68"), landmarks.Detector("5")
  errors = []
  for path in sorted((shared_data / "lfw").glob("*/*.jpg"))[:10]:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    a, b = d68(img), d5(img)
    if a is None or b is None:
      continue
    m = landmarks.similarity(a.five, masking.TEMPLATE_112)   # in template pixels
    errors.append(np.linalg.norm(landmarks.transform(m, b.five) - masking.TEMPLATE_112, axis=1))
  assert len(errors) >= 8 and np.median(errors) < 4.0


@needs_detector
def test_detector_aligns_and_masks_real_photos(shared_data, tmp_path):
  root = tmp_path / "lfw"
  for person in sorted((shared_data / "lfw").iterdir())[:3]:
    (root / person.name).mkdir(parents=True)
    for f in sorted(person.glob("*.jpg"))[:2]:
      (root / person.name / f.name).write_bytes(f.read_bytes())
  cv2.imwrite(str(root / person.name / "blank.png"), np.full((120, 120), 200, np.uint8))
  s = align.align_folder(str(root), str(tmp_path / "al"), workers=2, quiet=True)
  assert ("/".join([person.name, "blank.png"]), "no face found") in s.skipped
  assert s.written >= 3 and s.written + len(s.skipped) == len(list(root.glob("*/*")))
  s = mask_dataset.mask_folder(str(root), str(tmp_path / "m"), landmarks="detector",
                               quiet=True)
  assert s.written >= 3
  row = next(csv.DictReader(open(tmp_path / "m.manifest.csv")))
  assert row["landmark_source"] == "detector:68"
  seg = cv2.imread(str(tmp_path / "m.seg" / row["output"]), cv2.IMREAD_GRAYSCALE)
  lm = np.array(json.loads(row["landmarks"]))
  for x, y in lm[2:]:                      # nose tip and mouth corners under the mask
    assert seg[int(round(y)), int(round(x))] == 255
