"""The ('data',) mesh over every device of every process, and batch placement.

Data parallelism here is `jax.jit` with shardings: parameters are replicated, the batch
is split along its first axis over all devices of all hosts, and XLA inserts the
gradient all-reduce and the cross-device reductions of BatchNorm and the losses.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def check_batch_size(global_batch: int, mesh: Mesh, key: str = "config.batch_size") -> None:
  """A global batch every device gets an equal, non-empty share of; errors name `key`."""
  if global_batch <= 0:
    raise ValueError(f"{key}={global_batch} must be positive")
  if global_batch % mesh.size:
    raise ValueError(f"{key}={global_batch} must divide by the {mesh.size} devices of the mesh")


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's share of a batch into global arrays sharded over 'data'."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class DevicePrefetcher:
  """Keeps `size` batches on the devices ahead of the step, with their data states.

  The grain iterator's state after batch k is remembered with batch k, so `state()`
  gives the position just after the last batch *consumed* by training, not after the
  ones sitting in the prefetch queue: a checkpoint then resumes at the right example.
  Exposes get_state/set_state/start_prefetch, as the grain orbax handler expects
  (bytes, like grain's DataLoader iterators).
  """

  def __init__(self, iterator, mesh: Mesh, size: int = 2):
    self._it, self._mesh, self._size = iterator, mesh, size
    self._queue: collections.deque = collections.deque()
    self._consumed_state = iterator.get_state()

  def _fill(self) -> None:
    while len(self._queue) < self._size:
      try:
        batch = next(self._it)
      except StopIteration:
        return
      self._queue.append((to_global(batch, self._mesh), self._it.get_state()))

  def __iter__(self) -> Iterator:
    return self

  def __next__(self):
    self._fill()
    if not self._queue:
      raise StopIteration
    batch, self._consumed_state = self._queue.popleft()
    self._fill()
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._consumed_state).encode()

  def set_state(self, state: bytes) -> None:
    self._queue.clear()
    self._consumed_state = json.loads(state.decode())
    self._it.set_state(self._consumed_state)

  def start_prefetch(self) -> None:
    """Called by grain's handler after restore; the queue refills on the next `next()`."""
