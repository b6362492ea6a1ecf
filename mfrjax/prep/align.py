"""Five-point face alignment to the ArcFace crops (mfrjax-align).

A least-squares similarity transform (rotation, uniform scale, shift: landmarks.similarity,
as insightface's `norm_crop`) takes an image's five landmarks onto a template and warps
the image with it:

  112x112  insightface's ArcFace template (masking.TEMPLATE_112)
  96x112   the same points 8 px to the left: the SphereFace/CosFace crop

The fit's RMS residual, in template pixels, says how face-like the five points are: dlib's
68-point landmarks on LFW give 3.25 px (median; 7.2 at p99, 10.4 at worst over 9,941
faces), while swapped, shuffled or collapsed points give far more, so points whose
residual passes `max_residual` (default 12 px) are reported as bad and the image is
skipped.

    <root>/<identity>/<image>.<ext>    input, never modified
    <out>/<identity>/<image>.png       aligned crop (png: no second JPEG loss), or .jpg
                                       with --format=jpg (sources.WRITE_FORMATS says when)
    <out>.landmarks.csv                the five source points used (path,x1,y1,...,x5,y5),
                                       reusable as mfrjax-mask --landmarks=<csv>
    <out>.crop_landmarks.csv           the same points in each crop (output path), where
                                       config.data.mask_landmarks places training masks
    <out>.manifest.csv                 source, output, landmark source, fit residual
"""

from __future__ import annotations

import csv
import functools
import os
import pathlib
import time

import cv2
import numpy as np

from mfrjax.data import sources
from mfrjax.prep import landmarks as face_points
from mfrjax.prep.masking import TEMPLATE_112
from mfrjax.progress import Summary, map_progress, one_per_output, require_new

TEMPLATES = {"112x112": (TEMPLATE_112, (112, 112)),
             "96x112": (TEMPLATE_112 - np.array([8.0, 0.0], np.float32), (96, 112))}
MAX_RESIDUAL = 12.0


def template(size: str) -> tuple[np.ndarray, tuple[int, int]]:
  """(five template points, (width, height)) of a crop size name."""
  if size not in TEMPLATES:
    raise ValueError(f"unknown crop size {size!r}; valid: {tuple(TEMPLATES)}")
  return TEMPLATES[size]


def fit(lm: np.ndarray, size: str = "112x112") -> tuple[np.ndarray, np.ndarray, float]:
  """(2x3 similarity onto the template, the five points in the crop, RMS fit residual in
  template pixels)."""
  pts, _ = template(size)
  m = face_points.similarity(lm, pts)
  placed = face_points.transform(m, lm)
  return m, placed, float(np.sqrt(((placed - pts) ** 2).sum(1).mean()))


def warp(img: np.ndarray, m: np.ndarray, size: str = "112x112") -> np.ndarray:
  """The crop of `img` (its channels) under the similarity `m`."""
  _, (w, h) = template(size)
  out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return out.reshape(h, w, *img.shape[2:])


def align(img: np.ndarray, lm: np.ndarray, size: str = "112x112"
          ) -> tuple[np.ndarray, float]:
  """(aligned crop with img's channels, RMS fit residual in template pixels)."""
  m, _, residual = fit(lm, size)
  return warp(img, m, size), residual


def align_one(rel: str, *, root: str, out: str, source: face_points.Source, size: str,
              max_residual: float, image_format: str = "png",
              quality: int = sources.JPEG_QUALITY):
  """('ok', manifest row, landmarks, landmarks in the crop) or ('skip', rel, reason)."""
  img, lm, why = source.read(root, rel)
  if lm is None:
    return ("skip", rel, why)
  m, placed, residual = fit(lm, size)
  if residual > max_residual:
    return ("skip", rel, f"bad landmarks: fit residual over {max_residual:g} px")
  name = output_name(rel, image_format)
  dst = os.path.join(out, name)
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  if not sources.write_image(dst, warp(img, m, size), quality):
    return ("skip", rel, f"cannot write {dst}")
  return ("ok", [rel, name, source.name, f"{residual:.2f}"], lm, placed)


def output_name(rel: str, image_format: str = "png") -> str:
  p = pathlib.Path(rel)
  return str(p.parent / f"{p.stem}.{image_format}")


def align_folder(root: str, out: str, *, landmarks: str = "detector", size: str = "112x112",
                 box: float = 1.0, landmark_model: str = "68", upsample: int = 1,
                 max_residual: float = MAX_RESIDUAL, workers: int = 1, limit: int = 0,
                 quiet: bool = False, image_format: str = "png",
                 quality: int = sources.JPEG_QUALITY) -> Summary:
  """Aligns every image under `root` into the new folder `out` (module docstring)."""
  template(size)
  sources.check_write_format(image_format, quality)
  source = face_points.Source(landmarks, box=box, model=landmark_model, upsample=upsample)
  require_new(out, out + ".landmarks.csv", out + ".crop_landmarks.csv", out + ".manifest.csv")
  files = sources.list_images(root)[:limit or None]
  summary, t0 = Summary(), time.perf_counter()
  name = functools.partial(output_name, image_format=image_format)
  todo = one_per_output(files, name, summary)
  os.makedirs(out)
  fn = functools.partial(align_one, root=root, out=out, source=source, size=size,
                         max_residual=max_residual, image_format=image_format,
                         quality=quality)
  rows, table, in_crops = [], {}, {}
  for r in map_progress(fn, todo, workers=workers, desc="aligning", quiet=quiet):
    if r[0] == "ok":
      rows.append(r[1])
      table[r[1][0]] = r[2]
      in_crops[r[1][1]] = r[3]
      summary.written += 1
    else:
      summary.skip(r[1], r[2])
  face_points.write_csv(out + ".landmarks.csv", table)
  face_points.write_csv(out + ".crop_landmarks.csv", in_crops)
  with open(out + ".manifest.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["source", "output", "landmark_source", "residual_px"])
    w.writerows(rows)
  summary.seconds = time.perf_counter() - t0
  return summary
