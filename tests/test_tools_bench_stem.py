"""tools/bench_stem.py: a real (tiny) timing of both stems, with its outputs."""

import importlib.util
import json

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_stem", ROOT / "tools" / "bench_stem.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


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
