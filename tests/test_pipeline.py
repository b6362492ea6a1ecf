"""Pair sampling and the grain pipelines: shapes, seeds, resumable state, eval padding."""

import os
import sys
import threading

import cv2
import numpy as np
import pytest

from mfrjax.data import pipeline, sources
from tests.conftest import load_config, smoke_config


def groups_for(sizes):
  labels = np.repeat(np.arange(len(sizes)), sizes)
  return labels, pipeline.images_by_identity(labels, np.arange(len(sizes)))


def test_images_by_identity_handles_unsorted_labels():
  labels = np.array([2, 0, 2, 1, 0])
  got = pipeline.images_by_identity(labels, np.array([0, 2]))
  assert [g.tolist() for g in got] == [[1, 4], [0, 2]]


def test_select_images_caps_per_identity_with_a_seed():
  labels = np.repeat(np.arange(3), [30, 2, 5])
  got = pipeline.select_images(labels, np.arange(3), cap=4, seed=0)
  assert [len(g) for g in got] == [4, 2, 4]
  assert all((labels[g] == i).all() for i, g in enumerate(got))
  again = pipeline.select_images(labels, np.arange(3), cap=4, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(got, again))
  assert [len(g) for g in pipeline.select_images(labels, np.arange(3), 0, 0)] == [30, 2, 5]


def test_couples_sampler_uses_all_disjoint_couples():
  labels, groups = groups_for([5, 4, 1, 2])
  pairs = pipeline.epoch_pairs(groups, "couples", seed=0, epoch=0)
  assert len(pairs) == 2 + 2 + 0 + 1
  assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).all()
  assert len(np.unique(pairs)) == pairs.size  # every image at most once per epoch
  # Identity with 4 images: both of its couples are there, using all 4 images.
  assert set(pairs[labels[pairs[:, 0]] == 1].ravel()) == set(np.flatnonzero(labels == 1))
  other = pipeline.epoch_pairs(groups, "couples", seed=0, epoch=1)
  assert len(other) == len(pairs) and not np.array_equal(other, pairs)
  np.testing.assert_array_equal(pairs, pipeline.epoch_pairs(groups, "couples", 0, 0))


def test_random_sampler_pairs_every_image_with_another_of_its_identity():
  labels, groups = groups_for([3, 1, 6])
  pairs = pipeline.epoch_pairs(groups, "random", seed=1, epoch=0)
  assert sorted(pairs[:, 0].tolist()) == list(range(10))
  assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).all()
  single = np.flatnonzero(labels == 1)[0]
  for a, b in pairs:
    assert (a != b) or a == single


def test_unknown_sampler_and_no_pairs():
  _, groups = groups_for([2])
  with pytest.raises(ValueError, match="config.data.pair_sampler"):
    pipeline.epoch_pairs(groups, "bogus", 0, 0)
  _, singles = groups_for([1, 1])
  with pytest.raises(ValueError, match="no training pairs"):
    pipeline.EpochPairs(singles, "couples", 0, 1)


def small_stream(cfg, seed=0):
  fs = pipeline.build_faceset(cfg.data, seed)
  train, _ = sources.split_identities(fs.labels, len(fs.identities), 0.25, seed)
  groups = pipeline.images_by_identity(fs.labels, train)
  return fs, train, pipeline.pair_dataset(fs, groups, cfg.data, global_batch=8, num_epochs=2,
                                            seed=seed)


def test_train_stream_batches_are_seeded_and_labelled():
  cfg = smoke_config()
  fs, train, ds = small_stream(cfg)
  batches = [b for _, b in zip(range(3), iter(ds))]
  b = batches[0]
  assert b["masked"].shape == (8, 16, 16, 1) and b["masked"].dtype == np.uint8
  assert b["unmasked"].shape == (8, 16, 16, 1) and b["label"].shape == (8,)
  assert set(b["label"].tolist()) <= set(train.tolist())
  again = [b for _, b in zip(range(3), iter(small_stream(cfg)[2]))]
  for x, y in zip(batches, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other = next(iter(small_stream(cfg, seed=1)[2]))
  assert not np.array_equal(other["masked"], b["masked"])


def test_iterator_state_resumes_exactly():
  cfg = smoke_config()
  _, _, ds = small_stream(cfg)
  it = iter(ds)
  next(it), next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  it2 = iter(small_stream(cfg)[2])
  it2.set_state(state)
  for x, y in zip(expected, [next(it2) for _ in range(2)]):
    np.testing.assert_array_equal(x["masked"], y["masked"])


def test_render_masks_on_unmasked_folder_data(tmp_path):
  import cv2
  for p in ("a", "b"):
    for i in range(2):
      (tmp_path / p).mkdir(exist_ok=True)
      cv2.imwrite(str(tmp_path / p / f"{i}.png"), np.full((40, 40), 200, np.uint8))
  cfg = smoke_config(**{"data.source": "folder", "data.root": str(tmp_path),
                        "data.mask_source": "render"})
  fs = pipeline.build_faceset(cfg.data, 0)
  loader = pipeline.ViewLoader(fs, cfg.data, seed=0)
  clean, masked = loader(0, False, 0), loader(0, True, 0)
  assert clean.shape == masked.shape == (16, 16, 1)
  assert (clean[:6] == masked[:6]).all() and (clean[10:] != masked[10:]).any()
  np.testing.assert_array_equal(masked, loader(0, True, 0))


def test_render_places_masks_by_each_files_landmarks(tmp_path):
  """config.data.mask_landmarks: the mask drawn at load sits on the file's own points,
  carried through the central crop and the resize (the tool's mask at those points)."""
  import cv2

  from mfrjax.data import transforms
  from mfrjax.prep import landmarks, masking
  table = {}
  for p in ("a", "b"):
    (tmp_path / p).mkdir()
    img = np.full((120, 100), 200, np.uint8)        # not square: the crop has an offset
    cv2.imwrite(str(tmp_path / p / "0.png"), img)
    # A face in the lower left of the central square, tilted: far from the template.
    table[f"{p}/0.png"] = masking.TEMPLATE_112 * 0.6 + np.array([8.0, 40.0])
  landmarks.write_csv(str(tmp_path / "lm.csv"), table)
  over = {"data.source": "folder", "data.root": str(tmp_path), "data.mask_source": "render",
          "data.crop_fraction": 0.9, "data.image_size": 45}
  cfg = smoke_config(**over, **{"data.mask_landmarks": str(tmp_path / "lm.csv")})
  fs = pipeline.build_faceset(cfg.data, 0)
  masked = pipeline.ViewLoader(fs, cfg.data, seed=3)(1, True, 7)
  clean = transforms.preprocess(img[..., None], 45, 1, 0.9)
  lm = transforms.preprocess_points(landmarks.read_csv(str(tmp_path / "lm.csv"))["b/0.png"],
                                   120, 100, 45, 0.9)            # as stored (2 decimals)
  np.testing.assert_allclose(lm[0], (np.array([38.2946 * 0.6 + 8, 51.6963 * 0.6 + 40])
                                     - (5, 15)) * 0.5, atol=0.01)   # side 90: x0 5, y0 15
  want = masking.apply_mask(clean, lm, [3, pipeline.salts.RENDER_MASK, 1, 7],
                            tuple(cfg.data.mask_types))[0]
  np.testing.assert_array_equal(masked, want)
  by_template = pipeline.ViewLoader(pipeline.build_faceset(smoke_config(**over).data, 0),
                                    smoke_config(**over).data, seed=3)(1, True, 7)
  assert (by_template != masked).mean() > 0.1                   # another place

  landmarks.write_csv(str(tmp_path / "lm.csv"), {"a/0.png": table["a/0.png"]})
  with pytest.raises(ValueError, match=r"mask_landmarks=.*1 of 2 images .*'b/0.png'"):
    pipeline.build_faceset(cfg.data, 0)
  for p in ("a", "b"):                                          # masked files beside them
    cv2.imwrite(str(tmp_path / p / "0_mask.png"), img)
  with pytest.raises(ValueError, match="mask_source='files'"):
    pipeline.build_faceset(smoke_config(**{**over, "data.mask_source": "files",
                                           "data.mask_landmarks": str(tmp_path / "lm.csv")}
                                        ).data, 0)
  with pytest.raises(FileNotFoundError, match="config.data.mask_landmarks='/no/lm.csv'"):
    pipeline.build_faceset(smoke_config(**{**over, "data.mask_landmarks": "/no/lm.csv"}).data, 0)
  with pytest.raises(ValueError, match="synthetic set has none"):
    pipeline.build_faceset(smoke_config(**{"data.mask_landmarks": "x.csv"}).data, 0)


def test_eval_batches_pad_and_never_drop():
  cfg = smoke_config()
  fs = pipeline.build_faceset(cfg.data, 0)
  idx = np.arange(11)
  batches = list(pipeline.eval_batches(fs, idx, cfg.data, 0, batch_size=4))
  assert [b["valid"].sum() for b in batches] == [4, 4, 3]
  assert all(b["masked"].shape[0] == 4 for b in batches)
  got = np.concatenate([b["unmasked"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(got[10], fs.load(10, False))


def test_build_faceset_errors():
  cfg = smoke_config(**{"data.source": "web"})
  with pytest.raises(ValueError, match="config.data.source='web'"):
    pipeline.build_faceset(cfg.data, 0)
  cfg = smoke_config(**{"data.source": "folder"})
  with pytest.raises(ValueError, match="config.data.root"):
    pipeline.build_faceset(cfg.data, 0)


def test_corrupt_image_error_names_the_file_through_the_pipeline(tmp_path):
  import cv2
  for p in ("a", "b"):
    (tmp_path / p).mkdir()
    for i in range(2):
      cv2.imwrite(str(tmp_path / p / f"{i}.png"), np.full((20, 20), 100, np.uint8))
  (tmp_path / "b" / "1.png").write_bytes(b"garbage")
  cfg = smoke_config(**{"data.source": "folder", "data.root": str(tmp_path),
                        "data.mask_source": "render"})
  fs = pipeline.build_faceset(cfg.data, 0)
  ds = pipeline.pair_dataset(fs, pipeline.images_by_identity(fs.labels, np.array([0, 1])),
                              cfg.data, global_batch=2, num_epochs=1, seed=0)
  with pytest.raises(Exception, match=r"b/1\.png"):
    list(ds)


def test_identity_rows_are_k_people_x_m_images():
  labels, groups = groups_for([5, 4, 1, 2, 7, 3, 6])
  eligible = pipeline.eligible_identities(groups, 2)
  assert len(eligible) == 6   # the person with 1 image cannot give a positive
  rows = pipeline.epoch_identity_rows(eligible, ids_per_batch=2, per_identity=3, seed=0, epoch=0)
  assert len(rows) == 6 * 3
  people = labels[rows].reshape(3, 2, 3)        # batches x people x images
  assert (people == people[..., :1]).all()      # each block of 3 is one person
  assert len(np.unique(people[:, :, 0])) == 6   # every eligible person once per epoch
  for block in rows.reshape(-1, 3):
    if len(groups[labels[block[0]]]) >= 3:      # enough images: no repeats
      assert len(np.unique(block)) == 3
  again = pipeline.epoch_identity_rows(eligible, 2, 3, seed=0, epoch=0)
  other = pipeline.epoch_identity_rows(eligible, 2, 3, seed=0, epoch=1)
  assert np.array_equal(rows, again) and not np.array_equal(rows, other)


def test_identity_rows_split_by_process_into_contiguous_blocks():
  _, groups = groups_for([4] * 8)
  one = pipeline.IdentityRows(groups, 4, 3, 0, 2, global_batch=12, process_index=0,
                              process_count=1)
  halves = [pipeline.IdentityRows(groups, 4, 3, 0, 2, 12, p, 2) for p in (0, 1)]
  assert len(one) == 2 * 2 * 12 and len(halves[0]) == len(one) // 2
  full = [one[k] for k in range(len(one))]
  for b in range(len(one) // 12):
    got = [halves[p][b * 6 + r] for p in (0, 1) for r in range(6)]
    assert got == full[b * 12:(b + 1) * 12]   # same global rows, process 0 first


def test_identity_stream_loads_views_and_whole_people():
  cfg = smoke_config().data
  fs = pipeline.build_faceset(cfg, 0)
  groups = pipeline.images_by_identity(fs.labels, np.arange(8))
  ds = pipeline.identity_dataset(fs, groups, cfg, global_batch=24, num_epochs=1, seed=0,
                                 views=("unmasked", "masked"))
  batch = next(iter(ds))
  assert batch["unmasked"].shape == batch["masked"].shape == (24, 16, 16, 1)
  assert (batch["label"].reshape(8, 3) == batch["label"].reshape(8, 3)[:, :1]).all()
  assert not np.array_equal(batch["unmasked"], batch["masked"])
  again = next(iter(pipeline.identity_dataset(fs, groups, cfg, global_batch=24, num_epochs=1,
                                              seed=0, views=("unmasked",))))
  assert set(again) == {"unmasked", "label"}
  np.testing.assert_array_equal(again["unmasked"], batch["unmasked"])
  with pytest.raises(ValueError, match="batch_images_per_person=3"):
    pipeline.identity_dataset(fs, groups, cfg, global_batch=20, num_epochs=1, seed=0,
                              views=("unmasked",))


def test_upper_face_crop_keeps_the_top_rows_of_blocks():
  from mfrjax.data import transforms
  img = np.arange(20 * 20, dtype=np.uint8).reshape(20, 20, 1)
  np.testing.assert_array_equal(transforms.keep_top_blocks(img, 10, 50), img[:10])
  assert transforms.keep_top_blocks(img, 10, 70).shape == (14, 20, 1)
  with pytest.raises(ValueError, match="config.data.upper_face.keep_blocks=55"):
    transforms.keep_top_blocks(img, 10, 55)
  cfg = smoke_config(**{"data.upper_face.enabled": True}).data
  assert pipeline.input_shape(cfg) == (8, 16, 1)
  fs = pipeline.build_faceset(cfg, 0)
  batch = next(pipeline.eval_batches(fs, np.arange(4), cfg, 0, 4))
  assert batch["masked"].shape == (4, 8, 16, 1)


def test_masked_flags_mark_exactly_the_share():
  for n, share, expected in [(1000, 0.1, 100), (7, 0.1, 1), (50, 0.0, 0), (9, 1.0, 9)]:
    assert pipeline.masked_flags(n, share, 0, 0).sum() == expected
  assert not np.array_equal(pipeline.masked_flags(100, 0.1, 0, 0),
                            pipeline.masked_flags(100, 0.1, 0, 1))  # new draw each epoch
  with pytest.raises(ValueError, match="config.data.masked_share=1.5"):
    pipeline.masked_flags(10, 1.5, 0, 0)


def labelled_setup(share=0.25, **aug):
  cfg = load_config("margin", "smoke", **{"data.masked_share": share, **aug}).data
  fs = pipeline.build_faceset(cfg, 0)
  groups = pipeline.images_by_identity(fs.labels, np.arange(8))  # 8 people x 6 images
  return cfg, fs, groups


def test_labelled_stream_delivers_the_exact_masked_share_by_counting():
  cfg, fs, groups = labelled_setup(0.25)
  batches = list(pipeline.labelled_dataset(fs, groups, cfg, global_batch=16, num_epochs=2,
                                           seed=0))
  assert len(batches) == 6 and batches[0]["image"].shape == (16, 16, 16, 1)
  masked = np.concatenate([b["masked"] for b in batches]).reshape(2, 48)
  np.testing.assert_array_equal(masked.sum(1), [12, 12])  # 25% of 48, in each epoch
  rows = pipeline.LabelledRows(groups, 0.25, 0, 2)
  labels = np.concatenate([b["label"] for b in batches])
  for k in range(96):
    _, image, cls, is_masked = rows[k]
    assert image in groups[cls] and labels[k] == cls and masked.ravel()[k] == is_masked
  # Every training image exactly once per epoch.
  for e in range(2):
    assert sorted(rows[e * 48 + i][1] for i in range(48)) == sorted(np.concatenate(groups))


def test_labelled_stream_masks_the_flagged_rows_and_splits_by_process(monkeypatch):
  off = {"data.augment.flip": False, "data.augment.brightness": 0.0,
         "data.augment.contrast": 0.0, "data.augment.crop_p": 0.0, "data.augment.jpeg_p": 0.0,
         "data.augment.rgb_shift_p": 0.0, "data.augment.blur_p": 0.0,
         "data.augment.gaussian_blur_p": 0.0, "data.augment.motion_blur_p": 0.0}
  cfg, fs, groups = labelled_setup(0.5, **off)
  kw = dict(global_batch=16, num_epochs=1, seed=0)
  full = next(iter(pipeline.labelled_dataset(fs, groups, cfg, **kw)))
  rows = pipeline.LabelledRows(groups, 0.5, 0, 1)
  for k in range(16):
    plain = pipeline.ViewLoader(fs, cfg, 0)(rows[k][1], False, 0)
    assert np.array_equal(full["image"][k], plain) != bool(full["masked"][k])
  monkeypatch.setattr(pipeline.jax, "process_count", lambda: 2)
  parts = []
  for p in (0, 1):
    monkeypatch.setattr(pipeline.jax, "process_index", lambda p=p: p)
    parts.append(next(iter(pipeline.labelled_dataset(fs, groups, cfg, **kw))))
  for key in ("image", "label", "masked"):
    merged = np.stack([parts[0][key], parts[1][key]], 1).reshape(full[key].shape)
    np.testing.assert_array_equal(merged, full[key])  # strided rows: p, p + 2, ...


def _take(ds, n):
  it = iter(ds)
  return it, [next(it) for _ in range(n)]


def _assert_same_batches(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_worker_processes_stream_the_same_batches_and_resume():
  """Reading in grain worker processes changes nothing in the stream, and its
  checkpointed position resumes exactly (with the same number of processes)."""
  cfg, fs, groups = labelled_setup(0.25)
  kw = dict(global_batch=8, num_epochs=2, seed=0)
  _, threads = _take(pipeline.labelled_dataset(fs, groups, cfg, **kw), 5)
  cfg.worker_processes = 2
  it, procs = _take(pipeline.labelled_dataset(fs, groups, cfg, **kw), 3)
  state = it.get_state()
  procs += [next(it), next(it)]
  _assert_same_batches(threads, procs)
  it2 = iter(pipeline.labelled_dataset(fs, groups, cfg, **kw))
  it2.set_state(state)
  _assert_same_batches(procs[3:], [next(it2), next(it2)])


def _niceness() -> int:
  return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_reader_threads_yield_to_the_trainer(monkeypatch):
  """config.data.reader_nice lowers the priority of the reader threads, once each and
  never of the training thread, and changes nothing in the stream."""
  cfg, fs, groups = labelled_setup(0.25)
  kw = dict(global_batch=8, num_epochs=2, seed=0)
  main_before = _niceness()
  cfg.reader_nice = 0
  _, plain = _take(pipeline.labelled_dataset(fs, groups, cfg, **kw), 6)
  seen, real = [], pipeline.lower_thread_priority
  def recording(nice):
    changed = real(nice)
    seen.append((threading.get_native_id(), changed, _niceness()))
    return changed
  monkeypatch.setattr(pipeline, "lower_thread_priority", recording)
  cfg.reader_nice = 5
  _, niced = _take(pipeline.labelled_dataset(fs, groups, cfg, **kw), 6)
  _assert_same_batches(plain, niced)
  assert len(seen) >= 6 and _niceness() == main_before
  readers = {tid for tid, _, _ in seen}
  assert threading.get_native_id() not in readers
  assert all(nice == min(19, main_before + 5) for _, _, nice in seen)
  assert sum(changed for _, changed, _ in seen) == len(readers)  # once per thread
  for bad in (-1, 20):
    cfg.reader_nice = bad
    with pytest.raises(ValueError, match=f"config.data.reader_nice={bad}"):
      pipeline.labelled_dataset(fs, groups, cfg, **kw)


class OpenCVThreads:
  """A row loader whose example is the OpenCV thread count where the row was read."""

  def entropy(self, row):
    return 0, 1, int(row)

  def __call__(self, row, rng):
    return {"threads": np.int32(cv2.getNumThreads())}


def test_readers_run_opencv_sequentially_in_every_process():
  """OpenCV's own thread pool is off in the training process once a stream is built and
  in grain's worker processes (config.data.worker_processes), whatever it was before."""
  cfg = load_config("margin", "smoke").data
  before = cv2.getNumThreads()
  try:
    cv2.setNumThreads(2)
    stream = pipeline.row_stream(np.arange(8), OpenCVThreads(), cfg, 4)
    assert cv2.getNumThreads() == 1
    np.testing.assert_array_equal(next(iter(stream))["threads"], 1)
    cfg.worker_processes = 1
    stream = pipeline.row_stream(np.arange(8), OpenCVThreads(), cfg, 4)
    cv2.setNumThreads(2)  # what a worker would start with but for its start-up hook
    np.testing.assert_array_equal(next(iter(stream))["threads"], 1)
  finally:
    cv2.setNumThreads(before)


class CountingFaceSet:
  """Wraps a face set and counts its loads (what the cache must save)."""

  def __init__(self, inner):
    self.inner, self.loads = inner, 0
    self.masked_files, self.labels = inner.masked_files, inner.labels
    self.landmarks = inner.landmarks

  def load(self, *a):
    self.loads += 1
    return self.inner.load(*a)

  def file_key(self, *a):
    return self.inner.file_key(*a)


def test_decode_cache_gives_the_same_bytes_and_skips_reloads():
  cfg, fs, groups = labelled_setup(0.25)
  kw = dict(global_batch=8, num_epochs=2, seed=0)
  cfg.num_workers = 1
  cfg.cache_mb = 0
  plain_fs = CountingFaceSet(fs)
  _, uncached = _take(pipeline.labelled_dataset(plain_fs, groups, cfg, **kw), 12)
  cfg.cache_mb = 64
  cached_fs = CountingFaceSet(fs)
  _, cached = _take(pipeline.labelled_dataset(cached_fs, groups, cfg, **kw), 12)
  _assert_same_batches(uncached, cached)  # 2 epochs: the second is served from memory
  assert plain_fs.loads == 96
  rows = pipeline.LabelledRows(groups, 0.25, 0, 2)
  files = {(rows[k][1], rows[k][3]) for k in range(96)}  # (image, masked) read in 2 epochs
  assert cached_fs.loads == len(files) < 96  # each file decoded once


def test_decode_cache_is_read_only_and_keeps_to_its_budget():
  cfg = smoke_config()
  fs = pipeline.build_faceset(cfg.data, 0)
  cfg.data.cache_mb = 1
  loader = pipeline.ViewLoader(fs, cfg.data, 0)
  img = loader._preprocessed(0, False, 0)
  assert loader._preprocessed(0, False, 0) is img
  with pytest.raises(ValueError, match="read-only"):
    img[0, 0, 0] = 1
  cfg.data.cache_mb = 0
  uncached = pipeline.ViewLoader(fs, cfg.data, 0)
  assert uncached._preprocessed(0, False, 0) is not uncached._preprocessed(0, False, 0)
  # Budget: 1 MiB holds 4,096 images of 16x16x1 and no more.
  loader._cache.clear()
  loader._cached_bytes = 2 ** 20 - 100
  loader._preprocessed(1, False, 0)
  assert not loader._cache and loader._cached_bytes == 2 ** 20 - 100
  # The cache stays behind when the loader is pickled to a worker process.
  import pickle
  loader._preprocessed(1, False, 0)
  assert not pickle.loads(pickle.dumps(loader))._cache


def test_reader_settings_are_checked_with_their_keys():
  cfg, fs, groups = labelled_setup(0.25)
  kw = dict(global_batch=8, num_epochs=1, seed=0)
  cfg.worker_processes = -1
  with pytest.raises(ValueError, match="config.data.worker_processes=-1"):
    pipeline.labelled_dataset(fs, groups, cfg, **kw)
  cfg.worker_processes, cfg.cache_mb = 0, -5
  with pytest.raises(ValueError, match="config.data.cache_mb=-5"):
    pipeline.labelled_dataset(fs, groups, cfg, **kw)


@pytest.mark.parametrize("n_proc", [1, 2, 3])
def test_row_batches_are_grains_per_image_batches(n_proc):
  """RowBatches (one grain element per batch) gives, for every process, the batches of
  grain's per-image chain `source(rows).map(load)[pid::n_proc].batch(B)`, and as many,
  with each row's draws from `default_rng(load.entropy(row))`."""
  import grain

  rows = np.arange(47) * 3

  class Load:
    """A row loader whose example holds its row's first draws."""

    def entropy(self, r):
      return 5, 43, r

    def __call__(self, r, rng):
      return {"image": np.full((2, 2, 1), r % 256, np.uint8), "label": np.int32(r),
              "masked": np.bool_(r % 2), "draw": rng.random(2)}

  load = Load()

  def reference(r):  # the row seeded on its own, as the streams did before RowBatches
    return load(r, np.random.default_rng(list(load.entropy(r))))

  for pid in range(n_proc):
    ours = pipeline.RowBatches(rows, load, 4, pid, n_proc)
    grains = grain.MapDataset.source(rows).map(reference)[pid::n_proc].batch(
        4, drop_remainder=True)
    assert len(ours) == len(grains) > 0
    for k in range(len(ours)):
      a, b = ours[k], grains[k]
      assert a.keys() == b.keys()
      for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key])
