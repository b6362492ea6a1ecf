"""Backbones: parameter counts, output shapes, lookup by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfrjax import models
from mfrjax.models import iresnet
from mfrjax.models.heads import EmbedAndProject, Projector


def n_params(name, size=112, **kw):
  m = models.get_backbone(name, **kw)
  shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name,expected", [
    ("iresnet50", 43.6e6), ("iresnet100", 65.2e6),     # insightface arcface_torch
    ("resnet50", 23.51e6), ("resnet18", 11.18e6),      # torchvision minus the fc layer
])
def test_parameter_counts(name, expected):
  assert n_params(name) == pytest.approx(expected, rel=0.002)


@pytest.mark.parametrize("name,dim", [("resnet_tiny", 128), ("iresnet_tiny", 128)])
def test_tiny_forward_and_train_mode(name, dim):
  m = models.get_backbone(name)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 1)), jnp.float32)
  v = m.init(jax.random.key(0), x)
  y = m.apply(v, x)
  assert y.shape == (4, dim) and np.isfinite(np.asarray(y)).all()
  y_train, upd = m.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout":
                                                                          jax.random.key(1)})
  assert y_train.shape == (4, dim)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"],
                         upd["batch_stats"])
  assert any(jax.tree.leaves(changed)), "training mode must update BN statistics"


def test_iresnet_output_resolution_is_7x7_for_112():
  m = models.get_backbone("iresnet18")
  shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 112, 112, 3))))
  assert shapes["params"]["Dense_0"]["kernel"].shape == (512 * 7 * 7, 512)


def test_unknown_backbone_lists_valid_names():
  with pytest.raises(ValueError, match="resnet50.*|iresnet50"):
    models.get_backbone("resnet51")
  with pytest.raises(ValueError, match="config.model.dtype"):
    models.get_backbone("resnet18", dtype="float8")


def test_projector_and_embed():
  model = EmbedAndProject(models.get_backbone("resnet_tiny"), Projector((16, 8)))
  x = jnp.zeros((2, 16, 16, 1))
  v = model.init(jax.random.key(0), x)
  e, z = model.apply(v, x)
  assert e.shape == (2, 128) and z.shape == (2, 8)
  np.testing.assert_allclose(model.apply(v, x, method=model.embed), e)


def test_embedding_head_is_normalised_and_dropout_only_in_training():
  from mfrjax import methods
  from tests.conftest import load_config
  cfg = load_config("quintuplet").model
  model = methods.get("triplet").build_model(cfg)
  x = jax.random.normal(jax.random.key(5), (4, 16, 16, 1))
  v = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
  e = model.apply(v, x, method=model.embed)
  assert e.shape == (4, cfg.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.apply(v, x)), np.asarray(e))
  t1, t2 = (model.apply(v, x, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(k)})[0] for k in (2, 3))
  assert not np.allclose(np.asarray(t1), np.asarray(t2))  # dropout draws differ


def test_iresnet124_is_deeper_than_iresnet100():
  # 61 blocks: 18 more 3x3 conv pairs in stages 2-3 than IResNet-100's 49.
  extra = n_params("iresnet124") - n_params("iresnet100")
  assert extra == pytest.approx(3 * 2 * 128 * 128 * 9 + 9 * 2 * 256 * 256 * 9, rel=0.01)


def test_space_to_depth_stacks_even_odd_phases():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  y = np.asarray(iresnet.space_to_depth(x))
  assert y.shape == (1, 2, 2, 4)
  # Top-left output pixel: x[0,0], x[1,0], x[0,1], x[1,1] (rows, then columns).
  np.testing.assert_array_equal(y[0, 0, 0], [0, 4, 1, 5])
  np.testing.assert_array_equal(y[0, 1, 1], [10, 14, 11, 15])


def test_focus_stem_quarters_resolution_and_keeps_the_7x7_head():
  m = models.get_backbone("iresnet18", stem="focus")
  shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 112, 112, 3))))
  p = shapes["params"]
  assert p["Dense_0"]["kernel"].shape == (512 * 7 * 7, 512)
  stem = p["FocusStem_0"]
  assert stem["Conv_0"]["kernel"].shape == (2, 2, 3, 64)    # C1: k2 after avg-pool
  assert stem["Conv_1"]["kernel"].shape == (3, 3, 12, 64)   # C2: k3 on 4x channels
  out = iresnet.FocusStem(8).init_with_output(
      jax.random.key(0), jnp.zeros((2, 32, 32, 1)), False)[0]
  assert out.shape == (2, 8, 8, 8)
  with pytest.raises(ValueError, match="config.data.image_size"):
    m.init(jax.random.key(0), jnp.zeros((1, 30, 30, 3)))
  with pytest.raises(ValueError, match="config.model.stem='conv'"):
    models.get_backbone("iresnet_tiny", stem="conv").init(jax.random.key(0),
                                                          jnp.zeros((1, 16, 16, 1)))


def test_small_is_the_tiny_widths_at_iresnet18_depth():
  tiny, small = n_params("iresnet_tiny", 32), n_params("iresnet_small", 32)
  # One more IResNet block per stage: BN, 3x3 conv (w -> w), BN, PReLU, 3x3 conv, BN,
  # with BN scale and bias (the running statistics are not parameters).
  extra = sum(2 * w + 9 * w * w + 2 * w + w + 9 * w * w + 2 * w for w in (16, 32, 64, 128))
  assert small - tiny == extra


def test_se_adds_two_dense_layers_per_block():
  base, se = n_params("iresnet_tiny", 32), n_params("iresnet_tiny", 32, se=True)
  # Per block of width w: Dense(w -> max(1, w // 16)) and back, with biases.
  expected = sum(w * max(1, w // 16) + max(1, w // 16) + max(1, w // 16) * w + w
                 for w in (16, 32, 64, 128))
  assert se - base == expected


def test_dropblock_drops_contiguous_blocks_at_the_rate_and_is_identity_in_eval():
  block = iresnet.DropBlock(rate=0.1, block_size=3)
  x = jnp.ones((8, 32, 32, 4))
  np.testing.assert_array_equal(block.apply({}, x, False), x)
  y = np.asarray(block.apply({}, x, True, rngs={"dropout": jax.random.key(0)}))
  dropped = y == 0
  share = dropped.mean()
  assert 0.07 < share < 0.11, share  # ~rate (block overlaps make it a little less)
  np.testing.assert_allclose(y[~dropped], 1 / (1 - share), rtol=1e-5)  # kept ones rescaled
  # Every dropped pixel lies in a fully dropped 3x3 square.
  d = dropped.transpose(0, 3, 1, 2).reshape(-1, 32, 32)
  full = np.zeros_like(d)
  for i in range(30):
    for j in range(30):
      sq = d[:, i:i + 3, j:j + 3].all(axis=(1, 2))
      full[sq, i:i + 3, j:j + 3] = True
  np.testing.assert_array_equal(full, d)
  # Different keys, different blocks; rate 0 is the identity in training too.
  y2 = np.asarray(block.apply({}, x, True, rngs={"dropout": jax.random.key(1)}))
  assert (y2 != y).any()
  zero = iresnet.DropBlock(rate=0.0, block_size=3)
  np.testing.assert_array_equal(zero.apply({}, x, True), x)


def test_dropblock_sits_in_the_last_two_stages_only():
  m = models.get_backbone("iresnet_tiny", dropblock_rate=0.5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 1)), jnp.float32)
  v = m.init(jax.random.key(0), x)
  # Capture each block's output with two dropout keys: only stages 3-4 may differ.
  outs = []
  for k in (1, 2):
    _, state = m.apply(v, x, train=True, mutable=["batch_stats", "intermediates"],
                       rngs={"dropout": jax.random.key(k)},
                       capture_intermediates=lambda mdl, _: isinstance(
                           mdl, iresnet.IBasicBlock))
    outs.append(state["intermediates"])
  differs = [not np.allclose(outs[0][f"IBasicBlock_{i}"]["__call__"][0],
                             outs[1][f"IBasicBlock_{i}"]["__call__"][0]) for i in range(4)]
  assert differs == [False, False, True, True]
