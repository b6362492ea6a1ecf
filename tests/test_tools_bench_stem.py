"""mfrjax-bench-stem: a real (tiny) timing of both stems, with its outputs."""

import json

import pytest

from mfrjax.tools import bench_stem as tool

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def test_bench_stem_times_both_stems(tmp_path):
  out = tmp_path / "b"
  assert tool.main(["--backbone=iresnet_tiny", "--image_size=32", "--batch_size=16",
                    "--dtype=float32", "--steps=2", "--warmup=1", f"--out={out}"]) == 0
  rows = json.loads((out / "results.json").read_text())["rows"]
  assert [r["stem"] for r in rows] == ["standard", "focus"]
  assert rows[0]["speedup"] == 1.0 and all(r["median_step_s"] > 0 for r in rows)
  # The focus unit runs stage 1 at a quarter of the pixels: fewer FLOPs per image.
  assert rows[1]["forward_gflops_per_image"] < rows[0]["forward_gflops_per_image"]
  assert "| focus |" in (out / "results.md").read_text()
