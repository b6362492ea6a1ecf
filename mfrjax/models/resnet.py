"""ResNet-18/34/50 (torchvision layout) and a tiny variant, for face crops.

`stem='imagenet'` is torchvision's 7x7/2 conv + 3x3/2 max-pool; `stem='face'` is a 3x3/1
conv, which keeps resolution for small inputs (the tiny CPU model uses it).
The output is the globally pooled feature vector (512 or 2048 wide), or with
`pool=False` the last feature map, for heads that act before pooling (models/heads.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mfrjax.models.layers import batch_norm

_conv = lambda *a, **k: nn.Conv(*a, use_bias=False, **k)  # noqa: E731


class BasicBlock(nn.Module):
  filters: int
  strides: int
  dtype: Any
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = batch_norm(train, self.dtype, self.axis_name)
    y = _conv(self.filters, (3, 3), self.strides, dtype=self.dtype)(x)
    y = nn.relu(bn()(y))
    y = _conv(self.filters, (3, 3), dtype=self.dtype)(y)
    y = bn(scale_init=nn.initializers.zeros)(y)  # zero-init last BN: blocks start as identity
    if x.shape != y.shape:
      x = bn()(_conv(self.filters, (1, 1), self.strides, dtype=self.dtype)(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """torchvision v1.5 bottleneck: the stride sits on the 3x3 conv."""
  filters: int
  strides: int
  dtype: Any
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = batch_norm(train, self.dtype, self.axis_name)
    y = nn.relu(bn()(_conv(self.filters, (1, 1), dtype=self.dtype)(x)))
    y = nn.relu(bn()(_conv(self.filters, (3, 3), self.strides, dtype=self.dtype)(y)))
    y = _conv(self.filters * 4, (1, 1), dtype=self.dtype)(y)
    y = bn(scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = bn()(_conv(self.filters * 4, (1, 1), self.strides, dtype=self.dtype)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet backbone: returns pooled features (B, widths[-1] * expansion)."""
  stage_sizes: Sequence[int]
  block: str = "basic"
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = "imagenet"
  dtype: Any = jnp.float32
  axis_name: str | None = None  # BN statistics over this mesh axis (inside shard_map)
  pool: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = batch_norm(train, self.dtype, self.axis_name)
    if self.stem == "imagenet":
      x = nn.relu(bn()(_conv(self.widths[0], (7, 7), 2, padding=3, dtype=self.dtype)(x)))
      x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "face":
      x = nn.relu(bn()(_conv(self.widths[0], (3, 3), 1, dtype=self.dtype)(x)))
    else:
      raise ValueError(f"unknown ResNet stem {self.stem!r}; valid: 'imagenet', 'face'")
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    for i, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(n):
        x = block(w, 2 if (i > 0 and j == 0) else 1, self.dtype, self.axis_name)(x, train)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32) if self.pool else x
