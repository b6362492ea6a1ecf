"""The trainer of the methods that learn face embeddings (methods.base.EmbeddingMethod):
build the experiment, train with the shared loop, evaluate on unseen identities.

What differs between methods (model, loss, input stream, steps per epoch, checks) is
the method object's; the state, data parallelism (XLA's all-reduce or PowerSGD), the
checkpointed data stream and the evaluation on unseen identities are the same for all,
so methods are compared under identical conditions. This module never asks which
method it runs.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from flax import traverse_util

from mfrjax import checkpoint, methods, optim, run_info, train
from mfrjax import state as state_lib
from mfrjax.data import pair_sets, pipeline, sources
from mfrjax.eval import classifiers, embed, identification, plots, report, verification
from mfrjax.parallel import grad_reduce, powersgd
from mfrjax.parallel import mesh as mesh_lib
from mfrjax.prep import align

ALIGNMENTS = ("none",) + tuple(align.TEMPLATES)  # config.data.alignment


def _evaluate(config, model, state, *, faceset, test_groups, train_groups, mesh,
              verify: bool = True) -> tuple[dict, dict, dict]:
  """Embeds the test images and runs the NumPy evaluator.

  Returns:
    (identification summary, arrays for embeddings.npz, verification results with ROC
    curves: {set name: {track: ...}}, empty unless `verify`)
  """
  idx = np.concatenate(test_groups)
  labels = faceset.labels[idx]
  variables = train.eval_variables(config, state)
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
  method: methods.EmbeddingMethod
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


def steps_per_epoch(config, method: methods.EmbeddingMethod, train_groups) -> int:
  """The method's steps per epoch; an error naming the keys when the data is too small."""
  n = method.steps_per_epoch(config, train_groups)
  if n == 0:
    images, single = sum(map(len, train_groups)), sum(len(g) == 1 for g in train_groups)
    why = (f"; {single} of the {len(train_groups)} training identities have a single image "
           f"(config.data.max_images_per_identity={config.data.max_images_per_identity}, "
           "config.data.batch_min_images)" if single else "")
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
        "identity (config.data.batch_min_images)")
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
        except Exception as e:
          bad.append(f"{key}: {fset.describe(int(i))} ({'masked' if masked else 'unmasked'} "
                     f"view): {e}")
  if bad:
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise sources.ImageReadError(
        f"{len(bad)} evaluation image(s) cannot be read; the evaluation after the last step "
        "would fail, so training does not start. Remove them (mfrjax-clean writes an "
        "exclude list for config.data.exclude_list) or fix them:\n  "
        + "\n  ".join(bad[:5]) + more)


def check_training_files(config, faceset, train_groups) -> None:
  """Every file the training stream may read, decoded once before the first step
  (`sources.check_decodable`), so a corrupt training image stops the run now, naming it,
  instead of hours into training. `margin.py:lfw`'s 7,896 aligned LFW PNGs took 1.8 s on 2
  cores (15,792 with their mask files, 2.8 s). `config.data.check_files=False` skips it,
  e.g. for a set `mfrjax-clean` has already been through. Face sets held in memory (the
  synthetic one) have no files.
  """
  if not config.data.check_files or not hasattr(faceset, "files"):
    return
  sources.check_decodable([p for g in train_groups for i in g for p in faceset.files(int(i))],
                          "training image files")


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


def setup(config: ml_collections.ConfigDict, mesh,
          method: methods.EmbeddingMethod | None = None) -> Experiment:
  """Builds data split, model, optimiser, sharded state and the jitted step of `method`
  (default: the one config.method names)."""
  method = method or methods.get(config.method)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  # The evaluation after the last step shards its batches the same way: checked now.
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
  if config.grad_reduce not in grad_reduce.MODES:
    raise ValueError(f"unknown config.grad_reduce={config.grad_reduce!r}; valid: "
                     f"{grad_reduce.MODES}")
  if config.data.alignment not in ALIGNMENTS:
    raise ValueError(f"config.data.alignment={config.data.alignment!r}; valid: {ALIGNMENTS} "
                     "(what the training images are: photos, or crops aligned by "
                     "mfrjax-align)")
  if not config.sync_batch_norm and config.grad_reduce not in grad_reduce.EXPLICIT:
    raise ValueError("config.sync_batch_norm=False normalises each device's batch on its own, "
                     "which needs the per-device step: set config.grad_reduce='flat' or "
                     f"'powersgd' (under {config.grad_reduce!r} XLA reduces BatchNorm over the "
                     "global batch)")
  method.check(config, mesh)
  faceset, train_ids, test_ids, train_groups, test_groups = split_data(config)
  n_steps = steps_per_epoch(config, method, train_groups)
  check_evaluation_inputs(config, faceset, test_groups)
  check_training_files(config, faceset, train_groups)
  total_steps = n_steps * config.num_epochs

  num_classes = len(train_groups)
  model = method.build_model(config.model, num_classes=num_classes)
  schedule = train.schedule(config.optimizer, config.batch_size, total_steps, n_steps)
  tx = optim.make_optimizer(config.optimizer, schedule)
  p_cfg = config.powersgd
  reduce_state_init = None
  if config.grad_reduce == "powersgd":
    reduce_state_init = lambda params, key: powersgd.init_state(  # noqa: E731
        powersgd.make_plan(params, p_cfg.rank, p_cfg.min_compression_rate), mesh.size, key)
  state, abstract, shardings = state_lib.create_train_state(
      jax.random.key(config.seed), model, tx, (1, *pipeline.input_shape(config.data)), mesh,
      reduce_state_init, ema=config.ema.enabled, shard_classes=method.shard_classes(config))
  psgd = None
  if config.grad_reduce in grad_reduce.EXPLICIT:
    bn_axis = mesh_lib.DATA if config.sync_batch_norm else None
    local_loss = functools.partial(
        method.loss, model=method.build_model(config.model, axis_name=bn_axis,
                                              num_classes=num_classes),
        config=config, axis_name=mesh_lib.DATA,
        **method.loss_kwargs(config, steps_per_epoch=n_steps, num_classes=num_classes))
    plan = None if reduce_state_init is None else powersgd.make_plan(
        abstract.params, p_cfg.rank, p_cfg.min_compression_rate)
    psgd = train.PowerSGDContext(local_loss, mesh, plan, p_cfg, not config.sync_batch_norm)
  meta = {"model": {"method": config.method, **config.model.to_dict()},
          # The reduction state is part of the signature: PowerSGD residuals are per
          # device, so a change of grad_reduce or of the device count is caught too.
          "param_signature": state_lib.param_signature(abstract.params) +
          [f"reduce_state{x}" for x in state_lib.param_signature(abstract.reduce_state)]}
  loss_kw = method.loss_kwargs(config, steps_per_epoch=n_steps, num_classes=num_classes,
                              mesh=mesh)
  step_fn = train.jit_step(
      config, functools.partial(method.loss, model=model, config=config, **loss_kw), tx,
      schedule, shardings, mesh, psgd)
  return Experiment(method, faceset, train_ids, test_ids, train_groups, test_groups,
                    n_steps, total_steps, model, state, abstract, shardings, step_fn,
                    meta)


def train_data(config, exp: Experiment, mesh) -> mesh_lib.DevicePrefetcher:
  """The checkpointable stream of global training batches, prefetched onto the devices."""
  ds = exp.method.input_stream(config, exp.faceset, exp.train_groups)
  return mesh_lib.DevicePrefetcher(iter(ds), mesh)


def train_and_evaluate(method: methods.EmbeddingMethod, config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains `method` per `config`, evaluates on unseen identities, returns the results.

  Writes to `workdir`: checkpoints/, TensorBoard events, run.json, results.json,
  embeddings.npz, roc.png; best/ and best.json with config.eval_every. Called under the
  workdir lock (train.train_and_evaluate).
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  resuming = checkpoint.has_steps(ckpt_dir)
  # Before any work: a changed experiment in a used workdir is refused.
  schedule_changes = run_info.check_resume(workdir, config) if resuming else {}
  best = BestWeights(config, workdir)  # checks config.eval.best_metric before any work
  mesh = mesh_lib.make_mesh()
  exp = setup(config, mesh, method)
  state, faceset = exp.state, exp.faceset
  data_it = train_data(config, exp, mesh)
  manager = checkpoint.make_manager(ckpt_dir, config.keep_checkpoints)
  train.check_resume_end(config, schedule_changes, manager, exp.total_steps)
  restored = checkpoint.restore(manager, config.resume, exp.abstract, data_it, exp.meta,
                                fresh_reduce_state=exp.state.reduce_state)
  if restored is not None and "num_epochs" in schedule_changes:
    train.check_epochs_change(config, exp.steps_per_epoch,
                              int(schedule_changes["num_epochs"][0]), restored[1])
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
  state, last = train.train_loop(config, state, exp.step_fn, data_it,
                                 jax.random.key(config.seed), start_step, exp.total_steps,
                                 manager, exp.meta, writer,
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

  The weights the evaluator used (train.eval_variables) of the best evaluation by
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
      checkpoint.save_weights(self._manager, step, train.eval_variables(self.config, state))
    if jax.process_index() == 0:
      report.write_json(self.path, {"best": self.record, "history": self.history})


def _flat_hparams(config) -> dict:
  """Config as flat scalars for TensorBoard's hparams tab."""
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in traverse_util.flatten_dict(config.to_dict(), sep=".").items()}
