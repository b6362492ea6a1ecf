"""Quintuplet loss: K people x M photos, each unmasked and as its masked copy, one
forward pass with a shared BatchNorm batch (losses/metric.py)."""

from __future__ import annotations

import jax.numpy as jnp

from mfrjax.eval.embed import to_float
from mfrjax.losses import metric
from mfrjax.methods import _metric


class Quintuplet(_metric.MetricMethod):
  name = "quintuplet"
  views = ("unmasked", "masked")

  def loss(self, params, batch_stats, batch, rng, step, *, model, config, steps_per_epoch,
           axis_name=None):
    n = batch["unmasked"].shape[0]
    x = jnp.concatenate([batch["unmasked"], batch["masked"]])
    emb, upd = model.apply({"params": params, "batch_stats": batch_stats}, to_float(x),
                           train=True, mutable=["batch_stats"], rngs={"dropout": rng})
    u, m = emb[:n], emb[n:]
    loss, parts = _metric.mined(
        lambda mode: metric.quintuplet_loss(u, m, batch["label"], config.loss.margin, mode,
                                            axis_name=axis_name),
        step, config, steps_per_epoch)
    return loss, (upd["batch_stats"], parts)


METHOD = Quintuplet()
