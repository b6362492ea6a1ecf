"""mfrjax-sweep: settings parsing, summaries, and a real resumable, repeatable sweep."""

import json
import os

import pytest

from mfrjax.tools import sweep

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def test_grid_and_cases():
  grid = sweep.parse_settings(["a=1,2", "b=x,y"], [])
  assert [n for n, _ in grid] == ["a=1,b=x", "a=1,b=y", "a=2,b=x", "a=2,b=y"]
  assert grid[1][1] == {"a": "1", "b": "y"}
  cases = sweep.parse_settings([], ["SGD:optimizer.name=sgd;data.pair_sampler=random", "Base:"
                                    "seed=1"])
  assert cases == [("SGD", {"optimizer.name": "sgd", "data.pair_sampler": "random"}),
                   ("Base", {"seed": "1"})]
  with pytest.raises(ValueError, match="not both"):
    sweep.parse_settings(["a=1"], ["x:a=1"])
  with pytest.raises(ValueError, match="expected key=value1"):
    sweep.parse_settings(["a"], [])


def test_summary_mean_and_std():
  rows = [{"setting": "s", "seed": i, "masked_vs_unmasked": v, "unmasked_vs_unmasked": 1.0,
           "masked_vs_masked": 0.0} for i, v in enumerate([0.2, 0.4])]
  (e,) = sweep.summarize(rows)
  assert e["masked_vs_unmasked_mean"] == pytest.approx(30.0)
  assert e["masked_vs_unmasked_std"] == pytest.approx(10.0)
  assert "30.00 ± 10.00" in sweep.to_markdown([e])


def test_real_sweep_resumes_and_repeats(tmp_path, capsys):
  args = ["--config=configs/barlow.py:smoke", "--set", "optimizer.name=sgd,lars",
          "--seeds=0", "--extra=--config.num_epochs=1"]
  assert sweep.main(args + ["--out", str(tmp_path / "a"), "--parallel=2"]) == 0
  first = (tmp_path / "a" / "summary.csv").read_text()
  marker = tmp_path / "a" / "optimizer.name=sgd" / "seed_0" / "results.json"
  mtime = os.path.getmtime(marker)
  assert sweep.main(args + ["--out", str(tmp_path / "a")]) == 0   # nothing re-run
  assert os.path.getmtime(marker) == mtime
  assert "done already" in capsys.readouterr().out
  assert sweep.main(args + ["--out", str(tmp_path / "b")]) == 0   # same numbers again
  assert (tmp_path / "b" / "summary.csv").read_text() == first
  runs = json.loads((tmp_path / "b" / "runs.json").read_text())
  assert {r["setting"] for r in runs} == {"optimizer.name=sgd", "optimizer.name=lars"}


def test_summary_of_mask_removal_runs_keeps_their_units():
  res = [{"final": {"seen_types": {"images": 40, "iou": v, "psnr_restored": 20 + v}}}
         for v in (0.5, 0.7)]
  rows = [{"setting": "seg", "seed": i, **sweep.metrics_of(r)} for i, r in enumerate(res)]
  (e,) = sweep.summarize(rows)
  assert e["seen_types/iou_mean"] == pytest.approx(0.6)
  assert e["seen_types/psnr_restored_std"] == pytest.approx(0.1)
  assert "images" not in str(list(e))
  assert "| seg | 2 | 0.6000 ± 0.1000 | 20.6000 ± 0.1000 |" in sweep.to_markdown([e])
