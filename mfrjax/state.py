"""The train state and its creation, shapes first, directly into its shardings."""

from __future__ import annotations

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


def init_state(rng: jax.Array, *, model, tx: optax.GradientTransformation,
               input_shape: tuple[int, ...]) -> TrainState:
  """Pure initialiser: jit-able and eval_shape-able."""
  variables = model.init({"params": rng, "dropout": rng}, jnp.zeros(input_shape, jnp.float32),
                         train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def state_shardings(abstract_state: TrainState, mesh: Mesh):
  """Data parallel: every leaf of the state is replicated."""
  return jax.tree.map(lambda _: mesh_lib.replicated(mesh), abstract_state)


def create_train_state(rng: jax.Array, model, tx, input_shape, mesh: Mesh):
  """Builds the state straight into its shardings (no full copy on one device first).

  Returns:
    (state, abstract_state, shardings)
  """
  init = jax.tree_util.Partial(init_state, model=model, tx=tx, input_shape=input_shape)
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
