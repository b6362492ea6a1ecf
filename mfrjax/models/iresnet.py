"""Face IResNets (insightface "arcface_torch" layout) with the masked-recognition paper's
changes: a focus-style stem unit, squeeze-excitation, and DropBlock.

Block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN [-> SE], plus a 1x1 conv +
BN shortcut when the shape changes; no activation after the sum. The standard stem is
a stride-1 3x3 conv (faces are already tightly cropped) and every stage halves the
resolution (112 -> 56 -> 28 -> 14 -> 7); the head is BN -> dropout -> flatten -> dense
-> BN to a 512-d embedding. Parameter counts match insightface: IResNet-50 ~43.6M,
IResNet-100 ~65.2M.

`stem='focus'` (seed Fig. 3) replaces the stem by two parallel branches, added:
  C1: 2x2/2 average pool -> conv k2 s2           -> BN -> PReLU
  C2: space-to-depth (even/odd rows and columns stacked on channels: 4x depth, half
      resolution) -> conv k3 s2 p1               -> BN -> PReLU
Both reduce the resolution by 4 (112 -> 28), so the first two stages keep theirs
(stride 1) and the last two halve it: the head sees the same 7x7 map as with the
standard stem, while stage 1 runs on 16x fewer pixels than its standard 56x56 - the
unit is a speed change as much as an accuracy one (mfrjax-bench-stem measures it).

`se=True` adds squeeze-excitation to every block's residual branch. `dropblock_rate > 0`
applies DropBlock (Ghiasi et al. 2018) after the convolution branch and on the skip
connection of every block in the last `dropblock_stages` stages, as the DropBlock paper
places it in ResNets; it drops contiguous squares in training and is the identity in
evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mfrjax.models.layers import PReLU, batch_norm

STEMS = ("standard", "focus")


def space_to_depth(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, H/2, W/2, 4C): the four even/odd row/column phases on channels
  (YOLOv5's Focus order: [even, even], [odd, even], [even, odd], [odd, odd])."""
  return jnp.concatenate([x[:, ::2, ::2], x[:, 1::2, ::2], x[:, ::2, 1::2], x[:, 1::2, 1::2]],
                         axis=-1)


class FocusStem(nn.Module):
  """The paper's stem unit (module docstring); output at 1/4 of the input resolution."""
  features: int
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    h, w = x.shape[1:3]
    if h % 4 or w % 4:
      raise ValueError(f"config.model.stem='focus' needs an image side divisible by 4, got "
                       f"{h}x{w}; change config.data.image_size")
    bn = batch_norm(train, self.dtype, self.axis_name)
    a = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    a = nn.Conv(self.features, (2, 2), 2, padding="VALID", use_bias=False, dtype=self.dtype)(a)
    a = PReLU()(bn()(a))
    b = nn.Conv(self.features, (3, 3), 2, padding=((1, 1), (1, 1)), use_bias=False,
                dtype=self.dtype)(space_to_depth(x))
    b = PReLU()(bn()(b))
    return a + b


class DropBlock(nn.Module):
  """Drops block_size x block_size squares of each feature map with total rate `rate`.

  Seeds are drawn with probability gamma = rate / block^2 * HW / ((H-block+1)(W-block+1))
  where a whole block fits (the paper's formula), grown into squares by a max-pool, and
  the kept activations are rescaled by (#elements / #kept), as for dropout.
  """
  rate: float
  block_size: int

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate <= 0:
      return x
    b, h, w, c = x.shape
    bs = min(self.block_size, h, w)
    gamma = self.rate / (bs * bs) * (h * w) / ((h - bs + 1) * (w - bs + 1))
    seeds = jax.random.bernoulli(self.make_rng("dropout"), gamma,
                                 (b, h - bs + 1, w - bs + 1, c)).astype(x.dtype)
    lo, hi = bs // 2, (bs - 1) // 2
    seeds = jnp.pad(seeds, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    # A seed at (i, j) drops the block whose centre it is; the block lies inside the map.
    dropped = nn.max_pool(seeds, (bs, bs), (1, 1), padding=((hi, lo), (hi, lo)))
    keep = 1.0 - dropped
    # Count in float32 (a bf16 sum of ~1e6 ones is off by ~0.4%), then scale in x's dtype
    # so that a bf16 network stays bf16 (a float32 factor would promote the activations).
    scale = keep.size / jnp.maximum(jnp.sum(keep, dtype=jnp.float32), 1.0)
    return x * keep * scale.astype(x.dtype)


class SqueezeExcite(nn.Module):
  """Channel re-weighting from globally pooled features (reduction `reduction`)."""
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(nn.Dense(max(1, c // self.reduction), dtype=self.dtype)(s))
    s = nn.sigmoid(nn.Dense(c, dtype=self.dtype)(s))
    return x * s


class IBasicBlock(nn.Module):
  filters: int
  strides: int
  dtype: Any
  axis_name: str | None = None
  se: bool = False
  dropblock_rate: float = 0.0
  dropblock_size: int = 3

  @nn.compact
  def __call__(self, x, train: bool):
    bn = batch_norm(train, self.dtype, self.axis_name)
    conv = lambda f, k, s: nn.Conv(f, k, s, use_bias=False, dtype=self.dtype)  # noqa: E731
    y = bn()(x)
    y = PReLU()(bn()(conv(self.filters, (3, 3), 1)(y)))
    y = bn()(conv(self.filters, (3, 3), self.strides)(y))
    if self.se:
      y = SqueezeExcite(dtype=self.dtype)(y)
    if x.shape != y.shape:
      x = bn()(conv(self.filters, (1, 1), self.strides)(x))
    if self.dropblock_rate > 0:
      y = DropBlock(self.dropblock_rate, self.dropblock_size)(y, train)
      x = DropBlock(self.dropblock_rate, self.dropblock_size)(x, train)
    return x + y


class IResNet(nn.Module):
  """IResNet backbone returning the (B, embed_dim) embedding (before any L2 norm)."""
  stage_sizes: Sequence[int]
  widths: Sequence[int] = (64, 128, 256, 512)
  embed_dim: int = 512
  dropout: float = 0.0
  stem: str = "standard"
  se: bool = False
  dropblock_rate: float = 0.0
  dropblock_size: int = 3
  dropblock_stages: int = 2    # DropBlock in this many last stages
  dtype: Any = jnp.float32
  axis_name: str | None = None  # BN statistics over this mesh axis (inside shard_map)

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = batch_norm(train, self.dtype, self.axis_name)
    if self.stem == "standard":
      x = nn.Conv(self.widths[0], (3, 3), 1, use_bias=False, dtype=self.dtype)(x)
      x = PReLU()(bn()(x))
      strides = (2, 2, 2, 2)
    elif self.stem == "focus":
      x = FocusStem(self.widths[0], self.dtype, self.axis_name)(x, train)
      strides = (1, 1, 2, 2)
    else:
      raise ValueError(f"unknown config.model.stem={self.stem!r}; valid: {STEMS}")
    n_stages = len(self.stage_sizes)
    for i, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
      rate = self.dropblock_rate if i >= n_stages - self.dropblock_stages else 0.0
      for j in range(n):
        x = IBasicBlock(w, strides[i] if j == 0 else 1, self.dtype, self.axis_name, self.se,
                        rate, self.dropblock_size)(x, train)
    x = bn()(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.embed_dim, dtype=self.dtype)(x)
    # insightface freezes this BN's scale at 1; we keep it learnable but init at 1.
    x = bn()(x)
    return x.astype(jnp.float32)
