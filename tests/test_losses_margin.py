"""ArcFace / CosFace against a NumPy reference, on one device and with the class
centres sharded over 8 devices (model-parallel FC)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mfrjax.losses import margin
from mfrjax.parallel import mesh as mesh_lib


def np_margin_loss(emb, labels, weight, head, s, m, easy_margin, num_classes):
  """Straightforward float64 reference: per-row loops, no vectorised tricks."""
  emb, weight = np.asarray(emb, np.float64), np.asarray(weight, np.float64)[:, :num_classes]
  x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  w = weight / np.linalg.norm(weight, axis=0, keepdims=True)
  losses = []
  for i in range(len(x)):
    cos = np.clip(x[i] @ w, -1, 1)
    logits = s * cos
    c, y = cos[labels[i]], labels[i]
    theta = math.acos(c)
    if head == "cosface":
      t = c - m
    elif easy_margin:
      t = math.cos(theta + m) if c > 0 else c
    elif theta + m < math.pi:       # i.e. c > cos(pi - m)
      t = math.cos(theta + m)
    else:
      t = c - math.sin(math.pi - m) * m
    logits[y] = s * t
    mx = logits.max()
    losses.append(mx + math.log(np.exp(logits - mx).sum()) - logits[y])
  return float(np.mean(losses))


def random_case(seed=0, b=16, d=8, c=21, cols=24):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(b, d)).astype(np.float32)
  weight = rng.normal(size=(d, cols)).astype(np.float32)
  labels = rng.integers(0, c, size=b).astype(np.int32)
  return emb, labels, weight, c


@pytest.mark.parametrize("head,m,easy", [("arcface", 0.5, False), ("arcface", 0.5, True),
                                         ("cosface", 0.35, False), ("arcface", 1.4, False)])
def test_loss_matches_numpy_reference(head, m, easy):
  emb, labels, weight, c = random_case()
  if m > 1:  # a large margin puts many targets past the theta + m > pi threshold
    emb[:4] = -weight[:, labels[:4]].T  # targets at theta ~ pi
  loss, metrics = margin.margin_loss(jnp.asarray(emb), jnp.asarray(labels), jnp.asarray(weight),
                                     head=head, scale=64.0, margin=m, easy_margin=easy,
                                     num_classes=c)
  ref = np_margin_loss(emb, labels, weight, head, 64.0, m, easy, c)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_threshold_branch_keeps_the_target_logit_decreasing():
  cos = jnp.linspace(-1.0, 1.0, 2001)
  t = margin.target_logit(cos, "arcface", 0.5, False)
  assert np.all(np.diff(np.asarray(t)) >= -1e-6)  # monotone in cos: no reward for moving away
  # Past the threshold it is cos - m sin(m): hand value at cos = -1.
  np.testing.assert_allclose(float(t[0]), -1.0 - math.sin(math.pi - 0.5) * 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(t[-1]), math.cos(0.5), rtol=1e-6)


def test_padding_columns_change_nothing():
  emb, labels, weight, c = random_case()
  kw = dict(head="arcface", scale=64.0, margin=0.5, easy_margin=False, num_classes=c)
  a, _ = margin.margin_loss(emb, labels, weight, **kw)
  padded = np.concatenate([weight, 100 * np.ones((weight.shape[0], 40), np.float32)], 1)
  b, _ = margin.margin_loss(emb, labels, padded, **kw)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  assert margin.padded_classes(21, 8) == 24 and margin.padded_classes(24, 8) == 24


def test_unknown_head_names_the_key():
  with pytest.raises(ValueError, match="config.loss.head='sphere'"):
    margin.target_logit(jnp.zeros(3), "sphere", 0.5, False)


def sharded_loss_and_grads(devices, emb, labels, weight, c):
  mesh = mesh_lib.make_mesh(devices)
  kw = dict(head="arcface", scale=64.0, margin=0.5, easy_margin=False, num_classes=c)

  def loss_fn(e, w):
    f = jax.shard_map(lambda e, y, w: margin.margin_loss(e, y, w, axis_name="data", **kw),
                      mesh=mesh, in_specs=(P("data"), P("data"), P(None, "data")),
                      out_specs=(P(), P()))
    return f(e, labels, w)[0]

  w_sharding = jax.NamedSharding(mesh, P(None, "data"))
  w = jax.device_put(weight, w_sharding)
  e = jax.device_put(emb, mesh_lib.batch_sharded(mesh))
  loss, grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(e, w)
  return float(loss), [np.asarray(g) for g in grads], grads[1].sharding


def test_class_sharded_loss_and_grads_equal_reference_on_1_and_8_devices():
  emb, labels, weight, c = random_case(seed=3, b=16, c=21, cols=24)
  ref = np_margin_loss(emb, labels, weight, "arcface", 64.0, 0.5, False, c)
  l1, g1, _ = sharded_loss_and_grads(jax.devices()[:1], emb, labels, weight, c)
  l8, g8, sharding = sharded_loss_and_grads(jax.devices(), emb, labels, weight, c)
  np.testing.assert_allclose([l1, l8], [ref, ref], rtol=1e-5)
  # Plain (unsharded) autodiff is the gradient reference.
  plain = jax.grad(functools.partial(
      lambda e, w: margin.margin_loss(e, labels, w, head="arcface", scale=64.0, margin=0.5,
                                      easy_margin=False, num_classes=c)[0]), argnums=(0, 1))
  ge, gw = plain(jnp.asarray(emb), jnp.asarray(weight))
  for g in (g1, g8):
    np.testing.assert_allclose(g[0], ge, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g[1], gw, rtol=1e-4, atol=1e-6)
  assert np.abs(g8[1][:, c:]).max() == 0  # padding columns get no gradient
  # The weight gradient stays split by class: each device holds 3 of the 24 columns.
  assert sharding.spec == P(None, "data")


def test_margin_loss_gradient_matches_finite_differences():
  emb, labels, weight, c = random_case(seed=5, b=4, d=3, c=5, cols=5)
  f = lambda w: margin.margin_loss(emb, labels, w,  # noqa: E731
                                   head="cosface", scale=8.0, margin=0.35, easy_margin=False,
                                   num_classes=c)[0]
  g = np.asarray(jax.grad(f)(jnp.asarray(weight)))
  eps = 1e-2
  i, j = 1, 2
  wp, wm = weight.copy(), weight.copy()
  wp[i, j] += eps
  wm[i, j] -= eps
  fd = (np_margin_loss(emb, labels, wp, "cosface", 8.0, 0.35, False, c) -
        np_margin_loss(emb, labels, wm, "cosface", 8.0, 0.35, False, c)) / (2 * eps)
  np.testing.assert_allclose(g[i, j], fd, rtol=2e-2, atol=1e-4)
