"""Embeds images with a trained backbone on the mesh (the only JAX part of evaluation)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mfrjax.data import pipeline
from mfrjax.parallel import mesh as mesh_lib


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]; the one place pixels are scaled."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def in_batches(fn, arrays: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
  """`fn(*arrays)` over fixed-size batches of rows: the last batch is padded by repeating
  its first row and the padding is cut from the outputs, so one compiled shape serves
  every call and no row is dropped or counted twice.

  Returns:
    the outputs of `fn` (one or a tuple) concatenated over the batches.
  """
  n, outs = len(arrays[0]), []
  for i in range(0, n, batch_size):
    parts = [a[i:i + batch_size] for a in arrays]
    k = len(parts[0])
    parts = [np.concatenate([p, np.repeat(p[:1], batch_size - k, 0)]) for p in parts]
    res = fn(*parts)
    outs.append([np.asarray(x)[:k] for x in (res if isinstance(res, tuple) else (res,))])
  return [np.concatenate(x) for x in zip(*outs)]


def embed_step(variables, images, *, model):
  return model.apply(variables, to_float(images), method=model.embed)


_STEPS: dict = {}


def _compiled_step(model, mesh):
  """One jitted embedding step per (model, mesh), so periodic evaluations during training
  reuse the compilation instead of tracing a new function each time."""
  key = (id(model), id(mesh))
  if key not in _STEPS:
    # The variables keep their placement (a class-sharded margin head stays split).
    _STEPS[key] = (model, mesh, jax.jit(functools.partial(embed_step, model=model),
                                        in_shardings=(None, mesh_lib.batch_sharded(mesh)),
                                        out_shardings=mesh_lib.replicated(mesh)))
  return _STEPS[key][2]


def embed_faceset(model, variables, faceset, indices: np.ndarray, data_cfg, seed: int,
                  batch_size: int, mesh) -> dict[str, np.ndarray]:
  """Embeds the unmasked and masked view of every image in `indices`.

  Every process feeds the same batches and gets the full embeddings back (the output is
  replicated), so any process can run the NumPy evaluator.

  Returns:
    {'unmasked': (N, D), 'masked': (N, D)} float32, row i = indices[i].
  """
  mesh_lib.check_batch_size(batch_size, mesh, "config.eval.batch_size")
  n_proc, pid = jax.process_count(), jax.process_index()
  local = batch_size // n_proc
  step = _compiled_step(model, mesh)
  out = {"unmasked": [], "masked": []}
  for batch in pipeline.eval_batches(faceset, indices, data_cfg, seed, batch_size):
    for view in out:
      x = mesh_lib.to_global({"x": batch[view][pid * local:(pid + 1) * local]}, mesh)["x"]
      out[view].append(np.asarray(step(variables, x))[batch["valid"]])
  return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in out.items()}
