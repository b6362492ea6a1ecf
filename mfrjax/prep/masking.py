"""Realistic synthetic face masks placed from five facial landmarks.

A mask is drawn from the landmarks (eyes, nose tip, mouth corners) and a jaw estimate
made from them, in four families with seeded variation of shape, colour, texture and
fit:

  surgical  pleated rectangle-ish shape, several colours, three darker pleat lines
  n95       rounded cup, white/grey, a moulded rim
  kn95      folded shape with a vertical centre seam, peaked at the nose and chin
  cloth     soft rounded shape, patterned (stripes, dots or checks) in random colours

Realism: the mask's colour is multiplied by the face's own low-frequency shading under
it (so it is lit like the face rather than pasted flat), and its outline is rendered
at 4x and area-downsampled, which anti-aliases the edge; the same soft alpha gives a
binary segmentation map (alpha >= 0.5) of the mask region.

Everything is a pure function of (image, landmarks, seed): the same seed gives the same
pixels on every machine and in any worker.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import cv2
import numpy as np

MASK_TYPES = ("surgical", "n95", "kn95", "cloth")
# insightface's ArcFace 112x112 five-point template: eyes, nose tip, mouth corners (x, y).
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
SURGICAL_COLOURS = {"blue": (200, 170, 120), "white": (235, 235, 235),
                    "green": (170, 200, 150), "pink": (190, 170, 230), "black": (40, 40, 40)}
_SS = 4  # supersampling factor of the outline


class MaskInfo(NamedTuple):
  mask_type: str
  colour: tuple[int, int, int]   # BGR base colour
  pattern: str                   # 'pleats', 'rim', 'seam', 'stripes', 'dots', 'checks'


def template_landmarks(height: int, width: int, box: float = 1.0) -> np.ndarray:
  """The ArcFace template scaled into the central `box` square of an (H, W) image:
  box 1 for aligned 112x112 (or any-size aligned) crops; ~0.5 for LFW's 250x250 images,
  whose face fills the central half."""
  side = min(height, width) * box
  x0, y0 = (width - side) / 2, (height - side) / 2
  return TEMPLATE_112 * (side / 112.0) + np.array([x0, y0], np.float32)


def outline(lm: np.ndarray, mask_type: str, rng: np.random.Generator) -> np.ndarray:
  """The mask polygon (N, 2) from landmarks, with a seeded fit (height, width, drop)."""
  eye_l, eye_r, nose, mouth_l, mouth_r = lm
  eyes = (eye_l + eye_r) / 2
  mouth = (mouth_l + mouth_r) / 2
  iod = float(np.linalg.norm(eye_r - eye_l))
  up = (eyes - mouth) / max(float(np.linalg.norm(eyes - mouth)), 1e-6)   # face "up"
  right = np.array([-up[1], up[0]])
  if right @ (eye_r - eye_l) < 0:
    right = -right
  top_t = rng.uniform(0.45, 0.6)                # nose bridge: between eyes and nose tip
  top = nose + (eyes - nose) * top_t
  chin = mouth - up * (float(np.linalg.norm(mouth - nose)) * rng.uniform(1.6, 1.9) + 0.2 * iod)
  half_w = iod * rng.uniform(1.15, 1.3)
  pts = []
  if mask_type == "kn95":
    # Folded: a point at the nose, straight cheeks, a point at the chin.
    pts = [top + up * 0.08 * iod, top + right * half_w * 0.8 - up * 0.1 * iod,
           nose + right * half_w, mouth + right * half_w * 0.9, chin + up * 0.05 * iod,
           mouth - right * half_w * 0.9, nose - right * half_w,
           top - right * half_w * 0.8 - up * 0.1 * iod]
    return np.array(pts, np.float32)
  # Rounded shapes: an ellipse-like lower arc from cheek to cheek through the chin, and
  # a top edge that rises over the nose bridge.
  centre = (top + chin) / 2
  half_h = float(np.linalg.norm(chin - top)) / 2
  arc_x, arc_y, edge_t, edge_lift = _unit_outline(mask_type)
  lower = centre + right * half_w * arc_x[:, None] - up * half_h * arc_y[:, None]
  upper = (centre - right * half_w * (-edge_t[:, None]) * 0.98
           + up * (half_h * 0.9 + edge_lift[:, None] * 0.25 * iod))
  return np.concatenate([lower, upper]).astype(np.float32)


@functools.cache
def _unit_outline(mask_type: str) -> tuple[np.ndarray, ...]:
  """The rounded shapes' outline in face units, which depends on the family only: the
  lower arc (x, y), right cheek -> chin -> left (25 points), and the upper edge's
  positions t in [-1, 1] with their lift over the nose (15 points). Computed once per
  family, element by element as the per-mask loop did, so every mask keeps its pixels:
  it was 40% of a mask's time at 64x64."""
  roundness = {"surgical": 0.25, "n95": 0.9, "cloth": 0.7}[mask_type]
  arc_x, arc_y = [], []
  for a in np.linspace(0, np.pi, 25):
    x, y = np.cos(a), np.sin(a)
    arc_x.append(np.sign(x) * abs(x) ** (1 - 0.5 * (1 - roundness)))
    arc_y.append(y)
  edge_t = np.linspace(-1, 1, 15)
  edge_lift = [(1 - abs(t)) ** 1.5 for t in edge_t]
  out = tuple(np.asarray(v, np.float64) for v in (arc_x, arc_y, edge_t, edge_lift))
  for v in out:
    v.setflags(write=False)
  return out


def soft_alpha(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
  """Anti-aliased coverage (H, W) float32 in [0, 1] of a polygon (4x supersampled)."""
  h, w = shape
  big = np.zeros((h * _SS, w * _SS), np.uint8)
  cv2.fillPoly(big, [np.round(poly * _SS).astype(np.int32)], 255, lineType=cv2.LINE_8)
  return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


@functools.cache
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  """Read-only float32 pixel coordinates: a column of y (H, 1) and a row of x (1, W)."""
  yy = np.arange(h, dtype=np.float32)[:, None]
  xx = np.arange(w, dtype=np.float32)[None, :]
  yy.setflags(write=False)
  xx.setflags(write=False)
  return yy, xx


def _texture(h: int, w: int, info: MaskInfo, lm: np.ndarray, rng) -> np.ndarray:
  """(H, W, 3) float BGR colour layer with the family's pattern.

  A pattern that varies along one axis (pleats: rows; the seam: columns), or whose terms
  do (the dots' and checks' x and y parts), is computed on that axis only and broadcast:
  every pixel gets the very same float32 operations as on the full grid (a test runs both),
  at a fraction of the cost, since masks are drawn per image at load.
  """
  base = np.empty((h, w, 3), np.float32)
  base[:] = info.colour
  iod = float(np.linalg.norm(lm[1] - lm[0]))
  yy, xx = _grid(h, w)
  if info.pattern == "pleats":
    nose_y, mouth_y = lm[2][1], (lm[3][1] + lm[4][1]) / 2
    for k in range(3):
      y = nose_y + (mouth_y - nose_y) * (0.2 + 0.5 * k) + rng.uniform(-1, 1) * 0.03 * iod
      base *= (1 - 0.18 * np.exp(-((yy - y) / max(0.04 * iod, 0.6)) ** 2))[..., None]
  elif info.pattern == "seam":
    cx = lm[2][0]
    base *= (1 - 0.25 * np.exp(-((xx - cx) / max(0.03 * iod, 0.6)) ** 2))[..., None]
  elif info.pattern == "stripes":
    other = rng.integers(0, 256, 3).astype(np.float32)
    period = max(iod * rng.uniform(0.12, 0.3), 2.0)
    on = (np.sin((xx * rng.uniform(-1, 1) + yy) * 2 * np.pi / period) > 0)[..., None]
    base = np.where(on, base, other)
  elif info.pattern == "dots":
    other = rng.integers(0, 256, 3).astype(np.float32)
    period = max(iod * rng.uniform(0.15, 0.3), 3.0)
    on = ((np.mod(xx, period) - period / 2) ** 2 + (np.mod(yy, period) - period / 2) ** 2
          < (period / 4) ** 2)[..., None]
    base = np.where(on, other, base)
  elif info.pattern == "checks":
    other = rng.integers(0, 256, 3).astype(np.float32)
    period = max(iod * rng.uniform(0.15, 0.35), 2.0)
    on = ((np.floor(xx / period) + np.floor(yy / period)) % 2 == 0)[..., None]
    base = np.where(on, base, 0.5 * (base + other))
  return base


def choose(rng: np.random.Generator, mask_types=MASK_TYPES) -> MaskInfo:
  """A seeded mask family, colour and pattern."""
  kind = str(rng.choice(list(mask_types)))
  if kind == "surgical":
    name = str(rng.choice(list(SURGICAL_COLOURS)))
    return MaskInfo(kind, SURGICAL_COLOURS[name], "pleats")
  if kind == "n95":
    g = int(rng.integers(200, 246))
    return MaskInfo(kind, (g, g, g), "rim")
  if kind == "kn95":
    g = int(rng.integers(190, 246))
    return MaskInfo(kind, (g, g, int(rng.integers(g - 20, g + 1))), "seam")
  colour = tuple(int(c) for c in rng.integers(30, 230, 3))
  return MaskInfo(kind, colour, str(rng.choice(["stripes", "dots", "checks"])))


def apply_mask(img: np.ndarray, landmarks: np.ndarray, seed, mask_types=MASK_TYPES
               ) -> tuple[np.ndarray, np.ndarray, MaskInfo]:
  """Draws a seeded mask on a face.

  Args:
    img: uint8 (H, W, C), C in {1, 3} (BGR).
    landmarks: (5, 2) float x, y: left eye, right eye, nose tip, left and right mouth
      corner (as seen in the image).
    seed: anything np.random.default_rng accepts; same seed -> same mask.
    mask_types: families to draw from.

  Returns:
    (masked uint8 image like `img`, segmentation uint8 (H, W) in {0, 255}, MaskInfo).
  """
  lm = np.asarray(landmarks, np.float32).reshape(5, 2)
  if not np.isfinite(lm).all():
    raise ValueError("landmarks contain NaN/inf")
  rng = np.random.default_rng(seed)
  info = choose(rng, mask_types)
  h, w, c = img.shape
  poly = outline(lm, info.mask_type, rng)
  alpha = soft_alpha((h, w), poly)
  colour = _texture(h, w, info, lm, rng)
  grey = img[..., 0] if c == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
  # The face's own low-frequency light under the mask: brighter side, brighter mask.
  iod = float(np.linalg.norm(lm[1] - lm[0]))
  k = int(max(3, round(iod * 0.6)) // 2 * 2 + 1)
  light = cv2.GaussianBlur(grey.astype(np.float32), (k, k), 0)
  inside = alpha > 0.5
  ref = float(light[inside].mean()) if inside.any() else float(light.mean())
  shading = np.clip(light / max(ref, 1.0), 0.6, 1.4) ** 0.6
  level = np.clip(ref / 150.0, 0.55, 1.15)     # a dim photo gets a dim mask
  colour = colour * (shading * level)[..., None]
  if info.pattern == "rim":
    edge = cv2.GaussianBlur(alpha, (5, 5), 0)
    colour *= (1 - 0.25 * (edge * (1 - edge) * 4))[..., None]
  if c == 1:
    colour = cv2.cvtColor(np.clip(colour, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY
                          )[..., None].astype(np.float32)
  out = img.astype(np.float32) * (1 - alpha[..., None]) + colour * alpha[..., None]
  seg = (alpha >= 0.5).astype(np.uint8) * 255
  return np.clip(np.round(out), 0, 255).astype(np.uint8), seg, info


def contact_sheet(rows: list[tuple[np.ndarray, ...]], tile: int = 112,
                  names: tuple[str, ...] = ("original", "masked", "segmentation")
                  ) -> np.ndarray:
  """A BGR grid: one row per example, one column per image of it, named `names` (the
  masking tool's (original, masked, map); mask removal's sheets add more columns)."""
  def fit(x):
    x = x if x.ndim == 3 else x[..., None]
    x = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x
    return cv2.resize(x, (tile, tile), interpolation=cv2.INTER_AREA)
  lines = [np.concatenate([fit(np.asarray(x, np.uint8)) for x in row], axis=1) for row in rows]
  sheet = np.concatenate(lines, axis=0)
  for j, name in enumerate(names):
    cv2.putText(sheet, name, (j * tile + 4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (0, 0, 255), 1, cv2.LINE_AA)
  return sheet
