"""mfrjax-bench-throughput: every stage measured on a tiny config, and its arithmetic."""

import json

import pytest

from mfrjax import configs
from mfrjax.tools import bench_throughput as tool
from tests.conftest import ROOT

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


def test_all_stages_on_a_tiny_config(tmp_path):
  out, prof = tmp_path / "b", tmp_path / "prof"
  assert tool.main([f"--config={ROOT}/configs/margin.py:smoke", "--set", "num_epochs=40",
                    "--set", "data.cache_mb=0", "--threads=1", "--processes=",
                    "--batches=2", "--min_seconds=0", "--steps=3", "--warmup=1",
                    "--trainer_steps=3", "--repeats=2", f"--profile={prof}",
                    "--profile_steps=2", f"--out={out}"]) == 0
  res = json.loads((out / "results.json").read_text())
  m = res["machine"]
  assert (m["platform"], m["dtype"], m["global_batch"], m["image"]) == (
      "cpu", "float32", 16, "16x16x1")
  p = res["pipeline"]
  (row,) = p["rows"]
  assert (row["worker_processes"], row["threads"], row["cores_used"]) == (0, 1, 1)
  assert row["images_per_s"] > 0 and p["single_thread_ceiling_images_per_s"] > 0
  assert row["efficiency"] == pytest.approx(row["images_per_s"] / row["ceiling_images_per_s"])
  s = res["step"]
  assert s["flops_per_step"] > 0 and s["measured_peak_flops_per_s"] > 0
  assert s["mfu_measured_peak"] == pytest.approx(
      s["flops_per_step"] / s["step_s"] / s["measured_peak_flops_per_s"])
  assert 0 < s["mfu_measured_peak"] < 1.5
  assert s["vendor_peak_flops_per_s"] is None and s["mfu_vendor_peak"] is None  # a CPU
  assert s["images_per_s"] == pytest.approx(16 / s["step_s"])
  h = res["h2d"]
  assert h["bytes_per_batch"] == 16 * 16 * 16 * 1 + 16 * 4 + 16  # images, labels, flags
  t = res["trainer"]
  assert t["steps"] == 3 and len(t["wall_s"]) == 2
  assert t["fraction_of_step_alone"] == pytest.approx(
      t["images_per_s"] / t["step_alone_images_per_s"])
  assert t["trainer_overhead"] == pytest.approx(1 - t["fraction_of_step_alone"])
  md = (out / "results.md").read_text()
  for text in (f"{m['devices']} x cpu", "float32", "global batch 16", "CPU cores",
               "| train step alone |", "| host to device |", "| whole trainer", "efficiency"):
    assert text in md
  assert list(prof.rglob("*.xplane.pb")), "no profiler trace written"


def test_two_image_rows_count_both_views(tmp_path):
  out = tmp_path / "b"
  assert tool.main([f"--config={ROOT}/configs/barlow.py:smoke", "--stages=pipeline",
                    "--threads=1", "--processes=", "--batches=1", "--min_seconds=0",
                    f"--out={out}"]) == 0
  res = json.loads((out / "results.json").read_text())
  assert res["machine"]["images_per_row"] == 2 and "step" not in res


def test_overrides_are_typed_and_checked():
  cfg = configs.load(f"{ROOT}/configs/margin.py:smoke",
                         ["model.dtype=bfloat16", "batch_size=32", "ema.enabled=false",
                          "optimizer.learning_rate=0.5", "eval.classifiers=knn,svm"])
  assert (cfg.model.dtype, cfg.batch_size, cfg.ema.enabled) == ("bfloat16", 32, False)
  assert cfg.optimizer.learning_rate == 0.5 and cfg.eval.classifiers == ("knn", "svm")
  with pytest.raises(ValueError, match="no config key 'dtyp' in 'model'; did you mean 'dtype'"):
    configs.load(f"{ROOT}/configs/margin.py:smoke", ["model.dtyp=bfloat16"])
  with pytest.raises(ValueError, match="'batch_size' is a value, not a block"):
    configs.load(f"{ROOT}/configs/margin.py:smoke", ["batch_size.x=1"])
  with pytest.raises(ValueError, match="expected key=value"):
    configs.load(f"{ROOT}/configs/margin.py:smoke", ["batch_size"])
  with pytest.raises(FileNotFoundError, match="no file"):
    configs.load("configs/nope.py", [])


def test_unknown_stage_is_refused(tmp_path, capsys):
  with pytest.raises(SystemExit):
    tool.main([f"--config={ROOT}/configs/margin.py:smoke", "--stages=step,bogus",
               f"--out={tmp_path}"])
  assert "bogus" in capsys.readouterr().err


def test_vendor_peaks_and_default_counts():
  assert tool.vendor_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert tool.vendor_peak("cpu", "float32") is None
  assert tool.default_counts(16, 1) == "1,2,4,8,16"
  assert tool.default_counts(6, 2) == "2,4,6"


def test_mask_removal_step_and_transfer(tmp_path, capsys):
  """The inpainting GAN's step (what the :paper variant is benchmarked with on a GPU)."""
  out = tmp_path / "inp"
  assert tool.main([f"--config={ROOT}/configs/inpaint.py:smoke", "--stages=step,h2d",
                    "--steps=2", "--warmup=1", f"--out={out}"]) == 0
  res = json.loads((out / "results.json").read_text())
  assert res["machine"]["method"] == "inpaint" and res["machine"]["image"] == "16x16x1"
  s = res["step"]
  assert s["flops_per_step"] > 0 and s["images_per_s"] == pytest.approx(8 / s["step_s"])
  assert res["h2d"]["bytes_per_batch"] == 3 * 8 * 16 * 16  # face, masked face, map (uint8)
  with pytest.raises(SystemExit) as e:  # an argparse error: usage, exit status 2
    tool.main([f"--config={ROOT}/configs/inpaint.py:smoke", "--stages=trainer",
               f"--out={out}"])
  assert e.value.code == 2
  assert "not available for config.method='inpaint'" in capsys.readouterr().err
