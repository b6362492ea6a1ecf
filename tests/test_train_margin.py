"""ArcFace/CosFace training end to end on 8 fake CPU devices: class-sharded FC, EMA,
verification on unseen identities and on user sets, resume, config errors."""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfrjax import recognition, train
from mfrjax import state as state_lib
from mfrjax.data import pair_sets, pipeline
from mfrjax.parallel import mesh as mesh_lib
from tests.conftest import load_config, write_bin
from tests.test_train_metric import assert_close

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def user_sets(tmp_path):
  """A .bin and an LFW-style pairs list of synthetic faces, as a user would bring them."""
  cfg = load_config("margin")
  fs = pipeline.build_faceset(cfg.data, 0)
  images = [fs.load(i, False)[..., 0] for i in (0, 1, 0, 20, 30, 31, 40, 55)]
  write_bin(str(tmp_path / "user.bin"), images, [True, False, True, False], ".png")
  for name, idx in (("p0", (0, 1, 2)), ("p9", (90, 91))):
    os.makedirs(tmp_path / name)
    for k, i in enumerate(idx, 1):
      pair_sets.cv2.imwrite(str(tmp_path / name / f"{name}_{k:04d}.png"), fs.load(i, False))
  (tmp_path / "pairs.txt").write_text("p0 1 2\np0 1 p9 1\np9 1 2\np0 3 p9 2\n")
  return f"{tmp_path / 'user.bin'},{tmp_path / 'pairs.txt'}"


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory):
  sets = user_sets(tmp_path_factory.mktemp("sets"))
  workdir = str(tmp_path_factory.mktemp("arc"))
  cfg = load_config("margin", **{"model.shard_classes": True,
                                  "eval.verification.sets": sets,
                                  "eval.verification.folds": 2})
  return workdir, cfg, train.train_and_evaluate(cfg, workdir)


def test_run_reports_verification_tracks_and_writes_roc(arc_run):
  workdir, _, res = arc_run
  ver = res["verification"]
  assert set(ver) == {"test_identities", "user.bin", "pairs.txt"}
  for tracks in ver.values():
    assert set(tracks) == {"masked", "standard", "combined"}
    for t in ("masked", "standard"):
      assert 0 <= tracks[t]["accuracy"] <= 1 and "roc" not in tracks[t]
  assert ver["user.bin"]["standard"]["num_pairs"] == 4
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["verification"]["pairs.txt"]["masked"]["num_positive"] == 2
  assert os.path.getsize(os.path.join(workdir, "roc.png")) > 1000
  last = res["last_logged"]
  assert np.isfinite(last["loss"]) and 0 <= last["masked_share"] <= 1
  assert "masked_vs_unmasked" in res["final"]


def test_resume_matches_uninterrupted_run(arc_run, tmp_path):
  workdir, cfg, res = arc_run
  crashed = tmp_path / "crashed"
  shutil.copytree(workdir, crashed)
  steps = sorted(int(s) for s in os.listdir(crashed / "checkpoints") if s.isdigit())
  shutil.rmtree(crashed / "checkpoints" / str(steps[-1]))
  resumed = train.train_and_evaluate(cfg, str(crashed))
  assert resumed["last_logged"]["loss"] == res["last_logged"]["loss"]
  a, b = np.load(os.path.join(workdir, "embeddings.npz")), np.load(crashed / "embeddings.npz")
  np.testing.assert_array_equal(a["masked"], b["masked"])


@functools.cache  # tests share steps: each compile costs seconds
def margin_step(devices: tuple, **overrides):
  cfg = load_config("margin", **overrides)
  mesh = mesh_lib.make_mesh(list(devices))
  exp = recognition.setup(cfg, mesh)
  batch = next(iter(pipeline.labelled_dataset(exp.faceset, exp.train_groups, cfg.data,
                                              global_batch=16, num_epochs=1, seed=0)))
  state, metrics = exp.step_fn(exp.state, mesh_lib.to_global(batch, mesh), jax.random.key(0))
  return state, metrics, exp


def test_class_sharded_step_on_8_devices_equals_1_device():
  s8, m8, _ = margin_step(tuple(jax.devices()), **{"model.shard_classes": True})
  s1, m1, _ = margin_step(tuple(jax.devices()[:1]), **{"model.shard_classes": True})
  w = s8.params["class_weight"]
  assert w.shape == (128, 128) and w.sharding.spec == jax.sharding.PartitionSpec(None, "data")
  assert w.addressable_shards[0].data.shape == (128, 16)  # each device: 16 of 128 classes
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
  assert_close(s8.params, s1.params, 1e-4, 1e-6)
  assert_close(s8.ema, s1.ema, 1e-4, 1e-6)
  # Same result as the unsharded (replicated) FC.
  s_r, m_r, _ = margin_step(tuple(jax.devices()), **{"model.shard_classes": False})
  np.testing.assert_allclose(float(m8["loss"]), float(m_r["loss"]), rtol=1e-5)
  assert_close(s8.params, s_r.params, 1e-4, 1e-6)


def test_full_rank_powersgd_step_equals_plain_step():
  full_rank = {"powersgd.rank": 1000, "powersgd.start_step": 0,
               "powersgd.min_compression_rate": 0.0, "model.dropblock.rate": 0.0}
  s_p, m_p, _ = margin_step(tuple(jax.devices()), grad_reduce="powersgd", **full_rank)
  s_m, m_m, _ = margin_step(tuple(jax.devices()), **full_rank)
  np.testing.assert_allclose(float(m_p["loss"]), float(m_m["loss"]), rtol=1e-5)
  assert_close(s_p.params, s_m.params, 2e-3, 2e-5)


def test_ema_update_and_evaluation_weights():
  ema = {"params": {"w": jnp.zeros(3)}, "batch_stats": {}}
  new = state_lib.update_ema(ema, {"w": jnp.ones(3)}, {}, jnp.asarray(0), 0.999)
  np.testing.assert_allclose(new["params"]["w"], 0.9)  # d = min(0.999, 1/10) = 0.1
  late = state_lib.update_ema(ema, {"w": jnp.ones(3)}, {}, jnp.asarray(10 ** 6), 0.999)
  np.testing.assert_allclose(late["params"]["w"], 0.001, rtol=1e-4)
  s, _, _ = margin_step(tuple(jax.devices()[:1]), **{"model.shard_classes": True})
  cfg = load_config("margin")
  assert train.eval_variables(cfg, s)["params"] is s.ema["params"]
  cfg.ema.enabled = False
  assert train.eval_variables(cfg, s)["params"] is s.params


def test_margin_config_errors_name_the_keys():
  mesh = mesh_lib.make_mesh()
  with pytest.raises(ValueError, match="config.model.shard_classes=False to use PowerSGD"):
    recognition.setup(load_config("margin", grad_reduce="powersgd",
                            **{"model.shard_classes": True}), mesh)
  with pytest.raises(ValueError, match="config.model.class_pad=12 must divide"):
    recognition.setup(load_config("margin", **{"model.shard_classes": True,
                                          "model.class_pad": 12}), mesh)
  with pytest.raises(ValueError, match="config.model.backbone='resnet_tiny'"):
    recognition.setup(load_config("margin", **{"model.backbone": "resnet_tiny"}), mesh)
  with pytest.raises(ValueError, match="unknown variant 'huge'"):
    load_config("margin", "huge")


def test_eval_every_logs_evaluations_and_keeps_the_best_weights(tmp_path):
  from mfrjax.eval import embed  # pylint: disable=import-outside-toplevel
  cfg = load_config("margin", **{"eval_every": 2, "num_epochs": 3})
  workdir = str(tmp_path / "w")
  before = set(embed._STEPS)  # pylint: disable=protected-access
  res = train.train_and_evaluate(cfg, workdir)
  # Every evaluation of the run used one jitted step, compiled once.
  new = [embed._STEPS[k][2] for k in set(embed._STEPS) - before]  # pylint: disable=protected-access
  assert len(new) == 1 and new[0]._cache_size() == 1  # pylint: disable=protected-access
  hist = res["evaluations"]
  steps = [h["step"] for h in hist]
  assert steps == list(range(2, res["steps"], 2)) + [res["steps"]]
  values = [h["eval/masked_vs_unmasked"] for h in hist]
  best = res["best"]
  assert best["value"] == max(values) and best["step"] == steps[values.index(max(values))]
  assert os.listdir(os.path.join(workdir, "best")) == [str(best["step"])]
  saved = json.load(open(os.path.join(workdir, "best.json")))
  assert saved["best"] == best and saved["history"] == hist
  # The Embedder loads the best weights; with the best at the last step they are the
  # final EMA weights, otherwise they differ from them.
  from mfrjax import embedder  # pylint: disable=import-outside-toplevel
  fs = pipeline.build_faceset(cfg.data, cfg.seed)
  images = [fs.load(i, False) for i in range(4)]
  b = embedder.Embedder.from_workdir(workdir, best=True, batch_size=4)
  assert b.step == best["step"]
  final = embedder.Embedder.from_workdir(workdir, batch_size=4).embed(images)
  same = np.abs(b.embed(images) - final).max() < 1e-6
  assert same == (best["step"] == res["steps"])
  # A metric the evaluation does not write is refused before the first step.
  bad = load_config("margin", **{"eval_every": 2, "eval.best_metric": "eval/nope"})
  with pytest.raises(ValueError, match="best_metric='eval/nope'.*eval/masked_vs_unmasked"):
    train.train_and_evaluate(bad, str(tmp_path / "bad"))
  assert os.listdir(tmp_path / "bad") == ["lock"]  # only the workdir's lock (workdir_lock)
