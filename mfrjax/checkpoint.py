"""Orbax checkpoints of the train state *and* the grain data iterator.

Restore order: the latest checkpoint in the run's own workdir, else an
explicit `config.resume` (another run's checkpoint directory, or one step of it), else
nothing (fresh init). Every checkpoint carries a small JSON 'meta' item with the
model's parameter signature, so a checkpoint of another model is refused with a message
that names the first differing parameter instead of an opaque tree error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import grain
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class ModelMismatchError(ValueError):
  """The checkpoint was written by a model with other parameters."""


def make_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(epath.Path(directory).absolute(), options=options)


def has_steps(directory: str) -> bool:
  """Whether `directory` holds a saved step (a run to resume), without opening it."""
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


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
  """Saves a weights-only tree (the best evaluation's, recognition.BestWeights) at `step`."""
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


def _split_signature(signature: list[str]) -> tuple[list[str], list[str]]:
  """(parameters, gradient-reduction state): the latter's entries start with 'reduce_state'."""
  return ([x for x in signature if not x.startswith("reduce_state")],
          [x for x in signature if x.startswith("reduce_state")])


def check_meta(meta: dict, expected: dict, where: str) -> bool:
  """Raises ModelMismatchError when the saved parameters differ from the model's.

  Returns:
    True when only the gradient-reduction state differs (PowerSGD's per-device
    residuals saved on another device count, or another reduction): the caller restores
    the rest and starts that state afresh.
  """
  saved, want = (_split_signature(meta.get("param_signature", [])),
                 _split_signature(expected["param_signature"]))
  if saved[0] != want[0]:
    diff = next((f"checkpoint has {a!r}, model has {b!r}" for a, b in zip(saved[0], want[0])
                 if a != b),
                f"checkpoint has {len(saved[0])} parameters, model has {len(want[0])}")
    raise ModelMismatchError(
        f"checkpoint {where} was written by a different model "
        f"(saved: {meta.get('model')}, current: {expected.get('model')}); first difference: "
        f"{diff}. Use another --workdir or a matching config.")
  return saved[1] != want[1]


class NoIntactCheckpointError(RuntimeError):
  """Every checkpoint of a run's directory is damaged."""


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract_state, data_iterator,
                  meta: dict, fresh_reduce_state):
  """(state, step, where) from one step; raises on a damaged or mismatched checkpoint."""
  where = os.path.join(str(manager.directory), str(step))
  saved_meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  if not isinstance(saved_meta["meta"], dict):
    raise ValueError(f"{where}/meta is not a JSON object")
  comm_differs = check_meta(saved_meta["meta"], meta, where)
  if not comm_differs:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored["state"], step, where
  # Restore everything but the reduction state, which keeps its fresh initial value: its
  # per-device residuals cannot be split over another number of devices.
  logging.warning(
      "checkpoint %s holds gradient-reduction state for another device count or reduction "
      "(PowerSGD residuals are per device); restoring the model, optimizer and data "
      "position and starting that state afresh: the first steps after resuming send "
      "no error feedback from before the restart", where)
  target = {k: v for k, v in _as_dict(abstract_state).items() if k != "reduce_state"}
  restored = ocp.PyTreeCheckpointer().restore(
      epath.Path(where) / "state", args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  manager.restore(step, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  state = abstract_state.replace(reduce_state=fresh_reduce_state,
                                 **{k: restored[k] for k in target})
  return state, step, where


def _as_dict(state) -> dict:
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def set_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> str:
  """Moves a damaged step out of the manager's directory (kept, never deleted) to
  <run>/damaged_checkpoints/<step>, so the run saves a fresh one when it gets there."""
  src = epath.Path(manager.directory) / str(step)
  dest_dir = epath.Path(manager.directory).parent / "damaged_checkpoints"
  dest_dir.mkdir(parents=True, exist_ok=True)
  dest = dest_dir / str(step)
  n = 1
  while dest.exists():
    dest, n = dest_dir / f"{step}.{n}", n + 1
  shutil.move(str(src), str(dest))
  with open(str(dest_dir / "README.txt"), "a", encoding="utf-8") as f:
    f.write(f"{dest.name}: {reason}\n")
  manager.reload()
  return str(dest)


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def restore(manager: ocp.CheckpointManager, resume: str, abstract_state, data_iterator,
            meta: dict, fresh_reduce_state=None):
  """Restores by the order in the module docstring.

  A damaged checkpoint of the run's own directory (a truncated array file, an empty or
  unreadable JSON) is set aside (set_aside) with a warning naming it and the reason, and
  the next newest is tried; when none is intact, NoIntactCheckpointError names the
  directory. An explicit `config.resume` is the user's choice and is not replaced by an
  older step: a damaged one is an error. `fresh_reduce_state` is the gradient-reduction state
  used when the saved one cannot be (check_meta).

  Returns:
    (state, step, source) with source a path string, or None when nothing to restore.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    if not resume:
      return None
    source_manager, step = _locate(resume)
    try:
      return _restore_step(source_manager, step, abstract_state, data_iterator, meta,
                           fresh_reduce_state)
    except ModelMismatchError:
      raise
    except Exception as e:
      raise NoIntactCheckpointError(
          f"config.resume={resume!r}: checkpoint step {step} is damaged "
          f"({_first_line(e)})") from None
  failed = []
  for step in steps:
    try:
      restored = _restore_step(manager, step, abstract_state, data_iterator, meta,
                               fresh_reduce_state)
    except ModelMismatchError:
      raise
    except Exception as e:
      failed.append((step, _first_line(e)))
      continue
    # Only once an intact one is found: a read error of every step may be the storage's,
    # not the checkpoints', so nothing is moved then.
    for bad, reason in failed:
      dest = set_aside(manager, bad, reason)
      logging.warning("checkpoint step %d is damaged (%s); moved to %s and resumed from "
                      "step %d instead", bad, reason, dest, step)
    return restored
  raise NoIntactCheckpointError(
      f"no intact checkpoint in {manager.directory}: "
      + "; ".join(f"step {s} ({r})" for s, r in failed)
      + ". Start again with another --workdir, or repair or remove the damaged steps")
