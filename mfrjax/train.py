"""What every method's training shares: the pure step, the loop, and the resume checks.

A method (methods/) brings its model, loss and input; its family's trainer
(recognition.py for embeddings, restoration.py for images) builds the experiment and
evaluates it. Both run `train_step` under jit (XLA's all-reduce, or PowerSGD / a flat
reduction by hand), `train_loop` (logging, checkpoint cadence, NaN checks one step
late) and the checks of a resumed run, so every method is trained under the same
conditions. `train_and_evaluate` is the entry point: the workdir lock, then the method.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import periodic_actions

from mfrjax import checkpoint, methods, optim, run_info, workdir_lock
from mfrjax import state as state_lib
from mfrjax.parallel import grad_reduce, powersgd
from mfrjax.parallel import mesh as mesh_lib


class PowerSGDContext(NamedTuple):
  """What an explicit gradient reduction needs besides the state (parallel/grad_reduce.py):
  PowerSGD, or with `plan=None` one flat mean all-reduce (config.grad_reduce='flat')."""
  loss_fn: Any  # the method's loss with its model built with axis_name='data'
  mesh: Any
  plan: powersgd.Plan | None
  cfg: ml_collections.ConfigDict
  local_batch_norm: bool = False  # BN statistics per device, running averages averaged


def train_step(state: state_lib.TrainState, batch, rng, *, loss_fn, tx, schedule,
               psgd: PowerSGDContext | None = None, ema_decay: float | None = None):
  """One optimisation step. Pure: same (state, batch, rng) -> same result.

  `loss_fn(params, batch_stats, batch, rng, step)` is the method's loss (methods.py)
  with its hyper-parameters bound. `rng` is the run's base key; folding in the step
  makes the draws of step s the same whether or not the run was restarted before it.
  With `psgd`, each device's gradient is computed in shard_map and reduced by hand
  (grad_reduce.py: PowerSGD, or one flat mean all-reduce); otherwise XLA's all-reduce
  does it under jit. With `ema_decay`, the moving average of the weights
  is updated after the step (state_lib.update_ema).
  """
  rng = jax.random.fold_in(rng, state.step)
  full_bytes = 4 * state_lib.count_params(state.params)
  if psgd is None:
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (batch_stats, parts)), grads = grad_fn(state.params, state.batch_stats, batch, rng,
                                                  state.step)
    reduce_state, sent = state.reduce_state, jnp.asarray(full_bytes)
  else:
    grads, loss, batch_stats, parts, reduce_state = grad_reduce.sharded_grads(
        psgd.loss_fn, state.params, state.batch_stats, state.reduce_state, batch, rng, state.step,
        mesh=psgd.mesh, plan=psgd.plan, cfg=psgd.cfg, average_stats=psgd.local_batch_norm)
    sent = (jnp.asarray(full_bytes) if psgd.plan is None else
            grad_reduce.bytes_sent(psgd.plan, state.step, psgd.cfg.start_step))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema if ema_decay is None else state_lib.update_ema(state.ema, params, batch_stats,
                                                                 state.step, ema_decay)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, reduce_state=reduce_state, ema=ema)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "learning_rate": schedule(state.step), "comm_bytes": sent,
             "comm_bytes_uncompressed": jnp.asarray(full_bytes), **parts}
  return new_state, metrics


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step and the last checkpoint."""


def jit_step(config, loss_fn, tx, schedule, shardings, mesh,
             psgd: PowerSGDContext | None = None):
  """`train_step` compiled for `mesh`: the state laid out by `shardings` and donated, the
  batch split over 'data', the key and the metrics replicated; EMA per config.ema."""
  step = functools.partial(train_step, loss_fn=loss_fn, tx=tx, schedule=schedule, psgd=psgd,
                           ema_decay=config.ema.decay if config.ema.enabled else None)
  return jax.jit(step, in_shardings=(shardings, mesh_lib.batch_sharded(mesh),
                                     mesh_lib.replicated(mesh)),
                 out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)


def eval_variables(config, state) -> dict:
  """The weights the evaluator uses: the moving average when config.ema.enabled."""
  if config.ema.enabled:
    return dict(state.ema)
  return {"params": state.params, "batch_stats": state.batch_stats}


def schedule(opt_cfg, global_batch: int, total_steps: int, steps_per_epoch: int):
  """The learning-rate schedule of one optimiser config (warm-up given in epochs)."""
  return optim.make_schedule(opt_cfg, total_steps, global_batch,
                             warmup_steps=int(opt_cfg.warmup_epochs * steps_per_epoch),
                             steps_per_epoch=steps_per_epoch)


def check_resume_end(config, schedule_changes: dict, manager, total_steps: int) -> None:
  """Before the restore: a changed config.num_epochs must not end before the step the
  resumed run is at (`schedule_changes` from run_info.check_resume)."""
  if "num_epochs" in schedule_changes and (manager.latest_step() or 0) > total_steps:
    raise run_info.ConfigChangedError(
        f"config.num_epochs={config.num_epochs} ends at step {total_steps}, but the run "
        f"being resumed is at step {manager.latest_step()} (it started with num_epochs="
        f"{schedule_changes['num_epochs'][0]})")


def check_epochs_change(config, steps_per_epoch: int, old_epochs: int, done: int,
                        key: str = "optimizer") -> None:
  """A resumed run may change config.num_epochs only when every step already taken had
  the learning rate it has under the new schedule of config.<key> (e.g. cyclic cosine with
  fixed cycles, or a step schedule); a run past the new end is refused before the
  restore (check_resume_end)."""
  opt_cfg = config[key]
  steps = np.arange(max(done, 1))
  old = schedule(opt_cfg, config.batch_size, steps_per_epoch * old_epochs, steps_per_epoch)
  new = schedule(opt_cfg, config.batch_size, steps_per_epoch * config.num_epochs,
                 steps_per_epoch)
  a, b = np.asarray(jax.vmap(old)(steps)), np.asarray(jax.vmap(new)(steps))
  if not np.array_equal(a, b):
    first = int(np.argmax(a != b))
    raise run_info.ConfigChangedError(
        f"config.num_epochs: {old_epochs} -> {config.num_epochs} changes the learning rate of "
        f"steps already taken (config.{key}.schedule={opt_cfg.schedule!r}; "
        f"step {first}: {a[first]:.6g} -> {b[first]:.6g}), so the resumed run would not be "
        "the run it claims to be. Use another --workdir for the longer run.")
  logging.info("config.num_epochs: %d -> %d; the learning rate of the %d steps taken is "
               "unchanged", old_epochs, config.num_epochs, done)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the method `config.method` names, evaluates it, returns the results dict.

  Writes to `workdir` (held by a lock for the run): checkpoints/, TensorBoard events,
  run.json, results.json and what the method's trainer adds (embeddings.npz, roc.png,
  contact_sheet.png).
  """
  method = methods.get(config.method)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
    return method.train_and_evaluate(config, workdir)


def train_loop(config, state, step_fn, data_it, rng, start_step, total_steps, manager, meta,
               writer, images_per_row: int, stop_step: int | None = None, on_eval=None):
  """Runs steps start_step+1..stop_step (default: total_steps); checks every loss one
  step late (no stall). Logs every config.log_every steps and saves every
  config.checkpoint_every steps and at total_steps, the end of the run; `stop_step` lets
  a caller (the throughput benchmark) run a stretch of the loop on the run's cadence.

  Returns:
    (state, last logged scalars)
  """
  stop_step = total_steps if stop_step is None else stop_step
  report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                                    every_steps=config.log_every)
  pending, losses, t_log, last_log_step = None, [], time.perf_counter(), start_step
  scalars = {}
  for step in range(start_step + 1, stop_step + 1):
    batch = next(data_it)
    state, metrics = step_fn(state, batch, rng)
    if pending is not None:
      losses.append(_check_finite(*pending, manager))
    pending = (step, metrics)
    report_progress(step)
    log_now = step % config.log_every == 0 or step in (total_steps, stop_step)
    save_now = step % config.checkpoint_every == 0 or step == total_steps
    eval_now = on_eval is not None and step % config.eval_every == 0 and step < total_steps
    if log_now or save_now or eval_now:
      # Nothing is logged, saved or evaluated from a state whose loss is unchecked.
      losses.append(_check_finite(*pending, manager))
      pending = None
    if log_now:
      now = time.perf_counter()
      rows_per_s = (step - last_log_step) * config.batch_size / max(now - t_log, 1e-9)
      scalars = {k: float(v) for k, v in metrics.items()}
      scalars.update({"loss_mean": float(np.mean(losses)), "rows_per_sec": rows_per_s,
                      "images_per_sec": images_per_row * rows_per_s})
      writer.write_scalars(step, scalars)
      losses, t_log, last_log_step = [], now, step
    if save_now:
      # The loss of step s was computed from the weights before it; the update of step s
      # can still overflow, so the weights themselves are checked before they are saved.
      if not bool(_all_finite(state)):
        raise NonFiniteLossError(
            f"the weights became non-finite in step {step} (its loss was finite); stopping "
            f"without saving them. {_last_good(manager)}")
      checkpoint.save(manager, step, state, data_it, meta)
    if eval_now:
      on_eval(state, step)  # the final step is evaluated by the caller
  writer.flush()
  return state, scalars


def _last_good(manager) -> str:
  """Every saved step passed both checks (train_loop), so the newest one is good."""
  last = manager.latest_step()
  where = f"step {last}" if last is not None else "none (no step was saved)"
  return (f"The last good checkpoint is {where}; lower config.optimizer.learning_rate or "
          "check the data.")


@jax.jit
def _all_finite(state) -> jax.Array:
  """True when every floating-point array of the state is finite (one device reduction)."""
  leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _check_finite(step: int, metrics: dict, manager) -> float:
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise NonFiniteLossError(f"loss became {loss} at step {step}; stopping. "
                             f"{_last_good(manager)}")
  return loss
