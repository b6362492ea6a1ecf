"""Convert face sets between insightface's formats, folders and pair lists.

    mfrjax-convert rec2folder  --rec=train.rec --out=/data/faces
    mfrjax-convert folder2rec  --root=/data/faces --rec=/data/train.rec
    mfrjax-convert bin2folder  --bin=lfw.bin --out=/data/lfw_pairs
    mfrjax-convert pairs2bin   --pairs=/data/lfw_pairs/pairs.txt --root=/data/lfw_pairs --bin=my.bin
    mfrjax-convert pairs2list  --pairs=pairs.txt --root=/data/lfw --format=lfw --out=lfw_list.txt

MXNet RecordIO is read and written with a small struct/NumPy reader (no MXNet);
`folder2rec` writes insightface's layout (header record, images, per-class records).
`pairs2list` turns LFW `pairs.txt`, CALFW/CPLFW (two lines per pair) and MLFW (`a b 0|1`)
lists into the evaluator's `path_a path_b 0|1` list (`config.eval.verification.sets =
list.txt@root`). Outputs must be new: nothing is overwritten. Each command shows a
progress bar and ends with a summary (written, skipped and why).
"""

from __future__ import annotations

import json
import sys

from mfrjax import cli
from mfrjax.prep import convert


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  sub = p.add_subparsers(dest="cmd", required=True)
  a = sub.add_parser("rec2folder", help=".rec/.idx -> <out>/<class>/<record>.<ext>")
  a.add_argument("--rec", required=True)
  a.add_argument("--out", required=True)
  a = sub.add_parser("folder2rec", help="<root>/<identity>/<image> -> .rec/.idx")
  a.add_argument("--root", required=True)
  a.add_argument("--rec", required=True)
  a = sub.add_parser("bin2folder", help="verification .bin -> images + pairs.txt")
  a.add_argument("--bin", required=True)
  a.add_argument("--out", required=True)
  a = sub.add_parser("pairs2bin", help="pairs list + image root -> verification .bin")
  a.add_argument("--pairs", required=True)
  a.add_argument("--root", default="")
  a.add_argument("--bin", required=True)
  a = sub.add_parser("pairs2list", help="LFW / CALFW / MLFW pairs -> evaluator's list")
  a.add_argument("--pairs", required=True)
  a.add_argument("--root", required=True)
  a.add_argument("--format", choices=convert.PAIR_FORMATS, required=True)
  a.add_argument("--out", required=True)
  for s in sub.choices.values():
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--summary_json", default="", help="also write the summary here")
  args = p.parse_args(argv)
  if args.cmd == "rec2folder":
    summary = convert.rec_to_folder(args.rec, args.out, args.quiet)
  elif args.cmd == "folder2rec":
    summary = convert.folder_to_rec(args.root, args.rec, args.quiet)
  elif args.cmd == "bin2folder":
    summary = convert.bin_to_folder(args.bin, args.out, args.quiet)
  elif args.cmd == "pairs2bin":
    spec = f"{args.pairs}@{args.root}" if args.root else args.pairs
    summary = convert.pairs_to_bin(spec, args.bin, args.quiet)
  else:
    summary = convert.pairs_to_list(args.pairs, args.root, args.format, args.out)
  print(summary.text())
  if args.summary_json:
    with open(args.summary_json, "w", encoding="utf-8") as f:
      json.dump(summary.as_dict(), f, indent=2)
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
