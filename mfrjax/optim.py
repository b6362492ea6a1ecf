"""Optimisers and learning-rate schedules, built from `config.optimizer`.

Biases and normalisation parameters (every parameter with fewer than 2 dimensions) are
excluded from weight decay and, for LARS, from the trust-ratio adaptation, as in the
Barlow Twins and LARS papers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("lars", "sgd", "adam")
SCHEDULES = ("warmup_cosine", "step", "cyclic_cosine")


def decay_mask(params):
  """True for weight matrices/kernels, False for biases, BN scales/offsets and PReLU."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_schedule(cfg, total_steps: int, global_batch: int, warmup_steps: int,
                  steps_per_epoch: int = 1) -> optax.Schedule:
  """The learning rate per step, from `cfg.schedule`.

  'warmup_cosine': linear warm-up to the peak, then cosine decay to
  `final_lr_fraction` of it (Barlow Twins). 'step': linear warm-up (if any), then the
  peak times `decay_factor` every `decay_every_epochs` epochs (the quintuplet seed:
  0.05, divided by 10 every 2 epochs).

  'cyclic_cosine' (the balanced-recognition seed, its Fig. 5): linear warm-up, then
  cosine cycles of `cycle_epochs` epochs, each from the peak down to
  `final_lr_fraction` of it and restarting (warm restarts, SGDR); the peak of cycle k
  is multiplied by `cycle_decay ** k`.

  The peak is `cfg.learning_rate * global_batch / 256` (the linear scaling rule, as in
  the Barlow Twins paper) when `cfg.scale_by_batch` is set, else `cfg.learning_rate`.
  """
  peak = cfg.learning_rate * (global_batch / 256 if cfg.scale_by_batch else 1.0)
  warmup = min(int(warmup_steps), max(total_steps - 1, 0))
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=peak * cfg.final_lr_fraction)
  if cfg.schedule == "step":
    every = max(1, int(round(cfg.decay_every_epochs * steps_per_epoch)))
    decay = optax.exponential_decay(peak, transition_steps=every,
                                    decay_rate=cfg.decay_factor, staircase=True)
    if warmup == 0:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])
  if cfg.schedule == "cyclic_cosine":
    cycle = max(1, int(round(cfg.cycle_epochs * steps_per_epoch)))
    return cyclic_cosine(peak, warmup, cycle, cfg.final_lr_fraction, cfg.cycle_decay)
  raise ValueError(f"unknown config.optimizer.schedule={cfg.schedule!r}; valid: {SCHEDULES}")


def cyclic_cosine(peak: float, warmup: int, cycle: int, final_fraction: float,
                  cycle_decay: float) -> optax.Schedule:
  """Warm-up then cosine cycles with restarts (see make_schedule)."""
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    k, t = jnp.divmod(jnp.maximum(step - warmup, 0.0), cycle)
    top = peak * cycle_decay ** k
    low = top * final_fraction
    lr = low + 0.5 * (top - low) * (1.0 + jnp.cos(jnp.pi * t / cycle))
    return jnp.where(step < warmup, peak * step / max(warmup, 1), lr)
  return schedule


def make_optimizer(cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  """optax LARS, SGD with momentum, or Adam (b1 = `momentum`, b2 = `adam_b2`; the GAN of
  the inpainting method), with decoupled, masked weight decay."""
  if cfg.name == "lars":
    return optax.lars(schedule, weight_decay=cfg.weight_decay, weight_decay_mask=decay_mask,
                      trust_coefficient=cfg.trust_coefficient, trust_ratio_mask=decay_mask,
                      momentum=cfg.momentum)
  if cfg.name == "sgd":
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                       optax.sgd(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov))
  if cfg.name == "adam":
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                       optax.adam(schedule, b1=cfg.momentum, b2=cfg.adam_b2))
  raise ValueError(f"unknown config.optimizer.name={cfg.name!r}; valid: {OPTIMIZERS}")
