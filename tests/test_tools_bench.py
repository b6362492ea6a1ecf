"""tools/bench_compression.py: rate parsing, outputs, and a real 2-process run."""

import importlib.util
import json
import subprocess

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_tool", ROOT / "tools" /
                                              "bench_compression.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_parse_rate():
  assert bench.parse_rate("100mbit") == 1e8
  assert bench.parse_rate("1.5gbit") == 1.5e9
  assert bench.parse_rate("unlimited") is None
  with pytest.raises(ValueError, match="bandwidth '10MB'"):
    bench.parse_rate("10MB")


def test_real_two_process_benchmark(tmp_path):
  bw = "100mbit" if bench.can_shape() else "unlimited"
  out = tmp_path / "bench"
  assert bench.main(["--processes=2", "--ranks=2", f"--bandwidths={bw}", "--steps=2",
                     "--warmup=1", "--backbone=resnet_tiny", "--batch_size=8",
                     f"--out={out}"]) == 0
  rows = json.loads((out / "results.json").read_text())
  assert [r["reduction"] for r in rows] == ["mean all-reduce", "flat mean all-reduce",
                                            "PowerSGD rank 2"]
  mean, flat, psgd = rows
  assert mean["speedup"] == 1.0 and mean["compression"] == 1.0
  assert flat["bytes"] == mean["bytes"]
  assert psgd["compression"] > 5 and psgd["bytes"] < mean["bytes"] / 5
  if bench.can_shape():  # bytes counted on the namespace's loopback, per step and process
    assert flat["bytes"] <= flat["wire_bytes"] < 1.5 * flat["bytes"]
    assert mean["wire_bytes"] > 1.5 * flat["wire_bytes"]  # XLA: once per forward pass
    assert psgd["bytes"] <= psgd["wire_bytes"] < flat["wire_bytes"] / 3
    assert flat["qdisc_bytes"] == pytest.approx(flat["wire_bytes"], rel=0.05)
  assert all(r["median_step_s"] > 0 and r["comm_s"] >= 0 for r in rows)
  for name in ("results.md", "results.csv", "speedup.png"):
    assert (out / name).stat().st_size > 0
  if bench.can_shape():  # the namespace is gone afterwards
    assert "mfrbench" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True).stdout
