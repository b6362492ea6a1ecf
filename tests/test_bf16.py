"""bf16 mixed precision: float32 weights and statistics, bf16 compute, float32 loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfrjax import methods, recognition
from mfrjax.models.iresnet import DropBlock, IBasicBlock
from mfrjax.parallel import mesh as mesh_lib
from tests.conftest import load_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def _model_cfg(name, variant="smoke", **overrides):
  cfg = load_config(name, variant, **overrides)
  return cfg, methods.get(cfg.method)


def _build(name, dtype, **overrides):
  cfg, method = _model_cfg(name, **{"model.dtype": dtype, **overrides})
  return cfg, method.build_model(cfg.model, num_classes=10)


def _images(n=4, size=16, channels=1):
  return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (n, size, size, channels)),
                     jnp.float32)


def _init(model, x):
  return jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x)


def _cosines(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", ["margin", "barlow", "quintuplet"])
def test_bf16_forward_matches_float32_on_the_same_weights(name):
  """The same float32 weights applied in bf16 give (nearly) the same embeddings."""
  _, m32 = _build(name, "float32")
  _, m16 = _build(name, "bfloat16")
  x = _images()
  v = _init(m32, x)
  # One random training step's worth of BN statistics, so evaluation is not trivial.
  _, upd = jax.jit(lambda v, x: m32.apply(v, x, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.key(1)}))(v, x)
  v = {**v, **upd}
  e32 = jax.jit(lambda v, x: m32.apply(v, x, method=m32.embed))(v, x)
  e16 = jax.jit(lambda v, x: m16.apply(v, x, method=m16.embed))(v, x)
  assert e16.dtype == jnp.float32, "embeddings leave the model in float32"
  cos = _cosines(e32, e16)
  assert cos.min() > 0.995, cos
  assert not np.allclose(np.asarray(e32), np.asarray(e16), atol=1e-6), \
      "bf16 and float32 gave identical numbers: the bf16 path did not run"


def test_bf16_keeps_float32_weights_and_statistics():
  _, m16 = _build("margin", "bfloat16")
  v = _init(m16, _images())
  dtypes = {x.dtype for x in jax.tree.leaves(v)}
  assert dtypes == {jnp.dtype(jnp.float32)}, dtypes


def test_bf16_activations_stay_bf16_through_every_block():
  """Every residual block (SE and DropBlock on) hands bf16 on: nothing promotes the
  activations back to float32 (a float32 constant times a bf16 array would)."""
  _, m16 = _build("margin", "bfloat16", **{"model.dropblock.rate": 0.3})
  x = _images()
  v = _init(m16, x)
  _, state = jax.jit(lambda v, x: m16.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda mdl, _: isinstance(mdl, IBasicBlock),
      rngs={"dropout": jax.random.key(1)}))(v, x)
  outs = jax.tree.leaves(state["intermediates"])
  assert len(outs) == 4  # iresnet_tiny: one block per stage
  assert all(o.dtype == jnp.bfloat16 for o in outs), [o.dtype for o in outs]


def test_bf16_convolutions_and_matmuls_run_in_bf16():
  _, m16 = _build("margin", "bfloat16")
  x = _images()
  v = _init(m16, x)
  jaxpr = jax.make_jaxpr(lambda v, x: m16.apply(v, x, method=m16.embed))(v, x)
  ops = []

  def walk(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        ops.append(tuple(str(a.aval.dtype) for a in eqn.invars))
      for sub in jax.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr)
  assert len(ops) > 10
  assert all(set(o) == {"bfloat16"} for o in ops), ops


def test_dropblock_keeps_dtype_and_rescales():
  x = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
  y = DropBlock(0.3, 3).apply({}, x, True, rngs={"dropout": jax.random.key(0)})
  assert y.dtype == jnp.bfloat16
  kept = np.asarray(y, np.float32)
  # The kept activations are scaled by #elements / #kept, so the mean stays ~1.
  assert kept.mean() == pytest.approx(1.0, abs=0.02)


def test_margin_logits_and_loss_in_float32_under_bf16():
  cfg, method = _model_cfg("margin", **{"model.dtype": "bfloat16"})
  model = method.build_model(cfg.model, num_classes=10)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1)), jnp.uint8)
  v = _init(model, jnp.zeros((1, 16, 16, 1)))
  batch = {"image": x, "label": jnp.arange(8) % 10, "masked": jnp.zeros(8, bool)}
  (loss, _), grads = jax.jit(jax.value_and_grad(
      lambda p: method.loss(p, v["batch_stats"], batch, jax.random.key(1), 0, model=model,
                            config=cfg, num_classes=10),
      has_aux=True))(v["params"])
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name", ["margin", "barlow"])
def test_bf16_smoke_run_trains(name):
  """A bf16 model on CPU learns: the loss over the last steps is below the first steps'."""
  cfg = load_config(name, "smoke", **{"model.dtype": "bfloat16", "num_epochs": 40})
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  exp = recognition.setup(cfg, mesh)
  data = recognition.train_data(cfg, exp, mesh)
  state, rng, losses = exp.state, jax.random.key(0), []
  for _ in range(24):
    state, metrics = exp.step_fn(state, next(data), rng)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-6:]) < 0.9 * np.mean(losses[:6]), losses
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
