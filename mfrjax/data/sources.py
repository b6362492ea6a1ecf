"""Face sets: where images come from (folders on disk or the embedded synthetic set).

On-disk format (documented in the README):

    <root>/<identity>/<image>.<ext>                      unmasked images
    <root>/<identity>/<image>_mask<anything>.<ext>       masked variants, beside them, or
    <masked_root>/<identity>/<image><anything>.<ext>     masked variants in a parallel tree

`<ext>` is any of jpg, jpeg, png, pgm, ppm, bmp, webp. ORL (`s1/1.pgm`) and LFW
(`Name/Name_0001.jpg`) are read as they are. A set without masked files can have masks
rendered at load time (`config.data.mask_source = 'render'`).

Every face set exposes the same small interface, so the pipeline and the evaluator do
not care where pixels come from:

    identities: tuple[str, ...]   names, index = label
    labels:     int32[num_images] identity index of every image
    groups:     tuple[str, ...] | None, one group name per identity (synthetic sets)
    masked_files: bool            whether `load(i, masked=True)` gives a real masked image
    landmarks:  float32[num_images, 5, 2] | None, each file's five points (x, y) where the
                masks drawn at load go (FolderFaceSet.place_masks_by); None: the template
    load(i, masked, variant) -> uint8 (H, W, C);  describe(i) -> str for error messages
    file_key(i, masked, variant) -> what load reads (a path), for caches
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
from collections.abc import Sequence

import cv2
import numpy as np

from mfrjax import salts
from mfrjax.data import synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp")
MASK_TAG = "_mask"
# The salt of the held-out identity hash (held_out): fixed, so every run, tool and machine
# agrees on which people are never trained on.
HOLDOUT_SALT = "mfrjax-holdout:"


# The files the data tools write (mfrjax-align, mfrjax-mask: --format, --quality). png
# (default) is lossless; jpg at quality 95 (as insightface packs its training sets) is
# read and decoded 2.2x faster (53 vs 117 us per aligned 112x112 LFW crop) from 1.85x
# fewer bytes, so a training pipeline reads more images per core (README: Throughput and
# bf16), for a second, light JPEG loss (0.72 grey levels per pixel on average there) on
# photos that were JPEGs already.
WRITE_FORMATS = ("png", "jpg")
JPEG_QUALITY = 95


def check_write_format(image_format: str, quality: int) -> None:
  """Raises ValueError naming the flag for a format or quality `write_image` refuses."""
  if image_format not in WRITE_FORMATS:
    raise ValueError(f"unknown --format={image_format!r}; valid: {WRITE_FORMATS}")
  if not 1 <= quality <= 100:
    raise ValueError(f"--quality={quality} must be in [1, 100] (JPEG quality)")


def write_image(path: str, img: np.ndarray, quality: int = JPEG_QUALITY) -> bool:
  """Writes `img` in the format its extension names (`quality` for .jpg); False if
  OpenCV could not write it."""
  params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.endswith(".jpg") else []
  return bool(cv2.imwrite(path, img, params))


class ImageReadError(IOError):
  """An image file could not be decoded; the message names the file."""


def read_image(path: str) -> np.ndarray:
  """Decodes an image file to uint8 (H, W, C) with C in {1, 3} (BGR).

  Raises:
    ImageReadError: naming `path`, if the file is missing, empty or corrupt.
  """
  try:
    with open(path, "rb") as f:  # half the time of np.fromfile plus os.path.exists
      data = np.frombuffer(f.read(), np.uint8)
  except OSError as e:
    raise ImageReadError(f"cannot read image {path!r}: {e.strerror or e}") from e
  if data.size == 0:
    raise ImageReadError(f"cannot read image {path!r}: file is empty")
  img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
  if img is None:
    raise ImageReadError(f"cannot decode image {path!r}: not a valid image file")
  if img.dtype != np.uint8:  # 16-bit PNGs and the like
    img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
  if img.ndim == 2:
    img = img[..., None]
  elif img.shape[2] == 4:
    img = img[..., :3]
  return img


def check_decodable(paths: Sequence[str], what: str) -> None:
  """Decodes every distinct file of `paths` once; raises one ImageReadError that counts
  the files that fail and names up to five, or returns None.

  Run before the first step by both trainers (`what`: e.g. "training image files"), so a
  corrupt file stops a run at once instead of hours into it. Threads, as many as cores:
  OpenCV's decode releases the interpreter lock (7,896 aligned LFW PNGs: 1.8 s on 2 cores).
  """
  def problem(path):
    try:
      read_image(path)
      return None
    except (ImageReadError, cv2.error) as e:
      return str(e)

  paths = list(dict.fromkeys(paths))  # once each: a photo may serve several masked rows
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    bad = [b for b in pool.map(problem, paths) if b]
  if bad:
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise ImageReadError(
        f"{len(bad)} of {len(paths)} {what} cannot be read, so training does not start. "
        "Remove them (mfrjax-clean writes an exclude list for config.data.exclude_list) or "
        "fix them:\n  " + "\n  ".join(bad[:5]) + more)


class SyntheticFaceSet:
  """The embedded default: `num_identities` x `images_per_identity` drawn faces."""

  masked_files = True
  landmarks = None

  def __init__(self, num_identities: int, images_per_identity: int, image_size: int,
               seed: int):
    self.seed, self.image_size, self.per_id = seed, image_size, images_per_identity
    self.identities = tuple(f"synthetic_{i:05d}" for i in range(num_identities))
    self.labels = np.repeat(np.arange(num_identities, dtype=np.int32), images_per_identity)
    self.groups = tuple(synthetic.TONE_GROUPS[synthetic.make_identity(seed, i).group][0]
                        for i in range(num_identities))

  def load(self, index: int, masked: bool, variant: int = 0) -> np.ndarray:
    del variant  # one masked variant per synthetic image
    identity, image = divmod(int(index), self.per_id)
    return synthetic.render(self.seed, identity, image, masked, self.image_size)

  def file_key(self, index: int, masked: bool, variant: int = 0):
    """What `load(index, masked, variant)` reads, as a hashable key (one masked variant)."""
    del variant
    return int(index), bool(masked)

  def describe(self, index: int) -> str:
    identity, image = divmod(int(index), self.per_id)
    return f"synthetic identity {identity} image {image}"


def held_out(identity: str, percent: float) -> bool:
  """Whether `identity` (a folder name) is in the fixed held-out share of people.

  The rule hashes the name alone (SHA-256 with HOLDOUT_SALT, bucket = first 32 bits mod
  10,000), so it needs no seed and no listing of the set: a person is held out from every
  run, in any root that names people the same way (raw, aligned or masked LFW), and
  mfrjax-peer finds exactly the same people. `percent` = 0 holds out no one.
  """
  if not 0 <= percent < 100:
    raise ValueError(f"config.data.holdout_percent={percent} must be in [0, 100)")
  digest = hashlib.sha256((HOLDOUT_SALT + identity).encode("utf-8")).digest()
  return int.from_bytes(digest[:4], "big") % 10_000 < percent * 100


def is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(root: str) -> list[str]:
  """Unmasked images of a folder set, `<identity>/<image>` paths relative to root, sorted.

  Raises:
    FileNotFoundError: if `root` is not a directory.
  """
  rootp = pathlib.Path(root)
  if not rootp.is_dir():
    raise FileNotFoundError(f"--root={root!r} is not a directory")
  return sorted(str(p.relative_to(rootp)) for p in rootp.glob("*/*")
                if p.is_file() and is_image(p.name) and MASK_TAG not in p.stem)


# Where the masked view comes from: files made by mfrjax-mask, or the same realistic
# masks rendered at load time (prep/masking.py). A plain box drawn at load time was the
# third way until a measurement showed it hurts (README: Data, On-disk format).
MASK_SOURCES = ("files", "render")


class FolderFaceSet:
  """Images in `<root>/<identity>/`, with optional masked variants (see module doc)."""

  def __init__(self, root: str, masked_root: str | None = None, mask_source: str = "files",
               exclude_list: str = "", holdout_percent: float = 0.0):
    if mask_source not in MASK_SOURCES:
      raise ValueError(f"config.data.mask_source={mask_source!r}; valid: {MASK_SOURCES}")
    rootp = pathlib.Path(root)
    if not rootp.is_dir():
      raise FileNotFoundError(f"config.data.root={root!r} is not a directory")
    folders = sorted(p for p in rootp.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
      raise ValueError(f"config.data.root={root!r} has no identity folders")
    # People of the held-out share (held_out) are not part of this set at all: no run
    # trains or evaluates on them; the peer benchmark tests on them.
    self.num_held_out = 0
    if holdout_percent:
      kept_folders = [f for f in folders if not held_out(f.name, holdout_percent)]
      self.num_held_out = len(folders) - len(kept_folders)
      folders = kept_folders
      if not folders:
        raise ValueError(f"config.data.holdout_percent={holdout_percent} holds out every "
                         f"identity of config.data.root={root!r}")
    self.masked_files = mask_source == "files"
    excluded = read_exclude_list(exclude_list, root) if exclude_list else frozenset()
    identities, labels, paths, masked = [], [], [], []
    self.num_excluded = 0
    for folder in folders:
      if os.path.abspath(folder) in excluded:
        continue  # an identity folder listed whole (mfrjax-clean: empty)
      names = sorted(n for n in os.listdir(folder) if is_image(n))
      if excluded:
        kept = [n for n in names if os.path.abspath(folder / n) not in excluded]
        self.num_excluded += len(names) - len(kept)
        if names and not kept:
          continue  # every image of this identity is on the exclusion list
        names = kept
      plain = [n for n in names if MASK_TAG not in pathlib.Path(n).stem]
      if not plain:
        raise ValueError(f"identity folder {str(folder)!r} has no images "
                         f"(extensions: {', '.join(IMAGE_EXTENSIONS)}); remove it or add images")
      variants = self._masked_variants(folder, names, masked_root) if self.masked_files else {}
      if excluded:
        variants = {k: [p for p in v if os.path.abspath(p) not in excluded]
                    for k, v in variants.items()}
      for n in plain:
        labels.append(len(identities))
        paths.append(str(folder / n))
        masked.append(tuple(variants.get(pathlib.Path(n).stem, ())))
      identities.append(folder.name)
    self.identities, self.paths, self.masked_paths = tuple(identities), paths, masked
    self.labels = np.asarray(labels, np.int32)
    self.groups = None
    self.root = root
    self.landmarks = None  # (N, 5, 2) in each file's pixels, after place_masks_by
    if self.masked_files:
      missing = [p for p, m in zip(paths, masked) if not m]
      if missing:
        raise ValueError(
            f"{len(missing)} of {len(paths)} images under {root!r} have no masked variant "
            f"(e.g. {missing[0]!r}); expected '<image>{MASK_TAG}*.<ext>' beside it"
            + (f" or '<image>*.<ext>' under {masked_root!r}" if masked_root else "")
            + ". Make them with mfrjax-mask, or set config.data.mask_source='render'.")

  def place_masks_by(self, table: dict[str, np.ndarray], name: str) -> None:
    """Masks drawn at load sit on each image's own five landmarks instead of the template.

    The template puts every mask at the same place of an aligned crop; a mask placed by
    a detector on a real photo (the peer benchmark's probes) moves with the face's shape
    and pose. `table`: path relative to the root -> (5, 2) x, y in the file's pixels
    (`mfrjax-align` writes `<out>.crop_landmarks.csv` for its crops; its
    `<out>.landmarks.csv` is this for the photos it read). `name` is the config key and
    file for errors. Every image needs a row.
    """
    if self.masked_files:
      raise ValueError(f"{name} places the masks drawn at load; with config.data.mask_source="
                       "'files' the masks are in the files already: set it to 'render'")
    rels = [os.path.relpath(p, self.root) for p in self.paths]
    missing = [r for r in rels if r not in table]
    if missing:
      raise ValueError(f"{name}: {len(missing)} of {len(rels)} images under {self.root!r} "
                       f"have no landmarks (e.g. {missing[0]!r})")
    self.landmarks = np.stack([np.asarray(table[r], np.float32).reshape(5, 2) for r in rels])

  @staticmethod
  def _masked_variants(folder: pathlib.Path, names: list[str],
                       masked_root: str | None) -> dict[str, list[str]]:
    """Maps each unmasked image stem to its masked variant paths."""
    found: dict[str, list[str]] = {}
    stems = sorted({pathlib.Path(n).stem for n in names if MASK_TAG not in pathlib.Path(n).stem},
                   key=len, reverse=True)  # longest first: 'a_10' must not claim 'a_1'
    if masked_root:
      parallel = pathlib.Path(masked_root) / folder.name
      candidates = (sorted(n for n in os.listdir(parallel) if is_image(n))
                    if parallel.is_dir() else [])
      base = parallel
    else:
      candidates = [n for n in names if MASK_TAG in pathlib.Path(n).stem]
      base = folder
    for n in candidates:
      stem = pathlib.Path(n).stem
      key = stem.split(MASK_TAG)[0] if MASK_TAG in stem else stem
      match = key if key in stems else next((s for s in stems if key.startswith(s)), None)
      if match is not None:
        found.setdefault(match, []).append(str(base / n))
    return found

  def load(self, index: int, masked: bool, variant: int = 0) -> np.ndarray:
    if masked:
      if not self.masked_files:
        raise ValueError("masks are drawn by the pipeline for this set (mask_source='render')")
      options = self.masked_paths[index]
      return read_image(options[variant % len(options)])
    return read_image(self.paths[index])

  def files(self, index: int) -> tuple[str, ...]:
    """Every file image `index` may be read from: itself and its masked variants."""
    return (self.paths[index], *self.masked_paths[index])

  def file_key(self, index: int, masked: bool, variant: int = 0) -> str:
    """The path `load(index, masked, variant)` reads."""
    if masked:
      options = self.masked_paths[index]
      return options[variant % len(options)]
    return self.paths[index]

  def describe(self, index: int) -> str:
    return self.paths[index]


def read_exclude_list(path: str, root: str) -> frozenset[str]:
  """Absolute paths listed in an exclusion file (mfrjax-clean writes one): one path
  per line, relative to `root` or absolute; '#' starts a comment."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.data.exclude_list={path!r} does not exist")
  out = set()
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line:
        out.add(os.path.abspath(line if os.path.isabs(line) else os.path.join(root, line)))
  return frozenset(out)


def read_groups_csv(path: str, identities: tuple[str, ...]) -> tuple[str, ...]:
  """Reads an `identity,group` CSV (header optional) into one group per identity.

  Identities missing from the file get the group 'unknown', so no image is dropped from
  the per-group table; names in the file that match no identity are ignored.
  """
  table = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = [p.strip() for p in line.split(",")]
      if len(parts) < 2:
        raise ValueError(f"{path}:{lineno}: expected 'identity,group', got {line!r}")
      if lineno == 1 and parts[0].lower() in ("identity", "id", "name"):
        continue
      table[parts[0]] = parts[1]
  return tuple(table.get(name, "unknown") for name in identities)


def split_identities(labels: np.ndarray, num_identities: int, test_fraction: float, seed: int,
                     min_test_images: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """Splits identities into train and test sets by a seeded rule.

  Only identities with at least `min_test_images` images can be test identities (the
  evaluator needs a gallery and a probe of each). A seeded permutation of those picks
  round(test_fraction * eligible) test identities; all others train. Test identities
  never appear in training.

  Returns:
    (train_identity_ids, test_identity_ids), sorted int arrays.
  """
  counts = np.bincount(labels, minlength=num_identities)
  eligible = np.flatnonzero(counts >= min_test_images)
  n_test = int(round(test_fraction * len(eligible)))
  perm = np.random.default_rng([seed, salts.SPLIT_IDENTITIES]).permutation(eligible)
  test = np.sort(perm[:n_test])
  train = np.setdiff1d(np.arange(num_identities), test)
  return train, test
