"""What the two metric-learning methods (quintuplet.py, triplet.py) share: a ResNet with
the embedding head, identity batches (K people x M images), and the switch of mining
mode at config.loss.switch_epoch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mfrjax.data import pipeline
from mfrjax.methods import base
from mfrjax.models import get_backbone
from mfrjax.models.heads import Embedder, EmbeddingHead


def mining_at(step, config, steps_per_epoch: int):
  """True once `config.loss.later_mining` takes over (from `switch_epoch` on)."""
  switch = config.loss.switch_epoch
  if switch < 0:
    return jnp.asarray(False)
  return step >= switch * steps_per_epoch


def mined(loss_of, step, config, steps_per_epoch):
  """The loss under the mining mode of this step (both are computed; the step picks)."""
  first = loss_of(config.loss.mining)
  if config.loss.later_mining == config.loss.mining or config.loss.switch_epoch < 0:
    return first[0], {**first[1], "hardest_phase": jnp.asarray(0.0)}
  later = loss_of(config.loss.later_mining)
  use_later = mining_at(step, config, steps_per_epoch)
  loss, parts = jax.tree.map(lambda a, b: jnp.where(use_later, b, a), first, later)
  return loss, {**parts, "hardest_phase": use_later.astype(jnp.float32)}


class MetricMethod(base.EmbeddingMethod):
  """Identity batches, a ResNet with the embedding head, mining by config.loss."""

  def check(self, config, mesh) -> None:
    m = config.data.batch_images_per_person
    if config.batch_size % (mesh.size * m):
      raise ValueError(f"config.batch_size={config.batch_size} must divide by {mesh.size} "
                       f"devices x config.data.batch_images_per_person={m}, so that every device "
                       "holds whole people")

  def build_model(self, model_cfg, axis_name=None, num_classes=0) -> Embedder:
    """A ResNet whose pooling is replaced by the paper's head (Dropout, GAP, Dense, BN)."""
    del num_classes
    if not model_cfg.backbone.startswith("resnet"):
      raise ValueError(f"config.model.backbone={model_cfg.backbone!r}: metric methods put "
                       "their head on a ResNet's last feature map; use a resnet* backbone")
    backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name,
                            pool=False)
    return Embedder(backbone, EmbeddingHead(model_cfg.embed_dim, model_cfg.dropout,
                                            model_cfg.normalize, dtype=backbone.dtype,
                                            axis_name=axis_name))

  def loss_kwargs(self, config, *, steps_per_epoch, num_classes, mesh=None) -> dict:
    del config, num_classes, mesh
    return {"steps_per_epoch": steps_per_epoch}

  def steps_per_epoch(self, config, train_groups) -> int:
    return pipeline.identity_batches_per_epoch(train_groups, config.data, config.batch_size)

  def input_stream(self, config, faceset, train_groups):
    return pipeline.identity_dataset(faceset, train_groups, config.data,
                                     global_batch=config.batch_size,
                                     num_epochs=config.num_epochs, seed=config.seed,
                                     views=self.views)
