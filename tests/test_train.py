"""The trainer end to end on the smoke config (8 fake CPU devices)."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from mfrjax import checkpoint, recognition, run_info, train
from mfrjax.data import pipeline
from mfrjax.parallel import mesh as mesh_lib
from tests.conftest import smoke_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run_a"))
  return workdir, train.train_and_evaluate(smoke_config(), workdir)


def test_run_writes_results_checkpoints_and_events(first_run):
  workdir, results = first_run
  assert set(results["final"]) == {"masked_vs_unmasked", "unmasked_vs_unmasked",
                                   "masked_vs_masked"}
  assert results["steps"] == 12
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["final"]["masked_vs_unmasked"]["accuracy"] == \
      results["final"]["masked_vs_unmasked"]["accuracy"]
  assert "groups" in saved["final"]["masked_vs_unmasked"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  for key in ("loss", "grad_norm", "learning_rate", "images_per_sec"):
    assert np.isfinite(results["last_logged"][key])
  emb = np.load(os.path.join(workdir, "embeddings.npz"))
  assert emb["unmasked"].shape == emb["masked"].shape and len(emb["labels"]) == 18


def test_same_seed_same_result(first_run, tmp_path):
  workdir, results = first_run
  again = train.train_and_evaluate(smoke_config(), str(tmp_path))
  assert again["last_logged"]["loss"] == results["last_logged"]["loss"]
  a, b = np.load(os.path.join(workdir, "embeddings.npz")), np.load(tmp_path / "embeddings.npz")
  np.testing.assert_array_equal(a["masked"], b["masked"])
  np.testing.assert_array_equal(a["unmasked"], b["unmasked"])


def test_resume_matches_uninterrupted_run(first_run, tmp_path):
  workdir, results = first_run
  # Simulate a crash after the step-8 checkpoint: copy the run and drop step 12.
  crashed = tmp_path / "crashed"
  shutil.copytree(workdir, crashed)
  shutil.rmtree(crashed / "checkpoints" / "12")
  os.remove(crashed / "embeddings.npz")
  resumed = train.train_and_evaluate(smoke_config(), str(crashed))
  assert "init" not in resumed  # it did resume, it did not start again
  assert resumed["last_logged"]["loss"] == results["last_logged"]["loss"]
  a, b = np.load(os.path.join(workdir, "embeddings.npz")), np.load(crashed / "embeddings.npz")
  np.testing.assert_array_equal(a["masked"], b["masked"])


def test_resume_from_another_run_and_model_mismatch(first_run, tmp_path):
  workdir, _ = first_run
  cfg = smoke_config(**{"model.backbone": "iresnet_tiny"})
  with pytest.raises(run_info.ConfigChangedError,
                     match="config.model.backbone: 'resnet_tiny' -> 'iresnet_tiny'"):
    train.train_and_evaluate(cfg, workdir)  # the stored config is compared first
  no_info = tmp_path / "no_info"  # a run from before runs stored their config
  shutil.copytree(workdir, no_info)
  os.remove(no_info / "run.json")
  with pytest.raises(checkpoint.ModelMismatchError, match="different model.*first difference"):
    train.train_and_evaluate(cfg, str(no_info))
  cfg = smoke_config(**{"model.backbone": "iresnet_tiny",
                        "resume": os.path.join(workdir, "checkpoints")})
  with pytest.raises(checkpoint.ModelMismatchError):
    train.train_and_evaluate(cfg, str(tmp_path / "fresh"))
  cfg = smoke_config(resume=str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="config.resume"):
    train.train_and_evaluate(cfg, str(tmp_path / "fresh2"))


def test_nan_loss_stops_with_a_clear_error(tmp_path):
  cfg = smoke_config(**{"optimizer.name": "sgd", "optimizer.learning_rate": 1e30,
                        "optimizer.warmup_epochs": 0.0})
  with pytest.raises(train.NonFiniteLossError, match=r"loss became (nan|inf) at step \d+"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_batch_must_divide_over_devices(tmp_path):
  with pytest.raises(ValueError, match="config.batch_size=12 must divide by the 8 devices"):
    train.train_and_evaluate(smoke_config(batch_size=12), str(tmp_path))


def one_step(devices, **overrides):
  """One train step of the smoke model on a fixed global batch of 16, on `devices`.

  Warm-up is off so that step 0 has a non-zero learning rate and really moves the
  parameters being compared.
  """
  cfg = smoke_config(batch_size=16, **{"optimizer.warmup_epochs": 0.0}, **overrides)
  mesh = mesh_lib.make_mesh(devices)
  exp = recognition.setup(cfg, mesh)
  batch = next(iter(pipeline.pair_dataset(exp.faceset, exp.train_groups, cfg.data,
                                           global_batch=16, num_epochs=1, seed=0)))
  return exp.step_fn(exp.state, mesh_lib.to_global(batch, mesh), jax.random.key(0))


def test_one_step_same_on_8_devices_and_1():
  s8, m8 = one_step(jax.devices())
  s1, m1 = one_step(jax.devices()[:1])
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m8["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=1e-6), s8.params, s1.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=1e-6), s8.batch_stats,
               s1.batch_stats)


class _Writer:
  """Records what the loop logs (a stand-in for clu's writer)."""

  def __init__(self):
    self.steps = []

  def write_scalars(self, step, scalars):
    if "loss" in scalars:  # not clu's ReportProgress lines
      self.steps.append(step)

  def flush(self):
    pass


def test_train_loop_in_stretches_equals_one_call(tmp_path):
  """stop_step runs a stretch of the loop on the run's cadence (the throughput benchmark
  uses it); two stretches give the state of one uninterrupted call, bit for bit."""
  cfg = smoke_config()
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  exp = recognition.setup(cfg, mesh)
  rng = jax.random.key(0)

  def run(stretches, tag):
    manager = checkpoint.make_manager(str(tmp_path / tag), 10)
    state = jax.tree.map(lambda x: x.copy(), exp.state)  # the step donates its input
    data, writer = recognition.train_data(cfg, exp, mesh), _Writer()
    start = 0
    for stop in stretches:
      state, _ = train.train_loop(cfg, state, exp.step_fn, data, rng, start, exp.total_steps,
                                  manager, exp.meta, writer, 2, stop_step=stop)
      start = stop
    return jax.device_get(state.params), manager.all_steps(), writer.steps

  whole_params, whole_saves, whole_logs = run([exp.total_steps], "whole")
  parts_params, parts_saves, parts_logs = run([5, exp.total_steps], "parts")
  jax.tree.map(np.testing.assert_array_equal, whole_params, parts_params)
  assert list(whole_saves) == list(parts_saves) == [4, 8, 12]  # the config's cadence only
  assert whole_logs == [2, 4, 6, 8, 10, 12] and parts_logs == [2, 4, 5, 6, 8, 10, 12]
