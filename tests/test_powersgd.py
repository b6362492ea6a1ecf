"""PowerSGD: exactness at full rank, error feedback, byte counts, batching, training."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from mfrjax.parallel import grad_reduce, powersgd
from mfrjax.parallel import mesh as mesh_lib

D = mesh_lib.DATA


def per_device_grads(shapes, seed=0, n_dev=8):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=(n_dev, *s)).astype(np.float32) for k, s in shapes.items()}


def run_reduce(local, plan, state, steps=1, **kw):
  """Applies powersgd.reduce `steps` times to the per-device grads in `local` (8 devices)."""
  mesh = mesh_lib.make_mesh()
  specs = grad_reduce.reduce_state_specs(state)

  def body(g, st):
    g = jax.tree.map(lambda x: x[0], g)
    return powersgd.reduce(g, st, plan, D, rng=jax.random.key(0), **kw)

  f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(D), specs), out_specs=(P(), specs)))
  outs = []
  for _ in range(steps):
    out, state = f(local, state)
    outs.append(out)
  return outs, state


SHAPES = {"conv": (3, 3, 4, 6), "dense": (10, 7), "bias": (7,), "small": (2, 2)}


def test_plan_and_byte_counts():
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  plan = powersgd.make_plan(params, rank=2, min_compression_rate=1.5)
  flags = dict(zip(sorted(SHAPES), plan.compressed))  # tree order is sorted keys
  # conv: 36x6 -> 216 / (2*42) = 2.57 -> compressed; dense 70 / 34 = 2.06 -> compressed;
  # small 2x2: 4 / (2*4) = 0.5 -> not; bias: a vector -> not.
  assert flags == {"bias": False, "conv": True, "dense": True, "small": False}
  assert plan.uncompressed_bytes == 4 * (216 + 70 + 7 + 4)
  assert plan.compressed_bytes == 4 * (2 * (36 + 6) + 2 * (10 + 7) + 7 + 4)
  # The rank is clipped to min(n, m).
  assert powersgd.make_plan({"w": jnp.zeros((3, 50))}, 8, 0.0).ranks == (3,)


def test_full_rank_equals_exact_mean():
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  plan = powersgd.make_plan(params, rank=100, min_compression_rate=0.0)
  assert all(c for c, s in zip(plan.compressed, plan.shapes) if len(s) >= 2)
  state = powersgd.init_state(plan, 8, jax.random.key(1))
  local = per_device_grads(SHAPES)
  (out,), _ = run_reduce(local, plan, state, error_feedback=True, warm_start=True)
  for k in SHAPES:
    np.testing.assert_allclose(np.asarray(out[k]), local[k].mean(0), rtol=1e-4, atol=1e-5)


def test_low_rank_is_rank_r_and_error_feedback_preserves_the_sum():
  shapes = {"w": (12, 9)}
  plan = powersgd.make_plan({"w": jnp.zeros((12, 9))}, rank=2, min_compression_rate=0.0)
  state = powersgd.init_state(plan, 8, jax.random.key(2))
  local = per_device_grads(shapes, seed=3)
  outs, final = run_reduce(local, plan, state, steps=5, error_feedback=True, warm_start=True)
  assert np.linalg.matrix_rank(np.asarray(outs[0]["w"]), tol=1e-4) == 2
  # e_T = sum_t g_t - sum_t M_hat_t on every device, so on average over devices:
  total_sent = sum(np.asarray(o["w"]) for o in outs)
  residual_mean = np.asarray(final.residuals[0]).mean(0)
  np.testing.assert_allclose(total_sent + residual_mean, 5 * local["w"].mean(0), rtol=1e-4,
                             atol=1e-4)
  # So what is lost in one step is sent later: the running average of the updates
  # approaches the true mean (its error is mean(e_T) / T).
  mean = local["w"].mean(0)
  err_first = np.linalg.norm(np.asarray(outs[0]["w"]) - mean)
  err_avg = np.linalg.norm(total_sent / 5 - mean)
  assert err_avg < 0.5 * err_first


def test_without_error_feedback_residuals_stay_zero():
  plan = powersgd.make_plan({"w": jnp.zeros((12, 9))}, rank=1, min_compression_rate=0.0)
  state = powersgd.init_state(plan, 8, jax.random.key(2))
  _, final = run_reduce(per_device_grads({"w": (12, 9)}), plan, state, steps=2,
                        error_feedback=False, warm_start=False)
  assert not np.asarray(final.residuals[0]).any()


def test_uncompressed_leaves_are_reduced_in_one_batched_collective():
  shapes = {"a": (5,), "b": (3, 2), "c": (4,)}
  local = per_device_grads(shapes, seed=4)
  mesh = mesh_lib.make_mesh()
  f = jax.shard_map(lambda g: powersgd.reduce_mean(jax.tree.map(lambda x: x[0], g), D),
                    mesh=mesh, in_specs=(P(D),), out_specs=P())
  out = jax.jit(f)(local)
  for k in shapes:
    np.testing.assert_allclose(np.asarray(out[k]), local[k].mean(0), rtol=1e-5, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(f)(local))
  assert jaxpr.count("psum") == 1, jaxpr  # one collective for all three leaves


def test_orthonormalize_handles_rank_deficiency():
  p = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # col 2 = 2 x col 1
  q = np.asarray(powersgd.orthonormalize(p))
  assert np.isfinite(q).all()
  np.testing.assert_allclose(np.linalg.norm(q[:, 0]), 1, rtol=1e-6)
  assert np.linalg.norm(q[:, 1]) < 1e-3
  np.testing.assert_allclose(q[:, 0] @ q[:, 2], 0, atol=1e-6)


def test_compressed_leaves_share_two_collectives():
  shapes = {"a": (12, 9), "b": (3, 3, 4, 6), "c": (5,)}
  params = {k: jnp.zeros(s) for k, s in shapes.items()}
  plan = powersgd.make_plan(params, rank=2, min_compression_rate=0.0)
  state = powersgd.init_state(plan, 8, jax.random.key(0))
  specs = grad_reduce.reduce_state_specs(state)
  f = jax.shard_map(lambda g, st: powersgd.reduce(jax.tree.map(lambda x: x[0], g), st, plan, D,
                                                  error_feedback=True, warm_start=True,
                                                  rng=jax.random.key(0)),
                    mesh=mesh_lib.make_mesh(), in_specs=(P(D), specs), out_specs=(P(), specs))
  jaxpr = str(jax.make_jaxpr(f)(per_device_grads(shapes), state))
  assert jaxpr.count("psum") == 3, jaxpr  # vectors, all P's, all Q's


def test_bytes_sent_switches_at_start_step():
  plan = powersgd.make_plan({"w": jnp.zeros((12, 9))}, rank=2, min_compression_rate=0.0)
  assert int(grad_reduce.bytes_sent(plan, jnp.int32(4), 5)) == plan.uncompressed_bytes == 432
  assert int(grad_reduce.bytes_sent(plan, jnp.int32(5), 5)) == plan.compressed_bytes == 168
