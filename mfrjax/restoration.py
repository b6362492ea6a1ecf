"""Mask removal (MRII): a mask segmenter and an inpainting GAN, trained by the shared loop.

  mask_seg   U-Net: masked face -> mask map (models/unet.UNet), BCE + Dice; IoU on the
             evaluation people, for the training mask types and for the held-out one.
  inpaint    gated-convolution U-Net generator + spectrally normalised PatchGAN
             discriminator (models/unet.py): L1 on the hole and on the valid region,
             hinge adversarial loss and an identity loss (1 - cosine of a trained
             recogniser's embeddings of the restored and the true face); PSNR, SSIM and
             L1 on the hole of the evaluation people.

What is shared with the recognition methods (train.py): the state and its shardings,
`train.train_step` (so jit over every device, EMA, logging and the NaN checks are the
same), `train.train_loop`, checkpoints with the data position, the resume checks of
run.json, the workdir lock. What differs is the input (data/restore_data.py) and the
evaluation, which measures images, not embeddings.

Two optimisers in one pure step: the generator and the discriminator are one parameter
tree {'gen', 'disc'} under `optax.multi_transform` (each its own optimiser and learning
rate; config.optimizer and config.disc_optimizer), checkpointed together. Both gradients
come from one scalar,

    L = L_G(gen, stop_gradient(disc)) + L_D(stop_gradient(gen), disc),

whose gradient with respect to the generator is exactly L_G's and with respect to the
discriminator exactly L_D's (simultaneous updates), so `train.train_step` runs it as is.
"""

from __future__ import annotations

import functools
import os

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers

from mfrjax import checkpoint, optim, run_info
from mfrjax import embedder as embedder_lib
from mfrjax import state as state_lib
from mfrjax.data import masking, restore_data
from mfrjax.eval import image_quality, report
from mfrjax.eval.embed import to_float
from mfrjax.losses import restore as losses
from mfrjax.models import unet
from mfrjax.parallel import mesh as mesh_lib


class InpaintGAN(nn.Module):
  """Generator and discriminator as one module, so their parameters are one tree
  {'gen', 'disc'}; `__call__` (used at init) runs both on (image ++ mask) channels."""
  gen_widths: tuple = (32, 64, 128)
  dilations: tuple = (2, 4)
  disc_widths: tuple = (32, 64, 128)
  channels: int = 1

  def setup(self):
    self.gen = unet.InpaintGenerator(self.gen_widths, self.dilations, self.channels)
    self.disc = unet.PatchDiscriminator(self.disc_widths)

  def __call__(self, x, train: bool = False):
    image, mask = x[..., :-1], x[..., -1:]
    out = self.gen(image, mask)
    return self.disc(out, mask, train=train)

  def generate(self, image, mask):
    return self.gen(image, mask)

  def discriminate(self, image, mask, train: bool = False):
    return self.disc(image, mask, train=train)


def build_model(config):
  m = config.model
  if config.method == "mask_seg":
    return unet.UNet(tuple(m.widths), 1)
  return InpaintGAN(tuple(m.widths), tuple(m.dilations), tuple(m.disc_widths),
                    config.data.channels)


def input_shape(config) -> tuple[int, ...]:
  s, c = config.data.image_size, config.data.channels
  return (1, s, s, c + (config.method == "inpaint"))


def hole(seg: jax.Array, dilate: int) -> jax.Array:
  """The region to restore: the mask map grown by `dilate` pixels, so the mask's soft
  edge (alpha < 0.5, outside the binary map) is repainted too."""
  seg = seg.astype(jnp.float32)
  if dilate <= 0:
    return seg
  k = 2 * dilate + 1
  return nn.max_pool(seg, (k, k), strides=(1, 1), padding="SAME")


def seg_loss(params, batch_stats, batch, rng, step, *, model, config):
  del rng, step
  logits = model.apply({"params": params}, to_float(batch["masked"]), train=True)
  target = batch["seg"].astype(jnp.float32)
  loss, parts = losses.segmentation_loss(logits, target, config.loss.dice_weight)
  parts["iou"] = jnp.mean(losses.iou((logits > 0).astype(jnp.float32), target))
  return loss, (batch_stats, parts)


def recogniser_fn(workdir: str):
  """(image in [-1, 1] at any size) -> embedding, of a trained recognition run, frozen."""
  emb = embedder_lib.Embedder.from_workdir(workdir)
  h, w, c = emb.input_shape
  variables = jax.tree.map(jnp.asarray, emb.variables)

  def f(x):
    x = jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "linear")
    if x.shape[-1] != c:
      x = jnp.repeat(x, c, axis=-1) if x.shape[-1] == 1 else jnp.mean(x, -1, keepdims=True)
    return embedder_lib.forward(jax.lax.stop_gradient(variables), x, model=emb.model,
                                flip=False)
  return f


def inpaint_loss(params, batch_stats, batch, rng, step, *, model, config, recognise=None):
  """L_G(gen, sg(disc)) + L_D(sg(gen), disc) (module docstring); BN-free, so the only
  mutable state is the discriminator's spectral-norm estimate."""
  del rng, step
  lc = config.loss
  truth = to_float(batch["image"])
  masked = to_float(batch["masked"])
  m = hole(batch["seg"], config.model.dilate)
  apply = functools.partial(model.apply, {"params": params, "batch_stats": batch_stats})
  out = apply(masked, m, method=model.generate)
  comp = unet.composite(out, masked, m)

  # Discriminator: real faces vs composites of a generator it cannot move.
  real_and_fake = jnp.concatenate([truth, jax.lax.stop_gradient(comp)])
  logits, upd = model.apply({"params": params, "batch_stats": batch_stats}, real_and_fake,
                            jnp.concatenate([m, m]), train=True, method=model.discriminate,
                            mutable=["batch_stats"])
  d_real, d_fake = jnp.split(logits, 2)
  loss_d = losses.hinge_discriminator(d_real, d_fake)

  # Generator: against a discriminator it cannot move.
  frozen = {"gen": params["gen"], "disc": jax.lax.stop_gradient(params["disc"])}
  g_fake = model.apply({"params": frozen, "batch_stats": upd["batch_stats"]}, comp, m,
                       method=model.discriminate)
  parts = {"l1_hole": losses.masked_l1(out, truth, m),
           "l1_valid": losses.masked_l1(out, truth, 1.0 - m),
           "adversarial": losses.hinge_generator(g_fake), "loss_d": loss_d,
           "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
  loss_g = (lc.hole * parts["l1_hole"] + lc.valid * parts["l1_valid"]
            + lc.adversarial * parts["adversarial"])
  if recognise is not None:
    parts["identity"] = losses.identity_loss(recognise(comp),
                                             jax.lax.stop_gradient(recognise(truth)))
    loss_g = loss_g + lc.identity * parts["identity"]
  parts["loss_g"] = loss_g
  return loss_g + loss_d, (upd["batch_stats"], parts)


def make_optimizer(config, schedule, disc_schedule):
  if config.method == "mask_seg":
    return optim.make_optimizer(config.optimizer, schedule)
  return optax.multi_transform(
      {"gen": optim.make_optimizer(config.optimizer, schedule),
       "disc": optim.make_optimizer(config.disc_optimizer, disc_schedule)},
      lambda params: {k: k for k in params})


class Setup:
  """What `train_and_evaluate` builds from the config before the first step."""

  def __init__(self, config, mesh):
    from mfrjax import train  # the shared step; train imports this module lazily
    if config.batch_size <= 0:
      raise ValueError(f"config.batch_size={config.batch_size} must be positive")
    mesh_lib.check_batch_size(config.batch_size, mesh)
    self.data = restore_data.MaskedFaces(config.data, config.seed)
    self.train_rows, self.eval_groups = self.data.split()
    if not self.eval_groups:
      raise ValueError("no evaluation image: raise config.data.test_fraction or "
                       "config.data.holdout_percent")
    restore_data.check_readable(self.data, np.concatenate(list(self.eval_groups.values())))
    self.steps_per_epoch = len(self.train_rows) // config.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"config.batch_size={config.batch_size} is larger than one epoch of "
                       f"training data ({len(self.train_rows)} masked images); lower it")
    self.total_steps = self.steps_per_epoch * config.num_epochs
    self.model = build_model(config)
    schedules = [optim.make_schedule(o, self.total_steps, config.batch_size,
                                     int(o.warmup_epochs * self.steps_per_epoch),
                                     self.steps_per_epoch)
                 for o in (config.optimizer, config.get("disc_optimizer", config.optimizer))]
    tx = make_optimizer(config, *schedules)
    self.state, self.abstract, shardings = state_lib.create_train_state(
        jax.random.key(config.seed), self.model, tx, input_shape(config), mesh,
        ema=config.ema.enabled)
    if config.method == "mask_seg":
      loss_fn = functools.partial(seg_loss, model=self.model, config=config)
    else:
      recognise = recogniser_fn(config.loss.recogniser) if config.loss.recogniser else None
      loss_fn = functools.partial(inpaint_loss, model=self.model, config=config,
                                  recognise=recognise)
    self.step_fn = jax.jit(
        functools.partial(train.train_step, loss_fn=loss_fn, tx=tx, schedule=schedules[0],
                          ema_decay=config.ema.decay if config.ema.enabled else None),
        in_shardings=(shardings, mesh_lib.batch_sharded(mesh), mesh_lib.replicated(mesh)),
        out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
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
    model = build_model(config)
    if method == "mask_seg":
      fn = functools.partial(_mask_probability, model)
    else:
      fn = functools.partial(_restore, model, dilate=config.model.dilate)
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
    (prob,) = _in_batches(lambda x: fn(variables, x), [self._fit(images, config)],
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
    out, region = _in_batches(lambda x, m: fn(variables, x, m),
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


# Jitted once per (model, settings): the weights are arguments, not constants baked into
# each compilation, so every evaluation group and every Restorer call reuses one program.

@functools.partial(jax.jit, static_argnames=("model",))
def _mask_probability(model, variables, images):
  return jax.nn.sigmoid(model.apply(variables, to_float(images)))


@functools.partial(jax.jit, static_argnames=("model",))
def _mask_prediction(model, variables, images):
  return (model.apply(variables, to_float(images)) > 0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("model", "dilate"))
def _restore(model, variables, images, seg, dilate):
  """(uint8 faces, {0, 1} maps) -> (restored uint8 at the model size, the hole)."""
  m = hole(seg, dilate)
  x = to_float(images)
  out = unet.composite(model.apply(variables, x, m, method=model.generate), x, m)
  return jnp.clip(jnp.round((out + 1.0) * 127.5), 0, 255).astype(jnp.uint8), m


# --------------------------------------------------------------------------- evaluation

def evaluate(config, model, state, setup: Setup) -> tuple[dict, list]:
  """Scores on every evaluation group, and contact-sheet rows of the first group."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if config.ema.enabled:
    variables = dict(state.ema)
  results, sheet = {}, []
  for name, rows in setup.eval_groups.items():
    ex = restore_data.eval_examples(setup.data, rows, unseen=name == "unseen_type")
    if config.method == "mask_seg":
      r, pred = _evaluate_seg(model, variables, ex, config.eval.batch_size)
      if not sheet:
        sheet = [(a, b, p * 255, s * 255) for a, b, p, s in
                 zip(ex["image"], ex["masked"], pred, ex["seg"])][:8]
    else:
      r, restored = _evaluate_inpaint(model, variables, ex, config)
      if not sheet:
        sheet = [(a, b, s * 255, o) for a, b, s, o in
                 zip(ex["image"], ex["masked"], ex["seg"], restored)][:8]
    results[name] = {**r, "images": len(rows)}
  return results, sheet


def _in_batches(fn, arrays: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
  n, outs = len(arrays[0]), []
  for i in range(0, n, batch_size):
    parts = [a[i:i + batch_size] for a in arrays]
    k = len(parts[0])
    parts = [np.concatenate([p, np.repeat(p[:1], batch_size - k, 0)]) for p in parts]
    res = fn(*parts)
    outs.append([np.asarray(x)[:k] for x in (res if isinstance(res, tuple) else (res,))])
  return [np.concatenate(x) for x in zip(*outs)]


def _evaluate_seg(model, variables, ex, batch_size):
  (pred,) = _in_batches(lambda x: _mask_prediction(model, variables, x), [ex["masked"]],
                        batch_size)
  target = ex["seg"]
  inter, union = image_quality.mask_overlap(pred, target)
  return {"iou": float(image_quality.mask_iou(pred, target).mean()), "iou_pooled": float(inter.sum() / max(union.sum(), 1)),
          "pixel_accuracy": float(np.mean(pred == target))}, pred


def _evaluate_inpaint(model, variables, ex, config):
  restored, region = _in_batches(
      lambda x, s: _restore(model, variables, x, s, dilate=config.model.dilate),
      [ex["masked"], ex["seg"]], config.eval.batch_size)
  scores = {"restored": [], "masked_input": []}
  for i in range(len(restored)):
    r = region[i, ..., 0] > 0
    scores["restored"].append(image_quality.region_scores(restored[i], ex["image"][i], r))
    scores["masked_input"].append(image_quality.region_scores(ex["masked"][i], ex["image"][i],
                                                              r))
  out = {f"{k}_{name}": float(np.nanmean([s[k] for s in v]))
         for name, v in scores.items() for k in ("psnr", "ssim", "l1")}
  return out, restored


SHEET_COLUMNS = {"mask_seg": ("original", "masked", "predicted", "true map"),
                 "inpaint": ("original", "masked", "mask", "restored")}


# ------------------------------------------------------------------------------ the run

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains a mask_seg or inpaint run; writes checkpoints, TensorBoard events,
  results.json and contact_sheet.png to `workdir`. Called under the workdir lock."""
  from mfrjax import train  # the shared loop
  ckpt_dir = os.path.join(workdir, "checkpoints")
  resuming = checkpoint.has_steps(ckpt_dir)
  changes = run_info.check_resume(workdir, config) if resuming else {}
  mesh = mesh_lib.make_mesh()
  setup = Setup(config, mesh)
  ds = restore_data.train_stream(setup.data, setup.train_rows, config.data,
                                 global_batch=config.batch_size, num_epochs=config.num_epochs,
                                 seed=config.seed)
  data_it = mesh_lib.DevicePrefetcher(iter(ds), mesh)
  manager = checkpoint.make_manager(ckpt_dir, config.keep_checkpoints)
  train.check_resume_end(config, changes, manager, setup.total_steps)
  restored = checkpoint.restore(manager, config.resume, setup.abstract, data_it, setup.meta)
  if restored is not None and "num_epochs" in changes:
    # Both optimisers' schedules must keep the learning rate of the steps taken.
    old = int(changes["num_epochs"][0])
    train.check_epochs_change(config, setup, old, restored[1])
    if config.method == "inpaint":
      as_disc = ml_collections.ConfigDict(config.to_dict())
      as_disc.optimizer = config.disc_optimizer.to_dict()
      train.check_epochs_change(as_disc, setup, old, restored[1])
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
                                 setup.meta, writer, images_per_row=1)
  results, sheet = evaluate(config, setup.model, state, setup)
  results = {"final": results, "steps": setup.total_steps, "last_logged": last}
  writer.write_scalars(setup.total_steps, {f"eval/{g}/{k}": v
                                           for g, r in results["final"].items()
                                           for k, v in r.items()})
  writer.flush()
  if jax.process_index() == 0:
    report.write_json(os.path.join(workdir, "results.json"), results)
    cv2.imwrite(os.path.join(workdir, "contact_sheet.png"),
                masking.contact_sheet(sheet, names=SHEET_COLUMNS[config.method]))
  print(format_results(config.method, results["final"], setup.total_steps), flush=True)
  return results


def format_results(method: str, final: dict, steps: int) -> str:
  keys = (("iou", "iou_pooled", "pixel_accuracy") if method == "mask_seg" else
          ("psnr_restored", "ssim_restored", "l1_restored", "psnr_masked_input",
           "ssim_masked_input"))
  lines = [f"{method} after {steps} steps (evaluation people):",
           "| group | images | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
  for g, r in final.items():
    lines.append(f"| {g} | {r['images']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
  return "\n".join(lines)
