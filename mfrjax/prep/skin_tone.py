"""Skin-tone estimate per image and per identity, and K tone groups (the paper's method).

Per image:
  1. foreground / background: Otsu's threshold on the grey image; the class that covers
     more of the central region (where an aligned or centred face is) is the foreground;
  2. skin pixels: foreground pixels that both rules accept, HSV (H <= 25 deg or
     >= 335 deg, 0.23 <= S <= 0.68, V >= 0.35) and YCrCb (133 <= Cr <= 173,
     77 <= Cb <= 127) - the classic explicit rules (Kovac et al.; Chai & Ngan);
  3. tone: the mean CIE L* (lightness, 0..100) of the skin pixels, and the individual
     typology angle ITA = atan((L* - 50) / b*) in degrees (higher = lighter), the usual
     dermatology scale.
Grey images (ORL, the shared LFW copy) have no hue: every foreground pixel of the
central region counts, and the tone is its mean lightness; ITA is not defined (NaN).

Per identity: the median over its images. Groups: identities sorted by tone and cut
into K groups of (nearly) equal size, `tone-1` the lightest; written as the
`identity,group` CSV the evaluator reads (`config.data.groups_csv`).

This measures the apparent skin tone under each photo's lighting and camera. It is not
ethnicity and must not be read as such.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _central(shape: tuple[int, int]) -> np.ndarray:
  """True on the central half (in each direction) of an (H, W) image."""
  h, w = shape
  centre = np.zeros((h, w), bool)
  centre[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
  return centre


def foreground_mask(img: np.ndarray) -> np.ndarray:
  """Otsu foreground (bool H x W): the class covering more of the central half."""
  grey = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
  _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
  bright = bright.astype(bool)
  return bright if bright[_central(grey.shape)].mean() >= 0.5 else ~bright


def skin_mask(img: np.ndarray) -> np.ndarray:
  """Pixel-wise skin classifier (bool H x W) for BGR images: HSV and YCrCb rules."""
  hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL).astype(np.int32)  # H in 0..255
  hue_deg = hsv[..., 0] * 360 / 256
  s, v = hsv[..., 1] / 255, hsv[..., 2] / 255
  rule_hsv = ((hue_deg <= 25) | (hue_deg >= 335)) & (s >= 0.23) & (s <= 0.68) & (v >= 0.35)
  ycc = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb).astype(np.int32)
  cr, cb = ycc[..., 1], ycc[..., 2]
  rule_ycc = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)
  return rule_hsv & rule_ycc


def image_tone(img: np.ndarray, min_pixels: int = 20) -> dict:
  """{'lightness': mean L* of skin (0..100), 'ita': degrees or NaN, 'skin_fraction'}.

  Returns NaN lightness when fewer than `min_pixels` skin pixels are found.
  """
  fg = foreground_mask(img)
  if img.shape[2] == 1:
    skin = fg & _central(fg.shape)
    lab_l = img[..., 0].astype(np.float64) * 100 / 255
    b = None
  else:
    skin = fg & skin_mask(img)
    lab = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_BGR2LAB)
    lab_l, b = lab[..., 0].astype(np.float64), lab[..., 2].astype(np.float64)
  n = int(skin.sum())
  if n < min_pixels:
    return {"lightness": math.nan, "ita": math.nan, "skin_fraction": n / skin.size}
  light = float(lab_l[skin].mean())
  ita = math.nan if b is None else math.degrees(math.atan2(light - 50, float(b[skin].mean())))
  return {"lightness": light, "ita": ita, "skin_fraction": n / skin.size}


def identity_tones(image_tones: dict[str, list[float]]) -> dict[str, float]:
  """Median tone per identity over its images with a value (NaN if none)."""
  out = {}
  for ident, values in image_tones.items():
    v = np.asarray([x for x in values if not math.isnan(x)])
    out[ident] = float(np.median(v)) if len(v) else math.nan
  return out


def tone_groups(tones: dict[str, float], k: int) -> dict[str, str]:
  """K groups of nearly equal size by tone, 'tone-1' the lightest; 'unknown' for NaN."""
  if k < 1:
    raise ValueError(f"--groups={k} must be at least 1")
  lightest_first = sorted(((-t, ident) for ident, t in tones.items() if not math.isnan(t)))
  out = {ident: "unknown" for ident, t in tones.items() if math.isnan(t)}
  for g, chunk in enumerate(np.array_split(np.arange(len(lightest_first)), k)):
    for i in chunk:
      out[lightest_first[i][1]] = f"tone-{g + 1}"
  return out
