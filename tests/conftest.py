"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data (real faces); tests that need it skip when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real face data not found at {SHARED_DATA} (see README: Data)")
  return SHARED_DATA


def load_config(name: str = "barlow", variant: str = "smoke", **overrides):
  """configs/<name>.py:<variant> with dotted-key overrides, e.g. {'optimizer.name': 'sgd'}."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f"{name}_cfg", ROOT / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config(variant)
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
