"""Throughput of every stage of training, side by side, for any config.

    mfrjax-bench-throughput --config=configs/margin.py --out=/tmp/bench
    mfrjax-bench-throughput --config=configs/margin.py:paper \\
        --set model.backbone=iresnet50 --set data.root=/data/aligned112 --out=/tmp/bench

Stages (`--stages`, all by default), each on the config's own code path:
  pipeline  images/s out of the method's own grain stream (the exact transforms, masks
            and augmentations of training) for several reader settings: threads in
            this process (`--threads`, config.data.num_workers) and worker processes
            (`--processes`, config.data.worker_processes, one thread each). Beside it
            the ceiling: single-thread OpenCV decode + crop + resize of the same files
            (the face set's `load` + `preprocess`, nothing else), times the cores the
            setting uses. Pipeline efficiency = pipeline / ceiling.
  step      the jitted train step alone on a device-resident batch: step time, images/s,
            FLOPs per step from the compiled executable's cost analysis, and MFU against
            the peak of a large matmul in the model's dtype measured on the spot (the
            vendor's peak is printed beside it where known).
  h2d       host-to-device: bytes and time to place one host batch on the mesh.
  trainer   the whole trainer (`train.train_loop`: pipeline, step, logging, checkpoints
            at the config's cadence) for `--trainer_steps` steps after a warm-up; one
            checkpoint save is timed on its own and, when no save falls inside the timed
            stretch, added amortised over config.checkpoint_every steps. Trainer
            overhead = 1 - trainer images/s / step-alone images/s.
`--profile=DIR` writes a jax.profiler trace of a few trainer steps (TensorBoard's
profile tab or ui.perfetto.dev). Writes results.md and results.json to --out; every
table names the device, dtype, global batch and CPU core count.

An "image" is one image through the network: a Barlow Twins row (masked + unmasked
view) or a quintuplet row (unmasked + masked copy) counts two.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time

from mfrjax import cli, configs

STAGES = ("pipeline", "step", "h2d", "trainer")

# Dense peak FLOP/s per device from the vendors' data sheets (no sparsity), by device
# kind (as jax reports it) and compute dtype. float32 on NVIDIA tensor-core parts is the
# non-tensor-core FP32 rate (XLA's default precision for float32 matmuls on GPU is TF32
# where enabled; the measured peak shows what the device does).
VENDOR_PEAKS = {
    "H100": {"bfloat16": 989.4e12, "float16": 989.4e12, "float32": 66.9e12},
    "H200": {"bfloat16": 989.4e12, "float16": 989.4e12, "float32": 66.9e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12},
}


def vendor_peak(device_kind: str, dtype: str) -> float | None:
  for name, peaks in VENDOR_PEAKS.items():
    if name in device_kind:
      return peaks.get(dtype)
  return None


def _counts(spec: str) -> list[int]:
  return [int(x) for x in spec.split(",") if x.strip()] if spec else []


def default_counts(cores: int, start: int) -> str:
  """Powers of two from `start` up to the core count, and the core count itself."""
  out, n = [], start
  while n < cores:
    out.append(n)
    n *= 2
  return ",".join(str(x) for x in sorted(set(out + [cores])))


# --- the measurements ------------------------------------------------------------------

def images_per_row(cfg) -> int:
  from mfrjax import methods
  return len(methods.get(cfg.method).views)


def measure_ceiling(faceset, indices, data_cfg, repeats: int = 2) -> float:
  """Single-thread decode + crop + resize (images/s) of `indices`, page cache warm."""
  import cv2

  from mfrjax.data import transforms
  prev = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    best = 0.0
    for _ in range(repeats):  # the first pass also warms the page cache
      t = time.perf_counter()
      for i in indices:
        transforms.preprocess(faceset.load(int(i), False), data_cfg.image_size,
                              data_cfg.channels, data_cfg.crop_fraction)
      best = max(best, len(indices) / (time.perf_counter() - t))
    return best
  finally:
    cv2.setNumThreads(prev)


def measure_stream(cfg, split, batches: int, min_seconds: float) -> float:
  """Images/s out of the method's training stream, in steady state: after a warm-up of
  two batches per reader (every worker process started and primed), over at least
  `batches` batches and `min_seconds` seconds."""
  from mfrjax import methods
  faceset, _, _, train_groups, _ = split
  ds = methods.get(cfg.method).input_stream(cfg, faceset, train_groups)
  it = iter(ds)
  for _ in range(2 * max(cfg.data.worker_processes, 1)):
    first = next(it)
  rows = len(next(iter(first.values())))
  n, t = 0, time.perf_counter()
  while n < batches or time.perf_counter() - t < min_seconds:
    next(it)
    n += 1
  return n * rows * images_per_row(cfg) / (time.perf_counter() - t)


def bench_pipeline(cfg, split, args) -> dict:
  import numpy as np
  cores = os.cpu_count() or 1
  faceset, _, _, train_groups, _ = split
  all_images = np.concatenate(train_groups)
  n = min(len(all_images), max(256, args.batches * cfg.batch_size))
  ceiling = measure_ceiling(faceset, all_images[:n], cfg.data)
  rows = []
  settings = [(0, t) for t in _counts(args.threads)] + [(p, 1) for p in _counts(args.processes)]
  for procs, threads in settings:
    c = copy.deepcopy(cfg)
    c.data.num_workers, c.data.worker_processes = threads, procs
    c.num_epochs = 10_000  # a fast reader must not run out of epochs while it is timed
    rate = measure_stream(c, split, args.batches, args.min_seconds)
    used = min(cores, threads * max(procs, 1))
    rows.append({"worker_processes": procs, "threads": threads, "cores_used": used,
                 "images_per_s": rate, "ceiling_images_per_s": ceiling * used,
                 "efficiency": rate / (ceiling * used)})
    print(f"pipeline  {procs} processes x {threads} threads: {rate:,.0f} images/s "
          f"(ceiling {ceiling * used:,.0f}, efficiency {rate / (ceiling * used):.2f})",
          flush=True)
  return {"single_thread_ceiling_images_per_s": ceiling, "ceiling_images": int(n),
          "rows": rows}


def measure_peak(dtype: str, n: int, repeats: int = 10) -> float:
  """Achievable FLOP/s of one device: the best of `repeats` (n x n) @ (n x n) matmuls."""
  import jax
  import jax.numpy as jnp
  dev = jax.devices()[0]
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(ka, (n, n), jnp.float32).astype(dtype), dev)
  b = jax.device_put(jax.random.normal(kb, (n, n), jnp.float32).astype(dtype), dev)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled program on one device (XLA's cost analysis)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = (cost or {}).get("flops")
  return float(flops) if flops else None


def time_steps(step_fn, state, batch, rng, n: int) -> tuple[list[float], object]:
  """Seconds of each of `n` steps on one device-resident batch (each waited for)."""
  import jax
  times = []
  for _ in range(n):
    t = time.perf_counter()
    state, m = step_fn(state, batch, rng)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return times, state


def bench_step(cfg, exp, mesh, host_batch, args) -> tuple[dict, object]:
  """Times the jitted step on one device-resident batch; returns (row, state)."""
  import jax

  from mfrjax.parallel import mesh as mesh_lib
  batch = mesh_lib.to_global(host_batch, mesh)
  rng = jax.random.key(cfg.seed)
  flops = compiled_flops(exp.step_fn)
  t = time.perf_counter()
  _, state = time_steps(exp.step_fn, exp.state, batch, rng, args.warmup)
  compile_s = time.perf_counter() - t
  times, state = time_steps(exp.step_fn, state, batch, rng, args.steps)
  step_s = statistics.median(times)
  device = jax.devices()[0]
  peak_n = args.peak_size or (8192 if device.platform == "gpu" else 1024)
  dtype = cfg.model.get("dtype", "float32")
  measured_peak = measure_peak(dtype, peak_n)
  vendor = vendor_peak(device.device_kind, dtype)
  n_dev = mesh.size
  total_flops = flops * n_dev if flops else None
  row = {"step_s": step_s, "step_times_s": times,
         "images_per_s": cfg.batch_size * images_per_row(cfg) / step_s,
         "warmup_s": compile_s, "flops_per_step": total_flops,
         "achieved_flops_per_s": total_flops / step_s if total_flops else None,
         "measured_peak_flops_per_s": measured_peak * n_dev, "peak_matmul_size": peak_n,
         "vendor_peak_flops_per_s": vendor * n_dev if vendor else None,
         "mfu_measured_peak": total_flops / step_s / (measured_peak * n_dev)
         if total_flops else None,
         "mfu_vendor_peak": total_flops / step_s / (vendor * n_dev)
         if total_flops and vendor else None}
  print(f"step      {1e3 * step_s:.1f} ms, {row['images_per_s']:,.1f} images/s, "
        f"{(total_flops or 0) / 1e9:,.1f} GFLOP/step, MFU {_pct(row['mfu_measured_peak'])} "
        f"of the measured peak ({measured_peak * n_dev / 1e12:.3f} TFLOP/s)", flush=True)
  return row, state


def bench_h2d(host_batch, mesh, repeats: int) -> dict:
  import jax

  from mfrjax.parallel import mesh as mesh_lib
  nbytes = sum(x.nbytes for x in jax.tree.leaves(host_batch))
  jax.block_until_ready(mesh_lib.to_global(host_batch, mesh))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(mesh_lib.to_global(host_batch, mesh))
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  print(f"h2d       {nbytes / 1e6:.2f} MB per batch in {1e3 * med:.2f} ms "
        f"({nbytes / med / 1e9:.2f} GB/s)", flush=True)
  return {"bytes_per_batch": nbytes, "seconds_per_batch": med, "bytes_per_s": nbytes / med}


def bench_trainer(cfg, exp, mesh, state, host_batch, args) -> dict:
  """The real loop over stretches of steps at the config's log/checkpoint cadence.

  Each of `--repeats` stretches is paired with a fresh timing of the step alone just
  before it, so a machine whose speed drifts (a shared CPU) compares like with like;
  the ratio is of the medians.
  """
  import jax
  import numpy as np
  from clu import metric_writers

  from mfrjax import checkpoint, recognition, train
  from mfrjax.parallel import mesh as mesh_lib
  per_step = cfg.batch_size * images_per_row(cfg)
  warm = min(args.warmup, exp.total_steps - 1)
  steps = max(1, min(args.trainer_steps, (exp.total_steps - warm) // args.repeats))
  batch, rng = mesh_lib.to_global(host_batch, mesh), jax.random.key(cfg.seed)
  walls, alone, saves = [], [], 0
  with tempfile.TemporaryDirectory() as tmp:
    manager = checkpoint.make_manager(os.path.join(tmp, "checkpoints"), cfg.keep_checkpoints)
    writer = metric_writers.create_default_writer(tmp, just_logging=jax.process_index() > 0)
    data_it = recognition.train_data(cfg, exp, mesh)
    state = jax.device_put(state.replace(step=jax.numpy.zeros((), jax.numpy.int32)),
                           exp.shardings)
    loop = lambda s, a, b: train.train_loop(  # noqa: E731
        cfg, s, exp.step_fn, data_it, rng, a, exp.total_steps, manager, exp.meta, writer,
        images_per_row(cfg), stop_step=b)
    state, _ = loop(state, 0, warm)
    jax.block_until_ready(state)
    at = warm
    for _ in range(args.repeats):
      times, state = time_steps(exp.step_fn, state, batch, rng, max(3, args.steps // 2))
      alone.append(per_step / statistics.median(times))
      state = state.replace(step=jax.numpy.asarray(at, jax.numpy.int32))
      t = time.perf_counter()
      state, _ = loop(state, at, at + steps)
      jax.block_until_ready(state)
      walls.append(time.perf_counter() - t)
      saves += sum(1 for s in range(at + 1, at + steps + 1)
                   if s % cfg.checkpoint_every == 0 or s == exp.total_steps)
      at += steps
    t = time.perf_counter()
    checkpoint.save(manager, 10 ** 9, state, data_it, exp.meta)
    save_s = time.perf_counter() - t
    if args.profile:
      os.makedirs(args.profile, exist_ok=True)
      end = min(at + args.profile_steps, exp.total_steps)
      with jax.profiler.trace(args.profile):
        state, _ = loop(state, at, end)
        jax.block_until_ready(state)
    writer.close()
  amortised = 0.0 if saves else save_s * steps / cfg.checkpoint_every
  rates = [steps * per_step / (w + amortised) for w in walls]
  rate, alone_rate = float(np.median(rates)), float(np.median(alone))
  row = {"steps": steps, "repeats": args.repeats, "wall_s": walls,
         "images_per_s_each": rates, "images_per_s": rate,
         "step_alone_images_per_s_each": alone, "step_alone_images_per_s": alone_rate,
         "fraction_of_step_alone": rate / alone_rate,
         "trainer_overhead": 1.0 - rate / alone_rate, "checkpoint_save_s": save_s,
         "saves_in_stretches": saves, "amortised_save_s_per_stretch": amortised,
         "log_every": cfg.log_every, "checkpoint_every": cfg.checkpoint_every}
  print(f"trainer   {rate:,.1f} images/s ({args.repeats} x {steps} steps) = "
        f"{row['fraction_of_step_alone']:.3f} of the step alone ({alone_rate:,.1f})",
        flush=True)
  return row


# --- report --------------------------------------------------------------------------

def _pct(x) -> str:
  return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt=",.0f") -> str:
  return "n/a" if x is None else format(x, fmt)


def machine(cfg) -> dict:
  import jax
  d = jax.devices()[0]
  return {"device_kind": d.device_kind, "platform": d.platform, "devices": jax.device_count(),
          "processes": jax.process_count(), "cpu_cores": os.cpu_count(),
          "dtype": cfg.model.get("dtype", "float32"), "global_batch": cfg.batch_size,
          "images_per_row": images_per_row(cfg),
          "image": f"{cfg.data.image_size}x{cfg.data.image_size}x{cfg.data.channels}",
          "backbone": cfg.model.get("backbone", "unet"), "method": cfg.method}


def to_markdown(res: dict) -> str:
  m = res["machine"]
  head = (f"`{res['config']}` {' '.join('--set ' + s for s in res['overrides'])}: "
          f"{m['method']}, {m['backbone']}, {m['image']}, {m['dtype']}, global batch "
          f"{m['global_batch']} ({m['images_per_row']} image(s) per row); {m['devices']} x "
          f"{m['device_kind']}, {m['cpu_cores']} CPU cores")
  out = [head, ""]
  if "pipeline" in res:
    p = res["pipeline"]
    out += [f"Input pipeline (ceiling: {p['single_thread_ceiling_images_per_s']:,.0f} images/s "
            "single-thread decode + crop + resize, times the cores used):", "",
            "| worker processes | threads each | cores used | images/s | ceiling | efficiency |",
            "|---|---|---|---|---|---|"]
    out += [f"| {r['worker_processes']} | {r['threads']} | {r['cores_used']} | "
            f"{r['images_per_s']:,.0f} | {r['ceiling_images_per_s']:,.0f} | "
            f"{r['efficiency']:.2f} |" for r in p["rows"]]
    out.append("")
  if "step" in res:
    s = res["step"]
    out += ["| stage | time | images/s | GFLOP/step | TFLOP/s | measured peak TFLOP/s | "
            "MFU (measured peak) | vendor peak TFLOP/s | MFU (vendor) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| train step alone | {1e3 * s['step_s']:,.1f} ms | {s['images_per_s']:,.1f} | "
            f"{_num(s['flops_per_step'] and s['flops_per_step'] / 1e9, ',.1f')} | "
            f"{_num(s['achieved_flops_per_s'] and s['achieved_flops_per_s'] / 1e12, '.3f')} | "
            f"{s['measured_peak_flops_per_s'] / 1e12:.3f} | {_pct(s['mfu_measured_peak'])} | "
            f"{_num(s['vendor_peak_flops_per_s'] and s['vendor_peak_flops_per_s'] / 1e12, '.1f')}"
            f" | {_pct(s['mfu_vendor_peak'])} |"]
  if "h2d" in res:
    h = res["h2d"]
    out.append(f"| host to device | {1e3 * h['seconds_per_batch']:.2f} ms per batch | | "
               f"{h['bytes_per_batch'] / 1e6:.2f} MB | {h['bytes_per_s'] / 1e9:.2f} GB/s | "
               "| | | |")
  if "trainer" in res:
    t = res["trainer"]
    out.append(f"| whole trainer ({t['repeats']} x {t['steps']} steps, log every "
               f"{t['log_every']}, checkpoint every {t['checkpoint_every']}) | "
               f"{1e3 * statistics.median(t['wall_s']) / t['steps']:,.1f} ms/step | "
               f"{t['images_per_s']:,.1f} | | | | | | |")
    out += ["", f"Trainer: **{t['fraction_of_step_alone']:.3f}** of the step alone timed beside "
            f"it ({t['step_alone_images_per_s']:,.1f} images/s; overhead "
            f"{_pct(t['trainer_overhead'])}); one checkpoint save {t['checkpoint_save_s']:.2f} s"
            + (f", amortised over {t['checkpoint_every']} steps" if not t["saves_in_stretches"]
               else f", {t['saves_in_stretches']} inside the timed stretches") + "."]
  return "\n".join(out) + "\n"


def main(argv=None) -> int:
  cores = os.cpu_count() or 1
  p = cli.parser(__doc__)
  p.add_argument("--config", required=True, help="configs/<file>.py[:variant]")
  p.add_argument("--set", action="append", default=[], dest="overrides",
                 help="config override key=value (repeat)")
  p.add_argument("--stages", default=",".join(STAGES), help=f"subset of {','.join(STAGES)}")
  p.add_argument("--threads", default=default_counts(cores, 1),
                 help="reader thread counts to measure in this process (comma-separated)")
  p.add_argument("--processes", default=default_counts(cores, 2) if cores > 1 else "",
                 help="worker process counts to measure (one thread each; '' for none)")
  p.add_argument("--batches", type=int, default=8,
                 help="at least this many timed batches per pipeline setting ...")
  p.add_argument("--min_seconds", type=float, default=3.0, help="... and this many seconds")
  p.add_argument("--steps", type=int, default=20,
                 help="timed train steps (step alone; the median is reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
  p.add_argument("--trainer_steps", type=int, default=30,
                 help="steps in each timed stretch of the trainer")
  p.add_argument("--repeats", type=int, default=3,
                 help="trainer stretches, each paired with a step-alone timing")
  p.add_argument("--peak_size", type=int, default=0,
                 help="side of the peak-measuring matmul (0: 8192 on GPU, 1024 on CPU)")
  p.add_argument("--profile", default="", help="write a jax.profiler trace here")
  p.add_argument("--profile_steps", type=int, default=5)
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  stages = [s.strip() for s in args.stages.split(",") if s.strip()]
  unknown = sorted(set(stages) - set(STAGES))
  if unknown:
    p.error(f"--stages: unknown {unknown}; valid: {STAGES}")
  cfg = configs.load(args.config, args.overrides)

  import jax

  from mfrjax import methods, recognition
  from mfrjax.parallel import mesh as mesh_lib
  res = {"config": args.config, "overrides": args.overrides, "machine": machine(cfg),
         "args": vars(args)}
  mesh = mesh_lib.make_mesh()
  method = methods.get(cfg.method)
  if isinstance(method, methods.ImageMethod):  # its own trainer (restoration.py)
    return _bench_restoration(method, cfg, mesh, stages, args, res, p)
  exp = recognition.setup(cfg, mesh) if {"step", "h2d", "trainer"} & set(stages) else None
  if "pipeline" in stages:  # the face set is listed once: from the experiment if built
    split = (recognition.split_data(cfg) if exp is None else
             (exp.faceset, exp.train_ids, exp.test_ids, exp.train_groups, exp.test_groups))
    res["pipeline"] = bench_pipeline(cfg, split, args)
  if exp is not None:
    host_batch = next(iter(method.input_stream(cfg, exp.faceset, exp.train_groups)))
    # Compiled once, ahead of time: its cost analysis gives the FLOPs, and the very same
    # executable runs the step-alone timing and the trainer (no second compilation).
    exp = exp._replace(step_fn=exp.step_fn.lower(
        exp.state, mesh_lib.to_global(host_batch, mesh), jax.random.key(cfg.seed)).compile())
    state = exp.state
    if "step" in stages:
      res["step"], state = bench_step(cfg, exp, mesh, host_batch, args)
    if "h2d" in stages:
      res["h2d"] = bench_h2d(host_batch, mesh, max(args.steps, 5))
    if "trainer" in stages:
      res["trainer"] = bench_trainer(cfg, exp, mesh, state, host_batch, args)
  return _write(res, args.out)


def _bench_restoration(method, cfg, mesh, stages, args, res, parser) -> int:
  """The step and host-to-device stages of a mask-removal method (restoration.py); the
  pipeline and trainer stages are built on the recognition input and loop setup."""
  import types

  import jax

  from mfrjax import restoration
  from mfrjax.data import restore_data
  from mfrjax.parallel import mesh as mesh_lib
  extra = sorted(set(stages) - {"step", "h2d"})
  if extra:
    parser.error(f"--stages: {extra} not available for config.method={cfg.method!r}; use "
                 "step,h2d")
  setup = restoration.Setup(method, cfg, mesh)
  host_batch = next(iter(restore_data.train_stream(
      setup.data, setup.train_rows, cfg.data, global_batch=cfg.batch_size, num_epochs=1,
      seed=cfg.seed)))
  step_fn = setup.step_fn.lower(setup.state, mesh_lib.to_global(host_batch, mesh),
                                jax.random.key(cfg.seed)).compile()
  exp = types.SimpleNamespace(step_fn=step_fn, state=setup.state)
  if "step" in stages:
    res["step"], _ = bench_step(cfg, exp, mesh, host_batch, args)
  if "h2d" in stages:
    res["h2d"] = bench_h2d(host_batch, mesh, max(args.steps, 5))
  return _write(res, args.out)


def _write(res: dict, out: str) -> int:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
    json.dump(res, f, indent=2)
  md = to_markdown(res)
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(md)
  print(md)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
