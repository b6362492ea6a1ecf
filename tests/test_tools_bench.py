"""mfrjax-bench-compression: rate parsing, outputs, and a real 2-process run."""

import json
import subprocess

import pytest

from mfrjax.tools import bench_compression as bench

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow


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
  assert flat["final_loss"] == pytest.approx(mean["final_loss"], rel=1e-3)  # same training
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


@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet18"])
def test_torch_peer_reduces_the_same_gradients(backbone):
  """The PyTorch peer trains the same parameter shapes, so both frameworks put the same
  gradient bytes, and at each rank the same PowerSGD bytes, on the wire."""
  pytest.importorskip("torch", reason="the torch peer needs: pip install '.[bench]'")
  import jax

  from mfrjax import methods
  from mfrjax import state as state_lib
  from mfrjax.parallel import powersgd
  from tests.conftest import smoke_config
  cfg = smoke_config(**{"model.backbone": backbone, "data.image_size": 16})
  model = methods.get("barlow").build_model(cfg.model)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(
      (2, 16, 16, 1))))["params"]
  torch_params = list(bench.torch_model(backbone, 1, tuple(cfg.model.projector_dims))
                      .parameters())
  torch_weights = [p for p in torch_params if p.dim() > 1]
  jax_kernels = [x for x in jax.tree.leaves(params) if x.ndim > 1]
  assert sorted(p.numel() for p in torch_weights) == sorted(x.size for x in jax_kernels)
  assert sum(p.numel() for p in torch_params) == state_lib.count_params(params)
  for rank in (1, 2, 4):
    sent, total = bench.torch_powersgd_bytes(torch_params, rank)
    plan = powersgd.make_plan(params, rank, 2.0)
    assert (sent, total) == (plan.compressed_bytes, plan.uncompressed_bytes)


def test_torch_peer_two_processes(tmp_path):
  pytest.importorskip("torch", reason="the torch peer needs: pip install '.[bench]'")
  out = tmp_path / "bench"
  assert bench.main(["--processes=2", "--ranks=2", "--bandwidths=unlimited", "--steps=2",
                     "--warmup=1", "--backbone=resnet_tiny", "--batch_size=8", "--peer=torch",
                     "--local_bn", f"--out={out}"]) == 0
  rows = {r["reduction"]: r for r in json.loads((out / "results.json").read_text())}
  t_mean, t_psgd = rows["torch DDP all-reduce"], rows["torch DDP PowerSGD rank 2"]
  assert t_mean["framework"] == "torch" and t_mean["speedup"] == 1.0
  # --local_bn: the flat row normalises per device, so it no longer trains as 'mean' does
  flat, mean = rows["flat mean all-reduce"], rows["mean all-reduce"]
  assert flat["final_loss"] != pytest.approx(mean["final_loss"], rel=1e-3)
  assert t_psgd["bytes"] == rows["PowerSGD rank 2"]["bytes"] < t_mean["bytes"] / 5
  if bench.can_shape():  # torch's own traffic counted too (the tiny model's small matrices
    # travel uncompressed, so the saving on the wire is smaller than the metric's)
    assert t_mean["bytes"] <= t_mean["wire_bytes"] < 1.5 * t_mean["bytes"]
    assert t_psgd["bytes"] <= t_psgd["wire_bytes"] < t_mean["wire_bytes"]
  assert all(r["median_step_s"] > 0 and r["final_loss"] == r["final_loss"]
             for r in rows.values())


def test_torch_peer_refuses_a_backbone_it_cannot_build_before_any_run(tmp_path, capsys):
  pytest.importorskip("torch", reason="the torch peer needs: pip install '.[bench]'")
  with pytest.raises(SystemExit):
    bench.main(["--peer=torch", "--backbone=resnet50", f"--out={tmp_path / 'b'}"])
  assert "--backbone=resnet50" in capsys.readouterr().err
  assert not (tmp_path / "b").exists()  # nothing ran
