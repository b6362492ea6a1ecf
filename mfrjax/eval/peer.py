"""The peer benchmark: held-out people, an open-set gallery, unseen masks, any recogniser.

Protocol (mfrjax-peer runs it; README: Against dlib's face_recognition):

  people    the held-out share of a folder set (sources.held_out: a fixed hash of the
            name, the share config.data.holdout_percent removes from every training run),
            at most `max_per_identity` images each (a seeded subset, as in training)
  gallery   one unmasked image of *every* held-out person, chosen by a seeded rule;
            people with a single image are distractors: an open set of hundreds
  probes    every other image, three times: unmasked, masked with the mask placed by
            the ArcFace template in the photo's central square ("template"), and masked
            with the mask placed by the detector's landmarks on that face ("detector")
  masks     the masking tool (prep/masking.py) with a type and a seed the training
            masks did not use (default: KN95 only, seed 1000; mfrjax-mask's
            default training masks draw all four types with seed 0 - make the training
            set with --types=surgical,n95,cloth to hold KN95 out)
  geometry  every recogniser gets the same faces: the photo's face box and landmarks
            come from dlib's HOG detector on the *unmasked* photo (so a mask cannot make a
            face undetectable, as in MLFW, which masks aligned faces); where no face is
            found the central box is given. Each recogniser then aligns in its own way.
  metrics   rank-1 / rank-5 identification of each probe view against the gallery, and
            verification TAR at FAR 1e-3 over every probe x gallery score (genuine: the
            probe's own person; impostor: every other gallery person).

NumPy and OpenCV only; dlib (the `landmarks` extra) for the detector and the peer.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

from mfrjax import salts
from mfrjax.data import sources, transforms
from mfrjax.eval import identification, verification
from mfrjax.prep import landmarks, masking

VIEWS = ("unmasked", "masked_template", "masked_detector")
FARS = (1e-3,)
TEMPLATE_BOX = 0.5       # LFW-like centred photos: the face fills the central half
GIVEN_BOX = 0.45         # the box given where the detector finds no face (side / image)


class Protocol(NamedTuple):
  root: str
  rels: list[str]              # image paths relative to root
  labels: np.ndarray           # (N,) int, index into identities
  identities: tuple[str, ...]
  is_gallery: np.ndarray       # (N,) bool, one per identity


def held_out_images(root: str, holdout_percent: float, max_per_identity: int, seed: int,
                    limit_identities: int = 0) -> Protocol:
  """The protocol's people and images (module docstring); `limit_identities` keeps the
  first N held-out people, for quick checks."""
  if holdout_percent <= 0:
    raise ValueError("--holdout_percent must be > 0: the protocol tests on held-out people")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root={root!r} is not a directory")
  people = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))
                  and not n.startswith(".") and sources.held_out(n, holdout_percent))
  if limit_identities:
    people = people[:limit_identities]
  rng = np.random.default_rng([seed, salts.PEER_GALLERY])
  rels, labels, identities = [], [], []
  for name in people:
    files = sorted(f for f in os.listdir(os.path.join(root, name))
                   if sources.is_image(f) and sources.MASK_TAG not in f)
    if not files:
      continue
    if max_per_identity and len(files) > max_per_identity:
      files = [files[i] for i in np.sort(rng.choice(len(files), max_per_identity, False))]
    rels += [f"{name}/{f}" for f in files]
    labels += [len(identities)] * len(files)
    identities.append(name)
  if not identities:
    raise ValueError(f"no held-out person under --root={root!r} at "
                     f"--holdout_percent={holdout_percent}")
  labels = np.asarray(labels, np.int64)
  is_gallery = np.zeros(len(labels), bool)
  pick = np.random.default_rng([seed, salts.PEER_SAMPLE])
  for k in range(len(identities)):
    idx = np.flatnonzero(labels == k)
    is_gallery[pick.choice(idx)] = True
  if is_gallery.all():
    raise ValueError("no held-out person has two images: nothing to probe")
  return Protocol(root, rels, labels, tuple(identities), is_gallery)


class Faces(NamedTuple):
  photos: list[np.ndarray]     # uint8 (H, W, C) as read (BGR or grey)
  five: np.ndarray             # (N, 5, 2) float32 ArcFace landmarks
  boxes: np.ndarray            # (N, 4) int x0, y0, x1, y1
  detected: np.ndarray         # (N,) bool: the detector found the face


def given_box(h: int, w: int) -> tuple[int, int, int, int]:
  side = GIVEN_BOX * min(h, w)
  x0, y0 = (w - side) / 2, (h - side) / 2
  return int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side))


def locate_faces(protocol: Protocol, upsample: int = 1, progress=None) -> Faces:
  """Reads every image and finds its face box and five landmarks (module docstring)."""
  det = landmarks.detector("68", upsample)
  photos, five, boxes, detected = [], [], [], []
  for rel in (progress(protocol.rels) if progress else protocol.rels):
    img = sources.read_image(os.path.join(protocol.root, rel))
    found = det(img)
    h, w = img.shape[:2]
    photos.append(img)
    if found is not None:
      five.append(found.five)
      boxes.append(found.box)
      detected.append(True)
    else:
      five.append(masking.template_landmarks(h, w, TEMPLATE_BOX))
      boxes.append(given_box(h, w))
      detected.append(False)
  return Faces(photos, np.asarray(five, np.float32), np.asarray(boxes, np.int64),
               np.asarray(detected, bool))


def probe_views(faces: Faces, protocol: Protocol, mask_types: tuple[str, ...],
                mask_seed: int) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
  """{view: (images, their five landmarks)}: 'unmasked' holds every image (the gallery
  and the unmasked probes), the masked views only the probes (module docstring)."""
  probes = np.flatnonzero(~protocol.is_gallery)
  views = {"unmasked": (faces.photos, faces.five)}
  for view in VIEWS[1:]:
    images = []
    for i in probes:
      img = faces.photos[i]
      h, w = img.shape[:2]
      lm = (masking.template_landmarks(h, w, TEMPLATE_BOX) if view == "masked_template"
            else faces.five[i])
      images.append(masking.apply_mask(img, lm, [mask_seed, int(i), VIEWS.index(view)],
                                       mask_types)[0])
    views[view] = (images, faces.five[probes])
  return views


def similarity(gallery: np.ndarray, probes: np.ndarray) -> np.ndarray:
  """(P, G) cosine similarities."""
  return identification.l2_normalize(probes) @ identification.l2_normalize(gallery).T


def rank_k(sim: np.ndarray, gallery_labels: np.ndarray, probe_labels: np.ndarray,
           ks=(1, 5)) -> dict[str, float]:
  """Share of probes whose own person is among the k most similar gallery people
  (identification.identity_ranks)."""
  rank = identification.identity_ranks(sim, gallery_labels, probe_labels)
  return {f"rank{k}": float((rank <= k).mean()) for k in ks}


def tar_at_far(sim: np.ndarray, gallery_labels: np.ndarray, probe_labels: np.ndarray,
               fars=FARS) -> dict[str, float | None]:
  """Verification over every probe x gallery pair (module docstring)."""
  same = np.asarray(probe_labels)[:, None] == np.asarray(gallery_labels)[None, :]
  return verification.tar_at_far(sim.reshape(-1), same.reshape(-1), fars)


def view_metrics(embeddings: dict[str, np.ndarray], protocol: Protocol,
                 views: tuple[str, ...]) -> dict:
  """{view: rank-1, rank-5, TAR@FAR} of each probe view against the unmasked gallery;
  'unmasked' holds every image (gallery and probes), the other views the probes only."""
  g, p = protocol.is_gallery, ~protocol.is_gallery
  gallery, gl, pl = embeddings["unmasked"][g], protocol.labels[g], protocol.labels[p]
  out = {}
  for view in views:
    probes = embeddings[view][p] if view == "unmasked" else embeddings[view]
    sim = similarity(gallery, probes)   # once per view, for both metrics
    out[view] = {**rank_k(sim, gl, pl),
                 **{f"tar@far={f:g}": t for f, t in zip(FARS, tar_at_far(sim, gl, pl).values())}}
  return out


def evaluate(embeddings: dict[str, np.ndarray], protocol: Protocol) -> dict:
  """Metrics of one recogniser from its embeddings of `probe_views`."""
  out = view_metrics(embeddings, protocol, VIEWS)
  for view in VIEWS[1:]:
    out[view]["masked/standard"] = (out[view]["rank1"] / out["unmasked"]["rank1"]
                                    if out["unmasked"]["rank1"] else None)
  return out


class DlibRecogniser:
  """dlib's ResNet (`face_recognition_model_v1`, 128-D, from face-recognition-models)
  as the `face_recognition` library runs it: 5-point shape predictor in the face box,
  150x150 chip, no jitter (optionally the flip test-time augmentation). The shape is
  fitted on the unmasked photo (module docstring)."""

  name = "dlib face_recognition_model_v1"

  def __init__(self):
    try:
      import dlib  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise landmarks.MissingExtra(f"the dlib peer needs the '{landmarks.EXTRA}' extra: "
                                   f"{landmarks.INSTALL}") from e
    self._dlib = dlib
    self._shape = dlib.shape_predictor(
        landmarks.model_file("shape_predictor_5_face_landmarks.dat"))
    self._net = dlib.face_recognition_model_v1(
        landmarks.model_file("dlib_face_recognition_resnet_model_v1.dat"))

  @staticmethod
  def _rgb(img: np.ndarray) -> np.ndarray:
    if img.shape[2] == 1:
      return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    return np.ascontiguousarray(img[..., ::-1])

  def _descriptor(self, img: np.ndarray, box, ref: np.ndarray) -> np.ndarray:
    shape = self._shape(self._rgb(ref), self._dlib.rectangle(*map(int, box)))
    return np.asarray(self._net.compute_face_descriptor(self._rgb(img), shape, 0))

  def embed(self, images: list[np.ndarray], boxes: np.ndarray, fit_on: list[np.ndarray],
            flip: bool = False) -> np.ndarray:
    """128-D descriptors of `images`; the shape is fitted in `boxes` on `fit_on` (the
    unmasked photos of the same faces). `flip`: the same test-time augmentation as an
    mfrjax run's (embedder.forward): the descriptor of the mirrored photo, its shape
    fitted in the mirrored box, is added before the cosine (which normalises)."""
    out = []
    for img, box, ref in zip(images, boxes, fit_on):
      d = self._descriptor(img, box, ref)
      if flip:
        d = d + self._descriptor(transforms.hflip(img), mirror_box(box, img.shape[1]),
                                 transforms.hflip(ref))
      out.append(d)
    return np.asarray(out, np.float32)


def mirror_box(box, width: int) -> tuple[int, int, int, int]:
  """A dlib box (left, top, right, bottom; inclusive pixels) in the mirrored photo."""
  x0, y0, x1, y1 = map(int, box)
  return width - 1 - x1, y0, width - 1 - x0, y1


def run_dlib(faces: Faces, views: dict, protocol: Protocol, progress=None,
             flip: bool = False) -> dict:
  """dlib's embeddings of every view, and the seconds it took; `flip` as in
  DlibRecogniser.embed."""
  t = time.perf_counter()
  peer = DlibRecogniser()
  probes = np.flatnonzero(~protocol.is_gallery)
  out = {}
  for view, (images, _) in views.items():
    idx = np.arange(len(faces.photos)) if view == "unmasked" else probes
    out[view] = peer.embed(progress(images) if progress else images, faces.boxes[idx],
                           [faces.photos[i] for i in idx], flip=flip)
  return {"embeddings": out, "seconds": time.perf_counter() - t}


def run_embedder(embedder, views: dict, flip: bool = False) -> dict:
  """An mfrjax.embedder.Embedder's embeddings of every view (aligned as it was trained)."""
  t = time.perf_counter()
  out = {v: embedder.embed([embedder.align(img, lm) for img, lm in zip(images, five)],
                           flip=flip) for v, (images, five) in views.items()}
  return {"embeddings": out, "seconds": time.perf_counter() - t}


def cell(metrics: dict, key: str) -> str:
  """A percentage, with ± std when the row is a mean over seeds."""
  x, sd = metrics.get(key), metrics.get(key + "_std")
  if x is None:
    return "-"
  return f"{100 * x:.2f}" + (f" ± {100 * sd:.2f}" if sd else "")


def format_table(rows: dict[str, dict], title: str = "") -> str:
  """Markdown: one row per recogniser (rows from `evaluate`, or means over seeds with
  `<metric>_std` beside each metric)."""
  head = ("| model | unmasked r1 | r5 | masked (detector) r1 | r5 | masked/std | "
          "masked (template) r1 | r5 | TAR@1e-3 std | TAR@1e-3 masked (det.) | s |")
  lines = ([title, ""] if title else []) + [head, "|" + "---|" * 11]
  for name, r in rows.items():
    u, d, t = r["unmasked"], r["masked_detector"], r["masked_template"]
    ratio = d["masked/standard"]
    lines.append(
        f"| {name} | {cell(u, 'rank1')} | {cell(u, 'rank5')} | {cell(d, 'rank1')} | "
        f"{cell(d, 'rank5')} | {'-' if ratio is None else f'{ratio:.2f}'} | "
        f"{cell(t, 'rank1')} | {cell(t, 'rank5')} | {cell(u, 'tar@far=0.001')} | "
        f"{cell(d, 'tar@far=0.001')} | {r.get('seconds', 0):.0f} |")
  return "\n".join(lines)
