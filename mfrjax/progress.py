"""Progress bars (tqdm) and end-of-run summaries for the commands (mfrjax/tools).

A tool over 500k images must say how far it is and, at the end, what it wrote and what
it skipped and why; nothing is dropped silently.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import sys

import tqdm


def require_new(*paths: str) -> None:
  """Raises FileExistsError for the first of `paths` that exists: tools never overwrite."""
  for path in paths:
    if os.path.exists(path):
      raise FileExistsError(f"{path} exists; choose another output (nothing is overwritten)")


def one_per_output(items: list[str], output_of, summary: Summary) -> list[str]:
  """The items whose output name (`output_of(item)`) no earlier item claimed; each later
  one is reported in `summary`. Two inputs such as a.jpg and a.png, both written as a.png,
  would otherwise overwrite each other."""
  first: dict[str, str] = {}
  keep = []
  for item in items:
    name = output_of(item)
    if name in first:
      summary.skip(item, f"same output name as {first[name]}")
    else:
      first[name] = item
      keep.append(item)
  return keep


def Progress(total: int, desc: str, stream=None, quiet: bool = False) -> tqdm.tqdm:
  """A progress bar on stderr (`desc: done/total, rate, ETA`, tqdm); silent if `quiet`.
  Called like the class it replaces: `bar.update(n)`, `bar.close()`."""
  return tqdm.tqdm(total=total, desc=desc, file=stream or sys.stderr, disable=quiet,
                   mininterval=0.2, unit="img", dynamic_ncols=True)


class Summary:
  """Counts what was written and every skip with its reason."""

  def __init__(self):
    self.written = 0
    self.skipped: list[tuple[str, str]] = []
    self.seconds: float | None = None  # wall time, set by the tool

  def skip(self, item: str, why: str) -> None:
    self.skipped.append((item, why))

  def text(self) -> str:
    s = self.seconds
    lines = [f"written: {self.written}" + (f" in {s:.1f} s ({self.written / max(s, 1e-9):.1f}/s)"
                                           if s is not None else "")]
    lines.append(f"skipped: {len(self.skipped)}")
    for why, n in collections.Counter(w for _, w in self.skipped).most_common():
      lines.append(f"  {n:6d}  {why}")
    for item, why in self.skipped[:10]:
      lines.append(f"    e.g. {item}: {why}")
    return "\n".join(lines)

  def as_dict(self) -> dict:
    return {"written": self.written, "seconds": self.seconds,
            "skipped": [{"item": i, "why": w} for i, w in self.skipped]}


def map_progress(fn, items, *, workers: int, desc: str, quiet: bool = False,
                 chunksize: int = 16):
  """Yields fn(item) for each item in order, over `workers` spawned processes (1: here),
  drawing a progress bar. `fn` must pickle (a module-level function or a partial)."""
  bar = Progress(len(items), desc, quiet=quiet)
  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
  try:
    for r in (pool.imap(fn, items, chunksize=chunksize) if pool else map(fn, items)):
      bar.update()
      yield r
  except BaseException:
    if pool:              # an error or an interrupt: do not finish the remaining items
      pool.terminate()
    raise
  finally:
    if pool:
      pool.close()
      pool.join()
  bar.close()
