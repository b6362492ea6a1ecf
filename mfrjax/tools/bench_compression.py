"""Benchmark PowerSGD against the plain all-reduce across processes and link speeds.

    sudo mfrjax-bench-compression --processes=2 --ranks=1,2,4 \
        --bandwidths=100mbit,1gbit,10gbit,unlimited --steps=10 --out=/tmp/bench

Trains the same model (the Barlow trainer's own `recognition.setup`, synthetic data) for a
fixed number of steps with `grad_reduce=mean` (XLA's all-reduce), `grad_reduce=flat`
(one explicit all-reduce of all gradients) and with PowerSGD at each rank, in P
processes that meet through `jax.distributed` over loopback (CPU collectives; the
same code runs one process per GPU host). For every bandwidth but 'unlimited' the
processes run inside a network namespace that this tool creates, whose loopback has a
`tc tbf` rate limit; the namespace is removed afterwards. That needs root and the `ip`
and `tc` commands; without them only 'unlimited' is measured, and the tool says so.

Reported per configuration: median step time, communication time (the median step
time minus that of the same per-process work in a single process, which has nothing to
send), bytes sent per step and process by the trainer's `comm_bytes` metric and as
counted on the wire (the namespace loopback's byte counter over the timed steps,
divided by steps and processes; the tbf qdisc's own count too where a cap is set),
compression ratio, speed-up over the plain all-reduce at the same bandwidth, and the
final loss. Written as results.md, .csv,
.json and speedup.png (matplotlib).

`--local_bn` runs the flat and PowerSGD rows with `config.sync_batch_norm=False`: on CPU
collectives each synchronised BatchNorm layer is a barrier between the processes, and
those ~80 barriers per step, not the gradient's bytes, were most of the step (README).
`--peer=torch` (extra `bench`) adds PyTorch's own implementation beside ours: DDP over
gloo with `powerSGD_hook`, the same model shapes (tested: same parameter count and same
PowerSGD bytes at every rank), batch, ranks, processes and caps, each framework's speed-up
over its own plain all-reduce. The peer's BatchNorm is per process (DDP without
SyncBatchNorm, which runs on GPUs only), so compare it with the `--local_bn` rows.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

from mfrjax import cli

# The directory holding the mfrjax package: the workers import it from there too.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_rate(text: str) -> float | None:
  """'100mbit' -> bits/s; 'unlimited' -> None."""
  if text == "unlimited":
    return None
  m = re.fullmatch(r"(\d+(?:\.\d+)?)(k|m|g)bit", text.lower())
  if not m:
    raise ValueError(f"bandwidth {text!r}: expected e.g. 100mbit, 1gbit, 10gbit, unlimited")
  return float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def can_shape() -> bool:
  return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None


@contextlib.contextmanager
def namespace(rate_bits: float | None):
  """A fresh network namespace with loopback up and, if asked, a tbf rate limit."""
  name = f"mfrbench{os.getpid()}"
  subprocess.run(["ip", "netns", "add", name], check=True)
  try:
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    if rate_bits is not None:
      burst = max(int(rate_bits / 8 * 0.01), 131072)  # 10 ms of traffic, >= lo's MTU
      subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root",
                      "tbf", "rate", f"{int(rate_bits)}bit", "burst", str(burst),
                      "latency", "100ms"], check=True)
    yield ["ip", "netns", "exec", name]
  finally:
    subprocess.run(["ip", "netns", "del", name], check=False)


def wire_bytes() -> dict:
  """Bytes through this network namespace's loopback so far: the interface's own count
  (all traffic, every process) and, when a tbf rate limit is set, the qdisc's."""
  link = json.loads(subprocess.run(["ip", "-j", "-s", "link", "show", "dev", "lo"],
                                   check=True, capture_output=True, text=True).stdout)
  qdisc = json.loads(subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", "lo"],
                                    check=True, capture_output=True, text=True).stdout or "[]")
  tbf = [q["bytes"] for q in qdisc if q.get("kind") == "tbf"]
  return {"link": int(link[0]["stats64"]["tx"]["bytes"]), "qdisc": int(tbf[0]) if tbf else None}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_workers(args, mode: str, rank: int, processes: int, prefix: list[str],
                global_batch: int, framework: str = "jax") -> dict:
  """Starts `processes` workers (inside `prefix`, e.g. a namespace) and returns process 0's
  measurements."""
  port = free_port()
  out = os.path.join(args.out, f"worker_{framework}_{mode}_{rank}_{processes}_{port}.json")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = []
  for i in range(processes):
    cmd = prefix + [sys.executable, "-m", __spec__.name, "--worker", f"--mode={mode}",
                    f"--rank={rank}", f"--process_id={i}", f"--num_processes={processes}",
                    f"--coordinator=127.0.0.1:{port}", f"--steps={args.steps}",
                    f"--warmup={args.warmup}", f"--backbone={args.backbone}",
                    f"--image_size={args.image_size}", f"--batch_size={global_batch}",
                    f"--result={out}", f"--framework={framework}"]
    cmd += ["--local_bn"] if args.local_bn else []
    cmd += ["--count_bytes"] if prefix else []
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  logs = [p.communicate(timeout=args.timeout)[0] for p in procs]
  for p, log in zip(procs, logs):
    if p.returncode != 0:
      raise RuntimeError(f"worker failed ({mode}, rank {rank}):\n{log[-3000:]}")
  with open(out, encoding="utf-8") as f:
    return json.load(f)


def worker(args) -> None:
  """One training process: times `steps` steps after `warmup` (compilation) steps."""
  import jax

  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  from mfrjax import (
    configs,
    recognition,
  )
  from mfrjax.parallel import mesh as mesh_lib

  cfg = configs.load("barlow:smoke")
  cfg.model.backbone, cfg.data.image_size = args.backbone, args.image_size
  cfg.batch_size, cfg.data.synthetic.num_identities = args.batch_size, 64
  cfg.num_epochs = args.warmup + args.steps + 1
  cfg.grad_reduce = args.mode
  cfg.sync_batch_norm = not (args.local_bn and args.mode != "mean")
  cfg.powersgd.rank, cfg.powersgd.start_step = max(args.rank, 1), 0
  from jax.experimental import multihost_utils
  mesh = mesh_lib.make_mesh()
  exp = recognition.setup(cfg, mesh)
  data = recognition.train_data(cfg, exp, mesh)
  state, rng, times, loss, metrics = exp.state, jax.random.key(0), [], None, None
  batches = [next(data) for _ in range(args.warmup + args.steps)]  # no input work in between
  jax.block_until_ready(batches)
  wire = []
  for i, batch in enumerate(batches):
    if i == args.warmup and args.count_bytes:
      multihost_utils.sync_global_devices("timed steps start")
      wire.append(wire_bytes())
    t0 = time.perf_counter()
    state, metrics = exp.step_fn(state, batch, rng)
    loss = float(metrics["loss"])  # waits for the step
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  if args.count_bytes:
    multihost_utils.sync_global_devices("timed steps end")
    wire.append(wire_bytes())
  if jax.process_index() == 0:
    write_result(args, times, loss, float(metrics["comm_bytes"]),
                 float(metrics["comm_bytes_uncompressed"]), wire)


def write_result(args, times: list[float], loss: float, sent: float, total: float,
                 wire: list[dict]) -> None:
  """Process 0's measurements as JSON for `run_workers`: step times, final loss, bytes by
  the metric, and on the wire per step and process (from the counts before and after)."""
  per_step = lambda k: (None if not wire or wire[0][k] is None  # noqa: E731
                        else (wire[1][k] - wire[0][k]) / args.steps / args.num_processes)
  with open(args.result, "w", encoding="utf-8") as f:
    json.dump({"median_step_s": statistics.median(times), "step_times": times,
               "final_loss": loss, "bytes": sent, "bytes_uncompressed": total,
               "wire_bytes": per_step("link"), "qdisc_bytes": per_step("qdisc")}, f)


def torch_model(backbone: str, channels: int, projector_dims):
  """The JAX worker's model in PyTorch: torchvision-layout ResNet (ImageNet stem, no fc),
  then the Barlow projector (Linear -> BN -> ReLU) x (k - 1) -> Linear, all without bias,
  so both frameworks reduce gradients of the same shapes (tested: same parameter count)."""
  import torch
  from torch import nn

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b1 = nn.BatchNorm2d(cout)
      self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.b2 = nn.BatchNorm2d(cout)
      nn.init.zeros_(self.b2.weight)  # zero-init last BN, as the JAX model
      self.down = (None if stride == 1 and cin == cout else nn.Sequential(
          nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
      y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
      return torch.relu(y + (x if self.down is None else self.down(x)))

  wide = (64, 128, 256, 512)
  shapes = {"resnet18": ((2, 2, 2, 2), wide), "resnet34": ((3, 4, 6, 3), wide),
            "resnet_tiny": ((1, 1, 1, 1), (16, 32, 64, 128))}
  if backbone not in shapes:
    raise ValueError(f"--peer=torch supports {sorted(shapes)}, not {backbone!r}")
  stages, widths = shapes[backbone]
  cin = widths[0]
  if backbone == "resnet_tiny":  # the 'face' stem: one 3x3/1 convolution
    layers = [nn.Conv2d(channels, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU()]
  else:  # torchvision's 7x7/2 convolution and 3x3/2 max-pool
    layers = [nn.Conv2d(channels, cin, 7, 2, 3, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
  for i, (n, w) in enumerate(zip(stages, widths)):
    for j in range(n):
      layers.append(Block(cin, w, 2 if (i > 0 and j == 0) else 1))
      cin = w
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  for d in projector_dims[:-1]:
    layers += [nn.Linear(cin, d, bias=False), nn.BatchNorm1d(d), nn.ReLU()]
    cin = d
  layers.append(nn.Linear(cin, projector_dims[-1], bias=False))
  return nn.Sequential(*layers)


def torch_powersgd_bytes(params, rank: int, min_compression_rate: float = 2.0) -> tuple:
  """(bytes sent per step with PowerSGD, uncompressed bytes): torch's hook views each
  gradient as (shape[0], -1) and compresses it when n*m >= (n+m)*r*min_compression_rate;
  the rest travel uncompressed in one buffer."""
  sent = total = 0
  for p in params:
    n = p.shape[0]
    m = p.numel() // n
    total += 4 * p.numel()
    if p.dim() > 1 and n * m >= (n + m) * rank * min_compression_rate:
      sent += 4 * (n + m) * min(rank, n, m)
    else:
      sent += 4 * p.numel()
  return sent, total


def torch_worker(args) -> None:
  """One PyTorch DDP process (gloo): the peer of `worker`, same model, batch and timing.

  A bucket cap above the model's size, so that DDP builds as few buckets as it will (with
  many, the stock PowerSGD hook failed on gloo with a collective size mismatch), denormals
  flushed (plain DDP steps on CPU ran at a third of the speed
  without), PowerSGD from the third step (the hook's earliest with error feedback)."""
  import numpy as np
  import torch
  import torch.distributed as dist
  from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
  from torch.nn.parallel import DistributedDataParallel

  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  dist.init_process_group("gloo", init_method=f"tcp://{args.coordinator}",
                          rank=args.process_id, world_size=args.num_processes)
  model = torch_model(args.backbone, 1, (32, 32))

  class TwoViews(torch.nn.Module):  # both views in one DDP forward, as the paper's code
    def __init__(self, net):
      super().__init__()
      self.net = net

    def forward(self, xa, xb):
      return self.net(xa), self.net(xb)

  ddp = DistributedDataParallel(TwoViews(model), bucket_cap_mb=1 << 16)
  if args.mode == "powersgd":
    state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=args.rank,
                               start_powerSGD_iter=2, min_compression_rate=2.0,
                               use_error_feedback=True, warm_start=True)
    ddp.register_comm_hook(state, psgd.powerSGD_hook)
    sent, total = torch_powersgd_bytes(list(model.parameters()), args.rank)
  else:
    sent = total = 4 * sum(p.numel() for p in model.parameters())
  opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
  per_process = args.batch_size // args.num_processes
  rng = np.random.default_rng(args.process_id)
  batches = [[torch.from_numpy(rng.standard_normal(
      (per_process, 1, args.image_size, args.image_size), dtype=np.float32))
      for _ in range(2)] for _ in range(args.warmup + args.steps)]

  def loss_fn(za, zb, lambd=0.0051):  # Barlow Twins on the process's batch
    za = (za - za.mean(0)) / torch.sqrt(za.var(0, unbiased=False) + 1e-5)
    zb = (zb - zb.mean(0)) / torch.sqrt(zb.var(0, unbiased=False) + 1e-5)
    c = za.T @ zb / za.shape[0]
    on = (1 - torch.diagonal(c)).pow(2).sum()
    return on + lambd * (c.pow(2).sum() - torch.diagonal(c).pow(2).sum())

  times, wire, loss = [], [], None
  for i, (xa, xb) in enumerate(batches):
    if i == args.warmup and args.count_bytes:
      dist.barrier()
      wire.append(wire_bytes())
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(*ddp(xa, xb))
    loss.backward()  # DDP's all-reduce (or the hook) runs here
    opt.step()
    loss = float(loss)
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  if args.count_bytes:
    dist.barrier()
    wire.append(wire_bytes())
  if args.process_id == 0:
    write_result(args, times, loss, float(sent), float(total), wire)
  dist.destroy_process_group()


def write_outputs(rows: list[dict], out: str) -> str:
  """results.csv/.json/.md and speedup.png; returns the Markdown table."""
  with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  with open(os.path.join(out, "results.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  lines = ["| bandwidth | reduction | median step (s) | comm (s) | MB sent/step (metric) | "
           "MB on the wire/step | compression | speed-up | final loss |",
           "|---|---|---|---|---|---|---|---|---|"]
  mb = lambda x: "n/a" if x is None else f"{x / 1e6:.3f}"  # noqa: E731
  for r in rows:
    lines.append(f"| {r['bandwidth']} | {r['reduction']} | {r['median_step_s']:.3f} | "
                 f"{r['comm_s']:.3f} | {r['bytes'] / 1e6:.3f} | {mb(r.get('wire_bytes'))} | "
                 f"{r['compression']:.1f}x | {r['speedup']:.2f}x | {r['final_loss']:.2f} |")
  md = "\n".join(lines)
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(md + "\n")
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib not installed (pip install matplotlib): no speedup.png")
    return md
  bws = list(dict.fromkeys(r["bandwidth"] for r in rows))
  fig, ax = plt.subplots(figsize=(6, 4))
  for red in dict.fromkeys(r["reduction"] for r in rows):
    ys = [next(r["speedup"] for r in rows if r["bandwidth"] == b and r["reduction"] == red)
          for b in bws]
    ax.plot(range(len(bws)), ys, marker="o", label=red)
  ax.set_xticks(range(len(bws)), bws)
  ax.set_xlabel("link bandwidth (tc tbf on loopback)")
  ax.set_ylabel("speed-up over plain all-reduce")
  ax.axhline(1.0, color="grey", lw=0.8)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out, "speedup.png"), dpi=120)
  return md


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--processes", type=int, default=2)
  p.add_argument("--ranks", default="1,2,4")
  p.add_argument("--bandwidths", default="100mbit,1gbit,10gbit,unlimited")
  p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
  p.add_argument("--backbone", default="resnet18")
  p.add_argument("--image_size", type=int, default=16)
  p.add_argument("--batch_size", type=int, default=16, help="global batch")
  p.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
  p.add_argument("--out", default="bench_compression")
  # Worker-only flags.
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--local_bn", action="store_true",
                 help="flat and PowerSGD rows with config.sync_batch_norm=False (per-device "
                      "BatchNorm statistics, as the torch peer; 'mean' keeps synchronised BN)")
  p.add_argument("--peer", choices=("none", "torch"), default="none",
                 help="also run PyTorch DDP (gloo) with its powerSGD_hook on the same model, "
                      "batch, ranks and caps (pip install '.[bench]')")
  for flag, typ in (("mode", str), ("rank", int), ("process_id", int), ("num_processes", int),
                    ("coordinator", str), ("result", str), ("framework", str)):
    p.add_argument(f"--{flag}", type=typ, help=argparse.SUPPRESS)
  p.add_argument("--count_bytes", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    (torch_worker if args.framework == "torch" else worker)(args)
    return 0
  if args.peer == "torch":
    try:
      import torch  # noqa: F401
    except ImportError:
      p.error("--peer=torch needs PyTorch: pip install '.[bench]'")
    try:  # before any worker runs, not after the JAX rows
      torch_model(args.backbone, 1, (32, 32))
    except ValueError as e:
      p.error(f"--backbone={args.backbone}: {e}")
  os.makedirs(args.out, exist_ok=True)
  ranks = [int(r) for r in args.ranks.split(",")]
  configs = [("jax", "mean", 0), ("jax", "flat", 0)] + [("jax", "powersgd", r) for r in ranks]
  if args.peer == "torch":
    configs += [("torch", "mean", 0)] + [("torch", "powersgd", r) for r in ranks]
  bandwidths = args.bandwidths.split(",")
  rates = {b: parse_rate(b) for b in bandwidths}
  shaping = can_shape()
  if not shaping and any(r is not None for r in rates.values()):
    print("cannot cap bandwidth here (needs root, ip and tc): measuring 'unlimited' only")
    bandwidths = [b for b in bandwidths if rates[b] is None] or ["unlimited"]
  per_process_batch = args.batch_size // args.processes
  compute = {}
  for fw, mode, rank in configs:  # the same per-process work with nothing to send
    compute[(fw, mode, rank)] = run_workers(args, mode, rank, 1, [], per_process_batch, fw)
  rows = []
  for bw in bandwidths:
    for fw, mode, rank in configs:
      ctx = namespace(rates[bw]) if shaping else contextlib.nullcontext([])
      with ctx as prefix:
        res = run_workers(args, mode, rank, args.processes, prefix, args.batch_size, fw)
      name = {"mean": "mean all-reduce", "flat": "flat mean all-reduce"}.get(
          mode, f"PowerSGD rank {rank}")
      name = f"torch DDP {'all-reduce' if mode == 'mean' else name}" if fw == "torch" else name
      rows.append({"bandwidth": bw, "framework": fw, "reduction": name,
                   "processes": args.processes, "median_step_s": res["median_step_s"],
                   "comm_s": max(0.0, res["median_step_s"] -
                                 compute[(fw, mode, rank)]["median_step_s"]),
                   "bytes": res["bytes"], "wire_bytes": res.get("wire_bytes"),
                   "qdisc_bytes": res.get("qdisc_bytes"),
                   "compression": res["bytes_uncompressed"] / res["bytes"],
                   "final_loss": res["final_loss"]})
      wire = res.get("wire_bytes")
      print(f"{bw:>10} {name:<18} step {res['median_step_s']:.3f}s, metric "
            f"{res['bytes'] / 1e6:.3f} MB, on the wire "
            f"{'n/a' if wire is None else f'{wire / 1e6:.3f} MB'} per process", flush=True)
    for fw in ("jax", "torch"):  # each framework over its own plain all-reduce
      here = [r for r in rows if r["bandwidth"] == bw and r["framework"] == fw]
      for r in here:
        r["speedup"] = here[0]["median_step_s"] / r["median_step_s"]
  md = write_outputs(rows, args.out)
  print(md)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
