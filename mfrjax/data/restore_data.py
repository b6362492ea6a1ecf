"""Training input of mask removal: (face, masked face, mask map) triples.

Two sources, by `config.data.source`:

  folder      the masking tool's output (mfrjax-mask): <masked_root>.manifest.csv
              names, per masked image, its source under config.data.root, the masked
              image under config.data.masked_root, its binary map under
              <masked_root>.seg and the mask type. Real photos thus need no hand-drawn
              segmentation: the map is the region the tool drew.
  synthetic   the embedded faces (data/synthetic.py), masked at load time by the same
              masking tool with the template landmarks (`config.data.template_box`), a
              new mask per epoch.

People: with config.data.holdout_percent > 0 the evaluation people are the fixed
held-out share (sources.held_out), which no recognition run of this project trains on
either, so the recognition table of mfrjax-unmask uses people no network has seen;
otherwise a seeded split by config.data.test_fraction. One mask type
(config.data.holdout_mask_type) is never trained on and is reported on its own.
"""

from __future__ import annotations

import csv
import os

import cv2
import grain
import numpy as np

from mfrjax import salts
from mfrjax.data import pipeline, sources, transforms
from mfrjax.prep import masking

EVAL_DRAW = 2 ** 30  # the mask draw of the evaluation (training draws are epoch numbers)


class MaskedFaces:
  """The triples of one source, their people and mask types (module docstring)."""

  def __init__(self, data_cfg, seed: int):
    self.cfg = pipeline.plain(data_cfg)
    c = self.cfg
    if c.holdout_mask_type and c.holdout_mask_type not in masking.MASK_TYPES:
      raise ValueError(f"config.data.holdout_mask_type={c.holdout_mask_type!r}; valid: '' or "
                       f"one of {masking.MASK_TYPES}")
    self.train_types = tuple(t for t in masking.MASK_TYPES if t != c.holdout_mask_type)
    if c.source == "synthetic":
      s = c.synthetic
      self.faces = sources.SyntheticFaceSet(s.num_identities, s.images_per_identity,
                                            c.image_size, s.seed)
      self.identities = self.faces.identities
      self.people = np.asarray(self.faces.labels)
      self.mask_types = None                       # drawn at load time
    elif c.source == "folder":
      self._read_manifest(c)
    else:
      raise ValueError(f"unknown config.data.source={c.source!r}; valid: 'synthetic', 'folder'")
    if c.holdout_percent > 0:
      test = np.asarray([sources.held_out(n, c.holdout_percent) for n in self.identities])
      self.test_ids = np.flatnonzero(test)
    else:
      _, self.test_ids = sources.split_identities(self.people, len(self.identities),
                                                  c.test_fraction, seed, min_test_images=1)
    self.seed = seed

  def _read_manifest(self, c) -> None:
    if not c.root or not c.masked_root:
      raise ValueError("config.data.source='folder' needs config.data.root (the unmasked "
                       "faces) and config.data.masked_root (mfrjax-mask's --out)")
    path = c.masked_root.rstrip("/") + ".manifest.csv"
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{path} not found: config.data.masked_root={c.masked_root!r} must be the --out of "
          f"mfrjax-mask --root={c.root} (it writes the masked images, their maps in "
          "<out>.seg and this manifest)")
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    if not rows:
      raise ValueError(f"{path} lists no masked image")
    missing = {"source", "output", "segmentation", "mask_type"} - set(rows[0])
    if missing:
      raise ValueError(f"{path} lacks the columns {sorted(missing)}: not a manifest of "
                       "mfrjax-mask")
    self.rows = [(r["source"], r["output"], r["segmentation"]) for r in rows]
    names = [r["source"].replace("\\", "/").split("/")[0] for r in rows]
    self.identities = tuple(sorted(set(names)))
    index = {n: i for i, n in enumerate(self.identities)}
    self.people = np.asarray([index[n] for n in names], np.int64)
    self.mask_types = np.asarray([r["mask_type"] for r in rows])
    self.faces = None

  def __len__(self) -> int:
    return len(self.people)

  def split(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(training rows, {evaluation group: rows}): training people with the training mask
    types; evaluation people as 'seen_types' and, if one is held out, 'unseen_type'
    (for the synthetic source the same images, masked with the other types)."""
    is_test = np.isin(self.people, self.test_ids)
    rows = np.arange(len(self))
    if self.mask_types is None:
      train = rows[~is_test]
      groups = {"seen_types": rows[is_test]}
      if self.cfg.holdout_mask_type:
        groups["unseen_type"] = rows[is_test]
    else:
      seen = np.isin(self.mask_types, self.train_types)
      train = rows[~is_test & seen]
      groups = {"seen_types": rows[is_test & seen]}
      if self.cfg.holdout_mask_type:
        groups["unseen_type"] = rows[is_test & ~seen]
    cap = self.cfg.eval_max_images
    if cap:
      pick = np.random.default_rng([self.seed, salts.RESTORE_ORDER, 1])
      groups = {k: np.sort(pick.choice(v, cap, replace=False)) if len(v) > cap else v
                for k, v in groups.items()}
    if len(train) == 0:
      raise ValueError("no training image: every person is an evaluation person or every "
                       "mask is of config.data.holdout_mask_type")
    return train, {k: v for k, v in groups.items() if len(v)}

  def describe(self, i: int) -> str:
    if self.faces is not None:
      return self.faces.describe(i)
    return os.path.join(self.cfg.masked_root, self.rows[i][1])

  def files(self, i: int) -> tuple[str, ...]:
    """The files row i reads: face, masked face, mask map (none for the synthetic set)."""
    if self.faces is not None:
      return ()
    c = self.cfg
    src, out, seg_name = self.rows[i]
    return (os.path.join(c.root, src), os.path.join(c.masked_root, out),
            os.path.join(c.masked_root.rstrip("/") + ".seg", seg_name))

  def load(self, i: int, draw: int = 0, unseen: bool = False) -> dict[str, np.ndarray]:
    """Row i as {'image', 'masked': uint8 (S, S, C), 'seg': uint8 (S, S, 1) in {0, 1}}.
    `draw` seeds a mask drawn at load time (synthetic source); `unseen` draws it of the
    held-out type."""
    c = self.cfg
    if self.faces is not None:
      img = self.faces.load(int(i), False)
      lm = masking.template_landmarks(*img.shape[:2], box=c.template_box)
      types = (c.holdout_mask_type,) if unseen else self.train_types
      masked, seg, _ = masking.apply_mask(img, lm, [self.seed, salts.RESTORE_DRAW, int(i), draw],
                                          types)
    else:
      img, masked, seg = (sources.read_image(f) for f in self.files(i))
    size, ch, crop = c.image_size, c.channels, c.crop_fraction
    seg = transforms.preprocess(np.asarray(seg)[..., :1] if np.ndim(seg) == 3 else seg[..., None],
                                size, 1, crop)
    return {"image": transforms.preprocess(img, size, ch, crop),
            "masked": transforms.preprocess(masked, size, ch, crop),
            "seg": (seg >= 128).astype(np.uint8)}


class _EpochOrder(pipeline._Epochs):  # pylint: disable=protected-access
  """`num_epochs` seeded permutations of the training rows, as one sequence of
  (row, epoch) pairs: a pure function of (seed, epoch), so a restored iterator
  continues exactly."""

  def __init__(self, rows: np.ndarray, seed: int, num_epochs: int):
    self.rows, self.seed, self.num_epochs = np.asarray(rows), seed, num_epochs
    self._init_cache()

  def _rows(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, salts.RESTORE_ORDER, epoch]).permutation(self.rows)

  def __len__(self) -> int:
    return len(self.rows) * self.num_epochs

  def __getitem__(self, k: int):
    epoch, i = divmod(int(k), len(self.rows))
    return int(self._epoch(epoch)[i]), epoch


class _LoadTriple:
  """Loads a row with the epoch's mask draw and a joint horizontal flip."""

  def __init__(self, data: MaskedFaces, flip: bool):
    self.data, self.flip = data, flip

  def entropy(self, item) -> tuple[int, ...]:
    row, epoch = item
    return self.data.seed, salts.RESTORE_FLIP, row, epoch

  def __call__(self, item, rng: np.random.Generator):
    row, epoch = item
    ex = self.data.load(row, draw=epoch)
    if self.flip and rng.random() < 0.5:
      ex = {k: transforms.hflip(v) for k, v in ex.items()}
    return ex


def train_stream(data: MaskedFaces, rows: np.ndarray, data_cfg, *, global_batch: int,
                 num_epochs: int, seed: int) -> grain.IterDataset:
  """This process's checkpointable stream of training batches of triples."""
  return pipeline.row_stream(_EpochOrder(rows, seed, num_epochs),
                             _LoadTriple(data, data_cfg.augment.flip), data_cfg, global_batch)


def eval_examples(data: MaskedFaces, rows: np.ndarray, unseen: bool) -> dict[str, np.ndarray]:
  """The evaluation rows stacked (the same masks on every call)."""
  exs = [data.load(int(r), draw=EVAL_DRAW, unseen=unseen) for r in rows]
  return {k: np.stack([e[k] for e in exs]) for k in exs[0]}


def check_training_files(data: MaskedFaces, rows: np.ndarray) -> None:
  """Every file of the training rows decoded once before the first step
  (`sources.check_decodable`); `config.data.check_files=False` skips it."""
  if data.cfg.check_files:
    sources.check_decodable([f for r in rows for f in data.files(int(r))],
                            "training image files (faces, masked faces, mask maps)")


def check_readable(data: MaskedFaces, rows: np.ndarray) -> None:
  """Decodes every given row once (the evaluation's), naming the files that fail."""
  bad = []
  for r in rows:
    try:
      data.load(int(r), draw=EVAL_DRAW)
    except (sources.ImageReadError, cv2.error) as e:
      bad.append(f"{data.describe(int(r))}: {e}")
  if bad:
    raise sources.ImageReadError(f"{len(bad)} evaluation image(s) cannot be read; training "
                                 "does not start:\n  " + "\n  ".join(bad[:5]))
