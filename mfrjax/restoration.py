"""The trainer of the mask-removal methods (MRII, methods.base.ImageMethod) and their
inference: a mask segmenter (methods/mask_seg.py) and an inpainting GAN
(methods/inpaint.py), used together by `Restorer` and mfrjax-unmask.

What is shared with the recognition methods (train.py): the state and its shardings,
`train.train_step` (so jit over every device, EMA, logging and the NaN checks are the
same), `train.train_loop`, checkpoints with the data position, the resume checks of
run.json, the workdir lock. What differs is the input (data/restore_data.py: masked
face, its map and the true face) and the evaluation, which measures images, not
embeddings: each method scores its own groups (`ImageMethod.evaluate`).
"""

from __future__ import annotations

import functools
import os

import cv2
import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from mfrjax import checkpoint, methods, run_info, train
from mfrjax import embedder as embedder_lib
from mfrjax import state as state_lib
from mfrjax.data import restore_data
from mfrjax.eval import report
from mfrjax.eval.embed import in_batches
from mfrjax.methods import inpaint, mask_seg
from mfrjax.parallel import mesh as mesh_lib
from mfrjax.prep import masking


class Setup:
  """What `train_and_evaluate` builds from the config before the first step."""

  def __init__(self, method: methods.ImageMethod, config, mesh):
    mesh_lib.check_batch_size(config.batch_size, mesh)
    if config.eval.batch_size <= 0:  # read by the evaluation after the last step
      raise ValueError(f"config.eval.batch_size={config.eval.batch_size} must be positive")
    self.data = restore_data.MaskedFaces(config.data, config.seed)
    self.train_rows, self.eval_groups = self.data.split()
    if not self.eval_groups:
      raise ValueError("no evaluation image: raise config.data.test_fraction or "
                       "config.data.holdout_percent")
    restore_data.check_readable(self.data, np.concatenate(list(self.eval_groups.values())))
    restore_data.check_training_files(self.data, self.train_rows)
    self.steps_per_epoch = len(self.train_rows) // config.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"config.batch_size={config.batch_size} is larger than one epoch of "
                       f"training data ({len(self.train_rows)} masked images); lower it")
    self.total_steps = self.steps_per_epoch * config.num_epochs
    self.model = method.build_model(config)
    schedules = {k: train.schedule(config[key], config.batch_size, self.total_steps,
                                   self.steps_per_epoch)
                 for k, key in method.optimizers(config).items()}
    tx = method.make_optimizer(config, schedules)
    self.state, self.abstract, shardings = state_lib.create_train_state(
        jax.random.key(config.seed), self.model, tx, method.input_shape(config), mesh,
        ema=config.ema.enabled)
    self.step_fn = train.jit_step(config, method.loss_fn(config, self.model), tx,
                                  next(iter(schedules.values())), shardings, mesh)
    self.meta = {"model": {"method": config.method, **config.model.to_dict()},
                 "param_signature": state_lib.param_signature(self.abstract.params)}


# ---------------------------------------------------------------------------- inference

class Restorer:
  """Trained mask segmenter and/or inpainter, from their workdirs, on uint8 faces.

  Faces are the training images' kind (aligned crops for the aligned recipes) at any
  size: the networks run at their training size and the restored pixels are put back
  at the input size inside the predicted mask only, so every other pixel of the input is
  returned unchanged.
  """

  def __init__(self, seg_workdir: str | None = None, inpaint_workdir: str | None = None,
               threshold: float = 0.5, batch_size: int = 64):
    self.threshold, self.batch_size = threshold, batch_size
    self.seg = self.inpaint = None
    if seg_workdir:
      self.seg = self._load(seg_workdir, "mask_seg")
    if inpaint_workdir:
      self.inpaint = self._load(inpaint_workdir, "inpaint")

  @staticmethod
  def _load(workdir: str, method: str):
    info = run_info.read(workdir)
    config = info["config"]
    if config.method != method:
      raise ValueError(f"{workdir} is a config.method={config.method!r} run, not {method!r}")
    variables, step = embedder_lib.read_weights(workdir, None, bool(config.ema.enabled))
    model = methods.get(method).build_model(config)
    if method == "mask_seg":
      fn = functools.partial(mask_seg.probability, model)
    else:
      fn = functools.partial(inpaint.restore, model, dilate=config.model.dilate)
    logging.info("%s: %s step %d", method, workdir, step)
    return config, jax.device_put(variables), fn

  @staticmethod
  def _fit(images: np.ndarray, config) -> np.ndarray:
    s, c = config.data.image_size, config.data.channels
    out = []
    for img in images:
      x = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA if img.shape[0] > s
                     else cv2.INTER_LINEAR)
      x = x[..., None] if x.ndim == 2 else x
      if x.shape[-1] != c:
        x = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)[..., None] if c == 1
             else cv2.cvtColor(x, cv2.COLOR_GRAY2BGR))
      out.append(x)
    return np.stack(out)

  def segment(self, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> predicted mask maps, uint8 (N, H, W) in {0, 1}."""
    config, variables, fn = self.seg
    (prob,) = in_batches(lambda x: fn(variables, x), [self._fit(images, config)],
                         self.batch_size)
    h, w = images.shape[1:3]
    return np.stack([(cv2.resize(p[..., 0], (w, h), interpolation=cv2.INTER_LINEAR)
                      >= self.threshold).astype(np.uint8) for p in prob])

  def restore(self, images: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, H, W, C) faces and {0, 1} (N, H, W) mask maps (default: `segment`'s) ->
    restored uint8 (N, H, W, C): the inpainter's pixels inside the (dilated) mask."""
    if masks is None:
      masks = self.segment(images)
    config, variables, fn = self.inpaint
    s = config.data.image_size
    small_masks = np.stack([cv2.resize(m.astype(np.uint8), (s, s),
                                       interpolation=cv2.INTER_NEAREST) for m in masks])
    out, region = in_batches(lambda x, m: fn(variables, x, m),
                             [self._fit(images, config), small_masks[..., None]],
                             self.batch_size)
    h, w, c = images.shape[1:]
    result = []
    for img, o, r in zip(images, out, region):
      big = cv2.resize(o, (w, h), interpolation=cv2.INTER_LINEAR)
      big = big[..., None] if big.ndim == 2 else big
      if big.shape[-1] != c:
        big = np.repeat(big, c, -1) if c == 3 else big.mean(-1, keepdims=True)
      r = cv2.resize(r[..., 0], (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
      result.append(np.where(r > 0, big, img).astype(np.uint8))
    return np.stack(result)


# --------------------------------------------------------------------------- evaluation

def evaluate(method: methods.ImageMethod, config, model, state, setup: Setup
             ) -> tuple[dict, list]:
  """The method's scores on every evaluation group, and contact-sheet rows of the first."""
  variables = train.eval_variables(config, state)
  results, sheet = {}, []
  for name, rows in setup.eval_groups.items():
    ex = restore_data.eval_examples(setup.data, rows, unseen=name == "unseen_type")
    r, group_sheet = method.evaluate(model, variables, ex, config)
    sheet = sheet or group_sheet
    results[name] = {**r, "images": len(rows)}
  return results, sheet


# ------------------------------------------------------------------------------ the run

def train_and_evaluate(method: methods.ImageMethod, config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains an image method's run; writes checkpoints, TensorBoard events,
  results.json and contact_sheet.png to `workdir`. Called under the workdir lock."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  resuming = checkpoint.has_steps(ckpt_dir)
  changes = run_info.check_resume(workdir, config) if resuming else {}
  mesh = mesh_lib.make_mesh()
  setup = Setup(method, config, mesh)
  ds = restore_data.train_stream(setup.data, setup.train_rows, config.data,
                                 global_batch=config.batch_size, num_epochs=config.num_epochs,
                                 seed=config.seed)
  data_it = mesh_lib.DevicePrefetcher(iter(ds), mesh)
  manager = checkpoint.make_manager(ckpt_dir, config.keep_checkpoints)
  train.check_resume_end(config, changes, manager, setup.total_steps)
  restored = checkpoint.restore(manager, config.resume, setup.abstract, data_it, setup.meta)
  if restored is not None and "num_epochs" in changes:
    # Every optimiser's schedule must keep the learning rate of the steps taken.
    old = int(changes["num_epochs"][0])
    for key in method.optimizers(config).values():
      train.check_epochs_change(config, setup.steps_per_epoch, old, restored[1], key)
  if jax.process_index() == 0:
    run_info.write(workdir, config, 0)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  state, start = setup.state, 0
  if restored is not None:
    state, start, source = restored
    logging.info("resumed from %s at step %d", source, start)
  logging.info("%s: %d training images, %d steps/epoch, %d steps, %d parameters; "
               "evaluation: %s", config.method, len(setup.train_rows), setup.steps_per_epoch,
               setup.total_steps, state_lib.count_params(state.params),
               {k: len(v) for k, v in setup.eval_groups.items()})
  state, last = train.train_loop(config, state, setup.step_fn, data_it,
                                 jax.random.key(config.seed), start, setup.total_steps, manager,
                                 setup.meta, writer, images_per_row=len(method.views))
  results, sheet = evaluate(method, config, setup.model, state, setup)
  results = {"final": results, "steps": setup.total_steps, "last_logged": last}
  writer.write_scalars(setup.total_steps, {f"eval/{g}/{k}": v
                                           for g, r in results["final"].items()
                                           for k, v in r.items()})
  writer.flush()
  if jax.process_index() == 0:
    report.write_json(os.path.join(workdir, "results.json"), results)
    cv2.imwrite(os.path.join(workdir, "contact_sheet.png"),
                masking.contact_sheet(sheet, names=method.sheet_columns))
  print(format_results(method, results["final"], setup.total_steps), flush=True)
  return results


def format_results(method: methods.ImageMethod, final: dict, steps: int) -> str:
  keys = method.result_keys
  lines = [f"{method.name} after {steps} steps (evaluation people):",
           "| group | images | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
  for g, r in final.items():
    lines.append(f"| {g} | {r['images']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
  return "\n".join(lines)
