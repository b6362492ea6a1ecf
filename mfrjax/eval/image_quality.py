"""Restoration quality on a region: PSNR, SSIM and L1 (NumPy and OpenCV).

Inpainting is judged on the hole: outside it the composite equals the input, so a
whole-image score would mostly measure the untouched pixels. Images are uint8-scaled
floats (data range 255), (H, W, C); the region is a {0, 1} map (H, W).
"""

from __future__ import annotations

import cv2
import numpy as np

_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """SSIM per pixel (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K = 0.01, 0.03),
  averaged over channels; (H, W)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim == 2:
    a, b = a[..., None], b[..., None]
  out = []
  for c in range(a.shape[-1]):
    x, y = a[..., c], b[..., c]
    def blur(z):
      return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    out.append(((2 * mx * my + _C1) * (2 * cxy + _C2)) /
               ((mx * mx + my * my + _C1) * (vx + vy + _C2)))
  return np.mean(out, axis=0)


def region_scores(restored: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict:
  """{'psnr', 'ssim', 'l1'} of `restored` against `truth` inside `region` (l1 in [0, 1]
  units of the pixel range); NaN for an empty region."""
  region = np.asarray(region, bool)
  if not region.any():
    return {"psnr": float("nan"), "ssim": float("nan"), "l1": float("nan")}
  a, b = np.asarray(restored, np.float64), np.asarray(truth, np.float64)
  diff = (a - b)[region]
  mse = float(np.mean(diff ** 2))
  psnr = float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
  return {"psnr": psnr, "ssim": float(np.mean(ssim_map(a, b)[region])),
          "l1": float(np.mean(np.abs(diff))) / 255.0}


def mask_overlap(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(intersection, union) pixel counts per image of binary {0, 1} maps (N, ...)."""
  axes = tuple(range(1, np.ndim(pred)))
  pred, target = np.asarray(pred, bool), np.asarray(target, bool)
  return np.sum(pred & target, axis=axes), np.sum(pred | target, axis=axes)


def mask_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Intersection over union per image; 1 where both maps are empty (nothing to find,
  nothing found). NumPy twin of losses/restore.iou."""
  inter, union = mask_overlap(pred, target)
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
