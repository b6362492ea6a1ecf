"""Backbones found by name: `get_backbone(config.model.backbone, ...)`.

Names map to constructor arguments only; nothing is built until asked for.
"""

from __future__ import annotations

import jax.numpy as jnp

from mfrjax.models.iresnet import IResNet
from mfrjax.models.resnet import ResNet

_BACKBONES = {
    "resnet18": (ResNet, dict(stage_sizes=(2, 2, 2, 2), block="basic")),
    "resnet34": (ResNet, dict(stage_sizes=(3, 4, 6, 3), block="basic")),
    "resnet50": (ResNet, dict(stage_sizes=(3, 4, 6, 3), block="bottleneck")),
    "resnet_tiny": (ResNet, dict(stage_sizes=(1, 1, 1, 1), block="basic",
                                 widths=(16, 32, 64, 128), stem="face")),
    "iresnet18": (IResNet, dict(stage_sizes=(2, 2, 2, 2))),
    "iresnet34": (IResNet, dict(stage_sizes=(3, 4, 6, 3))),
    "iresnet50": (IResNet, dict(stage_sizes=(3, 4, 14, 3))),
    "iresnet100": (IResNet, dict(stage_sizes=(3, 13, 30, 3))),
    # The paper's "ResNet124": 61 blocks x 2 convs + stem + FC = 124 weight layers,
    # IResNet-100 with the extra blocks in the two middle stages.
    "iresnet124": (IResNet, dict(stage_sizes=(3, 16, 39, 3))),
    "iresnet_tiny": (IResNet, dict(stage_sizes=(1, 1, 1, 1), widths=(16, 32, 64, 128),
                                   embed_dim=128)),
    # IResNet-18's depth at the tiny widths (a quarter of IResNet-18's): the next size up
    # a 2-core CPU can train in minutes, for the backbone-size lever.
    "iresnet_small": (IResNet, dict(stage_sizes=(2, 2, 2, 2), widths=(16, 32, 64, 128),
                                    embed_dim=128)),
}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def backbone_names() -> list[str]:
  return sorted(_BACKBONES)


def get_backbone(name: str, dtype: str = "float32", axis_name: str | None = None,
                 **overrides):
  """Builds backbone `name` (e.g. 'iresnet50'); `overrides` replace its defaults.

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  if name not in _BACKBONES:
    raise ValueError(f"unknown config.model.backbone={name!r}; valid: {backbone_names()}")
  if dtype not in _DTYPES:
    raise ValueError(f"unknown config.model.dtype={dtype!r}; valid: {sorted(_DTYPES)}")
  cls, kwargs = _BACKBONES[name]
  return cls(**{**kwargs, **overrides}, dtype=_DTYPES[dtype], axis_name=axis_name)
