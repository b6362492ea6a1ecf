"""Explicit gradient reduction: each device's own gradient, then mean or PowerSGD.

Under plain `jax.jit` with shardings, XLA computes the reduced gradient directly and
no device ever holds "its" gradient, so there is nothing to compress. This module
runs the loss inside `shard_map` over 'data' instead. The parameters enter as
replicated values and are cast to per-device ('varying') values before
differentiation, so `jax.grad` returns each device's *local contribution* to the
gradient of the global loss (batch statistics and the Barlow cross-correlation are
still global through explicit collectives; the contributions sum to the exact
gradient, tested; metric losses all-gather the embeddings and score each device's own
anchors). Multiplying by the device count makes each one an estimate of the
full gradient, whose mean all-reduce (plain or PowerSGD) is the update direction.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mfrjax import salts
from mfrjax.parallel import powersgd
from mfrjax.parallel.mesh import DATA

# "mean": XLA inserts the all-reduce under jit. "flat": this module, one mean all-reduce of
# every gradient as one flat buffer. Why both: XLA reduces each partial gradient where the
# partitioner finds it, so a loss with two forward passes (Barlow Twins' two views) sends
# every gradient twice (its CPU pipeline does not merge the two all-reduces; measured:
# 90 MB per step for ResNet-18's 45 MB, mfrjax-bench-compression). "flat" sends it once.
# "powersgd": this module, low-rank compression (powersgd.py).
MODES = ("mean", "flat", "powersgd")
EXPLICIT = ("flat", "powersgd")  # computed per device in shard_map, reduced here


def reduce_state_specs(reduce_state):
  """PartitionSpecs of the PowerSGD state inside shard_map: Q replicated, residuals split."""
  return powersgd.PowerSGDState(
      qs=tuple(P() for _ in reduce_state.qs),
      residuals=tuple(P(DATA) if r.ndim else P() for r in reduce_state.residuals))


def _body(params, batch_stats, reduce_state, batch, rng, step, *, loss_fn, plan, cfg,
          average_stats):
  n_dev = jax.lax.psum(1, DATA)
  rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA))  # own dropout masks per device
  local = jax.lax.pcast(params, DATA, to="varying")
  (loss, (new_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      local, batch_stats, batch, rng, step)
  grads = jax.tree.map(lambda g: g * n_dev, grads)
  if average_stats:  # per-device BatchNorm: one all-reduce keeps the running averages equal
    new_stats = jax.lax.pmean(new_stats, DATA)
  if plan is None:  # 'flat': one mean all-reduce, nothing else
    return powersgd.reduce_mean(grads, DATA), loss, new_stats, parts, reduce_state

  def compressed(_):
    return powersgd.reduce(grads, reduce_state, plan, DATA, error_feedback=cfg.error_feedback,
                           warm_start=cfg.warm_start,
                           rng=jax.random.fold_in(rng, salts.POWERSGD_STEP))

  def plain(_):
    return powersgd.reduce_mean(grads, DATA), reduce_state

  grads, reduce_state = jax.lax.cond(step >= cfg.start_step, compressed, plain, None)
  return grads, loss, new_stats, parts, reduce_state


def sharded_grads(loss_fn, params, batch_stats, reduce_state, batch, rng, step, *, mesh, plan, cfg,
                  average_stats: bool = False):
  """Loss and PowerSGD-reduced gradient of the global batch (call inside jit).

  Args:
    loss_fn: (params, batch_stats, batch, rng, step) -> (loss, (batch_stats, parts)),
      written with explicit collectives over 'data' (models and losses built with
      axis_name; see methods.py).
    params, batch_stats: replicated.
    reduce_state: PowerSGDState.
    batch: global batch, sharded over 'data'.
    rng: replicated key; step: the current step (plain mean before cfg.start_step).
    mesh: the ('data',) mesh.
    plan: powersgd.Plan of the parameters, or None for one flat mean all-reduce.
    cfg: `config.powersgd` (start_step, error_feedback, warm_start).
    average_stats: the model's BatchNorm uses each device's own statistics
      (`config.sync_batch_norm=False`); the new running averages are then averaged over
      devices, so they stay replicated.

  Returns:
    (grads, loss, batch_stats, parts, reduce_state); everything replicated but the residuals.
  """
  body = functools.partial(_body, loss_fn=loss_fn, plan=plan, cfg=cfg,
                           average_stats=average_stats)
  specs = () if plan is None else reduce_state_specs(reduce_state)
  f = jax.shard_map(body, mesh=mesh,
                    in_specs=(P(), P(), specs, P(DATA), P(), P()),
                    out_specs=(P(), P(), P(), P(), specs))
  return f(params, batch_stats, reduce_state, batch, rng, step)


def bytes_sent(plan, step, start_step: int) -> jax.Array:
  """Gradient bytes a device sends this step: compressed from start_step on, plain before.

  Only the gradient: the BatchNorm statistics and the losses' own collectives (a few
  hundred kB per step for a ResNet-18) come on top; mfrjax-bench-compression counts
  the bytes on the wire beside this figure.
  """
  return jnp.where(step >= start_step, plan.compressed_bytes, plan.uncompressed_bytes)
