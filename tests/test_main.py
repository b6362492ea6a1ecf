"""The command line: config loading, variants, locked keys, --help."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT, load_config, smoke_config


def run(*args):
  return subprocess.run([sys.executable, "-m", "mfrjax.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_unknown_variant_lists_valid_ones():
  r = run("--config=configs/barlow.py:papr", "--workdir=/tmp/unused")
  assert r.returncode == 2 and "unknown variant 'papr'" in r.stderr and "paper" in r.stderr
  assert "Traceback" not in r.stderr  # one line, not the config module's traceback


def test_typo_in_override_fails_loudly():
  r = run("--config=configs/barlow.py:smoke", "--workdir=/tmp/unused",
          "--config.optimiser.name=sgd")
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert "--config.optimiser.name" in r.stderr and "did you mean 'optimizer'" in r.stderr


def test_override_keys_are_checked_at_every_depth():
  from mfrjax import configs
  path = str(ROOT / "configs" / "margin.py") + ":smoke"
  configs.check_argv(["x", f"--config={path}", "--config.data.augment.flip=False",
                      "--noconfig.ema.enabled", "--workdir=/tmp/unused"])  # all exist
  with pytest.raises(ValueError, match="no config key 'flp' in 'data.augment'; did you "
                                       "mean 'flip'"):
    configs.check_argv(["x", "--config", path, "--config.data.augment.flp=False"])
  with pytest.raises(ValueError, match="'seed' is a value, not a block"):
    configs.check_argv(["x", f"--config={path}", "--config.seed.x=1"])
  with pytest.raises(ValueError, match="unknown variant 'nosuch'"):
    configs.check_argv(["x", f"--config={path[:-6]}:nosuch"])
  configs.check_argv(["x", "--config.seed=1"])  # no --config: absl reports it


def test_missing_config_file_and_unknown_recipe_name():
  r = run("--config=configs/nope.py", "--workdir=/tmp/unused")
  assert r.returncode != 0 and "nope.py" in r.stderr
  r = run("--config=barlw:smoke", "--workdir=/tmp/unused")
  assert r.returncode == 2 and "no recipe of that name" in r.stderr and "'barlow'" in r.stderr
  assert "Traceback" not in r.stderr


def test_a_recipe_by_name_is_its_file_in_the_package():
  from mfrjax import configs
  assert configs.names() == ["barlow", "inpaint", "margin", "mask_seg", "quintuplet",
                             "triplet_upper"]
  path = configs.resolve("barlow:lfw")
  assert path == str(ROOT / "mfrjax" / "configs" / "barlow.py") + ":lfw"
  assert configs.resolve("configs/barlow.py:lfw") == "configs/barlow.py:lfw"  # paths as given
  assert configs.load("barlow:lfw").to_dict() == load_config("barlow", "lfw").to_dict()
  assert configs.resolve_argv(["x", "--config=margin", "--config.seed=1"]) == [
      "x", f"--config={ROOT / 'mfrjax' / 'configs' / 'margin.py'}", "--config.seed=1"]


@pytest.mark.parametrize("variant", ["default", "smoke", "lfw", "paper"])
def test_variants_are_locked_and_complete(variant):
  from mfrjax import configs
  cfg = configs.load("configs/barlow.py" + (f":{variant}" if variant != "default" else ""))
  assert cfg.batch_size > 0 and cfg.model.backbone
  if variant == "paper":
    assert (cfg.model.backbone, cfg.batch_size, cfg.data.image_size) == ("resnet50", 512, 112)
    assert cfg.optimizer.name == "lars" and cfg.optimizer.trust_coefficient == 0.001
    assert cfg.loss.lambd == 0.0051 and tuple(cfg.model.projector_dims) == (8192,) * 3


def test_smoke_config_helper_overrides():
  assert smoke_config(**{"optimizer.name": "sgd"}).optimizer.name == "sgd"


@pytest.mark.parametrize("variant", ["paper", "paper_cosface", "paper_baseline"])
def test_arcface_paper_variants_build_the_paper_recipe(variant):
  import jax
  import jax.numpy as jnp

  from mfrjax import methods
  cfg = load_config("margin", variant)
  m, lc, o = cfg.model, cfg.loss, cfg.optimizer
  assert (m.backbone, cfg.batch_size, cfg.data.image_size, cfg.data.channels) == (
      "iresnet100", 512, 112, 3)
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay, o.schedule) == (
      "sgd", 0.1, 0.9, 5e-4, "cyclic_cosine")
  assert cfg.data.masked_share == 0.1 and lc.scale == 64.0 and m.shard_classes
  paper_changes = variant != "paper_baseline"
  assert (m.stem == "focus", m.se, m.dropblock.rate > 0, cfg.ema.enabled) == (paper_changes,) * 4
  assert (lc.head, lc.margin) == (("cosface", 0.35) if variant == "paper_cosface"
                                  else ("arcface", 0.5))
  model = methods.get("margin").build_model(m, num_classes=10572)  # CASIA-WebFace's identities
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                             jnp.zeros((1, 112, 112, 3))))
  assert shapes["params"]["class_weight"].shape == (512, 10624)  # padded to 128s
