"""Barlow Twins loss (Zbontar et al., 2021), written on the global batch.

Called inside a `jax.jit` whose inputs are sharded over the ('data',) mesh, `z_a` and
`z_b` are global arrays: the batch mean/variance and C = Z_A^T Z_B / N are reductions
over every device and host, inserted by XLA. That is what the paper's
`torch.distributed.all_reduce(c)` plus SyncBatchNorm compute, with no hand-written
collective to get wrong. Inside `shard_map` (the PowerSGD step, which needs each
device's own gradient) pass `axis_name` and the same reductions are made explicit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _batch_mean(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  m = jnp.mean(x, axis=0)
  return m if axis_name is None else jax.lax.pmean(m, axis_name)  # equal shards


def batch_normalize(z: jnp.ndarray, eps: float = 1e-5,
                    axis_name: str | None = None) -> jnp.ndarray:
  """Normalises every dimension along the batch (BatchNorm1d without affine, biased var)."""
  z = z.astype(jnp.float32)
  mean = _batch_mean(z, axis_name)
  var = _batch_mean(jnp.square(z - mean), axis_name)
  return (z - mean) * jnp.reciprocal(jnp.sqrt(var + eps))


def cross_correlation(z_a: jnp.ndarray, z_b: jnp.ndarray, eps: float = 1e-5,
                      axis_name: str | None = None) -> jnp.ndarray:
  """C = norm(Z_A)^T norm(Z_B) / N over the global batch, shape (D, D)."""
  c = batch_normalize(z_a, eps, axis_name).T @ batch_normalize(z_b, eps, axis_name)
  if axis_name is None:
    return c / z_a.shape[0]
  return jax.lax.psum(c, axis_name) / jax.lax.psum(z_a.shape[0], axis_name)


def barlow_twins_loss(z_a: jnp.ndarray, z_b: jnp.ndarray, lambd: float, eps: float = 1e-5,
                      axis_name: str | None = None
                      ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.

  Args:
    z_a: (N, D) projections of the first view (here: the masked image).
    z_b: (N, D) projections of the second view (the unmasked image of the same person).
    lambd: weight of the redundancy-reduction (off-diagonal) term; 0.0051 in the paper.
    eps: variance epsilon of the batch normalisation.
    axis_name: inside shard_map, the mesh axis the batch is split over; the statistics
      and C are then reduced over it explicitly (under plain jit leave it None).

  Returns:
    (loss, {'on_diag', 'off_diag'}) as float32 scalars.
  """
  c = cross_correlation(z_a, z_b, eps, axis_name)
  diag = jnp.diagonal(c)
  on_diag = jnp.sum(jnp.square(1.0 - diag))
  off_diag = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on_diag + lambd * off_diag, {"on_diag": on_diag, "off_diag": off_diag}
