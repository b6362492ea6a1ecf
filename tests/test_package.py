"""`pip install .` gives every module, recipe and command: the wheel is built and read."""

import configparser
import importlib
import importlib.util
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  out = tmp_path_factory.mktemp("wheel")
  # Without build isolation where setuptools is here (no download); a fresh venv has no
  # setuptools, and pip fetches it from the registry as `pip install .` would.
  isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
  r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                      "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr
  (path,) = out.glob("mfrjax-*.whl")
  return zipfile.ZipFile(path)


def test_the_wheel_holds_every_module_and_recipe(wheel):
  names = set(wheel.namelist())
  sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mfrjax").rglob("*.py")}
  assert sources <= names, sorted(sources - names)
  assert {f"mfrjax/configs/{n}.py" for n in ("barlow", "quintuplet", "triplet_upper",
                                              "margin", "mask_seg", "inpaint")} <= names


def test_every_command_is_installed_and_resolves(wheel):
  (ep,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
  parser = configparser.ConfigParser()
  parser.read_string(wheel.read(ep).decode())
  scripts = dict(parser["console_scripts"])
  declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  assert scripts == declared
  assert {"mfrjax-train", "mfrjax-eval", "mfrjax-mask", "mfrjax-align", "mfrjax-convert",
          "mfrjax-clean", "mfrjax-skin-tone", "mfrjax-compare", "mfrjax-sweep",
          "mfrjax-bench-throughput", "mfrjax-bench-compression", "mfrjax-embed",
          "mfrjax-export"} <= set(scripts)
  for name, target in scripts.items():
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), name
