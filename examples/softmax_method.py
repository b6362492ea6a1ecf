"""A method outside mfrjax: a softmax classifier over the training people, whose pooled
backbone features are the face embedding (the plain baseline margin heads improve on).

One module defining METHOD, found by its import path: config.method = "softmax_method"
with this folder on PYTHONPATH (README: Adding a method).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mfrjax import methods
from mfrjax.data import pipeline
from mfrjax.eval.embed import to_float
from mfrjax.models import get_backbone


class Classifier(nn.Module):
  backbone: nn.Module
  num_classes: int

  def setup(self):
    self.head = nn.Dense(self.num_classes)

  def __call__(self, x, train: bool = False):
    return self.head(self.backbone(x, train=train))

  def embed(self, x):  # what the evaluator, the Embedder and the export call
    return self.backbone(x, train=False)


class Softmax(methods.EmbeddingMethod):
  name = "softmax"
  views = ("image",)  # one labelled image per row (pipeline.labelled_dataset)

  def build_model(self, model_cfg, axis_name=None, num_classes=0):
    backbone = get_backbone(model_cfg.backbone, dtype=model_cfg.dtype, axis_name=axis_name)
    return Classifier(backbone, num_classes)

  def loss(self, params, batch_stats, batch, rng, step, *, model, config, axis_name=None):
    logits, upd = model.apply({"params": params, "batch_stats": batch_stats},
                              to_float(batch["image"]), train=True, mutable=["batch_stats"],
                              rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    if axis_name is not None:  # per-device rows inside shard_map (grad_reduce='powersgd')
      loss, accuracy = jax.lax.pmean((loss, accuracy), axis_name)
    return loss, (upd["batch_stats"], {"accuracy": accuracy})

  def steps_per_epoch(self, config, train_groups):
    return sum(map(len, train_groups)) // config.batch_size

  def input_stream(self, config, faceset, train_groups):
    return pipeline.labelled_dataset(faceset, train_groups, config.data,
                                     global_batch=config.batch_size,
                                     num_epochs=config.num_epochs, seed=config.seed)


METHOD = Softmax()
