"""Align faces: five-point similarity transform to the ArcFace 112x112 (or 96x112) crop.

    mfrjax-align --root=/data/photos --out=/data/aligned --landmarks=detector
    mfrjax-align --root=../shared/data/lfw --out=/tmp/lfw112 \\
        --landmarks=detector --workers=2
    mfrjax-align --root=/data/photos --out=/data/aligned96 \\
        --landmarks=points.csv --size=96x112

Landmarks: `detector` (dlib, the `landmarks` extra: pip install 'mfrjax[landmarks]'), a
CSV `path,x1,y1,...,x5,y5` (eyes, nose tip, mouth corners as seen; paths relative to
--root), or `template` with --box (a centred crop, no detection). Writes <out>/<identity>/
<image>.png (.jpg with --format=jpg: read 2.2x faster in training, lossy),
<out>.landmarks.csv (the points used, in the source images) and <out>.manifest.csv. An
image without a face, with landmarks outside it or whose five points do not fit the
template (residual over --max_residual template pixels) is reported and skipped. Nothing
is overwritten.
"""

from __future__ import annotations

import sys

from mfrjax import cli
from mfrjax.prep import align


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--root", required=True, help="<root>/<identity>/<image> face set")
  p.add_argument("--out", required=True, help="aligned root to create (must not exist)")
  p.add_argument("--size", default="112x112", choices=tuple(align.TEMPLATES))
  cli.add_landmark_flags(p)
  p.set_defaults(landmarks="detector")
  p.add_argument("--max_residual", type=float, default=align.MAX_RESIDUAL,
                 help="skip points whose template fit is worse (RMS, template px)")
  cli.add_format_flags(p)
  p.add_argument("--workers", type=int, default=1, help="processes")
  p.add_argument("--limit", type=int, default=0, help="align only the first N images")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  summary = align.align_folder(
      args.root, args.out, landmarks=args.landmarks, size=args.size, box=args.box,
      landmark_model=args.landmark_model, upsample=args.upsample,
      max_residual=args.max_residual, workers=args.workers, limit=args.limit,
      quiet=args.quiet, image_format=args.image_format, quality=args.quality)
  print(summary.text())
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
