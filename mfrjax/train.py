"""The training loop shared by every method: build state, step, log, checkpoint, evaluate.

What differs between methods (model, loss, batch format) comes from methods.py by
`config.method`; the state, data parallelism (XLA's all-reduce or PowerSGD), the
checkpointed data stream and the evaluation on unseen identities are the same for all,
so methods are compared under identical conditions.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from flax import traverse_util

from mfrjax import checkpoint, methods, optim, run_info, state as state_lib, workdir_lock
from mfrjax.data import align, pair_sets, pipeline, sources
from mfrjax.eval import classifiers, embed, identification, plots, report, verification
from mfrjax.parallel import grad_reduce, powersgd
from mfrjax.parallel import mesh as mesh_lib


ALIGNMENTS = ("none",) + tuple(align.TEMPLATES)  # config.data.alignment


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
    comm, sent = state.comm, jnp.asarray(full_bytes)
  else:
    grads, loss, batch_stats, parts, comm = grad_reduce.sharded_grads(
        psgd.loss_fn, state.params, state.batch_stats, state.comm, batch, rng, state.step,
        mesh=psgd.mesh, plan=psgd.plan, cfg=psgd.cfg, average_stats=psgd.local_batch_norm)
    sent = (jnp.asarray(full_bytes) if psgd.plan is None else
            grad_reduce.bytes_sent(psgd.plan, state.step, psgd.cfg.start_step))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema if ema_decay is None else state_lib.update_ema(state.ema, params, batch_stats,
                                                                 state.step, ema_decay)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, comm=comm, ema=ema)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "learning_rate": schedule(state.step), "comm_bytes": sent,
             "comm_bytes_uncompressed": jnp.asarray(full_bytes), **parts}
  return new_state, metrics


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step and the last checkpoint."""


def eval_variables(config, state) -> dict:
  """The weights the evaluator uses: the moving average when config.ema.enabled."""
  if config.ema.enabled:
    return dict(state.ema)
  return {"params": state.params, "batch_stats": state.batch_stats}


def _evaluate(config, model, state, *, faceset, test_groups, train_groups, mesh,
              verify: bool = True) -> tuple[dict, dict, dict]:
  """Embeds the test images and runs the NumPy evaluator.

  Returns:
    (identification summary, arrays for embeddings.npz, verification results with ROC
    curves: {set name: {track: ...}}, empty unless `verify`)
  """
  idx = np.concatenate(test_groups)
  labels = faceset.labels[idx]
  variables = eval_variables(config, state)
  emb = embed.embed_faceset(model, variables, faceset, idx, config.data, config.seed,
                            config.eval.batch_size, mesh)
  is_gallery = identification.gallery_probe_split(labels, config.eval.gallery_fraction,
                                                  config.seed)
  results = identification.evaluate(emb, labels, is_gallery,
                                    predictors=classifiers.from_config(config.eval, config.seed))
  groups = _groups(config, faceset)
  train_image_groups = None
  if groups is not None:
    groups = np.asarray(groups)
    train_image_groups = groups[faceset.labels[np.concatenate(train_groups)]]
  arrays = {**emb, "labels": labels, "is_gallery": is_gallery, "image_index": idx}
  ver = _verify(config, model, variables, emb, labels, mesh) if verify else {}
  return report.summarize(results, groups, train_image_groups), arrays, ver


def _verify(config, model, variables, emb, labels, mesh) -> dict:
  """Verification on pairs of unseen identities and on the configured external sets."""
  vc = config.eval.verification
  out = {}
  if vc.pairs > 0:
    try:
      first, second, same = verification.sample_pairs(labels, vc.pairs, config.seed)
      out["test_identities"] = verification.evaluate_tracks(emb, first, second, same, vc.folds)
    except ValueError as e:  # e.g. no test identity with 2 images: report, keep the rest
      logging.warning("no verification on the test identities: %s", e)
  for spec in filter(None, (x.strip() for x in vc.sets.split(","))):
    pset = pair_sets.read_pair_set(spec)
    set_emb = embed.embed_faceset(model, variables, pset, np.arange(len(pset)), config.data,
                                  config.seed, config.eval.batch_size, mesh)
    out[pset.name] = verification.evaluate_tracks(set_emb, pset.first, pset.second,
                                                  pset.issame, vc.folds)
  return out


def _groups(config, faceset):
  if config.data.groups_csv:
    return sources.read_groups_csv(config.data.groups_csv, faceset.identities)
  return faceset.groups


class Experiment(NamedTuple):
  """Everything built from a config before the first step (see `setup`)."""
  method: methods.Method
  faceset: Any
  train_ids: np.ndarray
  test_ids: np.ndarray
  train_groups: list
  test_groups: list
  steps_per_epoch: int
  total_steps: int
  model: Any
  state: state_lib.TrainState
  abstract: state_lib.TrainState
  shardings: Any
  step_fn: Any      # jitted (state, batch, rng) -> (state, metrics), state donated
  meta: dict        # model signature stored with every checkpoint


def _steps_per_epoch(config, method: methods.Method, train_groups) -> int:
  if method.stream == "images":
    if config.data.sampler != "images":
      raise ValueError(f"config.method={config.method!r} trains on labelled images: set "
                       f"config.data.sampler='images', not {config.data.sampler!r}")
    n = sum(map(len, train_groups)) // config.batch_size
  elif method.stream == "pairs":
    if config.data.sampler not in pipeline.PAIR_SAMPLERS:
      raise ValueError(f"config.method={config.method!r} trains on pairs: config.data.sampler "
                       f"must be one of {pipeline.PAIR_SAMPLERS}, not {config.data.sampler!r}")
    n = pipeline.pairs_per_epoch(train_groups, config.data.sampler) // config.batch_size
  else:
    if config.data.sampler != "identities":
      raise ValueError(f"config.method={config.method!r} mines inside identity batches: set "
                       f"config.data.sampler='identities', not {config.data.sampler!r}")
    n = pipeline.identity_batches_per_epoch(train_groups, config.data, config.batch_size)
  if n == 0:
    images, single = sum(map(len, train_groups)), sum(len(g) == 1 for g in train_groups)
    why = (f"; {single} of the {len(train_groups)} training identities have a single image "
           f"(config.data.max_images_per_identity={config.data.max_images_per_identity}, "
           "config.data.min_images_per_identity)" if single else "")
    raise ValueError(f"config.batch_size={config.batch_size} is larger than one epoch of "
                     f"training data ({images} images of {len(train_groups)} identities for "
                     f"config.method={config.method!r}{why}); lower it or add data")
  return n


def check_evaluation_inputs(config, faceset, test_groups) -> None:
  """What the evaluation after the last step reads, checked before the first: a test
  identity with a probe, the groups CSV, the verification sets, and every evaluation
  image decoded once (both views, as the evaluator loads them; they are few)."""
  if not any(len(g) >= 2 for g in test_groups):
    raise ValueError(
        f"no test identity has two or more images ({len(test_groups)} test identities), so "
        "the evaluation has no probe: raise config.data.test_fraction or add images per "
        "identity (config.data.min_images_per_identity)")
  _groups(config, faceset)  # config.data.groups_csv: readable, every identity listed
  sets = [(pair_sets.read_pair_set(spec), "config.eval.verification.sets")
          for spec in filter(None, (x.strip() for x in config.eval.verification.sets.split(",")))]
  bad = []
  for fset, indices, key in [(faceset, np.concatenate(test_groups), "config.data.root")] + [
      (p, np.arange(len(p)), k) for p, k in sets]:
    loader = pipeline.ViewLoader(fset, config.data, config.seed)
    for i in indices:
      for masked in (False, True):
        try:
          loader(int(i), masked, 0)
        except Exception as e:  # noqa: BLE001 - reported below with the file
          bad.append(f"{key}: {fset.describe(int(i))} ({'masked' if masked else 'unmasked'} "
                     f"view): {e}")
  if bad:
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise sources.ImageReadError(
        f"{len(bad)} evaluation image(s) cannot be read; the evaluation after the last step "
        "would fail, so training does not start. Remove them (tools/clean.py writes an "
        "exclude list for config.data.exclude_list) or fix them:\n  "
        + "\n  ".join(bad[:5]) + more)


def split_data(config: ml_collections.ConfigDict):
  """The face set and its seeded identity split (test identities never train).

  Returns:
    (faceset, train_ids, test_ids, train_groups, test_groups); the groups are each
    identity's image indices after the per-identity cap.
  """
  faceset = pipeline.build_faceset(config.data, config.seed)
  train_ids, test_ids = sources.split_identities(
      faceset.labels, len(faceset.identities), config.data.test_fraction, config.seed)
  cap = config.data.max_images_per_identity
  train_groups = pipeline.select_images(faceset.labels, train_ids, cap, config.seed)
  test_groups = pipeline.select_images(faceset.labels, test_ids, cap, config.seed)
  return faceset, train_ids, test_ids, train_groups, test_groups


def setup(config: ml_collections.ConfigDict, mesh) -> Experiment:
  """Builds data split, model, optimiser, sharded state and the jitted step."""
  method = methods.get_method(config.method)
  if config.batch_size <= 0:
    raise ValueError(f"config.batch_size={config.batch_size} must be positive")
  mesh_lib.check_batch_size(config.batch_size, mesh)
  if method.stream == "identities" and config.batch_size % (
      mesh.size * config.data.images_per_identity):
    raise ValueError(f"config.batch_size={config.batch_size} must divide by {mesh.size} devices "
                     f"x config.data.images_per_identity={config.data.images_per_identity}, so "
                     "that every device holds whole people")
  if config.grad_reduce not in grad_reduce.MODES:
    raise ValueError(f"unknown config.grad_reduce={config.grad_reduce!r}; valid: "
                     f"{grad_reduce.MODES}")
  if config.data.alignment not in ALIGNMENTS:
    raise ValueError(f"config.data.alignment={config.data.alignment!r}; valid: {ALIGNMENTS} "
                     "(what the training images are: photos, or crops aligned by "
                     "tools/align_faces.py)")
  if not config.sync_batch_norm and config.grad_reduce not in grad_reduce.EXPLICIT:
    raise ValueError("config.sync_batch_norm=False normalises each device's batch on its own, "
                     "which needs the per-device step: set config.grad_reduce='flat' or "
                     f"'powersgd' (under {config.grad_reduce!r} XLA reduces BatchNorm over the "
                     "global batch)")
  faceset, train_ids, test_ids, train_groups, test_groups = split_data(config)
  steps_per_epoch = _steps_per_epoch(config, method, train_groups)
  check_evaluation_inputs(config, faceset, test_groups)
  total_steps = steps_per_epoch * config.num_epochs

  num_classes = len(train_groups)
  model = method.build_model(config.model, num_classes=num_classes)
  shard_classes = method.stream == "images" and config.model.shard_classes
  _check_margin(config, method, mesh)
  opt_cfg = config.optimizer
  schedule = _schedule(config, total_steps, steps_per_epoch)
  tx = optim.make_optimizer(opt_cfg, schedule)
  loss_kw = {"pairs": {}, "identities": {"steps_per_epoch": steps_per_epoch},
             "images": {"num_classes": num_classes}}[method.stream]
  p_cfg = config.powersgd
  comm_init = None
  if config.grad_reduce == "powersgd":
    comm_init = lambda params, key: powersgd.init_state(  # noqa: E731
        powersgd.make_plan(params, p_cfg.rank, p_cfg.min_compression_rate), mesh.size, key)
  state, abstract, shardings = state_lib.create_train_state(
      jax.random.key(config.seed), model, tx, (1, *pipeline.input_shape(config.data)), mesh,
      comm_init, ema=config.ema.enabled, shard_classes=shard_classes)
  psgd = None
  if config.grad_reduce in grad_reduce.EXPLICIT:
    bn_axis = mesh_lib.DATA if config.sync_batch_norm else None
    local_loss = functools.partial(
        method.loss_fn, model=method.build_model(config.model, axis_name=bn_axis,
                                                 num_classes=num_classes),
        config=config, axis_name=mesh_lib.DATA, **loss_kw)
    plan = None if comm_init is None else powersgd.make_plan(
        abstract.params, p_cfg.rank, p_cfg.min_compression_rate)
    psgd = PowerSGDContext(local_loss, mesh, plan, p_cfg, not config.sync_batch_norm)
  meta = {"model": {"method": config.method, **config.model.to_dict()},
          # The reduction state is part of the signature: PowerSGD residuals are per
          # device, so a change of grad_reduce or of the device count is caught too.
          "param_signature": state_lib.param_signature(abstract.params) +
          [f"comm{x}" for x in state_lib.param_signature(abstract.comm)]}
  if method.stream == "images":
    loss_kw["mesh"] = mesh  # for the class-sharded margin head (methods.margin_head_loss)
  step_fn = jax.jit(
      functools.partial(train_step, loss_fn=functools.partial(method.loss_fn, model=model,
                                                              config=config, **loss_kw),
                        tx=tx, schedule=schedule, psgd=psgd,
                        ema_decay=config.ema.decay if config.ema.enabled else None),
      in_shardings=(shardings, mesh_lib.batch_sharded(mesh), mesh_lib.replicated(mesh)),
      out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
  return Experiment(method, faceset, train_ids, test_ids, train_groups, test_groups,
                    steps_per_epoch, total_steps, model, state, abstract, shardings, step_fn,
                    meta)


def _schedule(config, total_steps: int, steps_per_epoch: int):
  opt_cfg = config.optimizer
  return optim.make_schedule(opt_cfg, total_steps, config.batch_size,
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


def check_epochs_change(config, exp: Experiment, old_epochs: int, done: int) -> None:
  """A resumed run may change config.num_epochs only when every step already taken had
  the learning rate it has under the new schedule (e.g. cyclic cosine with fixed cycles,
  or a step schedule); a run past the new end is refused before the restore."""
  steps = np.arange(max(done, 1))
  old = _schedule(config, exp.steps_per_epoch * old_epochs, exp.steps_per_epoch)
  new = _schedule(config, exp.total_steps, exp.steps_per_epoch)
  a, b = np.asarray(jax.vmap(old)(steps)), np.asarray(jax.vmap(new)(steps))
  if not np.array_equal(a, b):
    first = int(np.argmax(a != b))
    raise run_info.ConfigChangedError(
        f"config.num_epochs: {old_epochs} -> {config.num_epochs} changes the learning rate of "
        f"steps already taken (config.optimizer.schedule={config.optimizer.schedule!r}; "
        f"step {first}: {a[first]:.6g} -> {b[first]:.6g}), so the resumed run would not be "
        "the run it claims to be. Use another --workdir for the longer run.")
  logging.info("config.num_epochs: %d -> %d; the learning rate of the %d steps taken is "
               "unchanged", old_epochs, config.num_epochs, done)


def _check_margin(config, method: methods.Method, mesh) -> None:
  """Placement checks of the margin head's class matrix, with the keys to change."""
  if method.stream != "images" or not config.model.shard_classes:
    return
  if config.model.class_pad % mesh.size:
    raise ValueError(f"config.model.shard_classes=True splits the classes over {mesh.size} "
                     f"devices: config.model.class_pad={config.model.class_pad} must divide by "
                     "it")
  if config.grad_reduce in grad_reduce.EXPLICIT:
    name = {"powersgd": "PowerSGD", "flat": "the flat reduction"}[config.grad_reduce]
    raise ValueError(f"config.grad_reduce={config.grad_reduce!r} reduces replicated gradients "
                     "by hand; with config.model.shard_classes=True each device owns its "
                     f"classes' gradient already. Set config.model.shard_classes=False to use "
                     f"{name}, or config.grad_reduce='mean'.")


def input_stream(config, method: methods.Method, faceset, train_groups):
  """This process's stream of training batches (NumPy, on the host), checkpointable."""
  kw = dict(global_batch=config.batch_size, num_epochs=config.num_epochs, seed=config.seed)
  if method.stream == "images":
    return pipeline.labelled_dataset(faceset, train_groups, config.data, **kw)
  if method.stream == "pairs":
    return pipeline.train_dataset(faceset, train_groups, config.data, **kw)
  return pipeline.identity_dataset(faceset, train_groups, config.data, views=method.views, **kw)


def train_data(config, exp: Experiment, mesh) -> mesh_lib.DevicePrefetcher:
  """The checkpointable stream of global training batches, prefetched onto the devices."""
  ds = input_stream(config, exp.method, exp.faceset, exp.train_groups)
  return mesh_lib.DevicePrefetcher(iter(ds), mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per `config`, evaluates on unseen identities, returns the results dict.

  Writes to `workdir`: checkpoints/, TensorBoard events, results.json, embeddings.npz.
  """
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
    if config.method in methods.IMAGE_METHODS:
      from mfrjax import restoration  # pylint: disable=import-outside-toplevel
      return restoration.train_and_evaluate(config, workdir)
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  resuming = checkpoint.has_steps(ckpt_dir)
  # Before any work: a changed experiment in a used workdir is refused.
  schedule_changes = run_info.check_resume(workdir, config) if resuming else {}
  best = BestWeights(config, workdir)  # checks config.eval.best_metric before any work
  mesh = mesh_lib.make_mesh()
  exp = setup(config, mesh)
  state, faceset = exp.state, exp.faceset
  data_it = train_data(config, exp, mesh)
  manager = checkpoint.make_manager(ckpt_dir, config.keep_checkpoints)
  check_resume_end(config, schedule_changes, manager, exp.total_steps)
  restored = checkpoint.restore(manager, config.resume, exp.abstract, data_it, exp.meta,
                                fresh_comm=exp.state.comm)
  if restored is not None and "num_epochs" in schedule_changes:
    check_epochs_change(config, exp, int(schedule_changes["num_epochs"][0]), restored[1])
  if jax.process_index() == 0:  # only now: a refused config must not replace the stored one
    run_info.write(workdir, config, len(exp.train_groups))
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  evaluate = functools.partial(_evaluate, config, exp.model, faceset=faceset,
                               test_groups=exp.test_groups, train_groups=exp.train_groups,
                               mesh=mesh)
  def periodic_eval(state, step):
    summary, _, ver = evaluate(state)
    scalars = eval_scalars(summary, verification.strip_curves(ver))
    writer.write_scalars(step, scalars)
    best.update(state, step, scalars)
    logging.info("step %d: %s = %.4f (best %.4f at step %d)", step, best.metric,
                 scalars[best.metric], best.record["value"], best.record["step"])

  results = {}
  if restored is None:
    start_step = 0
    writer.write_hparams(_flat_hparams(config))
    if config.eval_at_init:
      results["init"], _, _ = evaluate(state, verify=False)
      logging.info("%s", report.format_table(results["init"], "untrained network:"))
  else:
    state, start_step, source = restored  # already laid out by exp.abstract's shardings
    logging.info("resumed from %s at step %d", source, start_step)

  logging.info("%d train / %d test identities, %d / %d images; %d steps/epoch, %d steps; "
               "%d parameters on %d devices", len(exp.train_ids), len(exp.test_ids),
               sum(map(len, exp.train_groups)), sum(map(len, exp.test_groups)),
               exp.steps_per_epoch, exp.total_steps, state_lib.count_params(state.params),
               mesh.size)
  state, last = train_loop(config, state, exp.step_fn, data_it, jax.random.key(config.seed),
                            start_step, exp.total_steps, manager, exp.meta, writer,
                            images_per_row=len(exp.method.views),
                            on_eval=periodic_eval if config.eval_every else None)

  results["final"], arrays, ver = evaluate(state)
  results["verification"] = verification.strip_curves(ver)
  results["steps"] = exp.total_steps
  results["last_logged"] = last
  scalars = eval_scalars(results["final"], results["verification"])
  best.update(state, exp.total_steps, scalars)
  if best.history:
    results["evaluations"], results["best"] = best.history, best.record
  if jax.process_index() == 0:
    report.write_json(os.path.join(workdir, "results.json"), results)
    if ver:
      plots.write_roc_png(os.path.join(workdir, "roc.png"),
                          {f"{name} / {track}": (r["roc"]["far"], r["roc"]["tar"])
                           for name, tracks in ver.items() for track, r in tracks.items()
                           if "roc" in r}, f"ROC after {exp.total_steps} steps")
    np.savez(os.path.join(workdir, "embeddings.npz"), identities=np.asarray(faceset.identities),
             groups=np.asarray(_groups(config, faceset) or ()), **arrays)
  print(report.format_table(results["final"], f"results after {exp.total_steps} steps "
                            f"({len(exp.test_ids)} unseen identities):"), flush=True)
  if ver:
    print(report.format_verification(results["verification"]), flush=True)
  writer.write_scalars(exp.total_steps, scalars)
  writer.flush()
  return results


def eval_scalars(summary: dict, ver: dict) -> dict:
  """The evaluation as flat TensorBoard scalars (names config.eval.best_metric uses)."""
  scalars = {f"eval/{k}": v["accuracy"] for k, v in summary.items()}
  for name, tracks in ver.items():
    for track, r in tracks.items():
      scalars[f"verify/{name}/{track}/accuracy"] = r["accuracy"]
      scalars.update({f"verify/{name}/{track}/tar@far={f}": t
                      for f, t in r["tar_at_far"].items() if t is not None})
  return scalars


_METRIC_NAMES = (r"eval/(masked_vs_unmasked|unmasked_vs_unmasked|masked_vs_masked)(/\w+)?"
                 r"|verify/.+/(masked|standard|combined)/(accuracy|tar@far=[0-9.e+-]+)")


class BestWeights:
  """Evaluations during training (config.eval_every) and the best weights so far.

  The weights the evaluator used (eval_variables) of the best evaluation by
  config.eval.best_metric go to <workdir>/best/<step> (orbax, one kept) with
  <workdir>/best.json; a resumed run reads best.json back, so "best" spans the whole run.
  """

  def __init__(self, config, workdir: str):
    self.config, self.metric = config, config.eval.best_metric
    if config.eval_every and not re.fullmatch(_METRIC_NAMES, self.metric):
      raise ValueError(f"config.eval.best_metric={self.metric!r} is not a scalar the "
                       "evaluation writes: use eval/<protocol>[/<classifier>] (e.g. "
                       "eval/masked_vs_unmasked) or verify/<set>/<masked|standard|combined>/"
                       "<accuracy|tar@far=F>")
    self.path = os.path.join(workdir, "best.json")
    self.history: list[dict] = []
    self.record: dict | None = None
    self._manager = None
    self._dir = os.path.join(workdir, "best")
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        saved = json.load(f)
      self.record, self.history = saved["best"], saved["history"]

  def update(self, state, step: int, scalars: dict) -> None:
    if not self.config.eval_every:
      return
    if self.metric not in scalars:
      raise ValueError(f"config.eval.best_metric={self.metric!r} is not among the evaluation "
                       f"scalars: {sorted(scalars)}")
    if any(h["step"] == step for h in self.history):
      return
    value = float(scalars[self.metric])
    self.history.append({"step": int(step), self.metric: value})
    if self.record is None or value > self.record["value"]:
      self.record = {"step": int(step), "metric": self.metric, "value": value}
      if self._manager is None:
        self._manager = checkpoint.make_manager(self._dir, keep=1)
      checkpoint.save_weights(self._manager, step, eval_variables(self.config, state))
    if jax.process_index() == 0:
      report.write_json(self.path, {"best": self.record, "history": self.history})


def _flat_hparams(config) -> dict:
  """Config as flat scalars for TensorBoard's hparams tab."""
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in traverse_util.flatten_dict(config.to_dict(), sep=".").items()}


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
