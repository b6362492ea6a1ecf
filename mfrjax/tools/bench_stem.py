r"""Speed of the focus-style stem unit against the standard IResNet stem.

    mfrjax-bench-stem --backbone=iresnet50 --image_size=112 --batch_size=128 \
        --dtype=bfloat16 --steps=20 --out=/tmp/bench_stem

Times the margin trainer's own jitted train step (`recognition.setup` of configs/margin.py,
synthetic faces, ArcFace head) on every local device for each stem, with SE and
DropBlock off so only the stem differs, and reports the median step time, images/s,
the speed-up of the focus unit, parameters and forward FLOPs (XLA's cost analysis).
Writes results.md and results.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from mfrjax import cli


def measure(stem: str, args) -> dict:
  import jax
  import jax.numpy as jnp

  from mfrjax import configs, recognition
  from mfrjax import state as state_lib
  from mfrjax.parallel import mesh as mesh_lib

  cfg = configs.load("margin")
  cfg.model.backbone, cfg.model.dtype, cfg.model.stem = args.backbone, args.dtype, stem
  cfg.model.se, cfg.model.dropblock.rate, cfg.ema.enabled = False, 0.0, False
  cfg.model.embed_dim = 512
  cfg.batch_size, cfg.data.image_size, cfg.data.channels = args.batch_size, args.image_size, 3
  cfg.data.synthetic.num_identities = max(cfg.data.synthetic.num_identities, 8)
  mesh = mesh_lib.make_mesh()
  exp = recognition.setup(cfg, mesh)
  rng = jax.random.key(0)
  x = jax.random.randint(rng, (args.batch_size, args.image_size, args.image_size, 3), 0, 256
                         ).astype(jnp.uint8)
  batch = {"image": x, "label": jnp.arange(args.batch_size) % 8,
           "masked": jnp.zeros(args.batch_size, bool)}
  batch = jax.device_put(batch, mesh_lib.batch_sharded(mesh))
  state = exp.state
  for _ in range(args.warmup):
    state, m = exp.step_fn(state, batch, rng)
  jax.block_until_ready(m["loss"])
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, m = exp.step_fn(state, batch, rng)
    jax.block_until_ready(m["loss"])
    times.append(time.perf_counter() - t)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  fwd = jax.jit(lambda v, im: exp.model.apply(v, im, method=exp.model.embed))
  cost = fwd.lower(variables, x.astype(jnp.float32)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  med = statistics.median(times)
  return {"stem": stem, "median_step_s": med, "images_per_sec": args.batch_size / med,
          "params": state_lib.count_params(state.params["backbone"]),
          "forward_gflops_per_image": float(cost.get("flops", 0.0)) / args.batch_size / 1e9,
          "device": str(jax.devices()[0].device_kind), "devices": jax.device_count()}


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--backbone", default="iresnet50")
  p.add_argument("--image_size", type=int, default=112)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  rows = [measure(stem, args) for stem in ("standard", "focus")]
  base = rows[0]["median_step_s"]
  for r in rows:
    r["speedup"] = base / r["median_step_s"]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump({"args": vars(args), "rows": rows}, f, indent=2)
  lines = [f"{args.backbone}, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
           f"{args.dtype}, {rows[0]['devices']} x {rows[0]['device']}", "",
           "| stem | step (ms) | images/s | speed-up | backbone params (M) | fwd GFLOPs/image |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['stem']} | {1e3 * r['median_step_s']:.1f} | {r['images_per_sec']:.1f} | "
                 f"{r['speedup']:.2f}x | {r['params'] / 1e6:.2f} | "
                 f"{r['forward_gflops_per_image']:.3f} |")
  text = "\n".join(lines)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text + "\n")
  print(text)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
