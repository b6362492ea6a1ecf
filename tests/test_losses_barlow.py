"""Barlow Twins loss against a NumPy reference, by hand, and on 8 devices vs 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mfrjax.losses import barlow
from mfrjax.parallel import mesh as mesh_lib


def numpy_barlow(za, zb, lambd, eps=1e-5):
  za = (za - za.mean(0)) / np.sqrt(za.var(0) + eps)
  zb = (zb - zb.mean(0)) / np.sqrt(zb.var(0) + eps)
  c = za.T @ zb / len(za)
  on = sum((1 - c[i, i]) ** 2 for i in range(c.shape[0]))
  off = sum(c[i, j] ** 2 for i in range(c.shape[0]) for j in range(c.shape[1]) if i != j)
  return on + lambd * off


@pytest.mark.parametrize("n,d,lambd", [(16, 8, 0.0051), (64, 5, 0.5), (7, 12, 1.0)])
def test_matches_numpy_reference(n, d, lambd):
  rng = np.random.default_rng(n * d)
  za, zb = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 3 + 1
  loss, _ = barlow.barlow_twins_loss(jnp.asarray(za), jnp.asarray(zb), lambd)
  np.testing.assert_allclose(float(loss), numpy_barlow(za, zb, lambd), rtol=1e-4)


def test_hand_computed_values():
  # Identical views whose two dimensions are uncorrelated: C = I, the loss is zero.
  z = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
  loss, parts = barlow.barlow_twins_loss(z, z, 0.5, eps=0.0)
  assert float(loss) == pytest.approx(0.0, abs=1e-6)
  # Second view = first with dimensions swapped: C = [[0, 1], [1, 0]].
  # on-diagonal: 2 * (1 - 0)^2 = 2; off-diagonal: 1 + 1 = 2; L = 2 + 0.5 * 2 = 3.
  loss, parts = barlow.barlow_twins_loss(z, z[:, ::-1], 0.5, eps=0.0)
  assert float(parts["on_diag"]) == pytest.approx(2.0, abs=1e-6)
  assert float(parts["off_diag"]) == pytest.approx(2.0, abs=1e-6)
  assert float(loss) == pytest.approx(3.0, abs=1e-6)


def test_global_batch_on_8_devices_equals_1_device():
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  za, zb = rng.normal(size=(32, 6)).astype(np.float32), rng.normal(size=(32, 6)).astype(np.float32)

  def loss_and_grad(devices):
    mesh = mesh_lib.make_mesh(devices)
    s = NamedSharding(mesh, P(mesh_lib.DATA))
    f = jax.jit(jax.value_and_grad(lambda a, b: barlow.barlow_twins_loss(a, b, 0.0051)[0]),
                in_shardings=(s, s))
    return f(jax.device_put(za, s), jax.device_put(zb, s))

  l8, g8 = loss_and_grad(jax.devices())
  l1, g1 = loss_and_grad(jax.devices()[:1])
  np.testing.assert_allclose(float(l8), float(l1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), rtol=1e-5, atol=1e-7)
  # And a per-device loss (what a naive shard-local implementation computes) differs.
  local = np.mean([numpy_barlow(za[i:i + 4], zb[i:i + 4], 0.0051) for i in range(0, 32, 4)])
  assert abs(local - float(l8)) > 1.0
