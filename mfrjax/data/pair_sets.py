"""Verification sets users already have: LFW-style pair lists and insightface `.bin` files.

Formats read:

  pairs list (LFW pairs.txt)  optional header "<folds> <pairs per fold>" (or one number),
                              then per line either
                                <name> <i> <j>                same person
                                <name1> <i> <name2> <j>       different people
                              with images at <root>/<name>/<name>_<iiii>.<ext>, or
                                <path_a> <path_b> <0|1>       any two files (1 = same),
                              paths relative to <root> (the evaluator's pair format).
  insightface .bin            a pickle of (list of encoded image bytes, list of bools):
                              images 2k and 2k+1 form pair k. Read with an unpickler
                              that accepts only bytes, lists, tuples, bools and NumPy
                              bools, so a crafted file cannot run code.

A set acts as a face set (`load(i, masked, variant)`, `describe(i)`, `file_key`,
`masked_files = False`), so the evaluator embeds it like training data and draws the
mask on the first image of each pair for the masked track.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle

import cv2
import numpy as np

from mfrjax.data import sources


class PairSet:
  """Images plus (first, second, issame) pairs over them."""

  masked_files = False
  landmarks = None

  def __init__(self, name: str, images: list, first, second, issame, reader):
    self.name, self._images, self._reader = name, images, reader
    self.first = np.asarray(first, np.int64)
    self.second = np.asarray(second, np.int64)
    self.issame = np.asarray(issame, bool)

  def __len__(self) -> int:
    return len(self._images)

  def load(self, index: int, masked: bool = False, variant: int = 0) -> np.ndarray:
    del masked, variant  # masks are drawn by the loader (masked_files = False)
    return self._reader(self._images[index], self.describe(index))

  def file_key(self, index: int, masked: bool = False, variant: int = 0) -> int:
    del masked, variant
    return int(index)

  def raw(self, index: int) -> bytes:
    """The stored bytes of image `index` (the encoded image, or the file's bytes)."""
    item = self._images[index]
    return item if isinstance(item, bytes) else pathlib.Path(item).read_bytes()

  def describe(self, index: int) -> str:
    item = self._images[index]
    return item if isinstance(item, str) else f"{self.name} image {index}"


def _read_file(path: str, what: str) -> np.ndarray:
  del what
  return sources.read_image(path)


def _decode_bytes(data: bytes, what: str) -> np.ndarray:
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if img is None:
    raise sources.ImageReadError(f"cannot decode {what}: not a valid encoded image")
  return img[..., None] if img.ndim == 2 else img[..., :3]


def _lfw_path(root: str, name: str, number: str, path: str, line: int) -> str:
  stem = os.path.join(root, name, f"{name}_{int(number):04d}")
  for ext in sources.IMAGE_EXTENSIONS:
    if os.path.exists(stem + ext):
      return stem + ext
  raise FileNotFoundError(f"{path}:{line}: no image {stem}.<{'|'.join(sources.IMAGE_EXTENSIONS)}>")


def read_pairs_list(path: str, root: str) -> PairSet:
  """Reads an LFW-style pairs file (module docstring) with images under `root`.

  Raises:
    FileNotFoundError / ValueError: naming the file and line of a bad entry.
  """
  with open(path, encoding="utf-8") as f:
    return parse_pair_lines(f.read().splitlines(), root, path)


def parse_pair_lines(lines: list[str], root: str, path: str) -> PairSet:
  """The pairs of `lines` (pairs-list syntax); `path` names the source in errors."""
  index, images, first, second, same = {}, [], [], [], []

  def image(p):
    if p not in index:
      index[p] = len(images)
      images.append(p)
    return index[p]

  for n, line in enumerate(lines, 1):
    tok = line.split()
    if not tok or (n == 1 and all(t.isdigit() for t in tok) and len(tok) <= 2):
      continue  # blank line or the "<folds> <n>" header
    if len(tok) == 3 and tok[1].lstrip("-").isdigit() and tok[2].isdigit():
      a, b, s = _lfw_path(root, tok[0], tok[1], path, n), _lfw_path(root, tok[0], tok[2],
                                                                     path, n), True
    elif len(tok) == 4:
      a, b, s = _lfw_path(root, tok[0], tok[1], path, n), _lfw_path(root, tok[2], tok[3],
                                                                     path, n), False
    elif len(tok) == 3 and tok[2] in ("0", "1"):
      a, b = (t if os.path.isabs(t) else os.path.join(root, t) for t in tok[:2])
      for p in (a, b):
        if not os.path.exists(p):
          raise FileNotFoundError(f"{path}:{n}: image {p!r} does not exist")
      s = tok[2] == "1"
    else:
      raise ValueError(f"{path}:{n}: expected 'name i j', 'name1 i name2 j' or "
                       f"'path_a path_b 0|1', got {' '.join(tok)!r}")
    first.append(image(a))
    second.append(image(b))
    same.append(s)
  if not first:
    raise ValueError(f"{path}: no pairs found")
  return PairSet(os.path.basename(path), images, first, second, same, _read_file)


class _SafeUnpickler(pickle.Unpickler):
  """Only plain containers, bytes and NumPy booleans: nothing that can execute code."""

  _ALLOWED = {("numpy", "bool_"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
              ("numpy._core.multiarray", "scalar"), ("builtins", "bytearray")}

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .bin file")


def read_bin(path: str) -> PairSet:
  """Reads an insightface verification `.bin` (module docstring).

  Raises:
    ValueError: naming the file if it is not such a pickle, or the counts disagree.
  """
  try:
    with open(path, "rb") as f:
      bins, issame = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise ValueError(f"{path}: not an insightface verification .bin ({e})") from e
  bins = [bytes(b) for b in bins]
  issame = [bool(x) for x in issame]
  if len(bins) != 2 * len(issame):
    raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
  n = len(issame)
  return PairSet(os.path.basename(path), bins, np.arange(n) * 2, np.arange(n) * 2 + 1, issame,
                 _decode_bytes)


def read_pair_set(spec: str) -> PairSet:
  """`file.bin`, or `pairs.txt@root` (root defaults to the list's folder)."""
  path, _, root = spec.partition("@")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.eval.verification.sets: {path!r} does not exist")
  if path.endswith(".bin"):
    return read_bin(path)
  return read_pairs_list(path, root or os.path.dirname(os.path.abspath(path)))
