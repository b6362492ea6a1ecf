"""mfrjax runs against dlib's face_recognition network on held-out people with unseen masks.

    mfrjax-peer --root=../shared/data/lfw --dlib \\
        --run="ArcFace :lfw=/tmp/s/seed_0,/tmp/s/seed_1,/tmp/s/seed_2" --out=/tmp/peer

The protocol (mfrjax/eval/peer.py): the people of the fixed held-out share
(--holdout_percent, the config.data.holdout_percent that every LFW run leaves out), one
unmasked gallery image of each (single-image people are distractors), every other image
probed unmasked and with a mask of a type and seed training did not use, placed by the
template and by detector landmarks. Rank-1/5 and TAR@FAR 1e-3, one row per model; a run
given several workdirs (seeds) is reported as mean ± std. A run that trained on any of
the protocol's people is refused.

Writes <out>/peer.md and <out>/peer.json; --cache=DIR keeps the detected faces and dlib's
embeddings for the next call with the same protocol settings.
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np

from mfrjax import cli, run_info
from mfrjax.data import sources
from mfrjax.eval import peer, report
from mfrjax.prep import masking
from mfrjax.progress import map_progress


def parse_run(spec: str) -> tuple[str, list[str]]:
  name, sep, dirs = spec.partition("=")
  if not sep or not name or not dirs:
    raise ValueError(f"--run={spec!r}: expected NAME=WORKDIR[,WORKDIR...]")
  return name, [d for d in dirs.split(",") if d]


def check_run(workdir: str, holdout_percent: float) -> None:
  """Refuses a run whose training set could hold a protocol person."""
  data = run_info.read(workdir)["config"].data
  if data.source == "folder" and float(data.get("holdout_percent", 0.0)) < holdout_percent:
    raise ValueError(
        f"{workdir} trained with config.data.holdout_percent="
        f"{data.get('holdout_percent', 0.0)} on {data.root!r}: it may have seen the "
        f"protocol's people (--holdout_percent={holdout_percent}). Train with "
        f"config.data.holdout_percent>={holdout_percent}.")


def aggregate(results: list[dict]) -> dict:
  """{view: {metric: mean}} plus {view: {metric+'_std': std}} over seeds."""
  out = {"seeds": len(results), "seconds": float(np.mean([r["seconds"] for r in results]))}
  for view in peer.VIEWS:
    out[view] = {}
    for key in results[0][view]:
      vals = [r[view][key] for r in results]
      if any(v is None for v in vals):
        out[view][key] = out[view][key + "_std"] = None
        continue
      out[view][key] = float(np.mean(vals))
      out[view][key + "_std"] = float(np.std(vals))
  return out


def _bar(desc: str, quiet: bool):
  """A wrapper that yields the items of a list with a progress bar (progress.py)."""
  return lambda items: map_progress(lambda x: x, items, workers=1, desc=desc, quiet=quiet)


def _cache_key(args) -> str:
  spec = f"{os.path.abspath(args.root)}|{args.holdout_percent}|{args.max_per_identity}|" \
         f"{args.seed}|{args.mask_types}|{args.mask_seed}|{args.limit_identities}|{args.upsample}"
  return hashlib.sha256(spec.encode()).hexdigest()[:12]


def locate(protocol, args):
  path = os.path.join(args.cache, f"faces_{_cache_key(args)}.npz") if args.cache else ""
  if path and os.path.exists(path):
    with np.load(path) as f:
      photos = [sources.read_image(os.path.join(protocol.root, r)) for r in protocol.rels]
      return peer.Faces(photos, f["five"], f["boxes"], f["detected"])
  faces = peer.locate_faces(protocol, args.upsample, progress=_bar("faces", args.quiet))
  if path:
    os.makedirs(args.cache, exist_ok=True)
    np.savez(path, five=faces.five, boxes=faces.boxes, detected=faces.detected)
  return faces


def dlib_row(faces, views, protocol, args) -> dict:
  name = f"dlib_{_cache_key(args)}" + ("_flip" if args.flip else "")
  path = os.path.join(args.cache, name + ".npz") if args.cache else ""
  if path and os.path.exists(path):
    with np.load(path) as f:
      got = {"embeddings": {v: f[v] for v in peer.VIEWS}, "seconds": float(f["seconds"])}
  else:
    got = peer.run_dlib(faces, views, protocol, progress=_bar("dlib", args.quiet),
                        flip=args.flip)
    if path:
      np.savez(path, seconds=got["seconds"], **got["embeddings"])
  return {**peer.evaluate(got["embeddings"], protocol), "seconds": got["seconds"]}


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--root", required=True, help="raw photos, <root>/<identity>/<image>")
  p.add_argument("--run", action="append", default=[],
                 help="NAME=WORKDIR[,WORKDIR...] of mfrjax runs (repeatable)")
  p.add_argument("--dlib", action="store_true",
                 help="add dlib's network (the 'landmarks' extra)")
  p.add_argument("--out", required=True, help="folder for peer.md and peer.json")
  p.add_argument("--holdout_percent", type=float, default=15.0)
  p.add_argument("--max_per_identity", type=int, default=20)
  p.add_argument("--seed", type=int, default=0, help="gallery choice and per-person cap")
  p.add_argument("--mask_types", default="kn95",
                 help=f"probe mask types, of {','.join(masking.MASK_TYPES)}")
  p.add_argument("--mask_seed", type=int, default=1000)
  p.add_argument("--flip", action="store_true",
                 help="flip test-time augmentation, for the mfrjax runs and dlib alike")
  p.add_argument("--upsample", type=int, default=1, help="detector upsamplings")
  p.add_argument("--limit_identities", type=int, default=0, help="first N people (checks)")
  p.add_argument("--cache", default="", help="folder to keep faces and dlib embeddings")
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  if not args.run and not args.dlib:
    p.error("nothing to compare: give --run and/or --dlib")
  types = tuple(t for t in args.mask_types.split(",") if t)
  bad = [t for t in types if t not in masking.MASK_TYPES]
  if bad or not types:
    p.error(f"--mask_types={args.mask_types!r}: valid {masking.MASK_TYPES}")
  runs = [parse_run(s) for s in args.run]
  for _, dirs in runs:  # before the minutes of detection
    for d in dirs:
      check_run(d, args.holdout_percent)

  protocol = peer.held_out_images(args.root, args.holdout_percent, args.max_per_identity,
                                  args.seed, args.limit_identities)
  n_probe = int((~protocol.is_gallery).sum())
  print(f"{len(protocol.identities)} held-out people (gallery), {n_probe} probes x "
        f"{len(peer.VIEWS)} views; masks {','.join(types)} seed {args.mask_seed}", flush=True)
  faces = locate(protocol, args)
  views = peer.probe_views(faces, protocol, types, args.mask_seed)
  print(f"detector found {int(faces.detected.sum())} of {len(faces.detected)} faces "
        "(the rest: the given central box)", flush=True)

  rows = {}
  if args.dlib:
    rows[peer.DlibRecogniser.name] = dlib_row(faces, views, protocol, args)
  from mfrjax.embedder import Embedder  # pylint: disable=import-outside-toplevel
  for name, dirs in runs:
    per_seed = []
    for d in dirs:
      got = peer.run_embedder(Embedder.from_workdir(d), views, flip=args.flip)
      per_seed.append({**peer.evaluate(got["embeddings"], protocol), "seconds": got["seconds"]})
    rows[name] = aggregate(per_seed)

  settings = {k: getattr(args, k) for k in ("root", "holdout_percent", "max_per_identity",
                                            "seed", "mask_types", "mask_seed", "flip")}
  title = (f"{len(protocol.identities)} held-out people, {n_probe} probes; probe masks "
           f"{','.join(types)} (seed {args.mask_seed}); mean ± std over seeds where given"
           + ("; flip test-time augmentation for every model" if args.flip else ""))
  table = peer.format_table(rows, title)
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "peer.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  report.write_json(os.path.join(args.out, "peer.json"),
                    {"settings": settings, "people": len(protocol.identities),
                     "probes": n_probe, "detected": int(faces.detected.sum()),
                     "runs": {n: d for n, d in runs}, "rows": rows})
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
