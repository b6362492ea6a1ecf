"""Heads on top of a backbone: the Barlow Twins projector, the metric-learning
embedding head, and the composed models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mfrjax.models.layers import batch_norm, l2_normalize


class Projector(nn.Module):
  """Barlow Twins projector: (Dense -> BN -> ReLU) x (len(dims) - 1) -> Dense (no bias)."""
  dims: Sequence[int]
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    for d in self.dims[:-1]:
      x = nn.Dense(d, use_bias=False, dtype=self.dtype)(x)
      x = nn.relu(batch_norm(train, self.dtype, self.axis_name)()(x))
    return nn.Dense(self.dims[-1], use_bias=False, dtype=self.dtype)(x).astype(jnp.float32)


class EmbedAndProject(nn.Module):
  """Backbone + projector. Returns (embedding, projection).

  The embedding (backbone output) is what the evaluator uses; the projection feeds the
  self-supervised loss only, as in the Barlow Twins paper.
  """
  backbone: nn.Module
  projector: nn.Module

  def __call__(self, x, train: bool = False):
    e = self.backbone(x, train=train)
    return e, self.projector(e, train=train)

  def embed(self, x):
    return self.backbone(x, train=False)


class EmbeddingHead(nn.Module):
  """The quintuplet paper's head on the last feature map: Dropout -> global average
  pool -> Dense(dim) -> BatchNorm, then L2 normalisation (see losses/metric.py for why)."""
  dim: int
  dropout: float
  normalize: bool = True
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.dim, dtype=self.dtype)(x)
    x = batch_norm(train, self.dtype, self.axis_name)()(x).astype(jnp.float32)
    if self.normalize:
      x = l2_normalize(x)
    return x


class Embedder(nn.Module):
  """Backbone (unpooled) + embedding head. Returns the embedding, in training and in
  evaluation alike: metric losses act on the very vectors the evaluator compares."""
  backbone: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = False):
    return self.head(self.backbone(x, train=train), train=train)

  def embed(self, x):
    return self(x, train=False)


class MarginModel(nn.Module):
  """An IResNet embedder plus the class-centre matrix of a margin head (ArcFace/CosFace).

  Returns (embedding, class_weight): the loss (losses/margin.py) needs the raw (D, C)
  matrix, which train.py may shard over devices along C (model-parallel FC); applying
  it here would force every device to hold all of it. `embed` is what the evaluator
  uses: the class centres are not part of the face descriptor.
  """
  backbone: nn.Module
  num_columns: int     # classes, padded (losses/margin.padded_classes)
  embed_dim: int

  def setup(self):
    # insightface's initialisation of the FC centres.
    self.class_weight = self.param("class_weight", nn.initializers.normal(0.01),
                                   (self.embed_dim, self.num_columns), jnp.float32)

  def __call__(self, x, train: bool = False):
    return self.backbone(x, train=train), self.class_weight

  def embed(self, x):
    return self.backbone(x, train=False)
