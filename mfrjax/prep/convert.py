"""Format conversions between the face-set formats users arrive with and ours.

  rec_to_folder   insightface .rec/.idx  -> <out>/<class>/<record>.<ext> (bytes as stored)
  folder_to_rec   <root>/<identity>/...  -> .rec/.idx (insightface layout, recordio.py)
  bin_to_folder   verification .bin      -> <out>/images/* + <out>/pairs.txt
  pairs_to_bin    a pairs list + root    -> verification .bin
  pairs_to_list   LFW / CALFW / MLFW pair lists -> the evaluator's `a b 0|1` list

Every function refuses to write into a non-empty output (inputs are never
overwritten), reports progress, and returns a `progress.Summary` of what was written
and what was skipped, with the reason.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import time

import cv2
import numpy as np

from mfrjax.data import pair_sets, sources
from mfrjax.prep import recordio
from mfrjax.progress import Progress, Summary, require_new

PAIR_FORMATS = ("lfw", "calfw", "mlfw")


def _fresh_dir(out: str) -> pathlib.Path:
  p = pathlib.Path(out)
  if p.exists() and any(p.iterdir()):
    raise FileExistsError(f"output {out!r} exists and is not empty; choose a new folder "
                          "(inputs and earlier outputs are never overwritten)")
  p.mkdir(parents=True, exist_ok=True)
  return p


def image_extension(data: bytes) -> str | None:
  """'.jpg' / '.png' / '.bmp' from the leading bytes, None if unknown."""
  if data[:3] == b"\xff\xd8\xff":
    return ".jpg"
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return ".png"
  if data[:2] == b"BM":
    return ".bmp"
  return None


def rec_to_folder(rec_path: str, out: str, quiet: bool = False) -> Summary:
  """Unpacks an insightface .rec (with its .idx) into one folder per class."""
  out_p = _fresh_dir(out)
  summary, t0 = Summary(), time.perf_counter()
  with recordio.RecordReader(rec_path) as reader:
    items = recordio.image_labels(reader)
    bar = Progress(len(items), "rec -> folder", quiet=quiet)
    for key, cls in items:
      rec = reader[key]
      ext = image_extension(rec.image)
      if ext is None:
        summary.skip(f"record {key}", "not a JPEG/PNG/BMP image")
      else:
        d = out_p / f"{cls:06d}"
        d.mkdir(exist_ok=True)
        (d / f"{key:08d}{ext}").write_bytes(rec.image)
        summary.written += 1
      bar.update()
    bar.close()
  summary.seconds = time.perf_counter() - t0
  return summary


def _encoded(data: bytes, name: str) -> bytes:
  """`data` if it is a JPEG/PNG, else re-encoded losslessly as PNG (e.g. ORL's PGM)."""
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if img is None:
    raise sources.ImageReadError(f"cannot decode image {name!r}")
  if image_extension(data) in (".jpg", ".png"):
    return data
  return cv2.imencode(".png", img)[1].tobytes()


def folder_to_rec(root: str, rec_path: str, quiet: bool = False) -> Summary:
  """Packs <root>/<identity>/<image> (unmasked images) into .rec/.idx; identity folders
  in sorted order become classes 0..C-1. Unreadable images are skipped and reported."""
  require_new(rec_path)
  try:
    fs = sources.FolderFaceSet(root, mask_source="render")
  except (ValueError, FileNotFoundError) as e:  # named for the tool's flag, not the config
    raise type(e)(str(e).replace(f"config.data.root={root!r}", f"--root={root!r}")) from None
  summary, t0, items = Summary(), time.perf_counter(), []
  bar = Progress(len(fs.paths), "folder -> rec", quiet=quiet)
  for path, cls in zip(fs.paths, fs.labels):
    try:
      items.append((int(cls), _encoded(pathlib.Path(path).read_bytes(), path)))
      summary.written += 1
    except (sources.ImageReadError, OSError) as e:
      summary.skip(path, f"unreadable: {type(e).__name__}")
    bar.update()
  bar.close()
  # Classes must be contiguous 0..C-1 even if a folder lost all its images.
  remap = {c: i for i, c in enumerate(sorted({c for c, _ in items}))}
  recordio.write_rec(rec_path, [(remap[c], b) for c, b in items])
  summary.seconds = time.perf_counter() - t0
  return summary


def bin_to_folder(bin_path: str, out: str, quiet: bool = False) -> Summary:
  """A verification .bin -> <out>/images/<k>.<ext> and <out>/pairs.txt (`a b 0|1`)."""
  ps = pair_sets.read_bin(bin_path)
  out_p = _fresh_dir(out)
  (out_p / "images").mkdir()
  summary, t0, names = Summary(), time.perf_counter(), []
  bar = Progress(len(ps), "bin -> folder", quiet=quiet)
  for k in range(len(ps)):
    data = ps.raw(k)
    ext = image_extension(data) or ".jpg"
    name = f"images/{k:06d}{ext}"
    (out_p / name).write_bytes(data)
    names.append(name)
    summary.written += 1
    bar.update()
  bar.close()
  with open(out_p / "pairs.txt", "w", encoding="utf-8") as f:
    for a, b, s in zip(ps.first, ps.second, ps.issame):
      f.write(f"{names[a]} {names[b]} {int(s)}\n")
  summary.seconds = time.perf_counter() - t0
  return summary


def pairs_to_bin(spec: str, bin_path: str, quiet: bool = False) -> Summary:
  """A pairs list (`pairs.txt@root`, any format pair_sets reads) -> a verification .bin.
  Image bytes are stored as they are (JPEG/PNG) or losslessly re-encoded as PNG."""
  require_new(bin_path)
  ps = pair_sets.read_pair_set(spec)
  summary, t0 = Summary(), time.perf_counter()
  bar = Progress(len(ps.first), "pairs -> bin", quiet=quiet)
  bins, encoded = [], {}
  for a, b in zip(ps.first, ps.second):
    for i in (a, b):   # an image in many pairs is read and checked once
      if i not in encoded:
        encoded[i] = _encoded(ps.raw(i), ps.describe(i))
      bins.append(encoded[i])
    summary.written += 1
    bar.update()
  bar.close()
  write_bin_bytes(bin_path, bins, ps.issame.tolist())
  summary.seconds = time.perf_counter() - t0
  return summary


def read_calfw(path: str, root: str) -> pair_sets.PairSet:
  """CALFW / CPLFW lists: two lines per pair, `<image> <label>`; a pair is the same
  person when both labels are equal and non-zero (their positive pairs carry the
  identity number, negative pairs 0). Images lie directly under `root`."""
  with open(path, encoding="utf-8") as f:
    rows = [ln.split() for ln in f if ln.strip()]
  if len(rows) % 2:
    raise ValueError(f"{path}: {len(rows)} lines; CALFW lists have two lines per pair")
  lines = []
  for n in range(0, len(rows), 2):
    (a, la), (b, lb) = rows[n][:2], rows[n + 1][:2]
    lines.append(f"{a} {b} {int(la == lb and la != '0')}")
  return pair_sets.parse_pair_lines(lines, root, path)


def pairs_to_list(path: str, root: str, fmt: str, out_path: str) -> Summary:
  """Rewrites an LFW (`pairs.txt`), CALFW (two lines per pair) or MLFW (`a b 0|1`) pair
  list as the evaluator's `path_a path_b 0|1` list, paths relative to `root`."""
  require_new(out_path)
  if fmt not in PAIR_FORMATS:
    raise ValueError(f"unknown pair list format {fmt!r}; valid: {PAIR_FORMATS}")
  ps = read_calfw(path, root) if fmt == "calfw" else pair_sets.read_pairs_list(path, root)
  summary = Summary()
  with open(out_path, "w", encoding="utf-8") as f:
    for a, b, s in zip(ps.first, ps.second, ps.issame):
      ra, rb = (os.path.relpath(ps.describe(i), root) for i in (a, b))
      f.write(f"{ra} {rb} {int(s)}\n")
      summary.written += 1
  return summary


def write_bin_bytes(path: str, bins: list[bytes], issame: list[bool]) -> None:
  """Writes already encoded images (pairs 2k, 2k+1) and flags as a .bin."""
  if len(bins) != 2 * len(issame):
    raise ValueError(f"{len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
  with open(path, "wb") as f:
    pickle.dump((bins, [bool(x) for x in issame]), f, protocol=pickle.HIGHEST_PROTOCOL)
