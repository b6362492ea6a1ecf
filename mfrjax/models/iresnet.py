"""Face IResNets (insightface "arcface_torch" layout): IResNet-18/34/50/100 and a tiny one.

Block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus a 1x1 conv + BN
shortcut when the shape changes; no activation after the sum. The stem is a stride-1
3x3 conv (faces are already tightly cropped), every stage halves the resolution
(112 -> 7), and the head is BN -> dropout -> flatten -> dense -> BN to a 512-d
embedding. Parameter counts match insightface: IResNet-50 ~43.6M, IResNet-100 ~65.2M.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mfrjax.models.layers import PReLU, batch_norm


class IBasicBlock(nn.Module):
  filters: int
  strides: int
  dtype: Any
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = batch_norm(train, self.dtype, self.axis_name)
    conv = lambda f, k, s: nn.Conv(f, k, s, use_bias=False, dtype=self.dtype)  # noqa: E731
    y = bn()(x)
    y = PReLU()(bn()(conv(self.filters, (3, 3), 1)(y)))
    y = bn()(conv(self.filters, (3, 3), self.strides)(y))
    if x.shape != y.shape:
      x = bn()(conv(self.filters, (1, 1), self.strides)(x))
    return x + y


class IResNet(nn.Module):
  """IResNet backbone returning the (B, embed_dim) embedding (before any L2 norm)."""
  stage_sizes: Sequence[int]
  widths: Sequence[int] = (64, 128, 256, 512)
  embed_dim: int = 512
  dropout: float = 0.0
  dtype: Any = jnp.float32
  axis_name: str | None = None  # BN statistics over this mesh axis (inside shard_map)

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = batch_norm(train, self.dtype, self.axis_name)
    x = nn.Conv(self.widths[0], (3, 3), 1, use_bias=False, dtype=self.dtype)(x)
    x = PReLU()(bn()(x))
    for n, w in zip(self.stage_sizes, self.widths):
      for j in range(n):
        x = IBasicBlock(w, 2 if j == 0 else 1, self.dtype, self.axis_name)(x, train)
    x = bn()(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.embed_dim, dtype=self.dtype)(x)
    # insightface freezes this BN's scale at 1; we keep it learnable but init at 1.
    x = bn()(x)
    return x.astype(jnp.float32)
