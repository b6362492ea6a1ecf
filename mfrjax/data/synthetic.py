"""Embedded default data: a deterministic synthetic masked-face set, drawn in code.

This is the data behind the README's first command: it needs no download, so a fresh
machine can train and evaluate at once. It is synthetic and the README says so; it is
made to be *honest* for a demo and tests rather than trivially separable:

* every identity has stable traits in the upper face (eye spacing, eye shape, brows,
  forehead/hairline, skin tone) and in the lower face (nose, mouth, jaw);
* every image varies pose (rotation, scale, shift), lighting, expression and noise;
* the masked variant of an image is the *same* image with a mask over nose-to-chin,
  of one of several shapes and colours, so a mask removes the lower-face traits and a
  model must learn the upper face to recognise masked probes;
* identities carry a skin-tone group label (unequal shares, as real sets have), so the
  evaluator's per-group tables have something to show.

Everything is a pure function of (seed, identity, image): the same arguments give the
same pixels on every machine, and no image is stored.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# Skin tone groups: name, base grey level range (on a 0..255 scale) and share of identities.
TONE_GROUPS = (
    ("tone-1", (200, 230), 0.40),
    ("tone-2", (160, 195), 0.30),
    ("tone-3", (120, 155), 0.20),
    ("tone-4", (80, 115), 0.10),
)
_MASK_COLOURS = (  # BGR
    (220, 200, 160), (235, 235, 235), (40, 40, 40), (120, 160, 90), (180, 120, 200),
    (60, 60, 150),
)
_CANVAS = 64  # faces are drawn on a 64x64 canvas, then resized to the requested size.


def _rng(*keys: int) -> np.random.Generator:
  return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


@dataclasses.dataclass(frozen=True)
class Identity:
  """Stable traits of one synthetic person (canvas pixel units)."""
  group: int
  skin: float
  hair: float
  face_w: float
  face_h: float
  jaw_w: float
  hairline: float
  eye_dx: float
  eye_y: float
  eye_w: float
  eye_h: float
  iris: float
  brow_dy: float
  brow_tilt: float
  brow_w: float
  nose_len: float
  nose_w: float
  mouth_y: float
  mouth_w: float
  lip: float


def make_identity(seed: int, identity: int) -> Identity:
  """Draws the traits of `identity`; pure function of (seed, identity)."""
  r = _rng(seed, 1, identity)
  shares = np.array([g[2] for g in TONE_GROUPS])
  group = int(r.choice(len(TONE_GROUPS), p=shares / shares.sum()))
  lo, hi = TONE_GROUPS[group][1]
  u = r.uniform
  return Identity(
      group=group, skin=u(lo, hi), hair=u(10, 90),
      face_w=u(19, 24), face_h=u(25, 29), jaw_w=u(0.55, 0.95), hairline=u(9, 17),
      eye_dx=u(6.5, 10.5), eye_y=u(25, 30), eye_w=u(2.5, 4.5), eye_h=u(1.0, 2.4),
      iris=u(0, 80), brow_dy=u(3.0, 6.0), brow_tilt=u(-0.35, 0.35), brow_w=u(1, 2.5),
      nose_len=u(6, 11), nose_w=u(2.5, 5.5), mouth_y=u(45, 50), mouth_w=u(5, 10),
      lip=u(1, 3),
  )


def _draw_face(idn: Identity, r: np.random.Generator) -> np.ndarray:
  """Draws one expression of `idn` on a grey canvas in the canonical (aligned) frame."""
  c = _CANVAS
  bg = r.uniform(30, 220)
  img = np.full((c, c), bg, np.float32)
  cx, cy = c / 2, c / 2 + 2
  skin, hair = idn.skin, idn.hair
  # Head: hair cap, then the face ellipse and a jaw polygon whose width is a trait.
  cv2.ellipse(img, (int(cx), int(cy - 2)), (int(idn.face_w + 2), int(idn.face_h + 2)), 0,
              180, 360, hair, -1, cv2.LINE_AA)
  cv2.ellipse(img, (int(cx), int(cy)), (int(idn.face_w), int(idn.face_h)), 0, 0, 360,
              skin, -1, cv2.LINE_AA)
  jaw = np.array([[cx - idn.face_w, cy + 4], [cx + idn.face_w, cy + 4],
                  [cx + idn.face_w * idn.jaw_w, cy + idn.face_h],
                  [cx - idn.face_w * idn.jaw_w, cy + idn.face_h]], np.int32)
  cv2.fillConvexPoly(img, jaw, skin, cv2.LINE_AA)
  # Forehead: hairline height is a trait.
  top = cy - idn.face_h
  cv2.ellipse(img, (int(cx), int(top + 2)), (int(idn.face_w), int(idn.hairline)), 0, 180,
              360, hair, -1, cv2.LINE_AA)
  cv2.rectangle(img, (int(cx - idn.face_w), int(top)), (int(cx + idn.face_w),
                int(top + idn.hairline * 0.6)), hair, -1)
  # Expression: brow raise, eye openness and mouth opening vary per image.
  raise_ = r.uniform(-1.0, 1.5)
  blink = r.uniform(0.6, 1.2)
  mouth_open = r.uniform(0.0, 2.5)
  for side in (-1, 1):
    ex, ey = cx + side * idn.eye_dx, idn.eye_y
    cv2.ellipse(img, (int(round(ex)), int(round(ey))),
                (max(1, int(round(idn.eye_w))), max(1, int(round(idn.eye_h * blink)))), 0, 0,
                360, 245, -1, cv2.LINE_AA)
    cv2.circle(img, (int(round(ex)), int(round(ey))), max(1, int(round(idn.eye_h * 0.8))),
               idn.iris, -1, cv2.LINE_AA)
    by = ey - idn.brow_dy - raise_
    p0 = (int(round(ex - side * 3.5)), int(round(by - side * idn.brow_tilt * 3)))
    p1 = (int(round(ex + side * 3.5)), int(round(by + side * idn.brow_tilt * 3)))
    cv2.line(img, p0, p1, hair * 0.6, max(1, int(round(idn.brow_w))), cv2.LINE_AA)
  # Lower face: nose and mouth.
  ny = idn.eye_y + 3
  nose = np.array([[cx, ny], [cx - idn.nose_w, ny + idn.nose_len],
                   [cx + idn.nose_w, ny + idn.nose_len]], np.int32)
  cv2.polylines(img, [nose], True, skin * 0.6, 1, cv2.LINE_AA)
  cv2.ellipse(img, (int(cx), int(idn.mouth_y)), (int(idn.mouth_w), int(idn.lip + mouth_open)),
              0, 0, 360, skin * 0.45, -1, cv2.LINE_AA)
  return img


def mask_polygon(kind: int, cx: float, top: float, bottom: float, half_w: float) -> np.ndarray:
  """Outline of a mask of shape `kind` (0 surgical, 1 N95 cup, 2 cloth) in image coords."""
  if kind == 0:  # surgical: a trapezoid with straight top edge
    pts = [[cx - half_w, top], [cx + half_w, top], [cx + half_w * 0.85, bottom],
           [cx - half_w * 0.85, bottom]]
  elif kind == 1:  # N95: a rounded cup with a peak over the nose
    t = np.linspace(0, np.pi, 16)
    pts = [[cx - half_w, top + 2], [cx, top - 1], [cx + half_w, top + 2]] + [
        [cx + half_w * np.cos(a), top + (bottom - top) * (0.2 + 0.8 * np.sin(a))] for a in t]
  else:  # cloth: pointed at the nose, curved to the chin
    t = np.linspace(0, np.pi, 16)
    pts = [[cx - half_w, top + 3], [cx, top - 2], [cx + half_w, top + 3]] + [
        [cx + half_w * np.cos(a), top + 3 + (bottom - top - 3) * np.sin(a)] for a in t]
  return np.array(pts, np.float32)


def draw_mask(img: np.ndarray, r: np.random.Generator, top: float, bottom: float,
              cx: float, half_w: float) -> np.ndarray:
  """Draws a mask (random shape, colour, pleats, shading) on a float image; returns it."""
  kind = int(r.integers(3))
  colour = np.array(_MASK_COLOURS[int(r.integers(len(_MASK_COLOURS)))], np.float32)
  grey = float(colour @ np.array([0.114, 0.587, 0.299], np.float32))
  poly = mask_polygon(kind, cx, top, bottom, half_w)
  layer = np.zeros(img.shape[:2], np.float32)
  cv2.fillPoly(layer, [np.round(poly * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
  value = np.full(img.shape, grey if img.ndim == 2 else 0, np.float32)
  if img.ndim == 3:
    value[:] = colour[: img.shape[2]]
  if kind == 0:  # pleats
    for k in range(1, 4):
      y = top + (bottom - top) * k / 4
      cv2.line(value, (int(cx - half_w), int(y)), (int(cx + half_w), int(y)),
               (grey * 0.75,) * (1 if img.ndim == 2 else 3), 1, cv2.LINE_AA)
  # Shade the mask with the face's own brightness so it does not look pasted on.
  shade = np.clip(img.mean() / 128.0, 0.5, 1.3) * r.uniform(0.85, 1.1)
  a = layer if img.ndim == 2 else layer[..., None]
  return img * (1 - a) + value * shade * a


def render(seed: int, identity: int, image: int, masked: bool, size: int) -> np.ndarray:
  """Renders one image as uint8 (size, size, 1).

  Args:
    seed: dataset seed (the whole set is a function of it).
    identity: identity index.
    image: image index within the identity.
    masked: draw the masked variant of the same image.
    size: output side length in pixels.

  Returns:
    A uint8 array of shape (size, size, 1).
  """
  idn = make_identity(seed, identity)
  r = _rng(seed, 2, identity, image)
  img = _draw_face(idn, r)
  mask_r = _rng(seed, 3, identity, image)  # independent of the face draws
  if masked:
    img = draw_mask(img, mask_r, top=idn.eye_y + 5, bottom=_CANVAS / 2 + 2 + idn.face_h + 1,
                    cx=_CANVAS / 2, half_w=idn.face_w + 1)
  # Pose: rotation, scale and shift around the face centre.
  m = cv2.getRotationMatrix2D((_CANVAS / 2, _CANVAS / 2), r.uniform(-12, 12),
                              r.uniform(0.9, 1.1))
  m[:, 2] += r.uniform(-3, 3, size=2)
  img = cv2.warpAffine(img, m, (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
  # Lighting: a linear gradient in a random direction plus global gain.
  yy, xx = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32) / _CANVAS - 0.5
  ang = r.uniform(0, 2 * np.pi)
  img = img * r.uniform(0.75, 1.2) * (1 + r.uniform(0, 0.5) * (np.cos(ang) * xx +
                                                            np.sin(ang) * yy))
  img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
  img = img + r.normal(0, r.uniform(2, 8), img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)[..., None]
