"""Finds what a face set should not train on - without deleting anything.

Checks, per image file (unmasked and masked variants alike):
  unreadable   the file cannot be decoded (sources.read_image fails)
  tiny         shorter side below `min_size` pixels
  blank        almost no contrast (grey standard deviation below `blank_std`)
  duplicate    the same pixels as an earlier image (exact)
  near-dup     a perceptual hash within `max_distance` bits of an earlier image's
               (re-saved, resized or re-compressed copies; near-identical masked copies)
and per identity: `too-few` when fewer than `min_images` unmasked images survive, and
`empty` for an identity folder without any image (the loader refuses one; listing the
folder in the exclusion list makes it skip it).

"Earlier" is the sorted path order, so the first copy is kept and the later ones are
listed. The outputs are a report (JSON, every finding with its reason and, for
duplicates, the image it repeats) and an exclusion list (one path per line, relative
to the root) that the loader honours through `config.data.exclude_list`.

Perceptual hash: the 8x8 low-frequency DCT block of the 32x32 grey image, thresholded
at its median (pHash, 64 bits). Near duplicates are found without comparing all pairs:
the hash is cut into `max_distance + 1` bands, and two hashes within `max_distance` bits
must agree exactly on at least one band (pigeonhole), so only images sharing a band
value are compared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import cv2
import numpy as np

from mfrjax.data import sources
from mfrjax.progress import Progress


@dataclasses.dataclass
class Finding:
  path: str      # relative to the root
  reason: str    # unreadable / tiny / blank / duplicate / near-dup / too-few
  detail: str = ""


def phash(img: np.ndarray) -> int:
  """64-bit perceptual hash of a uint8 (H, W, C) image."""
  grey = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
  small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
  block = cv2.dct(small)[:8, :8].ravel()
  bits = block > np.median(block[1:])  # the DC term would dominate the median
  return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
  return (a ^ b).bit_count()


def _bands(h: int, n: int) -> list[tuple[int, int]]:
  width = 64 // n
  return [(i, (h >> (i * width)) & ((1 << width) - 1)) for i in range(n)]


def near_duplicates(hashes: list[int], max_distance: int, ignore=None
                    ) -> dict[int, tuple[int, int]]:
  """{later index: (earlier index, distance)} for every hash within `max_distance` bits of
  an earlier one (the closest earliest match); `ignore(i, j)` exempts a pair."""
  if max_distance < 0:
    return {}
  n_bands = min(max_distance + 1, 64)
  buckets: dict[tuple[int, int], list[int]] = {}
  for i, h in enumerate(hashes):
    for band in _bands(h, n_bands):
      buckets.setdefault(band, []).append(i)
  best: dict[int, tuple[int, int]] = {}
  for members in buckets.values():
    for x in range(1, len(members)):
      j = members[x]
      for i in members[:x]:
        d = hamming(hashes[i], hashes[j])
        if ignore is not None and ignore(i, j):
          continue
        if d <= max_distance and (j not in best or (d, i) < (best[j][1], best[j][0])):
          best[j] = (i, d)
  return best


def scan(root: str, *, min_size: int = 32, blank_std: float = 2.0, max_distance: int = 4,
         min_images: int = 2, quiet: bool = False) -> list[Finding]:
  """Every finding for the folder set at `root` (module docstring).

  Raises:
    FileNotFoundError: if `root` is not a directory.
  """
  rootp = pathlib.Path(root)
  if not rootp.is_dir():
    raise FileNotFoundError(f"{root!r} is not a directory")
  files = sorted(str(p.relative_to(rootp)) for p in rootp.rglob("*")
                 if p.is_file() and sources.is_image(p.name))
  findings, kept, hashes, exact = [], [], [], {}
  bar = Progress(len(files), "scanning", quiet=quiet)
  for rel in files:
    bar.update()
    try:
      img = sources.read_image(str(rootp / rel))
    except sources.ImageReadError as e:
      findings.append(Finding(rel, "unreadable", str(e)))
      continue
    if min(img.shape[:2]) < min_size:
      findings.append(Finding(rel, "tiny", f"{img.shape[1]}x{img.shape[0]} < {min_size}"))
      continue
    if float(img.std()) < blank_std:
      findings.append(Finding(rel, "blank", f"pixel std {img.std():.2f} < {blank_std}"))
      continue
    digest = hashlib.sha1(img.tobytes() + str(img.shape).encode()).hexdigest()
    if digest in exact:
      findings.append(Finding(rel, "duplicate", f"same pixels as {exact[digest]}"))
      continue
    exact[digest] = rel
    kept.append(rel)
    hashes.append(phash(img))
  bar.close()
  owner = [_unmasked_key(rel) for rel in kept]

  def own_masked_copy(i, j):  # a masked variant is meant to look like its original
    return owner[i] == owner[j] and (sources.MASK_TAG in kept[i]) != (sources.MASK_TAG in kept[j])

  for j, (i, d) in sorted(near_duplicates(hashes, max_distance, own_masked_copy).items()):
    findings.append(Finding(kept[j], "near-dup", f"{d} bits from {kept[i]}"))
  findings += _too_few(rootp, files, findings, min_images)
  has_images = {pathlib.Path(rel).parts[0] for rel in files if len(pathlib.Path(rel).parts) > 1}
  findings += [Finding(p.name, "empty", "identity folder without images")
               for p in sorted(rootp.iterdir())
               if p.is_dir() and not p.name.startswith(".") and p.name not in has_images]
  return findings


def _unmasked_key(rel: str) -> str:
  """folder/stem of the unmasked image a file belongs to (itself if unmasked)."""
  p = pathlib.Path(rel)
  return str(p.parent / p.stem.split(sources.MASK_TAG)[0])


def _too_few(rootp: pathlib.Path, files: list[str], findings: list[Finding],
             min_images: int) -> list[Finding]:
  gone = {f.path for f in findings}
  counts: dict[str, int] = {}
  for rel in files:
    parts = pathlib.Path(rel).parts
    if len(parts) >= 2 and sources.MASK_TAG not in pathlib.Path(rel).stem:
      counts[parts[0]] = counts.get(parts[0], 0) + (rel not in gone)
  return [Finding(ident, "too-few", f"{n} usable unmasked image(s) < {min_images}")
          for ident, n in sorted(counts.items()) if n < min_images]


def exclusion_list(findings: list[Finding], root: str) -> list[str]:
  """Paths (relative to root) the loader should leave out: every flagged image, every
  image of a too-few identity, and each empty identity folder itself."""
  out = {f.path for f in findings if f.reason != "too-few"}
  for f in findings:
    if f.reason == "too-few":
      folder = pathlib.Path(root) / f.path
      out.update(os.path.join(f.path, n) for n in os.listdir(folder)
                 if sources.is_image(n))
  return sorted(out)
