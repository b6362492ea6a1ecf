"""Make a masked face set: landmark-placed surgical, N95, KN95 and cloth masks.

    mfrjax-mask --root=/data/aligned --out=/data/aligned_masked --workers=8
    mfrjax-mask --root=../shared/data/lfw --out=/tmp/lfw_masked --box=0.5
    mfrjax-mask --root=/data/photos --out=/data/photos_masked --landmarks=detector
    mfrjax-mask --root=/data/aligned --preview=12 --preview_out=sheet.png

Writes <out>/<identity>/<image>_mask.png (.jpg with --format=jpg; train with
--config.data.masked_root=<out>), <out>.seg/ (binary maps of the mask region, always png)
and <out>.manifest.csv (source, output, mask type, colour, pattern, landmarks). Landmarks:
`template` (aligned crops; --box places the template in the central square of centred
photos, e.g. 0.5 for LFW's 250x250), `detector` (dlib, the `landmarks` extra: pip install
'mfrjax[landmarks]') or a CSV `path,x1,y1,...,x5,y5` (eyes, nose tip, mouth corners; paths
relative to --root; the <out>.landmarks.csv that mfrjax-align writes is one).
Same --seed, same masks, whatever --workers. --preview only writes a contact sheet.
"""

from __future__ import annotations

import sys

from mfrjax import cli
from mfrjax.prep import mask_dataset, masking


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--root", required=True, help="<root>/<identity>/<image> face set")
  p.add_argument("--out", default="", help="masked root to create (must not exist)")
  cli.add_landmark_flags(p)
  p.add_argument("--types", default=",".join(masking.MASK_TYPES),
                 help=f"comma-separated subset of {','.join(masking.MASK_TYPES)}")
  p.add_argument("--seed", type=int, default=0)
  cli.add_format_flags(p)  # of the masked images; the maps are always png (lossless)
  p.add_argument("--workers", type=int, default=1, help="processes")
  p.add_argument("--limit", type=int, default=0, help="mask only the first N images")
  p.add_argument("--preview", type=int, default=0, help="contact sheet of N images only")
  p.add_argument("--preview_out", default="mask_preview.png")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  types = tuple(t for t in args.types.split(",") if t)
  where = dict(landmarks=args.landmarks, box=args.box, landmark_model=args.landmark_model,
               upsample=args.upsample, types=types)
  if args.preview:
    n = mask_dataset.preview(args.root, args.preview_out, args.preview, seed=args.seed,
                             **where)
    print(f"contact sheet of {n} images -> {args.preview_out}")
    return 0
  if not args.out:
    p.error("--out is required (or --preview)")
  summary = mask_dataset.mask_folder(args.root, args.out, seed=args.seed,
                                     workers=args.workers, limit=args.limit, quiet=args.quiet,
                                     image_format=args.image_format, quality=args.quality,
                                     **where)
  print(summary.text())
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
