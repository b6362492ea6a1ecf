"""Estimate skin tone per image and per identity and group identities into K tones.

    mfrjax-skin-tone --root=/data/faces --out=/tmp/tones --groups=3

Writes <out>/images.csv (path, identity, lightness L*, ITA, skin fraction),
<out>/identities.csv (identity, median lightness, images used) and <out>/groups.csv
(`identity,group`, tone-1 the lightest), usable as the evaluator's per-group table:

    python -m mfrjax.main --config=... --config.data.groups_csv=/tmp/tones/groups.csv

This measures apparent skin tone under each photo's lighting; it is not ethnicity.
Method: mfrjax/prep/skin_tone.py (Otsu foreground, HSV + YCrCb skin rules, CIE L*/ITA).
"""

from __future__ import annotations

import csv
import math
import os
import pathlib
import sys
import time

from mfrjax import cli
from mfrjax.data import sources
from mfrjax.prep import skin_tone
from mfrjax.progress import Progress, Summary, require_new


def tone_groups(root: str, out: str, groups: int, quiet: bool = False) -> Summary:
  files = sources.list_images(root)
  names = {n: os.path.join(out, n) for n in ("images.csv", "identities.csv", "groups.csv")}
  require_new(*names.values())
  os.makedirs(out, exist_ok=True)
  summary, t0, rows, per_id = Summary(), time.perf_counter(), [], {}
  bar = Progress(len(files), "skin tone", quiet=quiet)
  for rel in files:
    ident = pathlib.Path(rel).parts[0]
    per_id.setdefault(ident, [])
    try:
      tone = skin_tone.image_tone(sources.read_image(os.path.join(root, rel)))
    except sources.ImageReadError as e:
      summary.skip(rel, f"unreadable: {e}")
      tone = None
    if tone is not None and math.isnan(tone["lightness"]):
      summary.skip(rel, "too few skin pixels")
    elif tone is not None:
      summary.written += 1
      per_id[ident].append(tone["lightness"])
      rows.append((rel, ident, tone))
    bar.update()
  bar.close()
  tones = skin_tone.identity_tones(per_id)
  grouping = skin_tone.tone_groups(tones, groups)
  with open(names["images.csv"], "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["path", "identity", "lightness", "ita", "skin_fraction"])
    w.writerows((path, ident, f"{t['lightness']:.2f}", f"{t['ita']:.2f}",
                 f"{t['skin_fraction']:.3f}") for path, ident, t in rows)
  with open(names["identities.csv"], "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["identity", "lightness", "images", "group"])
    w.writerows((i, f"{t:.2f}", len(per_id[i]), grouping[i]) for i, t in sorted(tones.items()))
  with open(names["groups.csv"], "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["identity", "group"])
    w.writerows(sorted(grouping.items()))
  summary.seconds = time.perf_counter() - t0
  return summary


def main(argv=None) -> int:
  p = cli.parser(__doc__)
  p.add_argument("--root", required=True, help="<root>/<identity>/<image> face set")
  p.add_argument("--out", required=True, help="folder for the CSV files")
  p.add_argument("--groups", type=int, default=3, help="number of tone groups K")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  print(tone_groups(args.root, args.out, args.groups, args.quiet).text())
  return 0


run = cli.entry(main)  # the console script (pyproject.toml)


if __name__ == "__main__":
  sys.exit(run())
