"""Small layers shared by the backbones."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / |x| along `axis`; the one L2 normalisation of the JAX code (embedding heads, the
  margin losses, the identity loss, the exported model). eps on |x|^2 keeps a zero
  vector finite."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-12))


class PReLU(nn.Module):
  """Per-channel PReLU (as torch.nn.PReLU(num_channels), used by face IResNets)."""
  init: float = 0.25

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.constant(self.init), (x.shape[-1],))
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def batch_norm(train: bool, dtype, axis_name: str | None = None, **kw):
  """BatchNorm with the PyTorch defaults (momentum 0.9 here = 0.1 there, eps 1e-5).

  Under `jax.jit` with the batch sharded over devices, the batch mean and variance are
  reductions over the *global* batch, so this is synchronised BN with no extra code.
  Inside `shard_map` (PowerSGD's step) each device sees its shard only, and
  `axis_name='data'` makes the statistics global again with an explicit pmean.
  """
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=dtype, axis_name=axis_name if train else None,
                           **kw)
