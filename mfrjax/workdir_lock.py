"""One run per workdir: an advisory lock on <workdir>/lock, held while the run lives.

Two runs writing one workdir would interleave checkpoints and results (one of them then
crashed inside orbax). The lock is `fcntl.flock`, so the kernel releases it when the
process dies however it dies (kill -9 included): a crashed run never leaves a stale lock.
The file holds the holder's host and pid, which the refused run names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket

FILE = "lock"


class WorkdirBusyError(RuntimeError):
  """Another live process trains in this workdir."""


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True):
  """Holds the workdir's lock for the body; raises WorkdirBusyError if another holds it.

  `enabled=False` (processes other than 0 of a multi-host run, which share the workdir
  with process 0) skips it.
  """
  if not enabled:
    yield
    return
  path = os.path.join(workdir, FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      raise WorkdirBusyError(
          f"--workdir={workdir} is in use by {holder} (lock: {path}); wait for it to end, "
          "stop it, or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # closing releases the lock
