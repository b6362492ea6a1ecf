"""The data tools' shared loop (mfrjax/progress.py): order, skips, no overwrites, errors."""

import io
import os
import pathlib
import time

import pytest

from mfrjax import progress


def square_and_mark(item):
  """Worker: marks that `item` ran; item 0 fails, the others take a moment."""
  n, folder = item
  pathlib.Path(folder, str(n)).touch()
  if n == 0:
    raise RuntimeError("item 0 is bad")
  time.sleep(0.05)
  return n * n


def test_map_progress_keeps_order_over_workers(tmp_path):
  items = [(n, str(tmp_path)) for n in range(1, 40)]
  out = list(progress.map_progress(square_and_mark, items, workers=2, desc="x", quiet=True))
  assert out == [n * n for n in range(1, 40)]


def test_map_progress_stops_the_workers_on_an_error(tmp_path):
  items = [(n, str(tmp_path)) for n in range(200)]   # 200 x 50 ms over 2 workers: ~5 s
  with pytest.raises(RuntimeError, match="item 0 is bad"):
    for _ in progress.map_progress(square_and_mark, items, workers=2, desc="x", quiet=True,
                                   chunksize=1):
      pass
  # Closing the pool normally would have run all 200 before returning.
  assert len(os.listdir(tmp_path)) < 200


def test_one_per_output_reports_clashes_and_summary_counts():
  s = progress.Summary()
  keep = progress.one_per_output(["a/x.jpg", "a/x.png", "a/y.jpg", "b/x.bmp"],
                                 lambda r: r.rsplit(".", 1)[0] + ".png", s)
  assert keep == ["a/x.jpg", "a/y.jpg", "b/x.bmp"]
  assert s.skipped == [("a/x.png", "same output name as a/x.jpg")]
  s.written, s.seconds = 3, 1.5
  assert "written: 3 in 1.5 s (2.0/s)" in s.text() and "skipped: 1" in s.text()


def test_require_new_and_quiet_progress(tmp_path):
  progress.require_new(str(tmp_path / "new"))
  with pytest.raises(FileExistsError, match="nothing is overwritten"):
    progress.require_new(str(tmp_path / "new2"), str(tmp_path))
  stream = io.StringIO()
  bar = progress.Progress(2, "job", stream=stream, quiet=True)
  bar.update(2)
  bar.close()
  assert stream.getvalue() == ""
  bar = progress.Progress(2, "job", stream=stream)
  bar.update(2)
  bar.close()
  assert "job: 100%" in stream.getvalue() and "2/2" in stream.getvalue()
