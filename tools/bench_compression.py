"""Benchmark PowerSGD against the plain all-reduce across processes and link speeds.

    sudo python tools/bench_compression.py --processes=2 --ranks=1,2,4 \
        --bandwidths=100mbit,1gbit,10gbit,unlimited --steps=10 --out=/tmp/bench

Trains the same model (the Barlow trainer's own `train.setup`, synthetic data) for a
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                global_batch: int) -> dict:
  """Starts `processes` workers (inside `prefix`, e.g. a namespace) and returns process 0's
  measurements."""
  port = free_port()
  out = os.path.join(args.out, f"worker_{mode}_{rank}_{processes}_{port}.json")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = []
  for i in range(processes):
    cmd = prefix + [sys.executable, os.path.abspath(__file__), "--worker", f"--mode={mode}",
                    f"--rank={rank}", f"--process_id={i}", f"--num_processes={processes}",
                    f"--coordinator=127.0.0.1:{port}", f"--steps={args.steps}",
                    f"--warmup={args.warmup}", f"--backbone={args.backbone}",
                    f"--image_size={args.image_size}", f"--batch_size={global_batch}",
                    f"--result={out}"] + (["--count_bytes"] if prefix else [])
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
  import jax  # noqa: PLC0415  (only the workers need JAX)

  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  from mfrjax import train  # noqa: PLC0415
  from mfrjax.parallel import mesh as mesh_lib  # noqa: PLC0415
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import barlow  # noqa: PLC0415

  cfg = barlow.get_config("smoke")
  cfg.model.backbone, cfg.data.image_size = args.backbone, args.image_size
  cfg.batch_size, cfg.data.synthetic.num_identities = args.batch_size, 64
  cfg.num_epochs = args.warmup + args.steps + 1
  cfg.grad_reduce = args.mode
  cfg.powersgd.rank, cfg.powersgd.start_step = max(args.rank, 1), 0
  from jax.experimental import multihost_utils  # noqa: PLC0415
  mesh = mesh_lib.make_mesh()
  exp = train.setup(cfg, mesh)
  data = train.train_data(cfg, exp, mesh)
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
    per_step = lambda k: (None if not wire or wire[0][k] is None  # noqa: E731
                          else (wire[1][k] - wire[0][k]) / args.steps / args.num_processes)
    with open(args.result, "w", encoding="utf-8") as f:
      json.dump({"median_step_s": statistics.median(times), "step_times": times,
                 "final_loss": loss, "bytes": float(metrics["comm_bytes"]),
                 "bytes_uncompressed": float(metrics["comm_bytes_uncompressed"]),
                 "wire_bytes": per_step("link"), "qdisc_bytes": per_step("qdisc")}, f)


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
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
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
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
  for flag, typ in (("mode", str), ("rank", int), ("process_id", int), ("num_processes", int),
                    ("coordinator", str), ("result", str)):
    p.add_argument(f"--{flag}", type=typ, help=argparse.SUPPRESS)
  p.add_argument("--count_bytes", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    worker(args)
    return 0
  os.makedirs(args.out, exist_ok=True)
  configs = [("mean", 0), ("flat", 0)] + [("powersgd", int(r)) for r in args.ranks.split(",")]
  bandwidths = args.bandwidths.split(",")
  rates = {b: parse_rate(b) for b in bandwidths}
  shaping = can_shape()
  if not shaping and any(r is not None for r in rates.values()):
    print("cannot cap bandwidth here (needs root, ip and tc): measuring 'unlimited' only")
    bandwidths = [b for b in bandwidths if rates[b] is None] or ["unlimited"]
  per_process_batch = args.batch_size // args.processes
  compute = {}
  for mode, rank in configs:  # the same per-process work with nothing to send
    compute[(mode, rank)] = run_workers(args, mode, rank, 1, [], per_process_batch)
  rows = []
  for bw in bandwidths:
    for mode, rank in configs:
      ctx = namespace(rates[bw]) if shaping else contextlib.nullcontext([])
      with ctx as prefix:
        res = run_workers(args, mode, rank, args.processes, prefix, args.batch_size)
      name = {"mean": "mean all-reduce", "flat": "flat mean all-reduce"}.get(
          mode, f"PowerSGD rank {rank}")
      rows.append({"bandwidth": bw, "reduction": name, "processes": args.processes,
                   "median_step_s": res["median_step_s"],
                   "comm_s": max(0.0, res["median_step_s"] -
                                 compute[(mode, rank)]["median_step_s"]),
                   "bytes": res["bytes"], "wire_bytes": res.get("wire_bytes"),
                   "qdisc_bytes": res.get("qdisc_bytes"),
                   "compression": res["bytes_uncompressed"] / res["bytes"],
                   "final_loss": res["final_loss"]})
      wire = res.get("wire_bytes")
      print(f"{bw:>10} {name:<18} step {res['median_step_s']:.3f}s, metric "
            f"{res['bytes'] / 1e6:.3f} MB, on the wire "
            f"{'n/a' if wire is None else f'{wire / 1e6:.3f} MB'} per process", flush=True)
    base = next(r for r in rows if r["bandwidth"] == bw and r["reduction"] == "mean all-reduce")
    for r in rows:
      if r["bandwidth"] == bw:
        r["speedup"] = base["median_step_s"] / r["median_step_s"]
  md = write_outputs(rows, args.out)
  print(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
