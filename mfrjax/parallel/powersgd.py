"""PowerSGD low-rank gradient all-reduce (Vogels, Karimireddy & Jaggi, NeurIPS 2019).

Runs inside `shard_map` over the 'data' axis, on each device's own gradient. For every
parameter worth compressing, viewed as a matrix M (n x m):

    M <- M + e                       error feedback: last step's residual
    P  = M Q;      P <- mean(P)      all-reduce n*r numbers instead of n*m
    P <- orthonormalise(P)           Gram-Schmidt, eps for rank-deficient columns
    Q  = M^T P;    Q <- mean(Q)      all-reduce m*r numbers
    M_hat = P Q^T;  e <- M - M_hat   (e is kept per device)

Q is reused by the next step (warm start), so one power iteration per step tracks the
top singular subspace of the gradient over time. Every other parameter (vectors, small
matrices) is all-reduced uncompressed, all of them together in one flat buffer.

Matrix view: Flax kernels are HWIO (conv) or (in, out) (dense). We use
M = kernel.reshape(-1, out), i.e. rows = kernel size x input channels, columns = output
channels. This is the transpose of PyTorch's (out, in x kh x kw) view: the rank and the
compression are identical (P and Q swap roles), and for a C-ordered HWIO array the
reshape is free, where PyTorch's order would need a transposed copy on every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

BYTES = 4  # float32 on the wire


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which leaves are compressed, at what rank; fixed by the parameter shapes."""
  compressed: tuple[bool, ...]   # per leaf (tree_flatten order)
  ranks: tuple[int, ...]         # per leaf, 0 when not compressed
  shapes: tuple[tuple[int, ...], ...]
  treedef: Any

  def matrix_shape(self, i: int) -> tuple[int, int]:
    return matrix_shape(self.shapes[i])

  @property
  def uncompressed_bytes(self) -> int:
    """Bytes a device sends per step with a plain all-reduce (every gradient entry)."""
    return BYTES * sum(int(np.prod(s)) for s in self.shapes)

  @property
  def compressed_bytes(self) -> int:
    """Bytes a device sends per step with PowerSGD: P and Q, plus the uncompressed rest."""
    total = 0
    for c, r, s in zip(self.compressed, self.ranks, self.shapes):
      if c:
        n, m = matrix_shape(s)
        total += r * (n + m)
      else:
        total += int(np.prod(s))
    return BYTES * total


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """(n, m) of the matrix view: (prod of all but the last axis, last axis)."""
  return int(np.prod(shape[:-1])), int(shape[-1])


def make_plan(params, rank: int, min_compression_rate: float) -> Plan:
  """Decides per leaf: compress a >=2-D leaf iff n*m / (r*(n+m)) >= min_compression_rate.

  The rank is clipped to min(n, m): a higher rank cannot represent more.
  """
  leaves, treedef = jax.tree.flatten(params)
  compressed, ranks, shapes = [], [], []
  for x in leaves:
    shape = tuple(x.shape)
    ok = False
    r = 0
    if len(shape) >= 2:
      n, m = matrix_shape(shape)
      r = min(rank, n, m)
      ok = n * m / (r * (n + m)) >= min_compression_rate
    compressed.append(ok)
    ranks.append(r if ok else 0)
    shapes.append(shape)
  return Plan(tuple(compressed), tuple(ranks), tuple(shapes), treedef)


@flax.struct.dataclass
class PowerSGDState:
  """Q of every compressed leaf (replicated) and the per-device residuals.

  `residuals` has a leading device axis (num_devices, *shape) and is sharded over
  'data', so each device keeps its own; inside shard_map a device sees (1, *shape).
  Uncompressed leaves keep a () placeholder to keep the tree simple.
  """
  qs: tuple
  residuals: tuple


def init_state(plan: Plan, num_devices: int, rng: jax.Array) -> PowerSGDState:
  qs, res = [], []
  keys = jax.random.split(rng, len(plan.shapes))
  for c, r, s, k in zip(plan.compressed, plan.ranks, plan.shapes, keys):
    if c:
      n, m = matrix_shape(s)
      qs.append(jax.random.normal(k, (m, r), jnp.float32))
      res.append(jnp.zeros((num_devices, *s), jnp.float32))
    else:
      qs.append(jnp.zeros((), jnp.float32))
      res.append(jnp.zeros((), jnp.float32))
  return PowerSGDState(tuple(qs), tuple(res))


def orthonormalize(p: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Gram-Schmidt on the columns of p (n, r), as a loop over columns (not unrolled).

  Each column is orthogonalised against the earlier ones twice (classical Gram-Schmidt
  with re-orthogonalisation, as stable as modified Gram-Schmidt). A column that is
  (numerically) in the span of the earlier ones comes out as ~0 rather than as noise
  blown up by a division: the norm gets `eps` added.
  """
  r = p.shape[1]

  def body(i, q):
    earlier = (jnp.arange(r) < i).astype(q.dtype)
    v = q[:, i]
    for _ in range(2):
      v = v - q @ (earlier * (q.T @ v))
    return q.at[:, i].set(v / (jnp.linalg.norm(v) + eps))

  return jax.lax.fori_loop(0, r, body, p.astype(jnp.float32))


def _mean_batched(xs: list[jax.Array], axis_name: str) -> list[jax.Array]:
  """Mean all-reduce of several arrays as one flat buffer: one collective, not len(xs)."""
  if not xs:
    return []
  flat = jax.lax.pmean(jnp.concatenate([x.reshape(-1).astype(jnp.float32) for x in xs]),
                       axis_name)
  out, offset = [], 0
  for x in xs:
    out.append(flat[offset:offset + x.size].reshape(x.shape).astype(x.dtype))
    offset += x.size
  return out


def reduce_mean(grads, axis_name: str):
  """Plain all-reduce (mean) of every leaf, in one flat buffer."""
  leaves, treedef = jax.tree.flatten(grads)
  return jax.tree.unflatten(treedef, _mean_batched(leaves, axis_name))


def reduce(grads, state: PowerSGDState, plan: Plan, axis_name: str, *, error_feedback: bool,
           warm_start: bool, rng: jax.Array) -> tuple[Any, PowerSGDState]:
  """PowerSGD all-reduce of this device's `grads` (call inside shard_map).

  Args:
    grads: this device's gradient pytree (same structure as the params).
    state: Q matrices (replicated) and this device's residuals (leading axis of size 1).
    plan: from make_plan.
    axis_name: the mesh axis to reduce over.
    error_feedback: add last step's residual and keep the new one.
    warm_start: reuse Q from the previous step; else draw a fresh Q from `rng`.
    rng: used only without warm start (must be the same on every device).

  Returns:
    (mean gradient estimate, same on every device; new state)
  """
  leaves = jax.tree.leaves(grads)
  out = [None] * len(leaves)
  new_q, new_res = list(state.qs), list(state.residuals)
  plain = [i for i, c in enumerate(plan.compressed) if not c]
  for i, x in zip(plain, _mean_batched([leaves[i] for i in plain], axis_name)):
    out[i] = x
  comp = [i for i, c in enumerate(plan.compressed) if c]
  keys = jax.random.split(rng, len(leaves))
  mats = {}
  for i in comp:
    m_mat = leaves[i].astype(jnp.float32).reshape(plan.matrix_shape(i))
    if error_feedback:
      m_mat = m_mat + state.residuals[i][0].reshape(m_mat.shape)
    mats[i] = m_mat
  qs = {i: state.qs[i] if warm_start else jax.random.normal(keys[i], state.qs[i].shape)
        for i in comp}
  # All P's in one all-reduce, then all Q's in another (PyTorch's hook does the same).
  ps = _mean_batched([mats[i] @ qs[i] for i in comp], axis_name)
  ps = [orthonormalize(p) for p in ps]
  qs_new = _mean_batched([mats[i].T @ p for i, p in zip(comp, ps)], axis_name)
  for i, p, q in zip(comp, ps, qs_new):
    approx = p @ q.T
    out[i] = approx.reshape(leaves[i].shape).astype(leaves[i].dtype)
    new_q[i] = q
    if error_feedback:
      new_res[i] = (mats[i] - approx).reshape((1, *leaves[i].shape))
  return jax.tree.unflatten(plan.treedef, out), PowerSGDState(tuple(new_q), tuple(new_res))
