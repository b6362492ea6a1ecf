"""Masks a whole folder face set into the trainer's on-disk format (mfrjax-mask).

    <root>/<identity>/<image>.<ext>            input, never modified
    <out>/<identity>/<image>_mask.png          masked variant (config.data.masked_root=<out>);
                                               .jpg with --format=jpg
    <out>.seg/<identity>/<image>_mask.png      binary segmentation map of the mask region
                                               (always png: lossless)
    <out>.manifest.csv                         source, output, map, type, colour, landmarks

Landmarks (data/landmarks.Source) come from the canonical template (aligned crops; `box`
< 1 places it in the central square of unaligned but centred photos such as LFW), from
dlib's detector (the `landmarks` extra) or from a CSV file (`path,x1,y1,...,x5,y5`, path
relative to the root); an image without a face or usable landmarks is reported and
skipped, never dropped silently, as is a second input with the same output name (a.jpg
beside a.png). Each image's mask is seeded by (seed, its relative path), so the output
is the same for any number of workers.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import pathlib
import time
import zlib

import cv2
import numpy as np

from mfrjax import salts
from mfrjax.data import sources
from mfrjax.prep import landmarks, masking
from mfrjax.progress import Summary, map_progress, one_per_output, require_new


def image_seed(seed: int, rel: str) -> list[int]:
  return [seed, zlib.crc32(rel.encode("utf-8"))]


def mask_one(rel: str, *, root: str, out: str, seed: int, source: landmarks.Source,
             types: tuple[str, ...], image_format: str = "png",
             quality: int = sources.JPEG_QUALITY):
  """Masks one image; returns ('ok', manifest row) or ('skip', rel, reason)."""
  img, lm, why = source.read(root, rel)
  if lm is None:
    return ("skip", rel, why)
  masked, seg, info = masking.apply_mask(img, lm, image_seed(seed, rel), types)
  name, seg_name = output_name(rel, image_format), output_name(rel)  # maps stay lossless
  for dst, arr in ((os.path.join(out, name), masked), (os.path.join(out + ".seg", seg_name), seg)):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not sources.write_image(dst, arr, quality):
      return ("skip", rel, f"cannot write {dst}")
  return ("ok", {"source": rel, "output": name, "segmentation": seg_name,
                 "mask_type": info.mask_type, "colour_bgr": list(info.colour),
                 "pattern": info.pattern, "landmarks": np.round(lm, 2).tolist(),
                 "landmark_source": source.name})


def output_name(rel: str, image_format: str = "png") -> str:
  p = pathlib.Path(rel)
  return str(p.parent / f"{p.stem}{sources.MASK_TAG}.{image_format}")


def _source(spec, box, model, upsample, types) -> landmarks.Source:
  for t in types:
    if t not in masking.MASK_TYPES:
      raise ValueError(f"unknown mask type {t!r}; valid: {masking.MASK_TYPES}")
  return landmarks.Source(spec, box=box, model=model, upsample=upsample)


def mask_folder(root: str, out: str, *, seed: int = 0, landmarks: str = "template",
                box: float = 1.0, types=masking.MASK_TYPES, workers: int = 1,
                limit: int = 0, quiet: bool = False, landmark_model: str = "68",
                upsample: int = 1, image_format: str = "png",
                quality: int = sources.JPEG_QUALITY) -> Summary:
  """Masks every unmasked image under `root` (module docstring). Returns the summary;
  `out` must not exist yet (nothing is overwritten)."""
  sources.check_write_format(image_format, quality)
  source = _source(landmarks, box, landmark_model, upsample, types)
  require_new(out, out + ".seg", out + ".manifest.csv")
  files = sources.list_images(root)[:limit or None]
  os.makedirs(out)
  fn = functools.partial(mask_one, root=root, out=out, seed=seed, source=source,
                         types=tuple(types), image_format=image_format, quality=quality)
  summary, rows, t0 = Summary(), [], time.perf_counter()
  todo = one_per_output(files, output_name, summary)
  for r in map_progress(fn, todo, workers=workers, desc="masking", quiet=quiet):
    if r[0] == "ok":
      rows.append(r[1])
      summary.written += 1
    else:
      summary.skip(r[1], r[2])
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
            box: float = 1.0, types=masking.MASK_TYPES, landmark_model: str = "68",
            upsample: int = 1) -> int:
  """Writes a contact sheet of `n` random images (original, masked, map); returns rows."""
  source = _source(landmarks, box, landmark_model, upsample, types)
  files = sources.list_images(root)
  pick = np.random.default_rng([seed, salts.PREVIEW_SAMPLE]).choice(
      len(files), min(n, len(files)), replace=False)
  rows = []
  for i in sorted(pick):
    rel = files[i]
    img, lm, _ = source.read(root, rel)
    if lm is None:                     # unreadable or no face: the preview shows the rest
      continue
    masked, seg, _ = masking.apply_mask(img, lm, image_seed(seed, rel), tuple(types))
    rows.append((img, masked, seg))
  if not rows:
    raise ValueError("no image with usable landmarks to preview")
  cv2.imwrite(path, masking.contact_sheet(rows))
  return len(rows)
