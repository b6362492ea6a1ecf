"""Mask segmentation: a U-Net maps a masked face to its mask map (models/unet.UNet),
BCE + Dice (losses/restore.py); IoU on the evaluation people. The first half of mask
removal (restoration.py): the inpainter repaints where this network points."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mfrjax.eval import image_quality
from mfrjax.eval.embed import in_batches, to_float
from mfrjax.losses import restore as losses
from mfrjax.methods import base
from mfrjax.models import unet


@functools.partial(jax.jit, static_argnames=("model",))
def probability(model, variables, images):
  """uint8 faces -> per-pixel mask probability. Jitted once per model: the weights are
  arguments, so every evaluation group and every Restorer call reuses one program."""
  return jax.nn.sigmoid(model.apply(variables, to_float(images)))


@functools.partial(jax.jit, static_argnames=("model",))
def prediction(model, variables, images):
  """uint8 faces -> {0, 1} mask maps (logit > 0)."""
  return (model.apply(variables, to_float(images)) > 0).astype(jnp.uint8)


def seg_loss(params, batch_stats, batch, rng, step, *, model, config):
  del rng, step
  logits = model.apply({"params": params}, to_float(batch["masked"]), train=True)
  target = batch["seg"].astype(jnp.float32)
  loss, parts = losses.segmentation_loss(logits, target, config.loss.dice_weight)
  parts["iou"] = jnp.mean(losses.iou((logits > 0).astype(jnp.float32), target))
  return loss, (batch_stats, parts)


class MaskSeg(base.ImageMethod):
  name = "mask_seg"
  sheet_columns = ("original", "masked", "predicted", "true map")
  result_keys = ("iou", "iou_pooled", "pixel_accuracy")

  def build_model(self, config) -> unet.UNet:
    return unet.UNet(tuple(config.model.widths), 1)

  def input_shape(self, config) -> tuple[int, ...]:
    s, c = config.data.image_size, config.data.channels
    return (1, s, s, c)

  def loss_fn(self, config, model):
    return functools.partial(seg_loss, model=model, config=config)

  def evaluate(self, model, variables, examples, config) -> tuple[dict, list]:
    (pred,) = in_batches(lambda x: prediction(model, variables, x), [examples["masked"]],
                         config.eval.batch_size)
    target = examples["seg"]
    inter, union = image_quality.mask_overlap(pred, target)
    scores = {"iou": float(image_quality.mask_iou(pred, target).mean()),
              "iou_pooled": float(inter.sum() / max(union.sum(), 1)),
              "pixel_accuracy": float(np.mean(pred == target))}
    n = self.sheet_rows
    sheet = [(a, b, p * 255, s * 255) for a, b, p, s in
             zip(examples["image"][:n], examples["masked"][:n], pred[:n], examples["seg"][:n])]
    return scores, sheet


METHOD = MaskSeg()
