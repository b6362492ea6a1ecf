"""Backbones: parameter counts, output shapes, lookup by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfrjax import models
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
  model = methods.build_embedder(cfg)
  x = jax.random.normal(jax.random.key(5), (4, 16, 16, 1))
  v = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
  e = model.apply(v, x, method=model.embed)
  assert e.shape == (4, cfg.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.apply(v, x)), np.asarray(e))
  t1, t2 = (model.apply(v, x, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(k)})[0] for k in (2, 3))
  assert not np.allclose(np.asarray(t1), np.asarray(t2))  # dropout draws differ
