"""Five facial landmarks for unaligned photos: a CSV file or dlib's detector (optional extra).

The five points are insightface's: left eye, right eye, nose tip, left and right mouth
corner, as seen in the image (so the first point has the smaller x on a frontal face).
They place masks (prep/masking.py) and align faces (prep/align.py).

The detector is dlib's HOG frontal-face detector plus a shape predictor shipped by the
`face-recognition-models` wheel, installed with `pip install 'mfrjax[landmarks]'` (dlib
from the prebuilt `dlib-bin` wheel: seconds, where `pip install dlib` compiles for ~30
minutes). Nothing is downloaded at run time. Two models:

  68  the 68-point iBUG 300-W predictor (default): eye centres are the means of the eye
      contours, the nose tip and mouth corners are its own points. Best quality; its
      training data's licence excludes commercial use.
  5   dlib's own 5-point predictor (CC0 training data): eye corners and the base of the
      nose. The nose tip and mouth corners are then placed by a similarity fit of the three
      measured points to their mean template positions (FIVE_POINT_REF); on 596 LFW faces
      the result lies 2.0 px (median; 5.0 px at p95) from the 68-point model's, in 112x112
      template pixels.

Of several faces the one chosen is the largest near the centre (insightface's rule: area
minus twice the squared offset from the centre), the subject of a face-set crop.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from typing import NamedTuple

import cv2
import numpy as np

from mfrjax.data import sources
from mfrjax.prep import masking
from mfrjax.prep.masking import TEMPLATE_112

EXTRA = "landmarks"
INSTALL = f"pip install 'mfrjax[{EXTRA}]'"
MODELS = ("68", "5")
# Mean template positions of (left-eye corner midpoint, right-eye corner midpoint, base of
# the nose) from dlib's 5-point model, measured on 596 LFW faces aligned with the 68-point
# model's five points (the other 596 tested the estimate; see the module docstring).
FIVE_POINT_REF = np.array([[38.4426, 53.0081], [73.2355, 52.8741], [55.9275, 79.7012]],
                          np.float32)


class MissingExtra(ImportError):
  """The detector's optional dependencies are not installed."""


def read_csv(path: str) -> dict[str, np.ndarray]:
  """{relative path: (5, 2)} from `path,x1,y1,...,x5,y5` lines; bad lines name the line."""
  out = {}
  with open(path, encoding="utf-8") as f:
    for n, row in enumerate(csv.reader(f), 1):
      if not row or row[0].startswith("#") or (n == 1 and row[0] == "path"):
        continue
      if len(row) != 11:
        raise ValueError(f"{path}:{n}: expected path and 10 numbers, got {len(row)} fields")
      try:
        out[row[0]] = np.array([float(x) for x in row[1:]], np.float32).reshape(5, 2)
      except ValueError as e:
        raise ValueError(f"{path}:{n}: {e}") from e
  return out


def write_csv(path: str, table: dict[str, np.ndarray]) -> None:
  """The inverse of read_csv (header `path,x1,y1,...`), rows in the table's order."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["path"] + [f"{a}{i}" for i in range(1, 6) for a in "xy"])
    for rel, lm in table.items():
      w.writerow([rel] + [f"{v:.2f}" for v in np.asarray(lm).reshape(-1)])


def check(lm: np.ndarray | None, height: int, width: int) -> str | None:
  """Why five landmarks are unusable on an (H, W) image, or None if they look sane."""
  if lm is None:
    return "no landmarks"
  lm = np.asarray(lm, np.float32)
  if lm.shape != (5, 2) or not np.isfinite(lm).all():
    return "landmarks not five finite points"
  if ((lm < -0.5 * np.array([width, height])).any()
      or (lm > 1.5 * np.array([width, height])).any()):
    return "landmarks outside the image"
  if np.linalg.norm(lm[1] - lm[0]) < 4:
    return "eyes less than 4 px apart"
  return None


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The (2, 3) least-squares similarity (rotation, uniform scale, shift; no reflection)
  taking points `src` (N, 2) to `dst` (N, 2): Umeyama (1991), as insightface aligns."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s, d = src - mu_s, dst - mu_d
  u, sv, vt = np.linalg.svd(d.T @ s / len(src))
  flip = np.eye(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    flip[1, 1] = -1
  rot = u @ flip @ vt
  scale = np.trace(np.diag(sv) @ flip) / max(s.var(0).sum(), 1e-12)
  m = np.zeros((2, 3))
  m[:, :2] = scale * rot
  m[:, 2] = mu_d - scale * rot @ mu_s
  return m


def transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
  return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def from_five_point_model(p: np.ndarray) -> np.ndarray:
  """ArcFace five points from dlib's 5-point model (right-eye corners, left-eye corners,
  nose base, image coordinates): eye centres measured, the rest from FIVE_POINT_REF."""
  p = np.asarray(p, np.float64)
  three = np.stack([p[2:4].mean(0), p[0:2].mean(0), p[4]])
  back = similarity(FIVE_POINT_REF, three)
  return np.concatenate([three[:2], transform(back, TEMPLATE_112[2:])]).astype(np.float32)


def from_68_point_model(p: np.ndarray) -> np.ndarray:
  p = np.asarray(p, np.float64)
  return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]
                  ).astype(np.float32)


class Detection(NamedTuple):
  five: np.ndarray          # (5, 2) float32, ArcFace order
  box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the chosen face
  faces: int                # how many faces the detector found


def model_file(name: str) -> str:
  """Path of a dlib model file shipped by face-recognition-models (the extra).

  Located without importing face_recognition_models, whose __init__ needs pkg_resources
  (gone from recent setuptools)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise MissingExtra(f"the landmark detector needs the '{EXTRA}' extra: {INSTALL}")
  path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
  if not os.path.exists(path):
    raise MissingExtra(f"{path} is missing; reinstall the '{EXTRA}' extra: {INSTALL}")
  return path


class Detector:
  """dlib face detector + shape predictor -> ArcFace five points (module docstring).

  Args:
    model: "68" or "5" (see MODELS).
    upsample: image upsamplings before detection; 1 finds faces down to ~40 px.
  """

  def __init__(self, model: str = "68", upsample: int = 1):
    if model not in MODELS:
      raise ValueError(f"unknown landmark model {model!r}; valid: {MODELS}")
    try:
      import dlib  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise MissingExtra(f"the landmark detector needs the '{EXTRA}' extra: {INSTALL}"
                         ) from e
    name = ("shape_predictor_68_face_landmarks.dat" if model == "68"
            else "shape_predictor_5_face_landmarks.dat")
    self.model, self.upsample = model, upsample
    self._detect = dlib.get_frontal_face_detector()
    self._predict = dlib.shape_predictor(model_file(name))

  def __call__(self, img: np.ndarray) -> Detection | None:
    """Landmarks of the main face of a uint8 (H, W[, C]) BGR/grey image, or None."""
    grey = img if img.ndim == 2 else img[..., 0] if img.shape[2] == 1 else (
        cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    grey = np.ascontiguousarray(grey)
    rects = self._detect(grey, self.upsample)
    if not len(rects):  # pylint: disable=g-explicit-length-test
      return None
    h, w = grey.shape
    def score(r):
      cx, cy = (r.left() + r.right()) / 2 - w / 2, (r.top() + r.bottom()) / 2 - h / 2
      return r.width() * r.height() - 2.0 * (cx * cx + cy * cy)
    r = max(rects, key=score)
    pts = np.array([(p.x, p.y) for p in self._predict(grey, r).parts()], np.float64)
    five = from_68_point_model(pts) if self.model == "68" else from_five_point_model(pts)
    return Detection(five, (r.left(), r.top(), r.right(), r.bottom()), len(rects))


_DETECTORS: dict[tuple[str, int], Detector] = {}


def detector(model: str = "68", upsample: int = 1) -> Detector:
  """One Detector per process and setting (dlib objects do not pickle to workers)."""
  key = (model, upsample)
  if key not in _DETECTORS:
    _DETECTORS[key] = Detector(model, upsample)
  return _DETECTORS[key]


def available() -> bool:
  return (importlib.util.find_spec("dlib") is not None
          and importlib.util.find_spec("face_recognition_models") is not None)


class Source:
  """Where an image's five landmarks come from, as the tools' --landmarks flag says:

    template   the ArcFace template in the central `box` square (aligned crops: box 1;
               centred photos such as LFW's 250x250: ~0.5)
    detector   the dlib detector (`model`, `upsample`); needs the extra
    <csv>      a `path,x1,y1,...,x5,y5` file, paths relative to the image root

  Pickles to worker processes (the detector is made once per process, on first use).
  Calling it gives (landmarks or None, why not).
  """

  def __init__(self, spec: str, *, box: float = 1.0, model: str = "68", upsample: int = 1):
    self.spec, self.box, self.model, self.upsample = spec, box, model, upsample
    self.table: dict[str, np.ndarray] = {}
    if spec == "detector":
      if model not in MODELS:
        raise ValueError(f"--landmark_model={model!r}: valid {MODELS}")
      if not available():
        raise MissingExtra(f"--landmarks=detector needs the '{EXTRA}' extra: {INSTALL} "
                           "(or give a landmarks CSV, or --landmarks=template on aligned "
                           "or centred crops)")
    elif spec != "template":
      if not os.path.exists(spec):
        raise FileNotFoundError(f"--landmarks={spec!r}: not 'template' or 'detector' and "
                                "no such file")
      self.table = read_csv(spec)

  @property
  def name(self) -> str:
    return {"template": f"template:box={self.box:g}",
            "detector": f"detector:{self.model}"}.get(self.spec, "csv")

  def __call__(self, rel: str, img: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    h, w = img.shape[:2]
    if self.spec == "template":
      return masking.template_landmarks(h, w, self.box), None
    if self.spec == "detector":
      found = detector(self.model, self.upsample)(img)
      if found is None:
        return None, "no face found"
      lm = found.five
    else:
      lm = self.table.get(rel)
      if lm is None:
        return None, "no landmarks in the file"
    why = check(lm, h, w)
    return (None, why) if why else (lm, None)

  def read(self, root: str, rel: str):
    """(image, landmarks, None) for `<root>/<rel>`, or (image or None, None, why not)."""
    try:
      img = sources.read_image(os.path.join(root, rel))
    except sources.ImageReadError as e:
      return None, None, f"unreadable: {e}"
    lm, why = self(rel, img)
    return img, lm, why
