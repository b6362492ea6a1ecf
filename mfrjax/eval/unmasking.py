"""Recognition after mask removal: the same masked probes three ways (mfrjax-unmask).

Protocol, on a folder of aligned face crops (mfrjax-align):

  people    the held-out share of the set (sources.held_out, --holdout_percent; the share
            every training run of this project leaves out), at most 20 images each
            (seeded), as in the peer benchmark (eval/peer.py)
  gallery   one unmasked image per person (peer.held_out_images' seeded rule): an open
            set, people with one image are distractors
  probes    every other image, masked by the masking tool at the template landmarks
            with a type and seed training did not use (default KN95, seed 1000)
  views     'unmasked'        the probe without a mask (the ceiling)
            'masked'          the masked probe as it is
            'cut'             the segmenter's mask region blanked to mid-grey, the face
                              above it kept (occlusion removal without a fixed cut line)
            'restored'        the segmenter's region inpainted (MRII)
            'restored_true_map'  inpainted inside the true map: the inpainter alone,
                              without the segmenter's errors
  metrics   rank-1 / rank-5 against the gallery and TAR at FAR 1e-3 over every probe x
            gallery pair (eval/peer.py), per recogniser; the segmenter's IoU on the probes.
"""

from __future__ import annotations

import os

import numpy as np

from mfrjax.data import sources
from mfrjax.eval import image_quality, peer
from mfrjax.prep import masking

VIEWS = ("unmasked", "masked", "cut", "restored", "restored_true_map")
GREY = 128


def masked_probes(images: list[np.ndarray], probes: np.ndarray, box: float,
                  mask_types: tuple[str, ...], mask_seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(masked probe images, their true {0, 1} maps), the mask placed by the template."""
  out, maps = [], []
  for i in probes:
    img = images[i]
    lm = masking.template_landmarks(*img.shape[:2], box=box)
    m, seg, _ = masking.apply_mask(img, lm, [mask_seed, int(i)], mask_types)
    out.append(m)
    maps.append((seg > 0).astype(np.uint8))
  return np.stack(out), np.stack(maps)


def probe_views(restorer, images: list[np.ndarray], protocol: peer.Protocol, box: float,
                mask_types: tuple[str, ...], mask_seed: int) -> tuple[dict, dict]:
  """({view: uint8 images}, {'iou': segmenter IoU on the probes, ...}); 'unmasked' holds
  every image (gallery and probes), the other views the probes only."""
  probes = np.flatnonzero(~protocol.is_gallery)
  masked, true_maps = masked_probes(images, probes, box, mask_types, mask_seed)
  pred = restorer.segment(masked)
  cut = np.where(pred[..., None] > 0, np.uint8(GREY), masked)
  views = {"unmasked": np.stack(images), "masked": masked, "cut": cut,
           "restored": restorer.restore(masked, pred),
           "restored_true_map": restorer.restore(masked, true_maps)}
  seg = {"iou": float(np.mean(image_quality.mask_iou(pred, true_maps))),
         "probes": len(probes)}
  return views, seg


def evaluate(embeddings: dict[str, np.ndarray], protocol: peer.Protocol) -> dict:
  """{view: {'rank1', 'rank5', 'tar@far=0.001'}} of one recogniser's embeddings."""
  return peer.view_metrics(embeddings, protocol, VIEWS)


def mean_over_runs(runs: list[dict]) -> dict:
  """{recogniser: {view: {metric, metric_std}}}: the mean and std over several runs of
  `evaluate` (one per segmenter + inpainter pair). A cell that does not depend on the
  pair ('unmasked', 'masked') has no std: every run gives the very same number."""
  out = {}
  for name in runs[0]:
    out[name] = {}
    for view in VIEWS:
      cells = {}
      for metric in runs[0][name][view]:
        vals = [r[name][view][metric] for r in runs]
        if any(v is None for v in vals):
          cells[metric] = None
          continue
        cells[metric] = float(np.mean(vals))
        if len(set(vals)) > 1:
          cells[metric + "_std"] = float(np.std(vals))
      out[name][view] = cells
  return out


def read_images(protocol: peer.Protocol) -> list[np.ndarray]:
  return [sources.read_image(os.path.join(protocol.root, r)) for r in protocol.rels]


def format_table(rows: dict[str, dict], title: str = "") -> str:
  """Markdown: one row per (recogniser, view); means ± std where rows carry `_std`."""
  cell = peer.cell
  lines = ([title, ""] if title else []) + [
      "| recogniser | probes | rank-1 | rank-5 | TAR@FAR=1e-3 |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    for view in VIEWS:
      m = r[view]
      lines.append(f"| {name} | {view} | {cell(m, 'rank1')} | {cell(m, 'rank5')} | "
                   f"{cell(m, 'tar@far=0.001')} |")
  return "\n".join(lines)
