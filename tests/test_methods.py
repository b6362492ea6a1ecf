"""The method plugins (mfrjax/methods): found by name or import path, complete on their
own, and a new one added outside mfrjax by one module plus one config (examples/)."""

import inspect
import re
import subprocess
import sys

import numpy as np
import pytest

from mfrjax import configs, embedder, methods, train
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


def test_every_built_in_method_is_found_by_name_and_complete():
  assert methods.names() == ["barlow", "inpaint", "margin", "mask_seg", "quintuplet",
                             "triplet"]
  for name in methods.names():
    m = methods.get(name)
    assert m.name == name and m.views
    family = methods.EmbeddingMethod if name not in ("mask_seg", "inpaint") else \
        methods.ImageMethod
    assert isinstance(m, family)
    # The family's interface is overridden where the base has no default.
    for hook in (("build_model", "loss", "steps_per_epoch", "input_stream")
                 if family is methods.EmbeddingMethod else
                 ("build_model", "input_shape", "loss_fn", "evaluate")):
      assert getattr(type(m), hook) is not getattr(family, hook), (name, hook)


def test_a_module_without_method_is_refused_by_name():
  with pytest.raises(ValueError, match="module 'json' defines no METHOD"):
    methods.get("json")
  with pytest.raises(ValueError, match="unknown config.method='no_such.module'"):
    methods.get("no_such.module")


def test_the_readme_shows_the_example_files_as_they_are():
  readme = (ROOT / "README.md").read_text()
  for name in ("softmax_method.py", "softmax_config.py"):
    assert (EXAMPLES / name).read_text().strip() in readme, name


@pytest.fixture
def examples_on_path(monkeypatch):
  monkeypatch.syspath_prepend(str(EXAMPLES))
  yield
  sys.modules.pop("softmax_method", None)


@pytest.mark.slow
def test_a_method_outside_mfrjax_trains_evaluates_and_loads(examples_on_path, tmp_path):
  cfg = configs.load(f"{EXAMPLES}/softmax_config.py:smoke")
  assert cfg.method == "softmax_method"
  res = train.train_and_evaluate(cfg, str(tmp_path))
  assert np.isfinite(res["last_logged"]["loss"]) and "accuracy" in res["last_logged"]
  assert 0.0 <= res["final"]["masked_vs_unmasked"]["accuracy"] <= 1.0
  assert "test_identities" in res["verification"]
  emb = embedder.Embedder.from_workdir(str(tmp_path))  # the run names its method
  x = emb.embed(np.zeros((2, 16, 16, 1), np.uint8))
  assert x.shape == (2, 128) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_data_preparation_imports_no_jax():
  code = ("import sys, pkgutil, importlib, mfrjax.prep as p\n"
          "for m in pkgutil.iter_modules(p.__path__):\n"
          "  importlib.import_module('mfrjax.prep.' + m.name)\n"
          "bad = sorted(m for m in sys.modules\n"
          "             if m.split('.')[0] in ('jax', 'flax', 'optax', 'grain'))\n"
          "print(bad)")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == "[]", r.stdout


def test_the_trainers_never_ask_which_method_they_run():
  from mfrjax import recognition, restoration
  texts = {m.__name__: inspect.getsource(m) for m in (train, recognition)}
  texts.update({f"restoration.{f.__name__}": inspect.getsource(f) for f in (
      restoration.Setup, restoration.evaluate, restoration.train_and_evaluate,
      restoration.format_results)})
  asks = re.compile(r"config\.method\s*(==|!=|in\b)|\.stream\b|isinstance\(\w*method")
  for name, text in texts.items():
    assert not asks.search(text), name
