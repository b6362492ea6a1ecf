"""Training with PowerSGD on 8 fake devices: exact at full rank, reproducible, resumable."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from mfrjax import recognition, train
from mfrjax import state as state_lib
from mfrjax.parallel import mesh as mesh_lib
from tests.conftest import load_config, smoke_config
from tests.test_train import one_step

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

PSGD = {"grad_reduce": "powersgd", "powersgd.start_step": 3, "powersgd.rank": 2}


def test_full_rank_powersgd_step_equals_plain_step():
  full_rank = {"powersgd.rank": 1000, "powersgd.start_step": 0,
               "powersgd.min_compression_rate": 0.0}
  s_psgd, m_psgd = one_step(jax.devices(), grad_reduce="powersgd", **full_rank)
  s_mean, m_mean = one_step(jax.devices(), **full_rank)
  np.testing.assert_allclose(float(m_psgd["loss"]), float(m_mean["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m_psgd["grad_norm"]), float(m_mean["grad_norm"]),
                             rtol=1e-3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=2e-3, atol=2e-5),
               s_psgd.params, s_mean.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=1e-6),
               s_psgd.batch_stats, s_mean.batch_stats)
  assert int(m_psgd["comm_bytes"]) > int(m_mean["comm_bytes"])  # full rank costs more


@pytest.fixture(scope="module")
def psgd_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("psgd"))
  return workdir, train.train_and_evaluate(smoke_config(**PSGD), workdir)


def test_bytes_logged_and_loss_close_to_plain_training(psgd_run, tmp_path):
  _, res = psgd_run
  last = res["last_logged"]
  assert last["comm_bytes"] < last["comm_bytes_uncompressed"] / 5
  plain = train.train_and_evaluate(smoke_config(), str(tmp_path))
  a, b = res["last_logged"]["loss_mean"], plain["last_logged"]["loss_mean"]
  assert abs(a - b) / b < 0.25, (a, b)


def test_powersgd_run_is_reproducible_and_resumes_exactly(psgd_run, tmp_path):
  workdir, res = psgd_run
  again = train.train_and_evaluate(smoke_config(**PSGD), str(tmp_path / "again"))
  assert again["last_logged"]["loss"] == res["last_logged"]["loss"]
  crashed = tmp_path / "crashed"
  shutil.copytree(workdir, crashed)
  shutil.rmtree(crashed / "checkpoints" / "12")
  resumed = train.train_and_evaluate(smoke_config(**PSGD), str(crashed))
  assert "init" not in resumed
  assert resumed["last_logged"]["loss"] == res["last_logged"]["loss"]
  a, b = np.load(os.path.join(workdir, "embeddings.npz")), np.load(crashed / "embeddings.npz")
  np.testing.assert_array_equal(a["masked"], b["masked"])


def test_switching_grad_reduce_on_a_checkpoint_is_refused(psgd_run):
  workdir, _ = psgd_run
  from mfrjax import run_info
  with pytest.raises(run_info.ConfigChangedError, match="config.grad_reduce: 'powersgd' -> 'mean'"):
    train.train_and_evaluate(smoke_config(), workdir)


def test_unknown_grad_reduce(tmp_path):
  with pytest.raises(ValueError, match="config.grad_reduce='allgather'"):
    train.train_and_evaluate(smoke_config(grad_reduce="allgather"), str(tmp_path))


def all_reduce_bytes(hlo: str) -> int:
  """Bytes of every all-reduce result in compiled HLO text (each a tensor or a tuple)."""
  sizes = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "pred": 1}
  total = 0
  for m in re.finditer(r"= (\([^)]*\)|\w+\[[^\]]*\]\S*) all-reduce(?:-start)?\(", hlo):
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", m.group(1)):
      total += sizes[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
  return total


def test_flat_mean_step_equals_xla_mean_step():
  s_flat, m_flat = one_step(jax.devices(), grad_reduce="flat")
  s_mean, m_mean = one_step(jax.devices())
  np.testing.assert_allclose(float(m_flat["loss"]), float(m_mean["loss"]), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=1e-6),
               s_flat.params, s_mean.params)
  assert int(m_flat["comm_bytes"]) == int(m_mean["comm_bytes"])


def test_flat_mean_sends_every_gradient_once():
  """Barlow Twins differentiates through two forward passes; the flat reduction sends
  the gradient once (plus the BatchNorm statistics), whatever XLA would do."""
  cfg = smoke_config(grad_reduce="flat")
  mesh = mesh_lib.make_mesh(jax.devices()[:2])
  exp = recognition.setup(cfg, mesh)
  batch = next(recognition.train_data(cfg, exp, mesh))
  hlo = exp.step_fn.lower(exp.state, batch, jax.random.key(0)).compile().as_text()
  grad_bytes = 4 * state_lib.count_params(exp.state.params)
  assert grad_bytes <= all_reduce_bytes(hlo) < 1.1 * grad_bytes


def test_flat_mean_with_sharded_classes_is_refused(tmp_path):
  cfg = load_config("margin", "smoke", grad_reduce="flat", **{"model.shard_classes": True})
  with pytest.raises(ValueError, match="config.grad_reduce='flat'.*shard_classes"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_local_batch_norm_averages_each_devices_own_statistics():
  """sync_batch_norm=False: each device normalises its own half of the batch; the new
  running averages are the mean of what each half alone gives (computed here without any
  collective), and the step holds a fraction of the synchronised step's all-reduces."""
  from mfrjax import methods
  from mfrjax.data import pipeline
  devices = jax.devices()[:2]
  s_local, m_local = one_step(devices, grad_reduce="flat", sync_batch_norm=False)
  s_sync, _ = one_step(devices, grad_reduce="flat")
  cfg = smoke_config(batch_size=16, **{"optimizer.warmup_epochs": 0.0})
  mesh = mesh_lib.make_mesh(devices)
  exp = recognition.setup(cfg, mesh)
  batch = next(iter(pipeline.pair_dataset(exp.faceset, exp.train_groups, cfg.data,
                                           global_batch=16, num_epochs=1, seed=0)))
  method = methods.get(cfg.method)
  model = method.build_model(cfg.model)
  halves = [jax.tree.map(lambda x, i=i: x[8 * i:8 * (i + 1)], batch) for i in range(2)]
  stats = [method.loss(exp.state.params, exp.state.batch_stats, h, jax.random.key(0), 0,
                       model=model, config=cfg)[1][0] for h in halves]
  want = jax.tree.map(lambda a, b: (np.asarray(a) + np.asarray(b)) / 2, *stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-6),
               s_local.batch_stats, want)
  differs = jax.tree.map(lambda a, b: not np.allclose(np.asarray(a), np.asarray(b)),
                         s_local.batch_stats, s_sync.batch_stats)
  assert any(jax.tree.leaves(differs))  # the synchronised statistics are not those
  assert np.isfinite(float(m_local["loss"]))

  def count_all_reduces(**overrides):
    c = smoke_config(grad_reduce="flat", **overrides)
    e = recognition.setup(c, mesh)
    b = next(recognition.train_data(c, e, mesh))
    return len(re.findall(r" all-reduce(?:-start)?\(",
                          e.step_fn.lower(e.state, b, jax.random.key(0)).compile().as_text()))
  assert count_all_reduces(sync_batch_norm=False) * 3 < count_all_reduces()


def test_local_batch_norm_needs_the_per_device_step(tmp_path):
  cfg = smoke_config(sync_batch_norm=False)
  with pytest.raises(ValueError, match="config.sync_batch_norm=False.*grad_reduce='flat'"):
    train.train_and_evaluate(cfg, str(tmp_path))
