"""Training methods, found by `config.method`: each one's model, loss and batch format.

A method is the part of a recipe that differs between papers; the loop, state,
checkpoints, data parallelism (plain or PowerSGD) and the evaluator are shared
(train.py). Every loss function has the signature

    loss_fn(params, batch_stats, batch, rng, step, *, model, config, axis_name=None)
      -> (loss, (new_batch_stats, metrics))

and is written on the global batch: under plain jit XLA inserts the cross-device
reductions; inside shard_map (PowerSGD) `axis_name` makes them explicit.

  barlow      pairs of (masked, unmasked) images; EmbedAndProject; Barlow Twins loss.
  quintuplet  K people x M photos, unmasked + masked copy; Embedder; quintuplet loss.
  triplet     K people x M photos, unmasked only; Embedder; triplet loss (with
              config.data.upper_face for occlusion removal).
  margin      single images with class labels, an exact share masked; IResNet +
              class centres; ArcFace or CosFace, the centres optionally sharded over
              devices along the class axis (model-parallel FC).

Builders take `(model_cfg, axis_name=None, num_classes=0)`; only the margin model
uses the number of training classes.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mfrjax.eval.embed import to_float
from mfrjax.losses import barlow, margin, metric
from mfrjax.models import get_backbone
from mfrjax.models.heads import (EmbedAndProject, Embedder, EmbeddingHead, MarginModel,
                                 Projector)
from mfrjax.parallel.mesh import DATA


class Method(NamedTuple):
  build_model: Callable[..., Any]   # (model_cfg, axis_name, num_classes) -> flax module
  loss_fn: Callable[..., Any]       # see module docstring
  stream: str                       # "pairs", "identities" or "images" (data/pipeline.py)
  views: tuple[str, ...]            # views each training row loads


def build_barlow(model_cfg, axis_name: str | None = None, num_classes: int = 0
                 ) -> EmbedAndProject:
  """Backbone + projector; `axis_name` for use inside shard_map (PowerSGD)."""
  del num_classes
  backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name)
  return EmbedAndProject(backbone, Projector(tuple(model_cfg.projector_dims),
                                             dtype=backbone.dtype, axis_name=axis_name))


def build_embedder(model_cfg, axis_name: str | None = None, num_classes: int = 0) -> Embedder:
  """A ResNet whose pooling is replaced by the seed's head (Dropout, GAP, Dense, BN)."""
  del num_classes
  if not model_cfg.backbone.startswith("resnet"):
    raise ValueError(f"config.model.backbone={model_cfg.backbone!r}: metric methods put their "
                     "head on a ResNet's last feature map; use a resnet* backbone")
  backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name,
                          pool=False)
  return Embedder(backbone, EmbeddingHead(model_cfg.embed_dim, model_cfg.dropout,
                                          model_cfg.normalize, dtype=backbone.dtype,
                                          axis_name=axis_name))


def barlow_loss(params, batch_stats, batch, rng, step, *, model, config, axis_name=None):
  """Barlow Twins loss of one global batch; BN statistics are updated view by view."""
  del step
  rng_a, rng_b = jax.random.split(rng)
  variables = {"params": params, "batch_stats": batch_stats}
  (_, z_a), upd = model.apply(variables, to_float(batch["masked"]), train=True,
                              mutable=["batch_stats"], rngs={"dropout": rng_a})
  variables = {"params": params, "batch_stats": upd["batch_stats"]}
  (_, z_b), upd = model.apply(variables, to_float(batch["unmasked"]), train=True,
                              mutable=["batch_stats"], rngs={"dropout": rng_b})
  loss, parts = barlow.barlow_twins_loss(z_a, z_b, config.loss.lambd, axis_name=axis_name)
  return loss, (upd["batch_stats"], parts)


def mining_at(step, config, steps_per_epoch: int):
  """True once `config.loss.later_mining` takes over (from `switch_epoch` on)."""
  switch = config.loss.switch_epoch
  if switch < 0:
    return jnp.asarray(False)
  return step >= switch * steps_per_epoch


def _mined(loss_of, step, config, steps_per_epoch):
  """The loss under the mining mode of this step (both are computed; the step picks)."""
  first = loss_of(config.loss.mining)
  if config.loss.later_mining == config.loss.mining or config.loss.switch_epoch < 0:
    return first[0], {**first[1], "hardest_phase": jnp.asarray(0.0)}
  later = loss_of(config.loss.later_mining)
  use_later = mining_at(step, config, steps_per_epoch)
  loss, parts = jax.tree.map(lambda a, b: jnp.where(use_later, b, a), first, later)
  return loss, {**parts, "hardest_phase": use_later.astype(jnp.float32)}


def quintuplet_loss(params, batch_stats, batch, rng, step, *, model, config, steps_per_epoch,
                    axis_name=None):
  """One forward pass over the unmasked rows and their masked copies (shared BN batch)."""
  n = batch["unmasked"].shape[0]
  x = jnp.concatenate([batch["unmasked"], batch["masked"]])
  emb, upd = model.apply({"params": params, "batch_stats": batch_stats}, to_float(x),
                         train=True, mutable=["batch_stats"], rngs={"dropout": rng})
  u, m = emb[:n], emb[n:]
  loss, parts = _mined(
      lambda mode: metric.quintuplet_loss(u, m, batch["label"], config.loss.margin, mode,
                                          axis_name=axis_name),
      step, config, steps_per_epoch)
  return loss, (upd["batch_stats"], parts)


def triplet_loss(params, batch_stats, batch, rng, step, *, model, config, steps_per_epoch,
                 axis_name=None):
  emb, upd = model.apply({"params": params, "batch_stats": batch_stats},
                         to_float(batch["unmasked"]), train=True, mutable=["batch_stats"],
                         rngs={"dropout": rng})
  loss, parts = _mined(
      lambda mode: metric.triplet_loss(emb, batch["label"], config.loss.margin, mode,
                                       axis_name=axis_name),
      step, config, steps_per_epoch)
  return loss, (upd["batch_stats"], parts)


def build_margin(model_cfg, axis_name: str | None = None, num_classes: int = 0) -> MarginModel:
  """IResNet (stem, SE, DropBlock per config) + class centres for `num_classes` classes."""
  if not model_cfg.backbone.startswith("iresnet"):
    raise ValueError(f"config.model.backbone={model_cfg.backbone!r}: margin heads train face "
                     "IResNets; use an iresnet* backbone")
  if num_classes <= 0:
    raise ValueError("the margin head needs at least one training identity")
  backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name,
                          embed_dim=model_cfg.embed_dim, dropout=model_cfg.dropout,
                          stem=model_cfg.stem, se=model_cfg.se,
                          dropblock_rate=model_cfg.dropblock.rate,
                          dropblock_size=model_cfg.dropblock.block_size,
                          dropblock_stages=model_cfg.dropblock.stages)
  return MarginModel(backbone, margin.padded_classes(num_classes, model_cfg.class_pad),
                     model_cfg.embed_dim)


def margin_head_loss(params, batch_stats, batch, rng, step, *, model, config, num_classes,
                     mesh=None, axis_name=None):
  """ArcFace/CosFace on one global batch of labelled images.

  Three placements of the class centres:
    - `mesh` given and config.model.shard_classes: the centres are split over 'data'
      along the class axis; the loss runs in shard_map without gathering them.
    - `axis_name` given (inside PowerSGD's shard_map): the centres are replicated and
      each device scores its own rows; the mean over devices is the global loss.
    - otherwise: plain jit on the global batch.
  """
  del step
  (emb, weight), upd = model.apply({"params": params, "batch_stats": batch_stats},
                                   to_float(batch["image"]), train=True,
                                   mutable=["batch_stats"], rngs={"dropout": rng})
  lc = config.loss
  kw = dict(head=lc.head, scale=lc.scale, margin=lc.margin, easy_margin=lc.easy_margin,
            num_classes=num_classes)
  labels = batch["label"]
  share = jnp.mean(batch["masked"].astype(jnp.float32))
  if axis_name is not None:
    loss, parts = margin.margin_loss(emb, labels, weight, **kw)
    loss, parts, share = jax.lax.pmean((loss, parts, share), axis_name)
  elif mesh is not None and config.model.shard_classes:
    f = jax.shard_map(lambda e, y, w: margin.margin_loss(e, y, w, axis_name=DATA, **kw),
                      mesh=mesh, in_specs=(P(DATA), P(DATA), P(None, DATA)),
                      out_specs=(P(), P()))
    loss, parts = f(emb, labels, weight)
  else:
    loss, parts = margin.margin_loss(emb, labels, weight, **kw)
  return loss, (upd["batch_stats"], {**parts, "masked_share": share})


METHODS = {
    "barlow": Method(build_barlow, barlow_loss, "pairs", ("masked", "unmasked")),
    "quintuplet": Method(build_embedder, quintuplet_loss, "identities", ("unmasked", "masked")),
    "triplet": Method(build_embedder, triplet_loss, "identities", ("unmasked",)),
    "margin": Method(build_margin, margin_head_loss, "images", ("image",)),
}


# Mask removal (restoration.py): image-to-image methods with their own input and
# evaluation, trained by the same step and loop.
IMAGE_METHODS = ("mask_seg", "inpaint")


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown config.method={name!r}; valid: "
                     f"{sorted(METHODS) + list(IMAGE_METHODS)}")
  return METHODS[name]
