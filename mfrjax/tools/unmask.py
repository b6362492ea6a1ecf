r"""Mask removal: find the mask, restore the face, then recognise (MRII).

    mfrjax-unmask --seg=/tmp/seg_lfw --inpaint=/tmp/inp_lfw --root=IN --out=OUT
    mfrjax-unmask --seg=... --inpaint=... --root=IN --preview=sheet.png
    mfrjax-unmask --seg=... --inpaint=... --root=/tmp/lfw112 --evaluate \
        --recogniser=standard=/tmp/arc_nomask,mask-aware=/tmp/arc_lfw --json=unmask.json

The first writes every image under --root, restored, to the same relative path under
--out (as PNG; nothing outside the predicted mask changes), with the predicted maps in
<out>.seg. --preview writes a contact sheet (input, predicted mask, restored) of
--preview_n images instead. Images are what the networks trained on: aligned crops for
the :lfw recipes (mfrjax-align).

--evaluate runs recognition three ways on the same masked probes of the held-out people
- raw masked, the mask region cut, and restored - against an unmasked gallery, for each
recogniser (mfrjax runs: name=workdir, comma-separated); the protocol is in
mfrjax/eval/unmasking.py. Several segmenter/inpainter pairs (comma-separated --seg and
--inpaint, e.g. three seeds of each) give every cell as mean ± std over the pairs.
--preview then shows probes: original, masked, cut, restored.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from mfrjax import cli, salts
from mfrjax.data import sources
from mfrjax.progress import Progress, Summary, require_new


def _restorer(args):
  from mfrjax.restoration import Restorer  # pylint: disable=import-outside-toplevel
  return Restorer(args.seg, args.inpaint, threshold=args.threshold, batch_size=args.batch_size)


def unmask_folder(restorer, root: str, out: str, chunk: int = 256, quiet: bool = False
                  ) -> Summary:
  """Restores every image under `root` into `out` (module docstring)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root={root!r} is not a directory")
  rels = sources.list_images(root)
  if not rels:
    raise ValueError(f"--root={root!r} holds no image")
  require_new(out, out + ".seg")
  summary, bar = Summary(), Progress(len(rels), "unmask", quiet=quiet)
  for start in range(0, len(rels), chunk):
    part, images = [], []
    for rel in rels[start:start + chunk]:
      try:
        images.append(sources.read_image(os.path.join(root, rel)))
        part.append(rel)
      except sources.ImageReadError as e:
        summary.skip(rel, str(e).rsplit(": ", 1)[-1])
      bar.update()
    by_shape: dict = {}
    for rel, img in zip(part, images):   # one batch per image size
      by_shape.setdefault(img.shape, []).append((rel, img))
    for group in by_shape.values():
      faces = np.stack([img for _, img in group])
      maps = restorer.segment(faces)
      restored = restorer.restore(faces, maps)
      for (rel, _), img, m in zip(group, restored, maps):
        stem = os.path.splitext(rel)[0] + ".png"
        for base, arr in ((out, img), (out + ".seg", m * 255)):
          dst = os.path.join(base, stem)
          os.makedirs(os.path.dirname(dst), exist_ok=True)
          if not cv2.imwrite(dst, arr):
            raise OSError(f"cannot write {dst}")
        summary.written += 1
  bar.close()
  return summary


def preview(restorer, root: str, path: str, n: int, seed: int = 0) -> int:
  from mfrjax.prep.masking import contact_sheet  # pylint: disable=import-outside-toplevel
  rels = sources.list_images(root)
  pick = np.random.default_rng([seed, salts.PREVIEW_SAMPLE]).choice(
      len(rels), min(n, len(rels)), replace=False)
  faces = [sources.read_image(os.path.join(root, rels[i])) for i in sorted(pick)]
  shape = faces[0].shape
  faces = np.stack([cv2.resize(f, shape[1::-1]).reshape(shape) for f in faces])
  maps = restorer.segment(faces)
  restored = restorer.restore(faces, maps)
  sheet = contact_sheet(list(zip(faces, maps * 255, restored)),
                        names=("input", "predicted mask", "restored"))
  if not cv2.imwrite(path, sheet):
    raise OSError(f"cannot write {path}")
  return len(faces)


def evaluate(args) -> dict:
  """The recognition table (module docstring); with several segmenter/inpainter pairs
  (seeds), every cell is their mean with its std beside it."""
  from mfrjax.embedder import Embedder  # pylint: disable=import-outside-toplevel
  from mfrjax.eval import peer, unmasking  # pylint: disable=import-outside-toplevel
  from mfrjax.prep.masking import contact_sheet  # pylint: disable=import-outside-toplevel
  from mfrjax.restoration import Restorer  # pylint: disable=import-outside-toplevel
  recognisers = dict(x.split("=", 1) for x in args.recogniser.split(",") if x)
  if not recognisers:
    raise ValueError("--evaluate needs --recogniser=name=workdir[,name=workdir...]")
  segs, inpaints = args.seg.split(","), args.inpaint.split(",")
  if len(segs) != len(inpaints):
    raise ValueError(f"--seg names {len(segs)} runs and --inpaint {len(inpaints)}: give one "
                     "segmenter per inpainter (e.g. the same seeds)")
  protocol = peer.held_out_images(args.root, args.holdout_percent, args.max_per_identity,
                                  args.seed)
  images = unmasking.read_images(protocol)
  types = tuple(t for t in args.types.split(",") if t)
  embedders = {name: Embedder.from_workdir(w) for name, w in recognisers.items()}
  per_pipeline, ious = [], []
  for k, (seg, inp) in enumerate(zip(segs, inpaints)):
    restorer = Restorer(seg, inp, threshold=args.threshold, batch_size=args.batch_size)
    views, seg_scores = unmasking.probe_views(restorer, images, protocol, args.box, types,
                                              args.mask_seed)
    ious.append(seg_scores["iou"])
    per_pipeline.append({name: unmasking.evaluate(
        {v: emb.embed(list(x)) for v, x in views.items()}, protocol)
        for name, emb in embedders.items()})
    if args.preview and k == 0:
      probes = np.flatnonzero(~protocol.is_gallery)[:args.preview_n]
      rows = [(views["unmasked"][i], *(views[v][j] for v in ("masked", "cut", "restored")))
              for j, i in enumerate(probes)]
      cv2.imwrite(args.preview,
                  contact_sheet(rows, names=("original", "masked", "cut", "restored")))
  return {"people": len(protocol.identities), "gallery": int(protocol.is_gallery.sum()),
          "probes": int((~protocol.is_gallery).sum()), "mask_types": list(types),
          "pipelines": [{"seg": s, "inpaint": i} for s, i in zip(segs, inpaints)],
          "segmenter_iou": float(np.mean(ious)), "segmenter_iou_std": float(np.std(ious)),
          "recognisers": unmasking.mean_over_runs(per_pipeline),
          "per_pipeline": per_pipeline}


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--seg", required=True,
                 help="workdir of a mask_seg run (--evaluate: several, comma-separated)")
  p.add_argument("--inpaint", required=True,
                 help="workdir of an inpaint run (--evaluate: as many as --seg)")
  p.add_argument("--root", required=True, help="folder of (aligned) face images")
  p.add_argument("--out", default="", help="folder to write the restored images to")
  p.add_argument("--preview", default="", help="write a contact sheet (PNG) here")
  p.add_argument("--preview_n", type=int, default=8)
  p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--evaluate", action="store_true", help="the recognition table")
  p.add_argument("--recogniser", default="", help="name=workdir[,name=workdir...]")
  p.add_argument("--holdout_percent", type=float, default=15.0)
  p.add_argument("--max_per_identity", type=int, default=20,
                 help="images per person at most (seeded; 0: all), as the peer benchmark")
  p.add_argument("--types", default="kn95", help="mask types of the probes")
  p.add_argument("--mask_seed", type=int, default=1000)
  p.add_argument("--box", type=float, default=1.0,
                 help="template box of the probe masks (1: aligned crops)")
  p.add_argument("--seed", type=int, default=0, help="gallery choice")
  p.add_argument("--json", default="", help="write the evaluation here")
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  if args.evaluate:
    from mfrjax.eval import report, unmasking  # pylint: disable=import-outside-toplevel
    result = evaluate(args)
    print(f"{result['people']} held-out people, {result['probes']} probes masked with "
          f"{','.join(result['mask_types'])}; {len(result['pipelines'])} segmenter + "
          f"inpainter pair(s); segmenter IoU on the probes {result['segmenter_iou']:.4f} ± "
          f"{result['segmenter_iou_std']:.4f}")
    print(unmasking.format_table(result["recognisers"]))
    if args.json:
      report.write_json(args.json, result)
    return 0
  restorer = _restorer(args)
  if args.preview:
    n = preview(restorer, args.root, args.preview, args.preview_n)
    print(f"contact sheet of {n} images -> {args.preview}")
    return 0
  if not args.out:
    p.error("--out is required (or --preview, or --evaluate)")
  print(unmask_folder(restorer, args.root, args.out, quiet=args.quiet).text())
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
