"""Quintuplet and triplet (upper face) training end to end on 8 fake CPU devices."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from mfrjax import methods, recognition, train
from mfrjax.data import pipeline
from mfrjax.parallel import mesh as mesh_lib
from tests.conftest import load_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quint_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("quint"))
  return workdir, train.train_and_evaluate(load_config("quintuplet"), workdir)


def test_quintuplet_run_reports_every_classifier(quint_run):
  workdir, res = quint_run
  names = {f"{p}{c}" for p in ("masked_vs_unmasked", "unmasked_vs_unmasked", "masked_vs_masked")
           for c in ("", "/svm", "/mlp")}
  assert set(res["final"]) == names
  # 9 training people with >= 2 images, K = 24 / 3 = 8 per batch -> 1 step x 8 epochs.
  assert res["steps"] == 8
  last = res["last_logged"]
  assert last["hardest_phase"] == 1.0  # switched at epoch 4 (step 4)
  assert 0 < last["valid"] <= 1 and np.isfinite(last["loss"])
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert "groups" in saved["final"]["masked_vs_unmasked/svm"]


def test_quintuplet_resume_matches_uninterrupted_run(quint_run, tmp_path):
  workdir, res = quint_run
  crashed = tmp_path / "crashed"
  shutil.copytree(workdir, crashed)
  shutil.rmtree(crashed / "checkpoints" / "8")
  resumed = train.train_and_evaluate(load_config("quintuplet"), str(crashed))
  assert resumed["last_logged"]["loss"] == res["last_logged"]["loss"]
  a, b = np.load(os.path.join(workdir, "embeddings.npz")), np.load(crashed / "embeddings.npz")
  np.testing.assert_array_equal(a["masked"], b["masked"])


def quint_step(devices, **overrides):
  cfg = load_config("quintuplet", batch_size=24, **{"model.dropout": 0.0}, **overrides)
  mesh = mesh_lib.make_mesh(devices)
  exp = recognition.setup(cfg, mesh)
  batch = next(iter(pipeline.identity_dataset(exp.faceset, exp.train_groups, cfg.data,
                                              global_batch=24, num_epochs=1, seed=0,
                                              views=("unmasked", "masked"))))
  return exp.step_fn(exp.state, mesh_lib.to_global(batch, mesh), jax.random.key(0))


def assert_close(a, b, rtol, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                                                       atol=atol), a, b)


def test_global_mining_step_same_on_8_devices_and_1():
  s8, m8 = quint_step(jax.devices())
  s1, m1 = quint_step(jax.devices()[:1])
  assert float(m8["loss"]) > 0
  for key in ("loss", "valid", "d_ap", "d_an"):
    np.testing.assert_allclose(float(m8[key]), float(m1[key]), rtol=1e-5)
  assert_close(s8.params, s1.params, 1e-4, 1e-6)


def test_quintuplet_full_rank_powersgd_step_equals_plain_step():
  full_rank = {"powersgd.rank": 1000, "powersgd.start_step": 0,
               "powersgd.min_compression_rate": 0.0}
  s_p, m_p = quint_step(jax.devices(), grad_reduce="powersgd", **full_rank)
  s_m, m_m = quint_step(jax.devices(), **full_rank)
  np.testing.assert_allclose(float(m_p["loss"]), float(m_m["loss"]), rtol=1e-5)
  assert_close(s_p.params, s_m.params, 2e-3, 2e-5)


def test_triplet_upper_face_sees_the_top_half_only(tmp_path):
  cfg = load_config("triplet_upper")
  assert pipeline.input_shape(cfg.data) == (8, 16, 1)
  mesh = mesh_lib.make_mesh()
  exp = recognition.setup(cfg, mesh)
  assert exp.method.views == ("unmasked",)
  batch = next(iter(recognition.train_data(cfg, exp, mesh)))
  assert set(batch) == {"unmasked", "label"} and batch["unmasked"].shape == (24, 8, 16, 1)
  res = train.train_and_evaluate(cfg, str(tmp_path))
  assert np.isfinite(res["last_logged"]["loss"]) and "masked_vs_unmasked/mlp" in res["final"]


def test_method_and_sampler_errors_name_the_keys(tmp_path):
  with pytest.raises(ValueError, match="config.method='arcface'.*'barlow', 'inpaint'"):
    methods.get("arcface")
  with pytest.raises(ValueError, match="config.data.pair_sampler='identities'"):
    recognition.setup(load_config("barlow", **{"data.pair_sampler": "identities"}),
                      mesh_lib.make_mesh())
  with pytest.raises(ValueError, match="batch_images_per_person=3, so that every device"):
    recognition.setup(load_config("quintuplet", batch_size=16), mesh_lib.make_mesh())
  with pytest.raises(ValueError, match="config.model.backbone='iresnet_tiny'"):
    recognition.setup(load_config("quintuplet", **{"model.backbone": "iresnet_tiny"}),
                mesh_lib.make_mesh())
