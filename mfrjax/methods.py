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
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mfrjax.eval.embed import to_float
from mfrjax.losses import barlow, metric
from mfrjax.models import get_backbone
from mfrjax.models.heads import EmbedAndProject, Embedder, EmbeddingHead, Projector


class Method(NamedTuple):
  build_model: Callable[..., Any]   # (model_cfg, axis_name) -> flax module
  loss_fn: Callable[..., Any]       # see module docstring
  stream: str                       # "pairs" or "identities" (data/pipeline.py)
  views: tuple[str, ...]            # views each training row loads


def build_barlow(model_cfg, axis_name: str | None = None) -> EmbedAndProject:
  """Backbone + projector; `axis_name` for use inside shard_map (PowerSGD)."""
  backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name)
  return EmbedAndProject(backbone, Projector(tuple(model_cfg.projector_dims),
                                             dtype=backbone.dtype, axis_name=axis_name))


def build_embedder(model_cfg, axis_name: str | None = None) -> Embedder:
  """A ResNet whose pooling is replaced by the seed's head (Dropout, GAP, Dense, BN)."""
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


METHODS = {
    "barlow": Method(build_barlow, barlow_loss, "pairs", ("masked", "unmasked")),
    "quintuplet": Method(build_embedder, quintuplet_loss, "identities", ("unmasked", "masked")),
    "triplet": Method(build_embedder, triplet_loss, "identities", ("unmasked",)),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown config.method={name!r}; valid: {sorted(METHODS)}")
  return METHODS[name]
