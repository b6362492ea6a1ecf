"""Orbax checkpoints of the train state *and* the grain data iterator.

Restore order (STYLE.md): the latest checkpoint in the run's own workdir, else an
explicit `config.resume` (another run's checkpoint directory, or one step of it), else
nothing (fresh init). Every checkpoint carries a small JSON 'meta' item with the
model's parameter signature, so a checkpoint of another model is refused with a message
that names the first differing parameter instead of an opaque tree error.
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp
from etils import epath


class ModelMismatchError(ValueError):
  """The checkpoint was written by a model with other parameters."""


def make_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(epath.Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict) -> None:
  """Saves state, data iterator position and meta at `step` (no-op if already saved)."""
  if step in manager.all_steps():
    return
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator),
      meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()


def save_weights(manager: ocp.CheckpointManager, step: int, weights) -> None:
  """Saves a weights-only tree (the best evaluation's, train.BestWeights) at `step`."""
  manager.save(step, args=ocp.args.Composite(weights=ocp.args.StandardSave(weights)))
  manager.wait_until_finished()


def _locate(path: str) -> tuple[ocp.CheckpointManager, int]:
  """A manager and step for `config.resume`: a checkpoints dir (latest step) or a step dir."""
  p = epath.Path(path).absolute()
  if not p.exists():
    raise FileNotFoundError(f"config.resume={path!r} does not exist")
  if p.name.isdigit() and (p / "state").exists():
    return make_manager(str(p.parent), keep=1_000_000), int(p.name)
  manager = make_manager(str(p), keep=1_000_000)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.resume={path!r} holds no checkpoint")
  return manager, step


def check_meta(meta: dict, expected: dict, where: str) -> None:
  """Raises ModelMismatchError when the saved parameter signature differs."""
  saved, want = meta.get("param_signature", []), expected["param_signature"]
  if saved == want:
    return
  diff = next((f"checkpoint has {a!r}, model has {b!r}" for a, b in zip(saved, want) if a != b),
              f"checkpoint has {len(saved)} parameters, model has {len(want)}")
  raise ModelMismatchError(
      f"checkpoint {where} was written by a different model or gradient reduction "
      f"(saved: {meta.get('model')}, current: {expected.get('model')}); first difference: "
      f"{diff}. Use another --workdir or a matching config.")


def restore(manager: ocp.CheckpointManager, resume: str, abstract_state, data_iterator,
            meta: dict):
  """Restores by the order in the module docstring.

  Returns:
    (state, step, source) with source a path string, or None when nothing to restore.
  """
  step = manager.latest_step()
  source_manager = manager
  if step is None:
    if not resume:
      return None
    source_manager, step = _locate(resume)
  where = os.path.join(str(source_manager.directory), str(step))
  saved_meta = source_manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  check_meta(saved_meta["meta"], meta, where)
  restored = source_manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return restored["state"], step, where
