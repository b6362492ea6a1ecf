"""Heads on top of a backbone: the Barlow Twins projector and the composed model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mfrjax.models.layers import batch_norm


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
