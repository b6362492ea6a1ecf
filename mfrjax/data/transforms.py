"""Per-image transforms on uint8 NumPy arrays (OpenCV), run inside grain workers.

Images stay uint8 until they reach the device: that is 4x less host-to-device traffic
than float32, and the model's step does the `/127.5 - 1` scaling.
"""

from __future__ import annotations

import cv2
import numpy as np


def preprocess(img: np.ndarray, size: int, channels: int, crop_fraction: float) -> np.ndarray:
  """Centre-crops, resizes and sets the channel count.

  Args:
    img: uint8 (H, W, C), C in {1, 3}.
    size: output side length.
    channels: 1 (grey) or 3 (BGR); grey inputs are repeated to 3 channels.
    crop_fraction: side of the central square crop as a fraction of the shorter side
      (1.0 keeps the whole image; LFW's 250x250 unaligned images want about 0.5).

  Returns:
    uint8 (size, size, channels).
  """
  y0, x0, side = central_square(*img.shape[:2], crop_fraction)
  img = img[y0:y0 + side, x0:x0 + side]
  if img.shape[0] != size:
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    img = cv2.resize(img, (size, size), interpolation=interp)
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[2] == channels:
    return img
  if channels == 3:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)  # = np.repeat(img, 3, 2), 5x faster
  return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None]


def central_square(height: int, width: int, crop_fraction: float) -> tuple[int, int, int]:
  """(y0, x0, side) of `preprocess`'s central square crop of an (H, W) image."""
  side = max(1, int(round(min(height, width) * crop_fraction)))
  return (height - side) // 2, (width - side) // 2, side


def preprocess_points(points: np.ndarray, height: int, width: int, size: int,
                      crop_fraction: float) -> np.ndarray:
  """Where (x, y) points of an (H, W) file land in its `preprocess`ed (size, size) image
  (the same crop and scale), e.g. a face's landmarks, so masks drawn after preprocessing
  sit where they would on the file."""
  y0, x0, side = central_square(height, width, crop_fraction)
  return ((np.asarray(points, np.float32) - np.array([x0, y0], np.float32))
          * np.float32(size / side))


def keep_top_blocks(img: np.ndarray, grid: int, keep_blocks: int) -> np.ndarray:
  """Occlusion removal: cuts the face into a grid x grid block layout and keeps the top
  `keep_blocks` blocks (whole rows; the paper keeps 50 of 10 x 10 = the upper half), where
  a mask never is. Errors name the config keys."""
  if grid <= 0 or keep_blocks <= 0 or keep_blocks > grid * grid or keep_blocks % grid:
    raise ValueError(f"config.data.upper_face.keep_blocks={keep_blocks} must be a positive "
                     f"multiple of config.data.upper_face.grid={grid} (whole rows of blocks), "
                     f"at most {grid * grid}")
  h = img.shape[0]
  return img[: max(1, int(round(h * (keep_blocks // grid) / grid)))]


def augment(img: np.ndarray, rng: np.random.Generator, flip: bool, max_shift: float,
            brightness: float, contrast: float, brightness_contrast_p: float = 1.0
            ) -> np.ndarray:
  """Light, label-preserving augmentation: flip, small shift/scale, brightness/contrast.

  Args:
    img: uint8 (H, W, C).
    rng: the per-example generator (grain's random_map hands a seeded one).
    flip: horizontal flip with probability 0.5.
    max_shift: largest shift as a fraction of the side; the scale jitters by the same.
    brightness: largest additive change, as a fraction of 255.
    contrast: largest multiplicative change around the mean (0.2 -> x[0.8, 1.2]).
    brightness_contrast_p: probability of the brightness/contrast change (at 1 no
      extra number is drawn, so streams written before this option are unchanged).

  Returns:
    uint8 array of the same shape.
  """
  h, w, c = img.shape
  if flip and rng.random() < 0.5:
    img = hflip(img)
  if max_shift > 0:
    s = 1.0 + rng.uniform(-max_shift, max_shift)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, s)
    m[:, 2] += rng.uniform(-max_shift, max_shift, 2) * (w, h)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    img = img.reshape(h, w, c)
  if (brightness > 0 or contrast > 0) and (brightness_contrast_p >= 1 or
                                           rng.random() < brightness_contrast_p):
    # An affine map of each pixel value: computed once for the 256 values (the very same
    # float32 operations per value, so the same bytes) and applied as a look-up table.
    mean = float32_mean(img)
    x = np.arange(256, dtype=np.float32)
    x = (x - mean) * (1 + rng.uniform(-contrast, contrast)) + mean
    x = x + rng.uniform(-brightness, brightness) * 255
    img = apply_table(img, np.clip(x, 0, 255).astype(np.uint8))
  return np.ascontiguousarray(img)


def hflip(img: np.ndarray) -> np.ndarray:
  """`img[:, ::-1]` as a new C-contiguous array: OpenCV's flip for uint8 images, 25x
  faster than copying NumPy's reversed view at 112x112x3; the same bytes."""
  if img.dtype == np.uint8 and img.ndim in (2, 3):
    return cv2.flip(img, 1).reshape(img.shape)
  return np.ascontiguousarray(img[:, ::-1])


def float32_mean(img: np.ndarray) -> np.float32:
  """`img.astype(np.float32).mean()` of a uint8 (H, W, C) image, bit for bit, ~5x faster.

  While 255 * size < 2**24 every partial sum of NumPy's float32 summation is an integer
  that float32 holds exactly, so that sum is the exact integer sum, which OpenCV's
  float64 `sumElems` also gives; NumPy then divides in float64 and rounds to float32,
  as done here. Larger images take NumPy's own route.
  """
  if img.size * 255 < 2 ** 24 and img.shape[-1] <= 4:
    return np.float32(sum(cv2.sumElems(img)) / img.size)
  return img.astype(np.float32).mean()


def apply_table(img: np.ndarray, table: np.ndarray) -> np.ndarray:
  """`table[img]` for uint8 images: a 256-entry table for every channel, or (256, C) with
  one column per channel. OpenCV's LUT, 4-10x faster than NumPy's indexing."""
  table = np.ascontiguousarray(table, np.uint8).reshape(256, 1, -1)
  return cv2.LUT(img, table).reshape(img.shape)


def random_crop(img: np.ndarray, rng: np.random.Generator, min_area: float) -> np.ndarray:
  """A random square window of [min_area, 1] of the image area, resized back."""
  h, w, c = img.shape
  side = max(1, int(round(min(h, w) * np.sqrt(rng.uniform(min_area, 1.0)))))
  y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
  out = cv2.resize(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]), (w, h),
                   interpolation=cv2.INTER_LINEAR)
  return out.reshape(h, w, c)


def _odd_kernel(rng: np.random.Generator, limit: int) -> int:
  return int(rng.choice(np.arange(3, max(limit, 3) + 1, 2)))


def motion_kernel(size: int, angle_deg: float) -> np.ndarray:
  """A normalised line kernel through the centre at `angle_deg` (camera shake)."""
  k = np.zeros((size, size), np.float32)
  c, r = (size - 1) / 2, (size - 1) / 2
  dx, dy = r * np.cos(np.deg2rad(angle_deg)), r * np.sin(np.deg2rad(angle_deg))
  cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)),
                                                         int(round(c + dy))), 1.0, 1)
  return k / k.sum()


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  """Re-compresses with JPEG at `quality` (the artefacts of web-crawled face sets)."""
  ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise RuntimeError("OpenCV could not JPEG-encode an image")
  return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(img.shape)


def photometric(img: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
  """The recognition recipe's augmentations, each applied with its own probability.

  In order: random crop (`crop_p`, area >= `crop_min_area`), box blur (`blur_p`),
  Gaussian blur (`gaussian_blur_p`), motion blur (`motion_blur_p`; kernels up to
  `blur_limit` px), RGB shift (`rgb_shift_p`, each channel +- `rgb_shift_limit`),
  JPEG re-compression (`jpeg_p`, quality in [`jpeg_quality`, 100]). Flip and
  brightness/contrast are in `augment`. Every draw comes from `rng` (seeded by grain per
  example), so the stream is reproducible. A probability of 0 draws nothing.

  Args:
    img: uint8 (H, W, C).
    rng: the example's generator.
    cfg: `config.data.augment`.

  Returns:
    uint8 (H, W, C).
  """
  def hit(p):
    return p > 0 and rng.random() < p

  h, w, c = img.shape
  if hit(cfg.crop_p):
    img = random_crop(img, rng, cfg.crop_min_area)
  if hit(cfg.blur_p):
    k = _odd_kernel(rng, cfg.blur_limit)
    img = cv2.blur(np.ascontiguousarray(img), (k, k)).reshape(h, w, c)
  if hit(cfg.gaussian_blur_p):
    k = _odd_kernel(rng, cfg.blur_limit)
    img = cv2.GaussianBlur(np.ascontiguousarray(img), (k, k), 0).reshape(h, w, c)
  if hit(cfg.motion_blur_p):
    kernel = motion_kernel(_odd_kernel(rng, cfg.blur_limit), rng.uniform(0, 180))
    img = cv2.filter2D(np.ascontiguousarray(img), -1, kernel).reshape(h, w, c)
  if hit(cfg.rgb_shift_p):
    shift = rng.integers(-cfg.rgb_shift_limit, cfg.rgb_shift_limit + 1, size=c)
    # = clip(img + shift, 0, 255) per channel, as a table: 10x faster at 112x112x3.
    img = apply_table(img, np.clip(np.arange(256)[:, None] + shift, 0, 255))
  if hit(cfg.jpeg_p):
    img = jpeg(np.ascontiguousarray(img), rng.integers(cfg.jpeg_quality, 101))
  return np.ascontiguousarray(img)
