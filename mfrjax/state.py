"""The train state and its creation, shapes first, directly into its shardings."""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mfrjax import salts
from mfrjax.parallel import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (and nothing that does not)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  reduce_state: Any = ()  # gradient-reduction state (PowerSGD's Q and residuals), () for 'mean'
  ema: Any = ()   # {'params', 'batch_stats'}: moving average of the weights, () if off


def init_state(rng: jax.Array, *, model, tx: optax.GradientTransformation,
               input_shape: tuple[int, ...], reduce_state_init=None,
               ema: bool = False) -> TrainState:
  """Pure initialiser: jit-able and eval_shape-able.

  `reduce_state_init(params, rng)`, if given, builds the gradient-reduction state; `ema` adds a
  moving average of params and batch statistics, starting at their initial values.
  """
  variables = model.init({"params": rng, "dropout": rng}, jnp.zeros(input_shape, jnp.float32),
                         train=False)
  params = variables["params"]
  reduce_state = () if reduce_state_init is None else reduce_state_init(params, jax.random.fold_in(
      rng, salts.REDUCTION_STATE))
  batch_stats = variables.get("batch_stats", {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), reduce_state=reduce_state,
                    ema={"params": params, "batch_stats": batch_stats} if ema else ())


def update_ema(ema, params, batch_stats, step: jax.Array, decay: float):
  """ema <- d * ema + (1 - d) * new, with d = min(decay, (1 + step) / (10 + step)).

  The warm-up of d keeps the average from being dominated by the random initial
  weights early on (as in TensorFlow's ExponentialMovingAverage with num_updates).
  """
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema,
                      {"params": params, "batch_stats": batch_stats})


CLASS_WEIGHT = "class_weight"  # the margin head's (D, C) matrix (models/heads.py)


def _names(path) -> list[str]:
  return [str(getattr(k, "name", getattr(k, "key", ""))) for k in path]


def state_shardings(abstract_state: TrainState, mesh: Mesh, shard_classes: bool = False):
  """Data parallel: the state is replicated, except per-device PowerSGD residuals,
  whose leading axis is split over 'data' (each device keeps only its own), and, with
  `shard_classes`, the margin head's class matrix - and its momentum and EMA, which
  share its path - split along the class axis (model-parallel FC)."""
  def rule(path, leaf):
    names = _names(path)
    if "residuals" in names and leaf.ndim > 0:
      return mesh_lib.batch_sharded(mesh)
    if shard_classes and CLASS_WEIGHT in names and leaf.ndim == 2:
      return NamedSharding(mesh, P(None, mesh_lib.DATA))
    return mesh_lib.replicated(mesh)
  return jax.tree_util.tree_map_with_path(rule, abstract_state)


def create_train_state(rng: jax.Array, model, tx, input_shape, mesh: Mesh, reduce_state_init=None,
                       ema: bool = False, shard_classes: bool = False):
  """Builds the state straight into its shardings (no full copy on one device first).

  Returns:
    (state, abstract_state, shardings)
  """
  init = functools.partial(init_state, model=model, tx=tx, input_shape=input_shape,
                           reduce_state_init=reduce_state_init, ema=ema)
  abstract = jax.eval_shape(init, rng)
  shardings = state_shardings(abstract, mesh, shard_classes)
  state = jax.jit(init, out_shardings=shardings)(rng)
  # The abstract state carries the shardings of *this* mesh, so a checkpoint saved on
  # another number of devices restores onto this one (elastic resume).
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return state, abstract, shardings


def param_signature(params) -> list[str]:
  """'path: shape' for every parameter; two models restore each other iff these match."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [f"{jax.tree_util.keystr(p)}: {tuple(np.shape(v))}" for p, v in flat]


def count_params(params) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))
