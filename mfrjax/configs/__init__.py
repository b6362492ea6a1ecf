"""The experiments: one `get_config(arg)` per recipe, installed with the package.

A config is named by its file (`--config=configs/barlow.py:lfw`, any path, as
ml_collections loads it) or by its name (`--config=barlow:lfw`): a name is a module of
this package, so `pip install mfrjax` gives every recipe without a checkout. The text
after ':' picks the variant (default, smoke, lfw, paper, ...; each file's docstring
lists its own). common.py holds the blocks every recipe shares.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pkgutil

import ml_collections

HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """The recipes of this package (common.py is not one)."""
  return sorted(m.name for m in pkgutil.iter_modules([HERE]) if m.name != "common")


def resolve(spec: str) -> str:
  """`name[:variant]` -> `<package path>/name.py[:variant]`; a path is returned as is.

  Raises:
    ValueError: neither an existing file nor a recipe name (the names are listed).
  """
  path, sep, variant = spec.partition(":")
  if os.path.exists(path) or path.endswith(".py") or os.sep in path:
    return spec
  if path not in names():
    raise ValueError(f"--config={spec!r}: no file {path!r} and no recipe of that name; "
                     f"recipes: {names()} (or a path to a config file)")
  return os.path.join(HERE, f"{path}.py") + sep + variant


def _config_args(argv: list[str]):
  """(index, prefix, spec) of each `--config=SPEC` (prefix '--config=') or `--config SPEC`
  (prefix '', the index of SPEC) in argv."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      yield i, "--config=", a[len("--config="):]
    elif a == "--config" and i + 1 < len(argv):
      yield i + 1, "", argv[i + 1]


def resolve_argv(argv: list[str]) -> list[str]:
  """argv with a `--config=name[:variant]` (or `--config name`) turned into its path, so
  ml_collections' config flag loads recipes by name too."""
  out = list(argv)
  for i, prefix, spec in _config_args(argv):
    out[i] = prefix + resolve(spec)
  return out


def check_argv(argv: list[str]) -> None:
  """Loads the `--config` of a (resolved) command line and checks that each
  `--config.<key>` override names a key of it, before absl parses the flags: absl
  reports an unknown variant or a mistyped key with the config module's traceback, and
  this says it in one line (the values are left to ml_collections, which types them).

  Raises:
    FileNotFoundError: no such config file.
    ValueError: an unknown variant (the valid ones are listed) or key (with the nearest).
  """
  specs = [spec for _, _, spec in _config_args(argv)]
  if not specs:
    return  # absl reports the missing flag
  spec = specs[-1]  # absl's flag takes the last
  cfg = load(spec)
  for a in argv:
    for prefix in ("--config.", "--noconfig."):
      if a.startswith(prefix):
        key = a[len(prefix):].partition("=")[0]
        _locate_key(cfg, key, f"{prefix}{key} (--config={spec})")


def _locate_key(cfg: ml_collections.ConfigDict, key: str, where: str
               ) -> tuple[ml_collections.ConfigDict, str]:
  """(block, name) of the dotted `key` in `cfg`; a ValueError starting with `where` and
  naming the nearest key when there is none."""
  node, parts = cfg, key.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      parent = ".".join(parts[:depth])
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      near = difflib.get_close_matches(part, keys, n=1)
      hint = f"; did you mean {near[0]!r}?" if near else (
          f"; {parent or 'the config'} has {sorted(keys)}" if keys else
          f"; {parent!r} is a value, not a block")
      raise ValueError(f"{where}: no config key {part!r}"
                       + (f" in {parent!r}" if parent else "") + hint)
    if depth < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def load(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """The config `spec` (a path or a name, with `:variant`), with `key=value` overrides
  typed like the key's current value (`set_key`)."""
  path, _, variant = resolve(spec).partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config={spec!r}: no file {path!r}")
  mod_spec = importlib.util.spec_from_file_location(
      f"mfrjax_config_{os.path.splitext(os.path.basename(path))[0]}", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  cfg = mod.get_config(variant or None)
  for text in overrides:
    set_key(cfg, text)
  return cfg


def set_key(cfg: ml_collections.ConfigDict, text: str) -> None:
  """Applies one `a.b.c=value` override; the value is parsed as the key's current type."""
  key, sep, value = text.partition("=")
  if not sep:
    raise ValueError(f"--set {text!r}: expected key=value")
  key = key.strip()
  node, leaf = _locate_key(cfg, key, f"--set {text!r}")  # the nearest key, as --config.<key>
  old = node[leaf]
  if isinstance(old, bool):
    if value.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"--set {text!r}: {key} is a bool (true/false)")
    node[leaf] = value.lower() in ("true", "1")
  elif isinstance(old, (int, float)):
    node[leaf] = type(old)(value)
  elif isinstance(old, tuple):
    typ = type(old[0]) if old else str
    items = [x.strip().strip("'\"") for x in value.strip("()[]").split(",") if x.strip()]
    node[leaf] = tuple(typ(x) for x in items)
  else:
    node[leaf] = value
