"""Entry point: flags -> config -> train.train_and_evaluate(config, workdir).

    python -m mfrjax.main --config=configs/barlow.py --workdir=/tmp/mfr
    mfrjax-train --config=barlow:lfw --workdir=/tmp/mfr     # a recipe by name

Multi-host: start one process per host with the same flags plus
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`; they meet through
`jax.distributed.initialize` and train one model over every device of every host.
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a file (configs/*.py[:variant]) or a recipe name "
    "(barlow[:variant], see mfrjax/configs).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host only).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host only).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host only).")
flags.DEFINE_bool("debug", False, "Show the traceback of an error instead of one line.")
flags.mark_flags_as_required(["config", "workdir"])


# This package's own folder. A record from a file outside it is a library's, wherever the
# package lives: the README's install puts the venv (and orbax) inside a checkout that is
# usually named mfrjax, so a "/mfrjax/" in the path does not tell them apart.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _QuietLibraries:
  """Drops INFO records from orbax's and grain's internals, and the tracebacks that
  library code logs (orbax logs one per writer thread when a save fails, asyncio one more
  for each failed task it collects), so that warnings and errors show as one line each:
  the error that stops the run is reported once by main. `--debug` keeps everything.

  A library's errors also show once per place in its code, on one line: when a save fails
  on a full disk, asyncio logs a two-line "Task exception was never retrieved" for every
  write task the garbage collector happens to collect before the process exits (none in
  16 runs here, 20-odd on CI: its log of 66 lines, 2026-12-07), each saying what main's
  error line says once."""

  def __init__(self):
    self.sites = set()

  def filter(self, record):
    if os.path.abspath(record.pathname).startswith(_PACKAGE_DIR):
      return True
    record.exc_info, record.exc_text = None, None
    internals = any(n in record.pathname for n in ("/orbax/", "/grain/"))
    if internals and record.levelno <= std_logging.INFO:
      return False
    if record.levelno >= std_logging.ERROR:
      site = (record.pathname, record.lineno)
      if site in self.sites:
        return False
      self.sites.add(site)
      record.msg, record.args = record.getMessage().replace("\n", " "), None
    return True


class _UnraisableOnce:
  """`sys.unraisablehook` without `--debug`: one warning line per distinct error instead of
  a traceback each. When a checkpoint write fails, orbax's asyncio loop closes while
  tensorstore's threads still complete the other writes; each completion's callback raises
  'Event loop is closed' where nothing can catch it, and Python's default hook prints a
  traceback for every one (dozens on a full disk) before main's one-line error."""

  def __init__(self):
    self.seen = set()

  def __call__(self, unraisable):
    what = f"{unraisable.exc_type.__name__}: {unraisable.exc_value}"
    if what not in self.seen:
      self.seen.add(what)
      logging.warning("ignored in a library callback: %s", what)


def main(argv):
  del argv
  from mfrjax import cli
  try:
    _main()
  except cli.USER_ERRORS as e:
    if FLAGS.debug:
      raise
    cli.report(e)
    # Leave now: at interpreter shutdown orbax's writer threads may still call into the
    # closed event loop of a failed save and print their tracebacks after the one line.
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


def _main():
  if not FLAGS.debug:
    logging.get_absl_handler().addFilter(_QuietLibraries())
    sys.unraisablehook = _UnraisableOnce()
  import jax  # after flag parsing, so --help stays fast

  if FLAGS.coordinator_address:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  logging.info("process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  from mfrjax import train
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  from mfrjax import cli, configs
  try:
    argv = configs.resolve_argv(sys.argv)
    # An unknown recipe, file, variant or key: one line, before absl parses the flags
    # (absl would print the config module's traceback).
    configs.check_argv(argv)
  except (ValueError, OSError) as e:
    if "--debug" in sys.argv:
      raise
    cli.report(e)
    sys.exit(2)
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
