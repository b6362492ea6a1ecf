"""Faults a user meets, each with real files and real processes: a NaN near a checkpoint,
a changed config in a used workdir, damaged checkpoints, another device count, bad
evaluation inputs found before training, two runs on one workdir, and the commands'
one-line errors (README: What happens when)."""

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mfrjax import checkpoint, cli, recognition, run_info, train, workdir_lock
from mfrjax.data import sources
from mfrjax.parallel import mesh as mesh_lib
from tests.conftest import ROOT, load_config, smoke_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def arcface_smoke(**overrides):
  return load_config("margin", "smoke", **overrides)


def saved_params(step_dir) -> list[np.ndarray]:
  """The parameters stored in one checkpoint step, as NumPy."""
  path = os.path.join(os.path.abspath(step_dir), "state")
  tree = ocp.PyTreeCheckpointer().restore(path)
  return [np.asarray(x) for x in jax.tree.leaves(tree["params"])]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished barlow smoke run (checkpoints at 4, 8, 12) and its results."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  return workdir, train.train_and_evaluate(smoke_config(), workdir)


def crashed_copy(finished, tmp_path, name="crashed"):
  """The finished run as it was after its step-8 checkpoint (step 12 and results gone)."""
  workdir, _ = finished
  dest = tmp_path / name
  shutil.copytree(workdir, dest)
  shutil.rmtree(dest / "checkpoints" / "12")
  for f in ("results.json", "embeddings.npz"):
    os.remove(dest / f)
  return dest


# 1. A NaN never reaches a checkpoint ---------------------------------------------------

def test_nan_run_saves_no_unchecked_state_and_names_a_good_checkpoint(tmp_path):
  """The issue's reproduction: checkpoint every step, the loss checked every 100 steps
  before the fix; every checkpoint must now hold finite weights, the named one included."""
  cfg = arcface_smoke(**{"optimizer.learning_rate": 1e6, "checkpoint_every": 1,
                         "log_every": 100})
  with pytest.raises(train.NonFiniteLossError, match=r"The last good checkpoint is step (\d+)") \
      as err:
    train.train_and_evaluate(cfg, str(tmp_path))
  named = int(re.search(r"checkpoint is step (\d+)", str(err.value)).group(1))
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps and named == steps[-1]
  for s in steps:
    assert all(np.isfinite(p).all() for p in saved_params(tmp_path / "checkpoints" / str(s)))


class _Stream:
  """A checkpointable stand-in for the data iterator."""

  def __next__(self):
    return None

  def get_state(self):
    return b"{}"

  def set_state(self, state):
    pass


def test_weights_that_overflow_with_a_finite_loss_are_not_saved(tmp_path):
  """The loss of step s comes from the weights before it, so a step whose update
  overflows has a finite loss; its weights must still not be saved."""
  cfg = smoke_config(checkpoint_every=1, log_every=100)

  def step_fn(state, batch, rng):
    w = state["w"] + 1.0
    w = jnp.where(w >= 3.0, jnp.inf, w)  # the update of step 2 overflows
    return {"w": w}, {"loss": jnp.float32(1.0)}

  manager = checkpoint.make_manager(str(tmp_path / "ckpt"), 10)
  with pytest.raises(train.NonFiniteLossError,
                     match=r"weights became non-finite in step 2.*last good checkpoint is step 1"):
    train.train_loop(cfg, {"w": jnp.ones(3)}, step_fn, _Stream(), jax.random.key(0), 0, 5,
                     manager, {}, _NullWriter(), images_per_row=1)
  assert manager.all_steps() == [1]


class _NullWriter:
  def write_scalars(self, step, scalars):
    pass

  def flush(self):
    pass


# 2. A changed experiment is refused on resume --------------------------------------------

def test_resume_refuses_a_changed_experiment_and_allows_safe_changes(finished, tmp_path):
  _, results = finished
  crashed = crashed_copy(finished, tmp_path)
  changed = smoke_config(seed=3, **{"data.test_fraction": 0.5, "optimizer.learning_rate": 0.123})
  with pytest.raises(run_info.ConfigChangedError) as err:
    train.train_and_evaluate(changed, str(crashed))
  msg = str(err.value)
  for line in ("config.seed: 0 -> 3", "config.data.test_fraction: 0.25 -> 0.5",
               "-> 0.123"):
    assert line in msg, msg
  assert "config.log_every" not in msg
  # Nothing was touched: the stored config is still the run's own.
  assert run_info.read(str(crashed))["config"].seed == 0
  # Logging, checkpoint cadence, evaluation and reader settings may change; the run
  # continues as if it had never stopped.
  safe = smoke_config(log_every=3, checkpoint_every=6, **{"data.num_workers": 2,
                                                           "eval.verification.pairs": 100})
  resumed = train.train_and_evaluate(safe, str(crashed))
  assert "init" not in resumed
  np.testing.assert_array_equal(np.load(crashed / "embeddings.npz")["masked"],
                                np.load(os.path.join(finished[0], "embeddings.npz"))["masked"])


def test_damaged_run_json_does_not_block_the_resume(finished, tmp_path, caplog):
  """run.json's own error message promises it is rewritten on resume: it must be."""
  crashed = crashed_copy(finished, tmp_path)
  (crashed / "run.json").write_text("")
  resumed = train.train_and_evaluate(smoke_config(), str(crashed))
  assert "init" not in resumed and "cannot check that the resumed run's config" in caplog.text
  assert run_info.read(str(crashed))["config"].seed == 0  # written afresh
  np.testing.assert_array_equal(np.load(crashed / "embeddings.npz")["masked"],
                                np.load(os.path.join(finished[0], "embeddings.npz"))["masked"])


def test_more_epochs_only_when_the_schedule_of_the_steps_taken_is_kept(tmp_path):
  """cyclic cosine with fixed cycles (arcface) keeps the rate of the steps taken when
  the run is made longer; warm-up cosine over the whole run (barlow) does not; a run
  past the new end is refused before any step."""
  cfg = arcface_smoke()
  first = train.train_and_evaluate(cfg, str(tmp_path / "arc"))
  longer = train.train_and_evaluate(arcface_smoke(num_epochs=3), str(tmp_path / "arc"))
  assert longer["steps"] == first["steps"] * 3 // 2 and "init" not in longer
  steps = sorted(int(s) for s in os.listdir(tmp_path / "arc" / "checkpoints") if s.isdigit())
  assert steps[-1] == longer["steps"]
  with pytest.raises(run_info.ConfigChangedError, match=r"num_epochs=1 ends at step \d+"):
    train.train_and_evaluate(arcface_smoke(num_epochs=1), str(tmp_path / "arc"))
  train.train_and_evaluate(smoke_config(num_epochs=2), str(tmp_path / "bt"))
  with pytest.raises(run_info.ConfigChangedError,
                     match="changes the learning rate of steps already taken"):
    train.train_and_evaluate(smoke_config(num_epochs=4), str(tmp_path / "bt"))


# 3. Damaged checkpoints -----------------------------------------------------------------

def _largest_array_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / "state") for f in fs]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncated array file", "empty meta JSON"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact(finished, tmp_path, damage,
                                                                  caplog):
  workdir, _ = finished
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  for f in ("results.json", "embeddings.npz"):
    os.remove(run / f)
  newest = run / "checkpoints" / "12"
  if damage == "truncated array file":
    path = _largest_array_file(newest)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    open(newest / "meta" / "metadata", "w").close()
  train.train_and_evaluate(smoke_config(), str(run))
  assert "checkpoint step 12 is damaged" in caplog.text and "resumed from step 8" in caplog.text
  # Set aside, not deleted; the run saved a fresh step 12 and ends as the undamaged one.
  assert os.path.isdir(run / "damaged_checkpoints" / "12")
  assert "12" in os.listdir(run / "checkpoints")
  np.testing.assert_array_equal(np.load(run / "embeddings.npz")["masked"],
                                np.load(os.path.join(workdir, "embeddings.npz"))["masked"])


def test_no_intact_checkpoint_is_one_error_naming_the_directory(finished, tmp_path):
  crashed = crashed_copy(finished, tmp_path)
  for step in os.listdir(crashed / "checkpoints"):
    if step.isdigit():
      open(crashed / "checkpoints" / step / "meta" / "metadata", "w").close()
  with pytest.raises(checkpoint.NoIntactCheckpointError,
                     match=f"no intact checkpoint in {crashed / 'checkpoints'}: step 8 "):
    train.train_and_evaluate(smoke_config(), str(crashed))
  assert not (crashed / "damaged_checkpoints").exists()  # nothing moved when none is good


# 4. Elastic resume ----------------------------------------------------------------------

def _main(workdir, devices, *flags):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "mfrjax.main", "--config=configs/barlow.py:smoke",
                         f"--workdir={workdir}", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_resume_on_fewer_devices_in_a_new_process(tmp_path):
  """2 -> 1 devices: orbax refused ('Topology mismatch') the saved 2-device layout."""
  first = _main(tmp_path, 2)
  assert first.returncode == 0, first.stderr[-2000:]
  shutil.rmtree(tmp_path / "checkpoints" / "12")
  again = _main(tmp_path, 1)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resumed from" in again.stderr and "checkpoints/8 at step 8" in again.stderr


def test_powersgd_resumes_on_another_device_count_with_fresh_residuals(tmp_path, caplog):
  """PowerSGD's residuals are per device: on 8 -> 2 devices they start afresh, with a
  warning, and the model, optimizer and data position are restored."""
  cfg = smoke_config(grad_reduce="powersgd", **{"powersgd.start_step": 0})
  train.train_and_evaluate(cfg, str(tmp_path))
  shutil.rmtree(tmp_path / "checkpoints" / "12")
  os.remove(tmp_path / "results.json")
  saved = saved_params(tmp_path / "checkpoints" / "8")
  original = mesh_lib.make_mesh
  seen = {}

  def two_devices(devices=None):
    return original(jax.devices()[:2] if devices is None else devices)

  def spy(*args, **kwargs):
    restored = restore(*args, **kwargs)
    seen["params"] = [np.asarray(x) for x in jax.tree.leaves(restored[0].params)]
    seen["reduce_state"] = [np.asarray(x)  # donated later
                            for x in jax.tree.leaves(restored[0].reduce_state)]
    return restored

  restore = checkpoint.restore
  try:
    mesh_lib.make_mesh, checkpoint.restore = two_devices, spy
    results = train.train_and_evaluate(cfg, str(tmp_path))
  finally:
    mesh_lib.make_mesh, checkpoint.restore = original, restore
  assert "starting that state afresh" in caplog.text
  assert results["steps"] == 12 and os.path.exists(tmp_path / "results.json")
  for a, b in zip(saved, seen["params"]):
    np.testing.assert_array_equal(a, b)
  residuals = [x for x in seen["reduce_state"] if x.ndim > 1 and x.shape[0] == 2]
  assert residuals and all(not r.any() for r in residuals)  # fresh: zero


# 5. Bad evaluation inputs are found before step 1 ----------------------------------------

def _faces(shared_data, root, people=6, per_person=4):
  """A small real folder set: the first LFW people with enough photos."""
  lfw = shared_data / "lfw"
  names = [n for n in sorted(os.listdir(lfw)) if len(os.listdir(lfw / n)) >= per_person]
  for n in names[:people]:
    (root / n).mkdir(parents=True)
    for f in sorted(os.listdir(lfw / n))[:per_person]:
      shutil.copy(lfw / n / f, root / n / f)
  return root


def folder_config(root, **overrides):
  return arcface_smoke(**{"data.source": "folder", "data.root": str(root),
                          "data.mask_source": "render", "data.test_fraction": 0.34,
                          "data.image_size": 16, **overrides})


def test_a_corrupt_training_image_fails_before_the_first_step(shared_data, tmp_path):
  """Without the check the run stopped at the first batch that held the file (step 40 of
  `margin.py:lfw_centre` on 74 LFW people), after its start-up and steps were spent."""
  root = _faces(shared_data, tmp_path / "faces")
  cfg = folder_config(root)
  faceset, _, _, train_groups, _ = recognition.split_data(cfg)
  victims = [faceset.describe(int(train_groups[k][-1])) for k in (0, 1)]
  for victim in victims:
    with open(victim, "wb") as f:
      f.write(b"not a jpeg")
  with pytest.raises(sources.ImageReadError,
                     match=r"2 of \d+ training image files cannot be read") as e:
    train.train_and_evaluate(cfg, str(tmp_path / "w1"))
  assert all(v in str(e.value) for v in victims)
  assert not (tmp_path / "w1" / "checkpoints").exists()  # no step was taken
  recognition.check_training_files(folder_config(root, **{"data.check_files": False}),
                                   faceset, train_groups)  # skipped: no error


def test_bad_evaluation_inputs_fail_before_the_first_step(shared_data, tmp_path):
  root = _faces(shared_data, tmp_path / "faces")
  cfg = folder_config(root)
  faceset, _, _, _, test_groups = recognition.split_data(cfg)
  victim = faceset.describe(int(test_groups[0][-1]))
  with open(victim, "wb") as f:
    f.write(b"not a jpeg")
  with pytest.raises(sources.ImageReadError, match=re.escape(victim)):
    train.train_and_evaluate(cfg, str(tmp_path / "w1"))
  assert not (tmp_path / "w1" / "checkpoints").exists()  # no step was taken
  shutil.copy(faceset.describe(int(test_groups[0][0])), victim)

  with pytest.raises(FileNotFoundError, match="config.eval.verification.sets.*pairs.txt"):
    train.train_and_evaluate(folder_config(root, **{
        "eval.verification.sets": str(tmp_path / "pairs.txt")}), str(tmp_path / "w2"))
  with pytest.raises(FileNotFoundError, match="groups.csv"):
    train.train_and_evaluate(folder_config(root, **{
        "data.groups_csv": str(tmp_path / "groups.csv")}), str(tmp_path / "w3"))
  for w in ("w2", "w3"):
    assert not (tmp_path / w / "checkpoints").exists()


def test_no_test_identity_with_a_probe_fails_before_training(shared_data, tmp_path):
  root = _faces(shared_data, tmp_path / "faces", people=12, per_person=2)
  cfg = folder_config(root, batch_size=8, **{"data.max_images_per_identity": 1})
  with pytest.raises(ValueError, match="no test identity has two or more images"):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))


@pytest.mark.parametrize("batch", [0, -8])
def test_batch_size_must_be_positive(tmp_path, batch):
  with pytest.raises(ValueError, match=f"config.batch_size={batch} must be positive"):
    train.train_and_evaluate(smoke_config(batch_size=batch), str(tmp_path))


@pytest.mark.parametrize("config_name,batch,why", [
    ("barlow", 12, "must divide by the 8 devices"), ("barlow", 0, "must be positive"),
    ("mask_seg", 0, "must be positive")])
def test_a_bad_evaluation_batch_size_stops_before_step_1(tmp_path, config_name, batch, why):
  cfg = load_config(config_name, "smoke", **{"eval.batch_size": batch})
  with pytest.raises(ValueError, match=f"config.eval.batch_size={batch} {why}"):
    train.train_and_evaluate(cfg, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


# 6. One run per workdir ------------------------------------------------------------------

def test_second_run_on_a_workdir_names_the_holder_and_a_killed_holder_frees_it(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from mfrjax import workdir_lock\n"
       "with workdir_lock.hold(sys.argv[1]):\n  print('held', flush=True); time.sleep(600)",
       str(tmp_path)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"in use by pid {holder.pid} "):
      train.train_and_evaluate(smoke_config(), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()
  finally:
    holder.kill()  # kill -9: the kernel drops the lock with the process
    holder.wait()
  with workdir_lock.hold(str(tmp_path)):
    pass


# Results and commands --------------------------------------------------------------------

def test_results_json_is_strict_json(tmp_path):
  from mfrjax.eval import report
  report.write_json(str(tmp_path / "r.json"), {"a": float("nan"), "b": [np.float32(np.inf), 1.5],
                                                 "c": {"d": np.float64(2.0)}})
  text = (tmp_path / "r.json").read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": 2.0}}


def test_commands_report_user_errors_in_one_line(tmp_path, capsys):
  def fails(argv):
    raise FileNotFoundError(f"--root={argv[0]!r} is not a directory")

  assert cli.run(fails, ["/nope"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --root='/nope' is not a directory\n") and "Traceback" not in err
  with pytest.raises(FileNotFoundError):
    cli.run(fails, ["/nope", "--debug"])

  def disk_full(argv):
    try:
      raise OSError(errno.ENOSPC, "No space left on device", "/ckpt/run/checkpoints/8")
    except OSError as e:
      raise RuntimeError("orbax: save failed") from e

  assert cli.run(disk_full, []) == 2
  assert "error: the disk is full: no space left to write /ckpt/run/checkpoints/8" in \
      capsys.readouterr().err


@pytest.mark.parametrize("tool,args,expected", [
    ("convert", ["rec2folder", "--rec=/nonexistent.rec", "--out=/tmp/x"], "nonexistent"),
    ("clean", ["--root=/nonexistent", "--out=/tmp/x.txt"], "/nonexistent"),
    ("evaluate", ["--embeddings=/nonexistent.npz"], "/nonexistent.npz"),
])
def test_tools_say_error_and_exit_2(tool, args, expected):
  r = subprocess.run([sys.executable, "-m", f"mfrjax.tools.{tool}", *args], cwd=ROOT,
                     capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert r.returncode == 2, r.stderr
  assert "Traceback" not in r.stderr and expected in r.stderr
  assert any(line.startswith("error: ") for line in r.stderr.splitlines()), r.stderr


def test_trainer_bad_config_is_one_error_line(tmp_path):
  r = subprocess.run([sys.executable, "-m", "mfrjax.main", "--config=configs/barlow.py:smoke",
                      f"--workdir={tmp_path}", "--config.batch_size=-8"], cwd=ROOT,
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert r.returncode == 2
  assert "error: config.batch_size=-8 must be positive" in r.stderr
  assert "Traceback" not in r.stderr


def test_library_tracebacks_are_left_out_of_the_log():
  """The failure CI saw once: asyncio logs 'Task exception was never retrieved' with a
  traceback when it collects a failed orbax write, depending on when the GC runs."""
  import logging as std_logging

  from mfrjax import main as main_lib

  def record(path, level=std_logging.ERROR):
    try:
      raise ValueError("RESOURCE_EXHAUSTED")
    except ValueError:
      return std_logging.LogRecord("x", level, path, 1, "failed", None, sys.exc_info())

  quiet = main_lib._QuietLibraries()
  package = os.path.dirname(main_lib.__file__)
  # The README's install puts the venv inside the checkout, often a folder named mfrjax:
  # orbax's path there holds "/mfrjax/" too (CI's traceback, 2026-11-25).
  venv_orbax = os.path.join(os.path.dirname(package), ".venv", "lib", "python3.11",
                            "site-packages", "orbax", "checkpoint", "future.py")
  for path in ("/py/asyncio/base_events.py", "/site/orbax/checkpoint/future.py",
               "/home/me/mfrjax/.venv/lib/site-packages/orbax/checkpoint/future.py",
               venv_orbax):
    r = record(path)
    assert quiet.filter(r) and r.exc_info is None, path
    assert "Traceback" not in std_logging.Formatter().format(r)
  assert not quiet.filter(record("/site/orbax/checkpoint/future.py", std_logging.INFO))
  own = record(os.path.join(package, "train.py"))
  assert quiet.filter(own) and own.exc_info is not None


def test_a_library_error_shows_once_per_place_on_one_line():
  """CI's full-disk run of 2026-12-07: asyncio logged a two-line "Task exception was never
  retrieved" for each write task collected before exit, 66 lines where 20 are usual."""
  import logging as std_logging

  from mfrjax import main as main_lib

  stream = io.StringIO()
  handler = std_logging.StreamHandler(stream)
  handler.addFilter(main_lib._QuietLibraries())
  log = std_logging.getLogger("test_quiet_libraries")
  log.propagate = False
  log.addHandler(handler)
  try:
    def emit(path, line, msg, *args, level=std_logging.ERROR):
      log.handle(std_logging.LogRecord(log.name, level, path, line, msg, args, None))

    asyncio_site = "/usr/lib/python3.11/asyncio/base_events.py"
    for task in range(30):
      emit(asyncio_site, 1771, "Task exception was never retrieved\nfuture: <Task %s "
           "exception=ValueError('No space left on device')>", f"Task-{task}")
    emit("/site/orbax/checkpoint/future.py", 387, "[thread=%s] raised: %s", "a", "full")
    emit("/site/orbax/checkpoint/future.py", 387, "[thread=%s] raised: %s", "b", "full")
    emit("/site/jax/_src/xla_bridge.py", 9, "a library warning\nsays %s", "twice",
         level=std_logging.WARNING)
    emit("/site/jax/_src/xla_bridge.py", 9, "a library warning\nsays %s", "twice",
         level=std_logging.WARNING)
    own = os.path.join(os.path.dirname(main_lib.__file__), "train.py")
    emit(own, 5, "step %d: loss is NaN\nsee %s", 1, "run.json")
    emit(own, 5, "step %d: loss is NaN\nsee %s", 2, "run.json")
  finally:
    log.removeHandler(handler)
  assert stream.getvalue().splitlines() == [
      "Task exception was never retrieved future: <Task Task-0 "
      "exception=ValueError('No space left on device')>",
      "[thread=a] raised: full",
      "a library warning", "says twice", "a library warning", "says twice",
      "step 1: loss is NaN", "see run.json", "step 2: loss is NaN", "see run.json"]


def test_errors_no_code_can_catch_are_one_warning_each(monkeypatch, caplog, capfd):
  """The failure a fresh install with orbax 0.12 showed: on a full disk, each tensorstore
  write that completes after orbax's event loop closed raises in its callback, and Python's
  default `sys.unraisablehook` printed a traceback for every one."""
  from mfrjax import main as main_lib

  class Callback:
    def __init__(self, message):
      self.message = message

    def __del__(self):  # an error raised here reaches sys.unraisablehook, like a C callback's
      raise RuntimeError(self.message)

  monkeypatch.setattr(sys, "unraisablehook", main_lib._UnraisableOnce())
  with caplog.at_level("WARNING"):
    for message in ("Event loop is closed",) * 5 + ("another",):
      Callback(message)  # dropped at once: __del__ raises
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ["ignored in a library callback: RuntimeError: Event loop is closed",
                   "ignored in a library callback: RuntimeError: another"]
  assert "Traceback" not in capfd.readouterr().err


def test_full_disk_is_one_error_line_naming_the_path(tmp_path):
  """A real full disk: a 1 MB tmpfs (needs root; skipped where mounting is not allowed)."""
  small = tmp_path / "small"
  small.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                    capture_output=True).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here (not root)")
  try:
    r = subprocess.run([sys.executable, "-m", "mfrjax.main",
                        "--config=configs/barlow.py:smoke", f"--workdir={small}/w"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  finally:
    subprocess.run(["umount", str(small)], check=False)
  assert r.returncode == 2
  assert f"error: the disk is full: no space left to write {small}/w/checkpoints/" in r.stderr
  assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) < 40, r.stderr[-3000:]
