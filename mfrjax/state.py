"""The train state and its creation, shapes first, directly into its shardings."""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mfrjax.parallel import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (and nothing that does not)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  comm: Any = ()  # gradient-reduction state (PowerSGD's Q and residuals), () for 'mean'


def init_state(rng: jax.Array, *, model, tx: optax.GradientTransformation,
               input_shape: tuple[int, ...], comm_init=None) -> TrainState:
  """Pure initialiser: jit-able and eval_shape-able.

  `comm_init(params, rng)`, if given, builds the gradient-reduction state.
  """
  variables = model.init({"params": rng, "dropout": rng}, jnp.zeros(input_shape, jnp.float32),
                         train=False)
  params = variables["params"]
  comm = () if comm_init is None else comm_init(params, jax.random.fold_in(rng, 1))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    comm=comm)


def state_shardings(abstract_state: TrainState, mesh: Mesh):
  """Data parallel: the state is replicated, except per-device PowerSGD residuals,
  whose leading axis is split over 'data' (each device keeps only its own)."""
  def rule(path, leaf):
    per_device = any(getattr(k, "name", None) == "residuals" for k in path) and leaf.ndim > 0
    return mesh_lib.batch_sharded(mesh) if per_device else mesh_lib.replicated(mesh)
  return jax.tree_util.tree_map_with_path(rule, abstract_state)


def create_train_state(rng: jax.Array, model, tx, input_shape, mesh: Mesh, comm_init=None):
  """Builds the state straight into its shardings (no full copy on one device first).

  Returns:
    (state, abstract_state, shardings)
  """
  init = functools.partial(init_state, model=model, tx=tx, input_shape=input_shape,
                           comm_init=comm_init)
  abstract = jax.eval_shape(init, rng)
  shardings = state_shardings(abstract, mesh)
  state = jax.jit(init, out_shardings=shardings)(rng)
  return state, abstract, shardings


def param_signature(params) -> list[str]:
  """'path: shape' for every parameter; two models restore each other iff these match."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [f"{jax.tree_util.keystr(p)}: {tuple(np.shape(v))}" for p, v in flat]


def count_params(params) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))
