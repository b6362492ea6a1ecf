"""Barlow Twins with the mask as the distortion: pairs of (masked, unmasked) images of a
person, a backbone + projector, the Barlow Twins loss (losses/barlow.py)."""

from __future__ import annotations

import jax

from mfrjax.data import pipeline
from mfrjax.eval.embed import to_float
from mfrjax.losses import barlow
from mfrjax.methods import base
from mfrjax.models import get_backbone
from mfrjax.models.heads import EmbedAndProject, Projector


class Barlow(base.EmbeddingMethod):
  name = "barlow"
  views = ("masked", "unmasked")

  def check(self, config, mesh) -> None:
    del mesh
    if config.data.pair_sampler not in pipeline.PAIR_SAMPLERS:
      raise ValueError(f"unknown config.data.pair_sampler={config.data.pair_sampler!r}; "
                       f"valid: {pipeline.PAIR_SAMPLERS}")

  def build_model(self, model_cfg, axis_name=None, num_classes=0) -> EmbedAndProject:
    del num_classes
    backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name)
    return EmbedAndProject(backbone, Projector(tuple(model_cfg.projector_dims),
                                               dtype=backbone.dtype, axis_name=axis_name))

  def loss(self, params, batch_stats, batch, rng, step, *, model, config, axis_name=None):
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

  def steps_per_epoch(self, config, train_groups) -> int:
    return pipeline.pairs_per_epoch(train_groups, config.data.pair_sampler) // config.batch_size

  def input_stream(self, config, faceset, train_groups):
    return pipeline.pair_dataset(faceset, train_groups, config.data,
                                 global_batch=config.batch_size, num_epochs=config.num_epochs,
                                 seed=config.seed)


METHOD = Barlow()
