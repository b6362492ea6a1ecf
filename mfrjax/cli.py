"""One error convention for every command: `error: <what, naming the file or config key>`
on stderr and exit status 2, instead of a traceback; `--debug` shows the traceback.

The library raises ValueError / OSError / FloatingPointError / RuntimeError with messages
written for users (they name the config key or the file), so those are what a command
reports; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys

USER_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError)


_NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def _disk_full(e: BaseException) -> str | None:
  """Where the disk ran full, if it did: an ENOSPC anywhere in the exception's chain
  (orbax and grain wrap it; TensorStore reports it only in its message), else None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return e.filename or "the output directory"
    if _NO_SPACE in str(e):
      paths = re.findall(r'"(/[^"]+)"', str(e))
      return paths[0] if paths else "the output directory"
    e = e.__cause__ or e.__context__
  return None


def message(e: BaseException) -> str:
  where = _disk_full(e)
  if where is not None:
    return (f"the disk is full: no space left to write {where}. Free space and run the same "
            "command again: a training run resumes from its last complete checkpoint")
  return str(e) or type(e).__name__


def report(e: BaseException) -> None:
  """The one-line report of a user error on stderr (the trainer and `run` share it)."""
  print(f"error: {message(e)}", file=sys.stderr)
  print("(run with --debug for the traceback)", file=sys.stderr)


def run(main, argv=None) -> int:
  """main(argv) -> exit status, with user errors reported as one `error:` line."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  if debug:
    argv.remove("--debug")
  try:
    return main(argv)
  except USER_ERRORS as e:
    if debug:
      raise
    report(e)
    return 2


def parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
  """The argument parser of a command: its module docstring's first line as the
  description, the rest (usage examples, what it writes) after the options."""
  first, _, rest = doc.strip().partition("\n")
  return argparse.ArgumentParser(prog=prog, description=first, epilog=rest.strip() or None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def entry(main):
  """The console script of a command module (pyproject.toml [project.scripts]):
  `main(sys.argv[1:])` under `run`; a closed pipe (`mfrjax-... | head`) ends quietly."""
  def script() -> int:
    with contextlib.suppress(BrokenPipeError):
      return run(main)
    return 0
  script.__doc__ = main.__doc__
  return script


def add_landmark_flags(parser) -> None:
  """The --landmarks/--box/--landmark_model/--upsample flags that make a landmark source
  (prep/landmarks.Source) for mfrjax-mask and mfrjax-align."""
  from mfrjax.prep.landmarks import INSTALL, MODELS  # pylint: disable=import-outside-toplevel
  parser.add_argument("--landmarks", default="template",
                      help=f"'template', 'detector' (extra: {INSTALL}) or a landmarks CSV")
  parser.add_argument("--box", type=float, default=1.0,
                      help="template: side of the central face square / image side")
  parser.add_argument("--landmark_model", default="68", choices=MODELS,
                      help="detector: dlib's 68-point (best) or 5-point (CC0 data) model")
  parser.add_argument("--upsample", type=int, default=1,
                      help="detector: upsamplings before detection (1 finds ~40 px faces)")


def add_format_flags(parser) -> None:
  """--format and --quality of the images a data tool writes (sources.WRITE_FORMATS)."""
  from mfrjax.data import sources  # pylint: disable=import-outside-toplevel
  parser.add_argument("--format", default="png", choices=sources.WRITE_FORMATS,
                      dest="image_format",
                      help="png (lossless) or jpg (read 2.2x faster in training)")
  parser.add_argument("--quality", type=int, default=sources.JPEG_QUALITY,
                      help="JPEG quality of --format=jpg, 1-100")
