"""`pip install .` gives every module, recipe and command: the wheel is built and read."""

import configparser
import importlib
import importlib.metadata
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel


def build_requirements_met() -> bool:
  """Whether this venv already holds what `[build-system] requires` asks for.

  Only then may the wheel be built without build isolation (no download). A fresh Python
  3.11 venv ships setuptools 65, too old for the SPDX licence string: building with it
  fails where `pip install .` (isolated, fetching setuptools>=77) works.
  """
  from packaging.requirements import Requirement  # pytest's own dependency

  for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
    req = Requirement(spec)
    try:
      version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
      return False
    if not req.specifier.contains(version, prereleases=True):
      return False
  return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  out = tmp_path_factory.mktemp("wheel")
  # Isolated (pip fetches the build requirements from the registry, as `pip install .`
  # does) unless this venv already satisfies them.
  isolation = ["--no-build-isolation"] if build_requirements_met() else []
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
