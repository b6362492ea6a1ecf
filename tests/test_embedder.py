"""mfrjax.embedder: a run's model used from its workdir alone (run.json + weights)."""

import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest

from mfrjax import embedder, recognition, run_info, train
from mfrjax.data import pipeline, sources
from mfrjax.eval import identification
from mfrjax.tools import inference
from tests.conftest import load_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """ArcFace smoke run on 8 fake devices, class-sharded head, EMA on."""
  workdir = str(tmp_path_factory.mktemp("arc"))
  cfg = load_config("margin", **{"model.shard_classes": True})
  train.train_and_evaluate(cfg, workdir)
  return workdir, cfg


def test_run_stores_what_embedding_needs(run):
  workdir, cfg = run
  info = json.load(open(os.path.join(workdir, run_info.FILE)))
  assert info["config"]["method"] == "margin" and info["config"]["seed"] == cfg.seed
  assert info["preprocessing"] == run_info.preprocessing(cfg.data)
  assert info["preprocessing"]["image_size"] == cfg.data.image_size
  fs = pipeline.build_faceset(cfg.data, cfg.seed)
  train_ids, _ = recognition.split_data(cfg)[1:3]
  assert info["num_classes"] == len(train_ids) < len(fs.identities)


def test_embeddings_equal_the_runs_own_evaluation(run):
  """The run's evaluation embedded its test images on an 8-device mesh with the EMA
  weights; the Embedder, on one device from the workdir alone, must give the same."""
  workdir, cfg = run
  emb = embedder.Embedder.from_workdir(workdir, batch_size=8)
  assert emb.step == max(embedder.checkpoint_steps(workdir))
  saved = np.load(os.path.join(workdir, "embeddings.npz"))
  fs = pipeline.build_faceset(cfg.data, cfg.seed)
  images = [fs.load(int(i), False) for i in saved["image_index"]]
  got = emb.embed(images)
  want = identification.l2_normalize(saved["unmasked"])
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(got, want, atol=1e-4)
  # The raw weights differ from the moving average: use_ema=False gives other vectors.
  plain = embedder.Embedder.from_workdir(workdir, use_ema=False, batch_size=8)
  assert np.abs(plain.embed(images[:4]) - got[:4]).max() > 1e-3


def test_fixed_batch_shape_flip_and_paths(run, tmp_path):
  workdir, cfg = run
  emb = embedder.Embedder.from_workdir(workdir, batch_size=4)
  fs = pipeline.build_faceset(cfg.data, cfg.seed)
  images = np.stack([fs.load(i, False) for i in range(7)])
  a = emb.embed(images[:3])
  b = emb.embed(images)         # 7 images: two calls of the same compiled batch of 4
  np.testing.assert_allclose(a, b[:3], atol=1e-6)
  assert emb._fns[False]._cache_size() == 1  # pylint: disable=protected-access
  # Flip: the sum of the image's and its mirror's embeddings, normalised.
  raw = lambda x: np.asarray(emb.model.apply(emb.variables, x.astype(np.float32) / 127.5 - 1,  # noqa: E731
                                             method=emb.model.embed))
  x = images[:4]
  want = identification.l2_normalize(raw(x) + raw(x[:, :, ::-1]))
  np.testing.assert_allclose(emb.embed(x, flip=True), want, atol=1e-5)
  # Paths are read like the training images.
  path = tmp_path / "face.png"
  pipeline.transforms.cv2.imwrite(str(path), images[0])
  np.testing.assert_allclose(emb.embed([str(path)]), a[:1], atol=1e-6)


def test_bad_workdirs_are_named(run, tmp_path):
  with pytest.raises(FileNotFoundError, match="run.json"):
    embedder.Embedder.from_workdir(str(tmp_path))
  workdir, _ = run
  with pytest.raises(ValueError, match="not among the checkpoints"):
    embedder.Embedder.from_workdir(workdir, step=123456)
  (tmp_path / run_info.FILE).write_text("{")
  with pytest.raises(ValueError, match="damaged"):
    embedder.Embedder.from_workdir(str(tmp_path))
  assert jax.device_count() == 8  # the run trained on 8 devices, the Embedder used one


def _faces_on_disk(root, cfg, people=(0, 1, 2), per=3):
  """Synthetic test faces as <root>/<identity>/<k>.png, as a user's folder would be."""
  fs = pipeline.build_faceset(cfg.data, cfg.seed)
  per_id = cfg.data.synthetic.images_per_identity
  for p in people:
    os.makedirs(root / f"id{p}", exist_ok=True)
    for k in range(per):
      pipeline.transforms.cv2.imwrite(str(root / f"id{p}" / f"{k}.png"),
                                      fs.load(p * per_id + k, False))
  return fs


def test_embed_command_skips_bad_files_and_matches_the_api(run, tmp_path, capsys):
  workdir, cfg = run
  _faces_on_disk(tmp_path / "in", cfg)
  (tmp_path / "in" / "id0" / "broken.jpg").write_bytes(b"not a jpeg")
  out = tmp_path / "emb.npz"
  assert inference.embed_main(["--workdir", workdir, "--images", str(tmp_path / "in"),
                              "--out", str(out), "--quiet"]) == 0
  text = capsys.readouterr().out
  assert "written: 9" in text and "skipped: 1" in text and "not a valid image" in text
  saved = np.load(out)
  assert saved["embeddings"].shape[0] == 9 and len(saved["paths"]) == 9
  api = embedder.Embedder.from_workdir(workdir).embed([str(p) for p in saved["paths"]])
  np.testing.assert_allclose(saved["embeddings"], api, atol=1e-6)
  capsys.readouterr()
  assert inference.embed_main(["--workdir", workdir, "--images", str(tmp_path / "no"),
                              "--out", str(out)]) == 2
  assert re.search(r"^error: .*neither a folder", capsys.readouterr().err)


def test_verify_uses_the_runs_calibrated_threshold(run, tmp_path, capsys):
  workdir, cfg = run
  _faces_on_disk(tmp_path, cfg, people=(0, 1), per=2)
  table = inference.stored_thresholds(workdir, "standard")
  assert set(table) == {"best_accuracy", "far=0.01", "far=0.001"}
  a, b = str(tmp_path / "id0" / "0.png"), str(tmp_path / "id1" / "0.png")
  assert inference.verify_main(["--workdir", workdir, a, b, "--threshold",
                               "best_accuracy"]) == 0
  line = capsys.readouterr().out
  x = embedder.Embedder.from_workdir(workdir).embed([a, b])
  assert f"score {float(x[0] @ x[1]):.4f}" in line
  assert f"threshold {table['best_accuracy']:.4f} (best_accuracy, standard track)" in line
  inference.verify_main(["--workdir", workdir, a, a, "--threshold", "0.99"])
  assert "same person" in capsys.readouterr().out
  # User errors: one `error:` line naming the file or flag, exit status 2 (mfrjax.cli).
  assert inference.verify_main(["--workdir", workdir, a, str(tmp_path / "missing.png"),
                               "--threshold", "0.5"]) == 2
  assert re.search(r"^error: cannot read image .*missing.png", capsys.readouterr().err)
  assert inference.verify_main(["--workdir", workdir, a, b, "--threshold", "far=0.5"]) == 2
  assert re.search(r"^error: --threshold=far=0.5.*give a number", capsys.readouterr().err)
  with pytest.raises(sources.ImageReadError, match="missing.png"):  # --debug: the exception
    inference.verify_main(["--workdir", workdir, a, str(tmp_path / "missing.png"),
                          "--threshold", "0.5", "--debug"])


def test_identify_command_ranks_and_writes_matches(run, tmp_path, capsys):
  workdir, cfg = run
  _faces_on_disk(tmp_path / "g", cfg, per=1)
  # The probes are the gallery images themselves: every probe's best match is itself.
  _faces_on_disk(tmp_path / "p", cfg, per=1)
  out = tmp_path / "m.csv"
  assert inference.identify_main(["--workdir", workdir, "--gallery", str(tmp_path / "g"),
                                 "--probes", str(tmp_path / "p"), "--csv", str(out),
                                 "--quiet"]) == 0
  assert "rank-1: 100.00% of 3 probes" in capsys.readouterr().out
  rows = out.read_text().splitlines()
  assert len(rows) == 4 and rows[1].split(",")[2].endswith("g/id0/0.png")


def test_stablehlo_export_runs_without_the_model_code(run, tmp_path, shared_data):
  """The exported graph, loaded with jax alone, gives the Embedder's vectors on real
  faces (LFW photos, preprocessed as the run's contract says), at any batch size."""
  workdir, _ = run
  out = str(tmp_path / "model")
  assert inference.export_main(["--workdir", workdir, "--out", out]) == 0
  code = (f"import json, sys, numpy as np; sys.modules['mfrjax'] = None\n"
          f"import jax; from importlib.machinery import SourceFileLoader\n"
          f"m = SourceFileLoader('ex', {str(embedder.__file__).replace('embedder', 'exported')!r})"
          f".load_module()\n"
          f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
          f"np.save({str(tmp_path / 'y.npy')!r}, m.load({out!r})(x))\n")
  emb = embedder.Embedder.from_workdir(workdir)
  photos = sorted((shared_data / "lfw").glob("*/*.jpg"))[:5]
  x = np.stack([emb.preprocess(sources.read_image(str(p))) for p in photos])
  np.save(tmp_path / "x.npy", x)
  import subprocess
  import sys
  subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
  got = np.load(tmp_path / "y.npy")
  np.testing.assert_allclose(got, emb.embed(x), atol=1e-5)
  meta = json.load(open(out + ".json"))
  assert meta["preprocessing"] == emb.preprocessing and meta["input"]["dtype"] == "uint8"
  from mfrjax import exported  # pylint: disable=import-outside-toplevel
  model = exported.load(out)
  np.testing.assert_allclose(model(x[:2]), got[:2], atol=1e-6)   # another batch size
  with pytest.raises(ValueError, match="expected uint8"):
    model(x.astype(np.float32))


@pytest.mark.skipif(importlib.util.find_spec("jax2onnx") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="ONNX export needs: pip install '.[export]'")
def test_onnx_export_in_insightface_convention_matches_jax(run, tmp_path, shared_data):
  """onnxruntime on the exported graph, fed as insightface feeds its models (N x 3 x S x S,
  RGB, (x - 127.5) / 127.5), gives the Embedder's vectors on real LFW photos."""
  import onnxruntime  # pylint: disable=import-outside-toplevel
  workdir, _ = run
  out = str(tmp_path / "model")
  assert inference.export_main(["--workdir", workdir, "--out", out, "--format", "onnx"]) == 0
  emb = embedder.Embedder.from_workdir(workdir)
  photos = sorted((shared_data / "lfw").glob("*/*.jpg"))[:6]
  x = np.stack([emb.preprocess(sources.read_image(str(p))) for p in photos])  # grey (N,S,S,1)
  rgb = np.repeat(x, 3, axis=3).astype(np.float32)
  feed = (np.transpose(rgb, (0, 3, 1, 2)) - 127.5) / 127.5
  session = onnxruntime.InferenceSession(out + ".onnx")
  assert session.get_inputs()[0].shape[1:] == [3, x.shape[1], x.shape[2]]
  got = session.run(None, {session.get_inputs()[0].name: feed})[0]
  np.testing.assert_allclose(got, emb.embed(x), atol=1e-4)
  assert json.load(open(out + ".onnx.json"))["input"]["channels"] == "RGB"
