"""Training with PowerSGD on 8 fake devices: exact at full rank, reproducible, resumable."""

import functools
import os
import shutil

import jax
import numpy as np
import pytest

from mfrjax import optim, state as state_lib, train
from mfrjax.data import pipeline, sources
from mfrjax.parallel import mesh as mesh_lib, powersgd
from tests.conftest import smoke_config

PSGD = {"grad_reduce": "powersgd", "powersgd.start_step": 3, "powersgd.rank": 2}


def one_step(cfg, reduce_with_powersgd):
  mesh = mesh_lib.make_mesh()
  model = train.build_model(cfg.model)
  schedule = optim.make_schedule(cfg.optimizer, 10, cfg.batch_size, warmup_steps=0)
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  rng = jax.random.key(0)
  p = cfg.powersgd
  comm_init, psgd = None, None
  if reduce_with_powersgd:
    comm_init = lambda params, key: powersgd.init_state(  # noqa: E731
        powersgd.make_plan(params, p.rank, p.min_compression_rate), mesh.size, key)
  state, abstract, shardings = state_lib.create_train_state(rng, model, tx, (1, 16, 16, 1),
                                                            mesh, comm_init)
  if reduce_with_powersgd:
    psgd = train.PowerSGDContext(train.build_model(cfg.model, axis_name=mesh_lib.DATA), mesh,
                                 powersgd.make_plan(abstract.params, p.rank,
                                                    p.min_compression_rate), p)
  fs = pipeline.build_faceset(cfg.data, 0)
  ids, _ = sources.split_identities(fs.labels, len(fs.identities), 0.25, 0)
  batch = next(iter(pipeline.train_dataset(fs, pipeline.images_by_identity(fs.labels, ids),
                                           cfg.data, global_batch=16, num_epochs=1, seed=0)))
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   lambd=0.0051, psgd=psgd))
  return step(state, mesh_lib.to_global(batch, mesh), rng)


def test_full_rank_powersgd_step_equals_plain_step():
  cfg = smoke_config(**{"powersgd.rank": 1000, "powersgd.start_step": 0,
                        "powersgd.min_compression_rate": 0.0})
  s_psgd, m_psgd = one_step(cfg, True)
  s_mean, m_mean = one_step(cfg, False)
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
  from mfrjax import checkpoint
  with pytest.raises(checkpoint.ModelMismatchError, match="gradient reduction"):
    train.train_and_evaluate(smoke_config(), workdir)


def test_unknown_grad_reduce(tmp_path):
  with pytest.raises(ValueError, match="config.grad_reduce='allgather'"):
    train.train_and_evaluate(smoke_config(grad_reduce="allgather"), str(tmp_path))
