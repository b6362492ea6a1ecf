"""Commands that use a trained run: embed a folder, verify two images, identify probes.

    mfrjax-embed    --workdir=W --images=DIR|LIST.txt --out=emb.npz [--flip]
    mfrjax-verify   --workdir=W a.png b.png [--threshold=far=0.001|far=0.01|best_accuracy|0.4]
    mfrjax-identify --workdir=W --gallery=DIR --probes=DIR [--csv=matches.csv]
    mfrjax-export   --workdir=W --out=PATH [--format=stablehlo|onnx] (mfrjax/exported.py)

(also `python -m mfrjax.tools.inference embed|verify|identify|export ...`). Images are what the run
trained on: aligned crops for an aligned run (`mfrjax-align` makes them), photos
otherwise; `mfrjax.embedder` reads everything else from the run. An unreadable image is
reported with its reason and skipped; the summary always says how many were embedded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from mfrjax import cli, run_info
from mfrjax.data import sources
from mfrjax.eval import identification
from mfrjax.progress import Progress, Summary


def _command(fn):
  """A console script: user errors as one `error:` line and exit status 2 (mfrjax.cli)."""
  def entry(argv=None) -> int:
    return cli.run(fn, argv)
  entry.__name__, entry.__doc__ = fn.__name__, fn.__doc__
  return entry


def _embedder(args):
  from mfrjax.embedder import Embedder  # pylint: disable=import-outside-toplevel
  return Embedder.from_workdir(args.workdir, step=args.step, batch_size=args.batch_size)


def _common(p: argparse.ArgumentParser) -> None:
  p.add_argument("--workdir", required=True, help="an mfrjax run (holds run.json)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--batch_size", type=int, default=64, help="images per compiled call")
  p.add_argument("--flip", action="store_true", help="add the mirror image's embedding")


def list_images(spec: str) -> list[str]:
  """A folder (every image below it, sorted) or a text file with one path per line."""
  if os.path.isdir(spec):
    out = sorted(os.path.join(d, f) for d, _, files in os.walk(spec) for f in files
                 if sources.is_image(f))
  elif os.path.isfile(spec):
    base = os.path.dirname(os.path.abspath(spec))
    with open(spec, encoding="utf-8") as f:
      out = [ln.strip() if os.path.isabs(ln.strip()) else os.path.join(base, ln.strip())
             for ln in f if ln.strip() and not ln.startswith("#")]
  else:
    raise FileNotFoundError(f"{spec!r} is neither a folder nor a list file")
  if not out:
    raise ValueError(f"{spec!r} holds no image ({', '.join(sources.IMAGE_EXTENSIONS)})")
  return out


def embed_paths(emb, paths: list[str], flip: bool, quiet: bool = False, desc: str = "embed"
                ) -> tuple[np.ndarray, list[str], Summary]:
  """(embeddings of the readable images, their paths, summary with every skip)."""
  summary, kept, images = Summary(), [], []
  bar = Progress(len(paths), desc, quiet=quiet)
  for path in paths:
    try:
      images.append(sources.read_image(path))
      kept.append(path)
    except sources.ImageReadError as e:
      summary.skip(path, str(e).rsplit(": ", 1)[-1])
    bar.update()
  bar.close()
  vectors = emb.embed(images, flip=flip) if images else np.zeros((0, 0), np.float32)
  summary.written = len(kept)
  return vectors, kept, summary


@_command
def embed_main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="mfrjax-embed", description=__doc__.split("\n")[0])
  _common(p)
  p.add_argument("--images", required=True, help="folder, or a text file of paths")
  p.add_argument("--out", required=True, help=".npz with 'embeddings' (N, D), 'paths'")
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  paths = list_images(args.images)
  emb = _embedder(args)
  vectors, kept, summary = embed_paths(emb, paths, args.flip, args.quiet)
  if kept:
    np.savez(args.out, embeddings=vectors, paths=np.asarray(kept), step=emb.step,
             flip=args.flip)
  print(summary.text())
  print(f"-> {args.out}" if kept else "nothing embedded; no output written")
  return 0 if kept else 1


def stored_thresholds(workdir: str, track: str) -> dict:
  """Thresholds the run calibrated on its held-out people (results.json)."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    run_info.read(workdir)  # names a workdir that is no run at all
    return {}
  with open(path, encoding="utf-8") as f:
    res = json.load(f)
  return res.get("verification", {}).get("test_identities", {}).get(track, {}).get(
      "thresholds", {})


@_command
def verify_main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="mfrjax-verify",
                              description="Cosine score of two face images, same or not.")
  _common(p)
  p.add_argument("images", nargs=2, help="two image files")
  p.add_argument("--threshold", default="far=0.001",
                 help="'far=0.001', 'far=0.01', 'best_accuracy' (calibrated by the run on "
                      "its held-out people, results.json) or a number")
  p.add_argument("--track", default="standard", choices=("standard", "masked"),
                 help="which calibration: two unmasked images, or masked vs unmasked")
  args = p.parse_args(argv)
  try:
    t, source = float(args.threshold), "given"
  except ValueError:  # a name of a calibrated threshold
    table = stored_thresholds(args.workdir, args.track)
    if args.threshold not in table or table[args.threshold] is None:
      raise ValueError(f"--threshold={args.threshold}: not in {args.workdir}/results.json "
                       f"(calibrated: {sorted(k for k, v in table.items() if v is not None)}); "
                       "give a number instead") from None
    t, source = float(table[args.threshold]), f"{args.threshold}, {args.track} track"
  # Decoded before the model is loaded, so a bad file is named at once; embedded as read.
  images = [sources.read_image(path) for path in args.images]
  x = _embedder(args).embed(images, flip=args.flip)
  score = float(x[0] @ x[1])
  print(f"score {score:.4f}; threshold {t:.4f} ({source}): "
        f"{'same person' if score >= t else 'different people'}")
  return 0


@_command
def identify_main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="mfrjax-identify",
                              description="Rank-1/5 of probes against a gallery.")
  _common(p)
  p.add_argument("--gallery", required=True, help="<dir>/<identity>/<image>")
  p.add_argument("--probes", required=True, help="<dir>/<identity>/<image>")
  p.add_argument("--csv", default="", help="each probe's 5 best matches")
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  emb = _embedder(args)
  sets = {}
  for name in ("gallery", "probes"):
    paths = list_images(getattr(args, name))
    vectors, kept, summary = embed_paths(emb, paths, args.flip, args.quiet, desc=name)
    print(f"{name}: {summary.text()}")
    if not kept:
      raise ValueError(f"--{name}: no readable image")
    sets[name] = (vectors, [os.path.basename(os.path.dirname(k)) for k in kept], kept)
  (g, g_id, g_path), (q, q_id, q_path) = sets["gallery"], sets["probes"]
  sim = q @ g.T
  order = np.argsort(-sim, axis=1, kind="stable")
  # Rank of the probe's person among the gallery's people (inf if not enrolled).
  rank = identification.identity_ranks(sim, np.asarray(g_id), np.asarray(q_id))
  enrolled = np.isfinite(rank)
  for k in (1, 5):
    print(f"rank-{k}: {100 * np.mean(rank <= k):.2f}% of {len(q_id)} probes "
          f"({int((~enrolled).sum())} of people not in the gallery)")
  if args.csv:
    with open(args.csv, "w", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(["probe", "identity"] + [f"{c}{i}" for i in range(1, 6)
                                         for c in ("match", "score")])
      for i, path in enumerate(q_path):
        row = [path, q_id[i]]
        for j in order[i, :5]:
          row += [g_path[j], f"{sim[i, j]:.4f}"]
        w.writerow(row)
    print(f"-> {args.csv}")
  return 0


@_command
def export_main(argv=None) -> int:
  p = argparse.ArgumentParser(
      prog="mfrjax-export", formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Exports a run's embedding network as StableHLO (jax.export) or ONNX.",
      epilog="stablehlo: the graph expects uint8 (N, H, W, C) images as the run's "
             "preprocessing makes them (size, channels - BGR or grey -, centre crop, "
             "alignment: written to <out>.json), scales (x - 127.5) / 127.5 itself and "
             "returns (N, D) float32 L2-normalised embeddings; N is free. Load with "
             "mfrjax.exported.load(<out>), which needs only jax. onnx (the 'export' extra): "
             "insightface's convention, float32 (N, 3, S, S) RGB scaled (x - 127.5) / 127.5, "
             "S the run's image size; same output.")
  _common(p)
  p.add_argument("--out", required=True,
                 help="path without suffix: <out>.stablehlo + <out>.json, or <out>.onnx + "
                      "<out>.onnx.json")
  p.add_argument("--format", default="stablehlo", choices=("stablehlo", "onnx"))
  args = p.parse_args(argv)
  from mfrjax import exported  # pylint: disable=import-outside-toplevel
  write = exported.export if args.format == "stablehlo" else exported.export_onnx
  meta = write(_embedder(args), args.out, flip=args.flip)
  suffix, info = ((exported.SUFFIX, exported.META) if args.format == "stablehlo"
                  else (exported.ONNX, exported.ONNX_META))
  print(f"-> {args.out}{suffix} (input {meta['input']['dtype']} {meta['input']['shape']}), "
        f"{args.out}{info}")
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  commands = {"embed": embed_main, "verify": verify_main, "identify": identify_main,
              "export": export_main}
  if not argv or argv[0] not in commands:
    print(f"usage: python -m mfrjax.tools.inference {{{','.join(commands)}}} ...", file=sys.stderr)
    return 2
  return commands[argv[0]](argv[1:])


if __name__ == "__main__":
  sys.exit(main())
