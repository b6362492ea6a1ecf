"""Masks a whole folder face set into the trainer's on-disk format (tools/mask_faces.py).

    <root>/<identity>/<image>.<ext>            input, never modified
    <out>/<identity>/<image>_mask.png          masked variant (config.data.masked_root=<out>)
    <out>.seg/<identity>/<image>_mask.png      binary segmentation map of the mask region
    <out>.manifest.csv                         source, output, map, type, colour, landmarks

Landmarks come from the canonical template (aligned crops; `box` < 1 places it in the
central square of unaligned but centred photos such as LFW) or from a CSV file
(`path,x1,y1,...,x5,y5`, path relative to the root); an image without usable landmarks
is reported and skipped, never dropped silently. Each image's mask is seeded by (seed,
its relative path), so the output is the same for any number of workers.
"""

from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import os
import pathlib
import time
import zlib

import cv2
import numpy as np

from mfrjax.data import masking, sources
from mfrjax.progress import Progress, Summary, require_new

LANDMARK_SOURCES = ("template", "detector", "<file.csv>")


def read_landmarks_csv(path: str) -> dict[str, np.ndarray]:
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


def image_seed(seed: int, rel: str) -> list[int]:
  return [seed, zlib.crc32(rel.encode("utf-8"))]


def _landmarks_for(rel, img, source, box, table):
  if source == "template":
    return masking.template_landmarks(img.shape[0], img.shape[1], box), None
  lm = table.get(rel)
  if lm is None:
    return None, "no landmarks in the file"
  h, w = img.shape[:2]
  if not np.isfinite(lm).all() or (lm < -0.5 * w).any() or (lm[:, 0] > 1.5 * w).any() or (
      lm[:, 1] > 1.5 * h).any():
    return None, "landmarks outside the image"
  if np.linalg.norm(lm[1] - lm[0]) < 4:
    return None, "eyes less than 4 px apart"
  return lm, None


def mask_one(rel: str, *, root: str, out: str, seed: int, source: str, box: float,
             table: dict, types: tuple[str, ...]):
  """Masks one image; returns ('ok', manifest row) or ('skip', rel, reason)."""
  try:
    img = sources.read_image(os.path.join(root, rel))
  except sources.ImageReadError as e:
    return ("skip", rel, f"unreadable: {e}")
  lm, why = _landmarks_for(rel, img, source, box, table)
  if lm is None:
    return ("skip", rel, why)
  masked, seg, info = masking.apply_mask(img, lm, image_seed(seed, rel), types)
  p = pathlib.Path(rel)
  name = str(p.parent / f"{p.stem}{sources.MASK_TAG}.png")
  for base, arr in ((out, masked), (out + ".seg", seg)):
    dst = os.path.join(base, name)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not cv2.imwrite(dst, arr):
      return ("skip", rel, f"cannot write {dst}")
  return ("ok", {"source": rel, "output": name, "segmentation": name,
                 "mask_type": info.mask_type, "colour_bgr": list(info.colour),
                 "pattern": info.pattern, "landmarks": np.round(lm, 2).tolist(),
                 "landmark_source": source})


def _check_source(landmarks: str):
  if landmarks == "detector":
    raise NotImplementedError(
        "--landmarks=detector needs a landmark detector, which this version does not ship "
        "yet; give landmarks in a CSV (--landmarks=file.csv) or use the template on aligned "
        "or centred crops (--landmarks=template --box=...)")
  if landmarks != "template" and not os.path.exists(landmarks):
    raise FileNotFoundError(f"--landmarks={landmarks!r}: not 'template' and no such file")


def mask_folder(root: str, out: str, *, seed: int = 0, landmarks: str = "template",
                box: float = 1.0, types=masking.MASK_TYPES, workers: int = 1,
                limit: int = 0, quiet: bool = False) -> Summary:
  """Masks every unmasked image under `root` (module docstring). Returns the summary;
  `out` must not exist yet (nothing is overwritten)."""
  _check_source(landmarks)
  for t in types:
    if t not in masking.MASK_TYPES:
      raise ValueError(f"unknown mask type {t!r}; valid: {masking.MASK_TYPES}")
  require_new(out, out + ".seg", out + ".manifest.csv")
  files = sources.list_images(root)[:limit or None]
  table = {} if landmarks == "template" else read_landmarks_csv(landmarks)
  os.makedirs(out)
  fn = functools.partial(mask_one, root=root, out=out, seed=seed, source=landmarks, box=box,
                         table=table, types=tuple(types))
  summary, rows, t0 = Summary(), [], time.perf_counter()
  bar = Progress(len(files), "masking", quiet=quiet)
  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
  results = pool.imap(fn, files, chunksize=16) if pool else map(fn, files)
  try:
    for r in results:
      if r[0] == "ok":
        rows.append(r[1])
        summary.written += 1
      else:
        summary.skip(r[1], r[2])
      bar.update()
  finally:
    if pool:
      pool.close()
      pool.join()
  bar.close()
  with open(out + ".manifest.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["source", "output", "segmentation", "mask_type", "colour_bgr", "pattern",
                "landmarks", "landmark_source"])
    for r in rows:
      w.writerow([r["source"], r["output"], r["segmentation"], r["mask_type"],
                  json.dumps(r["colour_bgr"]), r["pattern"], json.dumps(r["landmarks"]),
                  r["landmark_source"]])
  summary.seconds = time.perf_counter() - t0
  return summary


def preview(root: str, path: str, n: int, *, seed: int = 0, landmarks: str = "template",
            box: float = 1.0, types=masking.MASK_TYPES) -> int:
  """Writes a contact sheet of `n` random images (original, masked, map); returns rows."""
  _check_source(landmarks)
  files = sources.list_images(root)
  table = {} if landmarks == "template" else read_landmarks_csv(landmarks)
  pick = np.random.default_rng([seed, 53]).choice(len(files), min(n, len(files)), replace=False)
  rows = []
  for i in sorted(pick):
    rel = files[i]
    img = sources.read_image(os.path.join(root, rel))
    lm, _ = _landmarks_for(rel, img, landmarks, box, table)
    if lm is None:
      continue
    masked, seg, _ = masking.apply_mask(img, lm, image_seed(seed, rel), tuple(types))
    rows.append((img, masked, seg))
  if not rows:
    raise ValueError("no image with usable landmarks to preview")
  cv2.imwrite(path, masking.contact_sheet(rows))
  return len(rows)
