"""Triplet loss on unmasked photos, K people x M photos per batch (with
config.data.upper_face: the upper half of the face only, occlusion removal)."""

from __future__ import annotations

from mfrjax.eval.embed import to_float
from mfrjax.losses import metric
from mfrjax.methods import _metric


class Triplet(_metric.MetricMethod):
  name = "triplet"
  views = ("unmasked",)

  def loss(self, params, batch_stats, batch, rng, step, *, model, config, steps_per_epoch,
           axis_name=None):
    emb, upd = model.apply({"params": params, "batch_stats": batch_stats},
                           to_float(batch["unmasked"]), train=True, mutable=["batch_stats"],
                           rngs={"dropout": rng})
    loss, parts = _metric.mined(
        lambda mode: metric.triplet_loss(emb, batch["label"], config.loss.margin, mode,
                                         axis_name=axis_name),
        step, config, steps_per_epoch)
    return loss, (upd["batch_stats"], parts)


METHOD = Triplet()
