"""Grain pipelines: the training streams and padded eval batches.

Three training streams:
  pairs       (masked image i, unmasked image j) of the same person (Barlow Twins);
  identities  K people x M images per batch, each image as loaded views, e.g. unmasked
              and its masked copy (quintuplet) or unmasked only (triplet); every
              device receives whole people, so in-batch mining always finds positives.
  images      every training image once per epoch with its class index, of which an
              exact, configured share is masked (margin heads; `labelled_dataset`).

Pair stream, per process:

    EpochPairs (seeded pairs of image indices, re-drawn every epoch)
      -> random_map(load + mask + augment)            (RNG seeded by the global index)
      -> slice [process_index::process_count]        (each host reads its own share)
      -> batch(global_batch / process_count)
      -> to_iter_dataset(threads, prefetch)           (checkpointable iterator)

The pair list of epoch e is a pure function of (seed, e), so the stream is the same on
every run and a restored iterator continues exactly where it stopped. The identity and
image streams (and restore_data's triples) seed each row's draws themselves, so their
grain elements are whole batches (`RowBatches`): grain's per-element work then runs once
per batch, not once per image.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import types
from collections.abc import Iterator, Sequence

import cv2
import grain
import jax
import ml_collections
import numpy as np
from absl import flags

from mfrjax import salts
from mfrjax.data import seeding, sources, transforms
from mfrjax.prep import landmarks as face_points
from mfrjax.prep import masking

PAIR_SAMPLERS = ("random", "couples")  # config.data.pair_sampler (barlow)


def plain(cfg: ml_collections.ConfigDict) -> types.SimpleNamespace:
  """A frozen-in-time copy of a config block as plain attributes, for the per-image code.

  A ConfigDict attribute read costs about a microsecond (locking, field references); the
  per-image transforms read a dozen keys per image, so the workers read this copy.
  """
  if isinstance(cfg, types.SimpleNamespace):
    return cfg
  return types.SimpleNamespace(**{k: plain(v) if isinstance(v, ml_collections.ConfigDict)
                                  else v for k, v in cfg.items()})


def process_stream(ds: grain.MapDataset, data_cfg, global_batch: int) -> grain.IterDataset:
  """The tail of the pair stream, whose rows are global and mapped by grain: this
  process's share of them, `ds[process_index::process_count]`, batched
  (`batched_stream`). Sliced after the (lazy) maps, so a row's random draws follow its
  global index and any process count streams the very same examples."""
  n_proc, pid = _process_share(global_batch)
  return batched_stream(ds[pid::n_proc].batch(global_batch // n_proc, drop_remainder=True),
                        data_cfg)


def row_stream(rows: Sequence, load, data_cfg, global_batch: int,
               per_process: bool = False) -> grain.IterDataset:
  """The tail of the streams whose rows seed their own draws (labelled images, identity
  rows, mask-removal triples): `RowBatches` of this process, read by `batched_stream`.
  `per_process`: `rows` already holds only this process's rows, in batch order."""
  n_proc, pid = _process_share(global_batch)
  local = global_batch // n_proc
  if per_process:
    n_proc, pid = 1, 0  # every row of `rows` is this process's
  return batched_stream(grain.MapDataset.source(RowBatches(rows, load, local, pid, n_proc)),
                        data_cfg)


def _process_share(global_batch: int) -> tuple[int, int]:
  n_proc, pid = jax.process_count(), jax.process_index()
  if global_batch % n_proc:
    raise ValueError(f"config.batch_size={global_batch} must divide by the {n_proc} processes")
  return n_proc, pid


class RowBatches:
  """A grain source whose element k is this process's batch k: the rows `ds[pid::n_proc]`
  would give for it, each loaded by `load` and stacked.

  `load` is a row loader: `load.entropy(row)` names the words that seed the row's draws
  (`(seed, SALT, global row, ...)`, salts.py) and `load(row, rng)` returns the row's dict
  of arrays, drawing from `rng` = `np.random.default_rng(load.entropy(row))`. The batch's
  generators are seeded in one vectorised pass (`seeding.generators`: the same draws,
  ~4x cheaper than a `default_rng` per row).

  The very batches of `MapDataset.source(rows).map(load)[pid::n_proc].batch(B)`, but
  grain's per-element machinery (dataset chain, statistics, collation) runs once per
  batch instead of once per image: it cost ~20 us per image, a third of a small image's
  own work (README: Throughput and bf16). Threads, processes and the checkpointed
  position are grain's, as before; the position counts batches in both.
  """

  def __init__(self, rows: Sequence, load, local_batch: int, pid: int = 0, n_proc: int = 1):
    self.rows, self.load, self.local, self.pid, self.n_proc = rows, load, local_batch, pid, n_proc

  def __len__(self) -> int:
    return len(range(self.pid, len(self.rows), self.n_proc)) // self.local

  def __getitem__(self, k: int) -> dict[str, np.ndarray]:
    first = int(k) * self.local * self.n_proc + self.pid
    rows = [self.rows[first + j * self.n_proc] for j in range(self.local)]
    rngs = seeding.generators([self.load.entropy(row) for row in rows])
    examples = [self.load(row, rng) for row, rng in zip(rows, rngs)]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def batched_stream(batches: grain.MapDataset, data_cfg) -> grain.IterDataset:
  """The tail every training stream shares: batches read with threads, optionally in
  worker processes.

  `config.data.num_workers` threads per reader and `config.data.worker_processes`
  processes (0: read in this process). Python threads share one interpreter lock, so
  the per-image Python work (augmentation bookkeeping, masks) does not scale over cores
  with threads alone; processes do. grain hands whole batches to the processes in turn
  and interleaves them back, so the stream - and a checkpointed position in it - is the
  same for any number of processes (tested); a checkpoint restores only with the same
  number, though (grain stores one position per process).

  The reader threads run `config.data.reader_nice` below the trainer's priority. On a
  host whose cores also run the step (CPU training, or more readers than cores), a
  reader that takes a core mid-step stalls every XLA thread at the next barrier, which
  costs more than the read itself; lowered, it reads on whatever the step leaves idle
  (README: Throughput and bf16, the measurement).

  OpenCV runs sequentially in every reading process (`sequential_opencv`): the readers
  are the parallelism, and OpenCV's own thread pool on a small image only burns cores.
  """
  if data_cfg.worker_processes < 0:
    raise ValueError(f"config.data.worker_processes={data_cfg.worker_processes} must be >= 0 "
                     "(0: read in the training process)")
  if not 0 <= data_cfg.reader_nice <= 19:
    raise ValueError(f"config.data.reader_nice={data_cfg.reader_nice} must be in [0, 19] "
                     "(0: readers at the trainer's priority)")
  sequential_opencv()  # this process's readers; the worker processes' below
  ds = batches
  if data_cfg.reader_nice:
    ds = ds.map(_ReaderPriority(data_cfg.reader_nice))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data_cfg.num_workers,
                                            prefetch_buffer_size=data_cfg.prefetch))
  if data_cfg.worker_processes == 0:
    return it
  if not flags.FLAGS.is_parsed():  # grain's worker options are absl flags
    flags.FLAGS.mark_as_parsed()
  return it.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=data_cfg.worker_processes, per_worker_buffer_size=data_cfg.prefetch),
      worker_init_fn=_init_worker)


def sequential_opencv() -> None:
  """Makes OpenCV run its functions on the calling thread, for the whole process.

  OpenCV splits an image's rows over a pool of its own threads (one per core by default),
  which on a face crop costs more than it gains: the readers' wall time stays the same
  while their CPU time grows by a sixth (112x112x3, the paper recipe) to three fifths
  (32x32 grey), and the pool's threads run at normal priority beside the step, past
  `reader_nice` (README: Throughput and bf16). The results are the same bytes. Set
  before the reader threads start (OpenCV's rule: never inside a parallel region); it
  applies to the whole process, as every OpenCV setting does.
  """
  if cv2.getNumThreads() != 1:
    cv2.setNumThreads(1)


def _init_worker(worker_index: int, worker_count: int) -> None:
  """grain's worker-process start-up hook (`config.data.worker_processes`)."""
  del worker_index, worker_count
  sequential_opencv()


_niced = threading.local()


def lower_thread_priority(nice: int) -> bool:
  """Raises the calling thread's niceness by `nice` (at most to 19), once per thread.

  Linux schedules threads, not processes, so this touches only the calling reader
  thread; raising one's own niceness needs no privilege. Elsewhere a no-op (returns
  False): macOS and Windows have no per-thread nice value.
  """
  if not nice or getattr(_niced, "done", False) or not sys.platform.startswith("linux"):
    return False
  tid = threading.get_native_id()
  os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
  _niced.done = True
  return True


class _ReaderPriority(grain.transforms.Map):
  """Lowers the priority of the reader thread that builds each batch (see
  `batched_stream`); the batch itself passes through unchanged."""

  def __init__(self, nice: int):
    self.nice = nice

  def map(self, batch):
    lower_thread_priority(self.nice)
    return batch


def build_faceset(data_cfg, seed: int):
  """Returns the face set named by `config.data.source`."""
  if data_cfg.source == "synthetic":
    if data_cfg.mask_landmarks:
      raise ValueError(f"config.data.mask_landmarks={data_cfg.mask_landmarks!r} places masks "
                       "on the files of a folder set; the synthetic set has none")
    s = data_cfg.synthetic
    return sources.SyntheticFaceSet(s.num_identities, s.images_per_identity,
                                    data_cfg.image_size, seed=s.seed)
  if data_cfg.source == "folder":
    if not data_cfg.root:
      raise ValueError("config.data.source='folder' needs config.data.root=/path/to/faces")
    fs = sources.FolderFaceSet(data_cfg.root, data_cfg.masked_root or None,
                               data_cfg.mask_source, data_cfg.exclude_list,
                               data_cfg.holdout_percent)
    if data_cfg.mask_landmarks:
      name = f"config.data.mask_landmarks={data_cfg.mask_landmarks!r}"
      if not os.path.isfile(data_cfg.mask_landmarks):
        raise FileNotFoundError(f"{name} is not a file")
      fs.place_masks_by(face_points.read_csv(data_cfg.mask_landmarks), name)
    return fs
  raise ValueError(f"unknown config.data.source={data_cfg.source!r}; valid: 'synthetic', "
                   "'folder'")


def images_by_identity(labels: np.ndarray, identity_ids: np.ndarray) -> list[np.ndarray]:
  """Image indices of each identity in `identity_ids`, in order."""
  order = np.argsort(labels, kind="stable")
  bounds = np.searchsorted(labels[order], np.stack([identity_ids, identity_ids + 1]))
  return [order[a:b] for a, b in bounds.T]


def select_images(labels: np.ndarray, identity_ids: np.ndarray, cap: int,
                  seed: int) -> list[np.ndarray]:
  """Image indices per identity, at most `cap` each (a seeded subset; 0 = no cap).

  Real sets are skewed (LFW: one person has 530 images, most have 1-2); a cap keeps one
  identity from dominating the training pairs or the probes.
  """
  groups = images_by_identity(labels, identity_ids)
  if cap <= 0:
    return groups
  rng = np.random.default_rng([seed, salts.SELECT_IMAGES])
  return [np.sort(rng.choice(g, cap, replace=False)) if len(g) > cap else g for g in groups]


def epoch_pairs(groups: list[np.ndarray], sampler: str, seed: int, epoch: int) -> np.ndarray:
  """The (masked image, unmasked image) index pairs of one epoch, shuffled.

  Args:
    groups: image indices of each training identity.
    sampler: 'random': every image once as the masked view, paired with a random other
      image of the same person (itself when it is alone); 'couples' (the paper's
      new sampler): each identity's images are shuffled and cut into n // 2 disjoint
      couples, so all of them are used as pairs each epoch.
    seed: data seed.
    epoch: epoch number; each epoch draws new pairs.

  Returns:
    int64 array (L, 2); L does not depend on the epoch.
  """
  rng = np.random.default_rng([seed, salts.EPOCH_PAIRS, epoch])
  out = []
  for imgs in groups:
    n = len(imgs)
    if sampler == "random":
      if n == 1:
        out.append(np.stack([imgs, imgs], 1))
        continue
      other = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the same image
      out.append(np.stack([imgs, imgs[other]], 1))
    elif sampler == "couples":
      perm = rng.permutation(imgs)[: n - n % 2]
      out.append(perm.reshape(-1, 2))
    else:
      raise ValueError(f"config.data.pair_sampler={sampler!r} does not make pairs; valid for "
                       f"this method: {PAIR_SAMPLERS}")
  pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
  return pairs[rng.permutation(len(pairs))]


class _Epochs(Sequence):
  """A random-access sequence built epoch by epoch; the two latest epochs are cached.

  Pickles without its cache, so grain can send it to worker processes
  (`config.data.worker_processes`); each worker rebuilds the cache as it reads.
  """

  def _rows(self, epoch: int):
    raise NotImplementedError

  def _init_cache(self) -> None:
    self._epoch = functools.lru_cache(maxsize=2)(self._rows)

  def __getstate__(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != "_epoch"}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._init_cache()


class EpochPairs(_Epochs):
  """`num_epochs` epochs of pairs as one random-access sequence (grain MapDataset source)."""

  def __init__(self, groups: list[np.ndarray], sampler: str, seed: int, num_epochs: int):
    self.groups, self.sampler, self.seed = groups, sampler, seed
    self.per_epoch = len(epoch_pairs(groups, sampler, seed, 0))
    if self.per_epoch == 0:
      raise ValueError(f"sampler {sampler!r} finds no training pairs: every training identity "
                       "has fewer than 2 images")
    self.num_epochs = num_epochs
    self._init_cache()

  def _rows(self, epoch: int) -> np.ndarray:
    return epoch_pairs(self.groups, self.sampler, self.seed, epoch)

  def __len__(self) -> int:
    return self.per_epoch * self.num_epochs

  def __getitem__(self, k: int) -> np.ndarray:
    epoch, i = divmod(int(k), self.per_epoch)
    return self._epoch(epoch)[i]


class ViewLoader:
  """Loads one view of an image: decode, crop/resize, mask if asked, as uint8 (S, S, C).

  With `config.data.cache_mb` > 0 the decoded, cropped and resized image of each file is
  kept in memory (read-only) until that budget is spent, so later epochs skip the decode
  and the resize - on a small CPU, the bulk of the input pipeline's work - and get the
  very same bytes. The cache is per reader process (`worker_processes` multiply it) and
  is not pickled to workers. The masks drawn at load time and the augmentations stay
  random per example; only the file's deterministic part is kept.
  """

  def __init__(self, faceset, data_cfg, seed: int):
    self.faceset, self.cfg, self.seed = faceset, plain(data_cfg), seed
    if self.cfg.cache_mb < 0:
      raise ValueError(f"config.data.cache_mb={self.cfg.cache_mb} must be >= 0 (0: no cache)")
    self._cache, self._cached_bytes = {}, 0
    self._shapes = {}  # index -> (H, W) of its file, for the face set's own landmarks

  def __getstate__(self) -> dict:
    return {**self.__dict__, "_cache": {}, "_cached_bytes": 0, "_shapes": {}}

  def _preprocessed(self, index: int, masked_file: bool, variant: int) -> np.ndarray:
    cfg, fs = self.cfg, self.faceset
    key = fs.file_key(index, masked_file, variant)
    img = self._cache.get(key)
    if img is None:
      img = fs.load(index, masked_file, variant)  # errors name the file
      if not masked_file:
        self._shapes[index] = img.shape[:2]
      img = transforms.preprocess(img, cfg.image_size, cfg.channels, cfg.crop_fraction)
      if self._cached_bytes + img.nbytes <= cfg.cache_mb * 2 ** 20:
        img.setflags(write=False)  # shared by every later use: nothing may write into it
        self._cache[key] = img
        self._cached_bytes += img.nbytes
    return img

  def __call__(self, index: int, masked: bool, variant: int) -> np.ndarray:
    cfg, fs = self.cfg, self.faceset
    img = self._preprocessed(index, masked and fs.masked_files, variant)
    if masked and not fs.masked_files:
      # Same mask for the same image and variant, whatever the worker or the run; placed
      # by the face's own landmarks where the face set has them, else by the template.
      if fs.landmarks is None:
        lm = masking.template_landmarks(*img.shape[:2], box=cfg.mask_box)
      else:
        lm = transforms.preprocess_points(fs.landmarks[index], *self._shapes[index],
                                          cfg.image_size, cfg.crop_fraction)
      img = masking.apply_mask(img, lm, [self.seed, salts.RENDER_MASK, index, variant],
                               tuple(cfg.mask_types))[0]
    if cfg.upper_face.enabled:  # occlusion removal: after masking, as for a real probe
      img = transforms.keep_top_blocks(img, cfg.upper_face.grid, cfg.upper_face.keep_blocks)
    return img


def input_shape(data_cfg) -> tuple[int, int, int]:
  """(H, W, C) of the images the model sees, after any upper-face crop."""
  s, c = data_cfg.image_size, data_cfg.channels
  if data_cfg.upper_face.enabled:
    u = data_cfg.upper_face
    return transforms.keep_top_blocks(np.zeros((s, s, c), np.uint8), u.grid,
                                      u.keep_blocks).shape
  return (s, s, c)


class _MakePair(grain.transforms.RandomMap):
  def __init__(self, loader: ViewLoader, labels: np.ndarray, aug_cfg):
    self.loader, self.labels, self.aug = loader, labels, plain(aug_cfg)

  def random_map(self, pair, rng: np.random.Generator):
    i, j = int(pair[0]), int(pair[1])
    variant = int(rng.integers(1 << 16))
    views = {"masked": self.loader(i, True, variant), "unmasked": self.loader(j, False, 0)}
    a = self.aug
    for k in views:
      views[k] = transforms.augment(views[k], rng, a.flip, a.max_shift, a.brightness,
                                    a.contrast)
    views["label"] = np.int32(self.labels[i])
    return views


def pair_dataset(faceset, groups: list[np.ndarray], data_cfg, *, global_batch: int,
                  num_epochs: int, seed: int) -> grain.IterDataset:
  """The training pair stream of this process (see module docstring).

  Args:
    faceset: a face set (sources.py).
    groups: image indices of each training identity (select_images).
    data_cfg: `config.data`.
    global_batch: batch size over all processes; must divide by the process count.
    num_epochs: epochs of pairs in the stream.
    seed: data seed.

  Returns:
    A grain IterDataset of dicts {'masked', 'unmasked': uint8 (B, S, S, C),
    'label': int32 (B,)} with B = global_batch / process_count.
  """
  pairs = EpochPairs(groups, data_cfg.pair_sampler, seed, num_epochs)
  ds = grain.MapDataset.source(pairs).seed(seed)
  ds = ds.random_map(_MakePair(ViewLoader(faceset, data_cfg, seed), faceset.labels,
                               data_cfg.augment))
  return process_stream(ds, data_cfg, global_batch)


def eligible_identities(groups: list[np.ndarray], min_images: int) -> list[np.ndarray]:
  """Identities with at least `min_images` images (an identity alone has no positive)."""
  return [g for g in groups if len(g) >= max(min_images, 1)]


def epoch_identity_rows(groups: list[np.ndarray], ids_per_batch: int, per_identity: int,
                        seed: int, epoch: int) -> np.ndarray:
  """Image indices of one epoch, K = ids_per_batch people x M = per_identity images per batch.

  Identities are shuffled and cut into batches of K (the remainder waits for the next
  epoch's shuffle); each contributes M images, drawn without replacement when it has
  that many, else with replacement (the copies differ by augmentation and mask).

  Returns:
    int64 (num_batches * K * M,); batch b is rows [b*K*M, (b+1)*K*M), person-major.
  """
  rng = np.random.default_rng([seed, salts.IDENTITY_ROWS, epoch])
  order = rng.permutation(len(groups))
  order = order[: len(order) - len(order) % ids_per_batch]
  rows = [rng.choice(groups[i], per_identity, replace=len(groups[i]) < per_identity)
          for i in order]
  return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)


class IdentityRows(_Epochs):
  """This process's share of `num_epochs` epochs of identity batches, random access.

  Element k is (global row, image index). Each global batch is split into contiguous
  per-process blocks (not strided, as for pairs), so that a process - and each of its
  devices - holds whole people.
  """

  def __init__(self, groups, ids_per_batch: int, per_identity: int, seed: int,
               num_epochs: int, global_batch: int, process_index: int, process_count: int):
    self.groups, self.k, self.m, self.seed = groups, ids_per_batch, per_identity, seed
    self.per_epoch = len(groups) // ids_per_batch * ids_per_batch * per_identity
    if self.per_epoch == 0:
      raise ValueError(f"the identity sampler needs at least {ids_per_batch} training identities "
                       f"with config.data.batch_min_images images; found {len(groups)}")
    self.num_epochs, self.global_batch = num_epochs, global_batch
    self.local = global_batch // process_count
    self.pid = process_index
    self._init_cache()

  def _rows(self, epoch: int) -> np.ndarray:
    return epoch_identity_rows(self.groups, self.k, self.m, self.seed, epoch)

  def __len__(self) -> int:
    return self.per_epoch * self.num_epochs // self.global_batch * self.local

  def __getitem__(self, k: int) -> tuple[int, int]:
    b, r = divmod(int(k), self.local)
    row = b * self.global_batch + self.pid * self.local + r
    epoch, i = divmod(row, self.per_epoch)
    return row, int(self._epoch(epoch)[i])


class _LoadRow:
  """Loads the views of one identity row; draws are seeded by the global row, so any
  process count streams the very same examples."""

  def __init__(self, loader: ViewLoader, labels, aug_cfg, views, seed: int):
    self.loader, self.labels, self.views, self.seed = loader, labels, views, seed
    self.aug = plain(aug_cfg)

  def entropy(self, element) -> tuple[int, ...]:
    return self.seed, salts.IDENTITY_AUGMENT, element[0]

  def __call__(self, element, rng: np.random.Generator):
    _, i = element
    variant = int(rng.integers(1 << 16))
    a = self.aug
    out = {}
    for view in self.views:
      img = self.loader(i, view == "masked", variant if view == "masked" else 0)
      out[view] = transforms.augment(img, rng, a.flip, a.max_shift, a.brightness, a.contrast)
    out["label"] = np.int32(self.labels[i])
    return out


def identity_dataset(faceset, groups: list[np.ndarray], data_cfg, *, global_batch: int,
                     num_epochs: int, seed: int, views: tuple[str, ...]) -> grain.IterDataset:
  """The identity-batch stream of this process (module docstring).

  Args:
    faceset, groups, data_cfg, num_epochs, seed: as for `pair_dataset`.
    global_batch: rows per global batch (K people x M images), divisible by the process
      count and, per process, by M.
    views: which views to load per row: ('unmasked', 'masked') or ('unmasked',).

  Returns:
    A grain IterDataset of dicts {view: uint8 (B, H, W, C), 'label': int32 (B,)}, B =
    global_batch / process_count, whole people per process.
  """
  n_proc, pid = jax.process_count(), jax.process_index()
  m = data_cfg.batch_images_per_person
  if global_batch % (n_proc * m):
    raise ValueError(f"config.batch_size={global_batch} must divide by {n_proc} processes x "
                     f"config.data.batch_images_per_person={m}")
  eligible = eligible_identities(groups, data_cfg.batch_min_images)
  rows = IdentityRows(eligible, global_batch // m, m, seed, num_epochs, global_batch, pid, n_proc)
  load = _LoadRow(ViewLoader(faceset, data_cfg, seed), faceset.labels, data_cfg.augment, views,
                  seed)
  return row_stream(rows, load, data_cfg, global_batch, per_process=True)


def identity_batches_per_epoch(groups: list[np.ndarray], data_cfg, global_batch: int) -> int:
  """Steps per epoch of the identity stream."""
  eligible = eligible_identities(groups, data_cfg.batch_min_images)
  return len(eligible) // max(global_batch // data_cfg.batch_images_per_person, 1)


def masked_flags(n: int, share: float, seed: int, epoch: int) -> np.ndarray:
  """Exactly round(share * n) of n rows marked masked, at seeded positions, per epoch."""
  if not 0.0 <= share <= 1.0:
    raise ValueError(f"config.data.masked_share={share} must be in [0, 1]")
  flags = np.zeros(n, bool)
  order = np.random.default_rng([seed, salts.MASKED_SHARE, epoch]).permutation(n)
  flags[order[:int(round(share * n))]] = True
  return flags


class LabelledRows(_Epochs):
  """`num_epochs` epochs of (global row, image index, class, masked), random access.

  Each epoch is a seeded permutation of every training image; `masked_flags` marks
  exactly the configured share of the epoch's rows as masked (the paper caps masked
  images at ~10%, so recognition of unmasked faces does not degrade).
  """

  def __init__(self, groups: list[np.ndarray], share: float, seed: int, num_epochs: int):
    self.images = np.concatenate(groups).astype(np.int64) if groups else np.zeros(0, np.int64)
    self.classes = np.concatenate([np.full(len(g), c, np.int32) for c, g in enumerate(groups)]
                                  ) if groups else np.zeros(0, np.int32)
    self.per_epoch, self.share, self.seed = len(self.images), share, seed
    if self.per_epoch == 0:
      raise ValueError("no training images: check config.data.root and test_fraction")
    masked_flags(1, share, seed, 0)  # validates the share before any worker starts
    self.num_epochs = num_epochs
    self._init_cache()

  def _rows(self, epoch: int):
    order = np.random.default_rng([self.seed, salts.LABELLED_ORDER, epoch]).permutation(
        self.per_epoch)
    return order, masked_flags(self.per_epoch, self.share, self.seed, epoch)

  def __len__(self) -> int:
    return self.per_epoch * self.num_epochs

  def __getitem__(self, k: int) -> tuple[int, int, int, bool]:
    epoch, i = divmod(int(k), self.per_epoch)
    order, flags = self._epoch(epoch)
    j = order[i]
    return int(k), int(self.images[j]), int(self.classes[j]), bool(flags[i])


class _LoadLabelled:
  """Loads one training image (masked or not), augments it; seeded by the global row."""

  def __init__(self, loader: ViewLoader, aug_cfg, seed: int):
    self.loader, self.aug, self.seed = loader, plain(aug_cfg), seed

  def entropy(self, element) -> tuple[int, ...]:
    return self.seed, salts.LABELLED_AUGMENT, element[0]

  def __call__(self, element, rng: np.random.Generator):
    _, i, cls, masked = element
    variant = int(rng.integers(1 << 16))
    a = self.aug
    img = self.loader(i, masked, variant if masked else 0)
    img = transforms.augment(img, rng, a.flip, a.max_shift, a.brightness, a.contrast,
                             a.brightness_contrast_p)
    img = transforms.photometric(img, rng, a)
    return {"image": img, "label": np.int32(cls), "masked": np.bool_(masked)}


def labelled_dataset(faceset, groups: list[np.ndarray], data_cfg, *, global_batch: int,
                     num_epochs: int, seed: int) -> grain.IterDataset:
  """The image stream of this process for classification heads (module docstring).

  Args:
    faceset, data_cfg, num_epochs, seed: as for `pair_dataset`.
    groups: image indices of each training identity; identity c is class c.
    global_batch: images per global batch; must divide by the process count.

  Returns:
    A grain IterDataset of dicts {'image': uint8 (B, H, W, C), 'label': int32 (B,),
    'masked': bool (B,)} with B = global_batch / process_count.
  """
  rows = LabelledRows(groups, data_cfg.masked_share, seed, num_epochs)
  load = _LoadLabelled(ViewLoader(faceset, data_cfg, seed), data_cfg.augment, seed)
  return row_stream(rows, load, data_cfg, global_batch)


def pairs_per_epoch(groups: list[np.ndarray], sampler: str) -> int:
  """Number of training pairs in one epoch."""
  return len(epoch_pairs(groups, sampler, 0, 0))


def eval_batches(faceset, indices: np.ndarray, data_cfg, seed: int,
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Unmasked and masked views of `indices` in fixed-size batches, never dropping one.

  The last batch is padded by repeating its first example and carries `valid`, so one
  compiled shape serves every batch and padded rows are never counted.

  Yields:
    dicts {'unmasked', 'masked': uint8 (batch_size, S, S, C), 'valid': bool (batch_size,)}.
  """
  loader = ViewLoader(faceset, data_cfg, seed)
  ds = grain.MapDataset.source(np.asarray(indices)).map(
      lambda i: {"unmasked": loader(int(i), False, 0), "masked": loader(int(i), True, 0)})
  ds = ds.batch(batch_size, drop_remainder=False)
  for batch in ds.to_iter_dataset(grain.ReadOptions(num_threads=data_cfg.num_workers)):
    n = len(batch["unmasked"])
    pad = batch_size - n
    out = {k: np.concatenate([v, np.repeat(v[:1], pad, 0)]) if pad else v
           for k, v in batch.items()}
    out["valid"] = np.arange(batch_size) < n
    yield out
