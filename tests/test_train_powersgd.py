"""Training with PowerSGD on 8 fake devices: exact at full rank, reproducible, resumable."""

import os
import shutil

import jax
import numpy as np
import pytest

from mfrjax import train
from tests.conftest import smoke_config
from tests.test_train import one_step

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
  from mfrjax import checkpoint
  with pytest.raises(checkpoint.ModelMismatchError, match="gradient reduction"):
    train.train_and_evaluate(smoke_config(), workdir)


def test_unknown_grad_reduce(tmp_path):
  with pytest.raises(ValueError, match="config.grad_reduce='allgather'"):
    train.train_and_evaluate(smoke_config(grad_reduce="allgather"), str(tmp_path))
