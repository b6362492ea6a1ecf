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
from absl import logging
from flax import traverse_util

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


# What may change between the start of a run and its resumption: how a run is watched,
# saved, fed and evaluated, not what it trains on or how. num_epochs is allowed too when
# the learning rate of every step already taken stays the same (train checks that).
RESUME_SAFE = ("log_every", "checkpoint_every", "keep_checkpoints", "eval_at_init",
               "eval_every", "resume", "eval.", "data.num_workers", "data.prefetch",
               "data.worker_processes", "data.cache_mb", "data.reader_nice", "data.groups_csv",
               "data.check_files")
RESUME_IF_SCHEDULE_KEPT = ("num_epochs",)


class ConfigChangedError(ValueError):
  """A workdir's run is resumed with a config that trains something else."""


def config_changes(stored: dict, config: ml_collections.ConfigDict) -> dict:
  """{dotted key: (stored value, new value)} for every key that differs."""
  new = traverse_util.flatten_dict(json.loads(json.dumps(config.to_dict(), default=str)),
                                   sep=".")
  old = traverse_util.flatten_dict(stored, sep=".")
  return {k: (old.get(k, "<absent>"), new.get(k, "<absent>"))
          for k in sorted(set(old) | set(new)) if old.get(k, "<absent>") != new.get(k, "<absent>")}


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> dict:
  """Compares `config` with the config stored by the run being resumed in `workdir`.

  Raises ConfigChangedError listing every changed key that is not safe to change
  (RESUME_SAFE). Returns the changes of RESUME_IF_SCHEDULE_KEPT keys for the trainer to
  check once it knows the step reached. A run without a readable run.json (older than
  stored configs, or the file damaged) is resumed with a warning; run.json is then
  written afresh.
  """
  path = os.path.join(workdir, FILE)
  try:
    stored = read(workdir)["config"].to_dict()
  except (FileNotFoundError, ValueError) as e:  # missing or damaged: rewritten on this start
    logging.warning("cannot check that the resumed run's config is the one it started with: "
                    "%s", e)
    return {}
  changes = config_changes(stored, config)
  unsafe = {k: v for k, v in changes.items()
            if not any(k == s or (s.endswith(".") and k.startswith(s))
                       for s in RESUME_SAFE + RESUME_IF_SCHEDULE_KEPT)}
  if unsafe:
    lines = "\n".join(f"  config.{k}: {old!r} -> {new!r}" for k, (old, new) in unsafe.items())
    raise ConfigChangedError(
        f"--workdir={workdir} holds checkpoints of a run with another config; resuming it "
        f"would continue a different experiment. Changed:\n{lines}\nUse another --workdir, or "
        f"the config stored in {path}. Safe to change on resume: {', '.join(RESUME_SAFE)}; "
        "num_epochs when the learning rate of the steps taken stays the same.")
  return {k: v for k, v in changes.items() if k in RESUME_IF_SCHEDULE_KEPT}
