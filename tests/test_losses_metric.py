"""Triplet / quintuplet losses and mining against brute-force NumPy loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mfrjax.losses import metric
from mfrjax.parallel import mesh as mesh_lib


def np_dist(a, b):
  return np.array([[float(np.sum((x - y) ** 2)) for y in b] for x in a])


def np_mine(d_pos, d_neg, labels, a, p, margin, mode):
  """The chosen negative for (a, p): first index among equals; None if there is none."""
  best, best_d = None, np.inf
  for n in range(len(labels)):
    if labels[n] == labels[a]:
      continue
    gap = d_neg[a, n] - d_pos[a, p]
    if mode == "semihard" and not 0 < gap < margin:
      continue
    if d_neg[a, n] < best_d:
      best, best_d = n, d_neg[a, n]
  return best


def np_quintuplet(u, m, labels, margin, mode):
  d_uu, d_um = np_dist(u, u), np_dist(u, m)
  total, count, choices = 0.0, 0, {}
  for a in range(len(labels)):
    for p in range(len(labels)):
      if p == a or labels[p] != labels[a]:
        continue
      n = np_mine(d_uu, d_uu, labels, a, p, margin, mode)
      nm = np_mine(d_um, d_um, labels, a, p, margin, mode)
      if n is None or nm is None:
        continue
      choices[a, p] = (n, nm)
      total += max(d_uu[a, p] + d_um[a, p] - d_uu[a, n] - d_um[a, nm] + margin, 0.0)
      count += 1
  return total / max(count, 1), choices


def np_triplet(e, labels, margin, mode):
  d = np_dist(e, e)
  total, count, choices = 0.0, 0, {}
  for a in range(len(labels)):
    if mode == "batch_hard":
      pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
      negs = [n for n in range(len(labels)) if labels[n] != labels[a]]
      if not pos or not negs:
        continue
      p = max(pos, key=lambda j: (d[a, j], -j))   # farthest; first among equals
      n = min(negs, key=lambda j: (d[a, j], j))   # closest; first among equals
      choices[a] = (p, n)
      total += max(d[a, p] - d[a, n] + margin, 0.0)
      count += 1
      continue
    for p in range(len(labels)):
      if p == a or labels[p] != labels[a]:
        continue
      n = np_mine(d, d, labels, a, p, margin, mode)
      if n is None:
        continue
      choices[a, p] = n
      total += max(d[a, p] - d[a, n] + margin, 0.0)
      count += 1
  return total / max(count, 1), choices


def batch(seed, k=4, m=3, dim=8, grid=False):
  """K identities x M images; `grid` gives small-integer embeddings with many ties."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(rng.permutation(20)[:k], m).astype(np.int32)
  if grid:
    u = rng.integers(0, 2, (k * m, dim)).astype(np.float32) * 0.25
    v = rng.integers(0, 2, (k * m, dim)).astype(np.float32) * 0.25
  else:
    u = rng.normal(size=(k * m, dim)).astype(np.float32)
    v = u + 0.5 * rng.normal(size=u.shape).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
  return u, v, labels


def jax_choices_quint(ch, labels):
  valid = np.asarray(ch["valid"])
  return {(a, p): (int(ch["negative"][a, p]), int(ch["masked_negative"][a, p]))
          for a in range(len(labels)) for p in range(len(labels)) if valid[a, p]}


@pytest.mark.parametrize("mode", metric.MINING)
@pytest.mark.parametrize("seed,grid", [(0, False), (1, False), (2, True), (3, True)])
def test_quintuplet_matches_bruteforce(mode, seed, grid):
  u, v, labels = batch(seed, grid=grid)
  margin = 0.5 if grid else 0.2
  want, want_choices = np_quintuplet(u, v, labels, margin, mode)
  loss, parts, ch = metric.quintuplet_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(labels),
                                           margin, mode, return_choices=True)
  assert jax_choices_quint(ch, labels) == want_choices
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  n_pairs = sum(1 for a in range(len(labels)) for p in range(len(labels))
                if a != p and labels[a] == labels[p])
  assert float(parts["valid"]) == pytest.approx(len(want_choices) / n_pairs)


@pytest.mark.parametrize("mode", metric.TRIPLET_MINING)
@pytest.mark.parametrize("seed,grid", [(0, False), (1, False), (2, True), (3, True)])
def test_triplet_matches_bruteforce(mode, seed, grid):
  u, _, labels = batch(seed, k=5, m=2, grid=grid)
  margin = 0.5 if grid else 0.2
  want, want_choices = np_triplet(u, labels, margin, mode)
  loss, _, ch = metric.triplet_loss(jnp.asarray(u), jnp.asarray(labels), margin, mode,
                                    return_choices=True)
  valid = np.asarray(ch["valid"])
  if mode == "batch_hard":
    got = {a: (int(ch["positive"][a]), int(ch["negative"][a]))
           for a in range(len(labels)) if valid[a]}
  else:
    got = {(a, p): int(ch["negative"][a, p]) for a in range(len(labels))
           for p in range(len(labels)) if valid[a, p]}
  assert got == want_choices
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)


def test_grid_inputs_really_have_ties():
  u, _, labels = batch(2, grid=True)
  d = np_dist(u, u)
  off = d[~np.eye(len(d), dtype=bool)]
  assert len(np.unique(off)) < len(off) // 4


def test_no_semihard_negative_gives_zero_loss_and_no_nan_grad():
  # Two identities far apart: every negative is easy (beyond the margin) -> no semi-hard.
  e = np.array([[1, 0], [1, 0.01], [-1, 0], [-1, 0.01]], np.float32)
  labels = np.array([0, 0, 1, 1], np.int32)
  for fn in (lambda x: metric.triplet_loss(x, labels, 0.2, "semihard"),
             lambda x: metric.quintuplet_loss(x, x, labels, 0.2, "semihard")):
    (loss, parts), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(e))
    assert float(loss) == 0.0 and float(parts["valid"]) == 0.0
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad) == 0)
  # Hardest mining still finds a (zero-loss) negative for every pair.
  loss, parts = metric.triplet_loss(jnp.asarray(e), labels, 0.2, "hardest")
  assert float(loss) == 0.0 and float(parts["valid"]) == 1.0


def test_hand_computed_quintuplet():
  # One anchor pair (rows 0, 1 of identity 0), one negative identity (row 2).
  u = np.array([[0, 0], [1, 0], [0, 2]], np.float32)   # d(A,P)=1, d(A,N)=4
  m = np.array([[0, 0], [0, 1], [2, 0]], np.float32)   # d(A,P_m)=1, d(A,N_m)=4
  labels = np.array([0, 0, 1], np.int32)
  # Anchor 0 (P = row 1): 1 + 1 - 4 - 4 + 10 = 4.
  # Anchor 1 (P = row 0, P_m = m[0]): d(A,P)=1, d(A,P_m)=1, d(A,N)=5, d(A,N_m)=1
  # -> 1 + 1 - 5 - 1 + 10 = 6. Mean 5.
  loss, _ = metric.quintuplet_loss(jnp.asarray(u), jnp.asarray(m), labels, 10.0, "hardest")
  assert float(loss) == pytest.approx(5.0)


def test_unknown_mining_names_the_key():
  with pytest.raises(ValueError, match="mining"):
    metric.triplet_loss(jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32), 0.2, "hard")


@pytest.mark.parametrize("kind", ["quintuplet", "triplet"])
def test_gathered_mining_on_8_devices_equals_one_device(kind):
  mesh = mesh_lib.make_mesh()
  assert mesh.size == 8
  u, v, labels = batch(5, k=8, m=3)

  def loss(u, v, labels, axis_name=None):
    if kind == "quintuplet":
      return metric.quintuplet_loss(u, v, labels, 0.3, "semihard", axis_name=axis_name)[0]
    return metric.triplet_loss(u, labels, 0.3, "semihard", axis_name=axis_name)[0]

  want, want_grad = jax.value_and_grad(loss, argnums=(0, 1))(u, v, labels)
  local = functools.partial(loss, axis_name=mesh_lib.DATA)
  sharded = jax.shard_map(jax.value_and_grad(local, argnums=(0, 1)), mesh=mesh,
                          in_specs=(P(mesh_lib.DATA),) * 3,
                          out_specs=(P(), (P(mesh_lib.DATA), P(mesh_lib.DATA))))
  got, got_grad = jax.jit(sharded)(u, v, labels)
  assert float(want) > 0
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  for g, w in zip(got_grad, want_grad):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
