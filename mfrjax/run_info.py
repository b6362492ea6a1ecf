"""What a run stores about itself so its model can be used without the config file.

`<workdir>/run.json`, written by the trainer before the first step:

    config          the full config as a dict (ConfigDict.to_dict)
    num_classes     training identities (the margin head's size; needed to rebuild it)
    preprocessing   what the network expects: image size, channels, centre crop,
                    alignment of the training images, upper-face cut, pixel scaling

mfrjax.embedder reads it back; nothing else (dataset, mesh, config file) is needed.
"""

from __future__ import annotations

import json
import os

import ml_collections

from mfrjax.data import pipeline

FILE = "run.json"
# The one pixel scaling of the project (eval/embed.to_float): uint8 -> (x - 127.5) / 127.5.
PIXEL_MEAN, PIXEL_STD = 127.5, 127.5


def preprocessing(data_cfg) -> dict:
  """The input contract of a model trained with `data_cfg`."""
  u = data_cfg.upper_face
  return {"image_size": int(data_cfg.image_size), "channels": int(data_cfg.channels),
          "channel_order": "BGR" if data_cfg.channels == 3 else "grey",
          "crop_fraction": float(data_cfg.crop_fraction),
          "alignment": str(data_cfg.alignment),
          "upper_face": {"enabled": bool(u.enabled), "grid": int(u.grid),
                         "keep_blocks": int(u.keep_blocks)},
          "input_shape": list(pipeline.input_shape(data_cfg)),  # (H, W, C) after the cut
          "pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD}


def write(workdir: str, config: ml_collections.ConfigDict, num_classes: int) -> str:
  path = os.path.join(workdir, FILE)
  info = {"config": config.to_dict(), "num_classes": int(num_classes),
          "preprocessing": preprocessing(config.data)}
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1, default=str)
  os.replace(tmp, path)  # never a half-written file
  return path


def read(workdir: str) -> dict:
  """The run's stored info; the config comes back as a ConfigDict."""
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: --workdir={workdir!r} is not an mfrjax "
                            "run (or was trained before runs stored their config)")
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is damaged ({e}); it is rewritten when the run is resumed") from e
  info["config"] = ml_collections.ConfigDict(info["config"])
  return info
