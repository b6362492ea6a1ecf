"""Margin heads (ArcFace / CosFace; configs/margin.py): single images with class
labels, an exact share masked; an IResNet + class centres, the centres optionally
sharded over devices along the class axis (model-parallel FC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mfrjax.data import pipeline
from mfrjax.eval.embed import to_float
from mfrjax.losses import margin
from mfrjax.methods import base
from mfrjax.models import get_backbone
from mfrjax.models.heads import MarginModel
from mfrjax.parallel import grad_reduce
from mfrjax.parallel.mesh import DATA


class Margin(base.EmbeddingMethod):
  name = "margin"
  views = ("image",)

  def check(self, config, mesh) -> None:
    """Placement checks of the class matrix, with the keys to change."""
    if not config.model.shard_classes:
      return
    if config.model.class_pad % mesh.size:
      raise ValueError(f"config.model.shard_classes=True splits the classes over {mesh.size} "
                       f"devices: config.model.class_pad={config.model.class_pad} must divide "
                       "by it")
    if config.grad_reduce in grad_reduce.EXPLICIT:
      name = {"powersgd": "PowerSGD", "flat": "the flat reduction"}[config.grad_reduce]
      raise ValueError(f"config.grad_reduce={config.grad_reduce!r} reduces replicated "
                       "gradients by hand; with config.model.shard_classes=True each device "
                       "owns its classes' gradient already. Set config.model.shard_classes="
                       f"False to use {name}, or config.grad_reduce='mean'.")

  def build_model(self, model_cfg, axis_name=None, num_classes=0) -> MarginModel:
    """IResNet (stem, SE, DropBlock per config) + centres for `num_classes` classes."""
    if not model_cfg.backbone.startswith("iresnet"):
      raise ValueError(f"config.model.backbone={model_cfg.backbone!r}: margin heads train "
                       "face IResNets; use an iresnet* backbone")
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

  def loss(self, params, batch_stats, batch, rng, step, *, model, config, num_classes,
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

  def loss_kwargs(self, config, *, steps_per_epoch, num_classes, mesh=None) -> dict:
    del config, steps_per_epoch
    return {"num_classes": num_classes} if mesh is None else {"num_classes": num_classes,
                                                              "mesh": mesh}

  def steps_per_epoch(self, config, train_groups) -> int:
    return sum(map(len, train_groups)) // config.batch_size

  def input_stream(self, config, faceset, train_groups):
    return pipeline.labelled_dataset(faceset, train_groups, config.data,
                                     global_batch=config.batch_size,
                                     num_epochs=config.num_epochs, seed=config.seed)

  def shard_classes(self, config) -> bool:
    return bool(config.model.shard_classes)


METHOD = Margin()
