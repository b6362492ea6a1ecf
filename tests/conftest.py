"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data (real faces); tests that need it skip when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real face data not found at {SHARED_DATA} (see README: Data)")
  return SHARED_DATA


def load_config(name: str = "barlow", variant: str = "smoke", **overrides):
  """The recipe `name:variant` (mfrjax/configs) with dotted-key overrides, e.g.
  {'optimizer.name': 'sgd'}."""
  from mfrjax import configs
  cfg = configs.load(f"{name}:{variant}")
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def smoke_config(**overrides):
  """configs/barlow.py:smoke with dotted-key overrides."""
  return load_config("barlow", "smoke", **overrides)


def write_bin(path: str, images: list, issame: list, ext: str = ".jpg") -> None:
  """Images (pairs 2k, 2k+1) and flags as an insightface .bin (prep/convert.py's writer)."""
  import cv2

  from mfrjax.prep import convert
  bins = []
  for img in images:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    bins.append(buf.tobytes())
  convert.write_bin_bytes(path, bins, issame)
