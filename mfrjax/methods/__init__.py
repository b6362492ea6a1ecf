"""Training methods, found by `config.method`: each method is one complete plugin.

A method is the part of a recipe that differs between papers: its model, loss, training
input, steps per epoch and config checks, in one object (`base.Method`). The trainer
of its family calls these and never asks which method it has:

  recognition.py  methods that learn face embeddings (base.EmbeddingMethod):
                  barlow, quintuplet, triplet, margin; evaluated by 1-NN and verification.
  restoration.py  methods that restore masked images (base.ImageMethod): mask_seg,
                  inpaint; evaluated by IoU, PSNR and SSIM.

Both families share train.py (the pure step, the loop, NaN checks, checkpoints with the
data position, resume checks) and parallel/ (data parallelism, PowerSGD).

Adding a method: one module defining `METHOD = <a base.Method instance>`, and one config
with `config.method = <name>`. A module of this package is found by its name; any other
by its import path (`config.method = "mypkg.my_method"`), so a method can live outside
mfrjax (examples/softmax_method.py; README: Adding a method). Modules are imported when
named, not up front.
"""

from __future__ import annotations

import importlib
import pkgutil

from mfrjax.methods.base import EmbeddingMethod, ImageMethod, Method

__all__ = ["EmbeddingMethod", "ImageMethod", "Method", "get", "names"]


def names() -> list[str]:
  """The methods of this package (modules whose name does not start with '_')."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith("_") and m.name != "base")


def get(name: str) -> Method:
  """The method `config.method` names: a module of this package, or an import path.

  Raises:
    ValueError: unknown name (listing the valid ones), or a module without a METHOD.
  """
  module_name = f"{__name__}.{name}" if name in names() else name
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and module_name.startswith(e.name):
      raise ValueError(f"unknown config.method={name!r}; valid: {names()} or the import "
                       "path of a module that defines METHOD (e.g. 'mypkg.my_method')") from None
    raise
  method = getattr(module, "METHOD", None)
  if not isinstance(method, Method):
    raise ValueError(f"config.method={name!r}: module {module_name!r} defines no METHOD "
                     "(an instance of mfrjax.methods.Method)")
  return method
