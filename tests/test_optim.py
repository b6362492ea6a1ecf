"""Optimisers: decay/trust masks, schedules, config errors."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mfrjax import optim
from tests.conftest import load_config, smoke_config


def test_decay_mask_excludes_biases_and_norms():
  params = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 4))}, "Dense_0": {"kernel": jnp.ones((4, 2)),
            "bias": jnp.ones(2)}, "BatchNorm_0": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
            "PReLU_0": {"alpha": jnp.ones(4)}}
  mask = optim.decay_mask(params)
  assert mask["Conv_0"]["kernel"] and mask["Dense_0"]["kernel"]
  assert not any([mask["Dense_0"]["bias"], mask["BatchNorm_0"]["scale"],
                  mask["BatchNorm_0"]["bias"], mask["PReLU_0"]["alpha"]])


def test_schedule_warmup_peak_and_end():
  cfg = smoke_config().optimizer
  cfg.learning_rate, cfg.final_lr_fraction = 0.4, 0.01
  s = optim.make_schedule(cfg, total_steps=100, global_batch=512, warmup_steps=10)
  peak = 0.4 * 512 / 256
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(peak / 2)
  assert float(s(10)) == pytest.approx(peak)
  assert float(s(100)) == pytest.approx(peak * 0.01, rel=1e-4)
  assert float(s(55)) == pytest.approx(peak * 0.01 + (peak - peak * 0.01) * 0.5, rel=1e-4)


def test_step_schedule_divides_by_ten_every_two_epochs():
  cfg = smoke_config().optimizer
  cfg.schedule, cfg.learning_rate, cfg.scale_by_batch = "step", 0.05, False
  cfg.decay_every_epochs, cfg.decay_factor = 2.0, 0.1
  s = optim.make_schedule(cfg, total_steps=100, global_batch=120, warmup_steps=0,
                          steps_per_epoch=10)
  got = [float(s(i)) for i in (0, 19, 20, 39, 40, 99)]
  np.testing.assert_allclose(got, [0.05, 0.05, 0.005, 0.005, 0.0005, 0.05 * 1e-4], rtol=1e-5)
  w = optim.make_schedule(cfg, total_steps=100, global_batch=120, warmup_steps=4,
                          steps_per_epoch=10)
  assert float(w(0)) == 0.0 and float(w(2)) == pytest.approx(0.025)
  assert float(w(4)) == pytest.approx(0.05) and float(w(24)) == pytest.approx(0.005)


def test_unknown_schedule_names_the_key():
  cfg = smoke_config().optimizer
  cfg.schedule = "linear"
  with pytest.raises(ValueError, match="config.optimizer.schedule"):
    optim.make_schedule(cfg, 10, 8, 0)


def lars_update(cfg, params, grads):
  tx = optim.make_optimizer(cfg, optax.constant_schedule(1.0))
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_lars_adapts_kernels_not_biases():
  cfg = smoke_config().optimizer
  cfg.name, cfg.weight_decay, cfg.trust_coefficient = "lars", 0.0, 0.001
  params = {"w": jnp.full((2, 2), 3.0), "b": jnp.full((2,), 3.0)}
  grads = {"w": jnp.full((2, 2), 0.5), "b": jnp.full((2,), 0.5)}
  up = lars_update(cfg, params, grads)
  # Kernel: trust ratio eta * ||w|| / ||g|| = 0.001 * 6 / 1 -> update -lr * 0.006 * g.
  np.testing.assert_allclose(np.asarray(up["w"]), -0.001 * 6 / 1 * 0.5, rtol=1e-5)
  # Bias: excluded from adaptation, plain momentum SGD step.
  np.testing.assert_allclose(np.asarray(up["b"]), -0.5, rtol=1e-6)


def test_sgd_decays_kernels_only():
  cfg = smoke_config().optimizer
  cfg.name, cfg.weight_decay, cfg.momentum = "sgd", 0.1, 0.0
  params = {"w": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}
  zeros = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
  up = lars_update(cfg, params, zeros)
  np.testing.assert_allclose(np.asarray(up["w"]), -0.2)
  np.testing.assert_allclose(np.asarray(up["b"]), 0.0)


def test_unknown_optimizer():
  cfg = smoke_config().optimizer
  cfg.name = "adamw"
  with pytest.raises(ValueError, match="config.optimizer.name='adamw'.*lars"):
    optim.make_optimizer(cfg, optax.constant_schedule(1.0))


def test_cyclic_cosine_warmup_cycles_and_restarts():
  cfg = load_config("margin", "smoke", **{"optimizer.warmup_epochs": 0.5,
                                           "optimizer.cycle_epochs": 2.0,
                                           "optimizer.final_lr_fraction": 0.1,
                                           "optimizer.cycle_decay": 0.5})
  sched = optim.make_schedule(cfg.optimizer, total_steps=100, global_batch=16, warmup_steps=5,
                              steps_per_epoch=10)
  lr = np.asarray([float(sched(s)) for s in range(60)])
  np.testing.assert_allclose(lr[:6], [0, 0.02, 0.04, 0.06, 0.08, 0.1], atol=1e-7)  # warm-up
  # Cycle 0: steps 5..24, cosine from 0.1 to 0.01; half-way (step 15) at the mean.
  np.testing.assert_allclose(lr[15], 0.01 + 0.5 * 0.09, rtol=1e-6)
  np.testing.assert_allclose(lr[24], 0.01 + 0.045 * (1 + np.cos(np.pi * 19 / 20)), rtol=1e-5)
  # Restart at step 25 with half the peak, ending at a tenth of it.
  np.testing.assert_allclose(lr[25], 0.05, rtol=1e-6)
  np.testing.assert_allclose(lr[35], 0.005 + 0.5 * 0.045, rtol=1e-6)
  assert lr[24] < lr[25] and lr[44] < lr[45]
