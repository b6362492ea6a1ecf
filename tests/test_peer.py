"""The peer benchmark: held-out people, the protocol's metrics by hand, dlib on real faces,
mfrjax-peer end to end."""

import json

import cv2
import numpy as np
import pytest

from mfrjax import recognition, run_info, train
from mfrjax.data import sources, transforms
from mfrjax.eval import identification, peer
from mfrjax.prep import landmarks
from mfrjax.tools import peer_benchmark as tool
from tests.conftest import load_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

needs_dlib = pytest.mark.skipif(not landmarks.available(),
                                reason=f"dlib not installed: {landmarks.INSTALL}")
NAMES = [f"person_{i:04d}" for i in range(4000)]


def test_held_out_share_is_fixed_nested_and_about_right():
  held = [n for n in NAMES if sources.held_out(n, 15)]
  assert 0.13 < len(held) / len(NAMES) < 0.17
  assert held == [n for n in NAMES if sources.held_out(n, 15)]  # no seed, no state
  # A larger share contains the smaller one, so a run holding out more is still clean.
  assert set(n for n in NAMES if sources.held_out(n, 10)) <= set(held)
  assert not any(sources.held_out(n, 0) for n in NAMES)
  with pytest.raises(ValueError, match="holdout_percent"):
    sources.held_out("x", 100)


def _tree(root, people):
  for name, n in people.items():
    (root / name).mkdir(parents=True)
    for k in range(n):
      cv2.imwrite(str(root / name / f"{name}_{k:04d}.png"), np.full((8, 8), 8 * k, np.uint8))


def test_folder_set_drops_held_out_people(tmp_path):
  held = [n for n in NAMES if sources.held_out(n, 15)][:2]
  kept = [n for n in NAMES if not sources.held_out(n, 15)][:3]
  _tree(tmp_path, {n: 2 for n in held + kept})
  fs = sources.FolderFaceSet(str(tmp_path), mask_source="render", holdout_percent=15)
  assert fs.identities == tuple(sorted(kept)) and fs.num_held_out == 2
  assert len(sources.FolderFaceSet(str(tmp_path), mask_source="render").identities) == 5
  # The config key reaches the set, and the LFW variants hold people out.
  cfg = load_config("barlow", "lfw", **{"data.root": str(tmp_path)})
  assert cfg.data.holdout_percent == 15
  assert recognition.split_data(cfg)[0].identities == tuple(sorted(kept))


def test_protocol_gallery_probes_and_cap(tmp_path):
  held = [n for n in NAMES if sources.held_out(n, 15)][:4]
  _tree(tmp_path, dict(zip(held, (1, 3, 30, 2))))
  _tree(tmp_path, {[n for n in NAMES if not sources.held_out(n, 15)][0]: 5})
  p = peer.held_out_images(str(tmp_path), 15, max_per_identity=20, seed=0)
  assert p.identities == tuple(sorted(held))
  counts = np.bincount(p.labels)
  assert sorted(counts.tolist()) == [1, 2, 3, 20]          # the cap of 20
  assert np.bincount(p.labels[p.is_gallery]).tolist() == [1, 1, 1, 1]  # one each
  # The single-image person is only in the gallery: a distractor.
  single = int(np.flatnonzero(counts == 1)[0])
  assert p.is_gallery[p.labels == single].all()
  again = peer.held_out_images(str(tmp_path), 15, max_per_identity=20, seed=0)
  assert again.rels == p.rels and (again.is_gallery == p.is_gallery).all()
  with pytest.raises(ValueError, match="holdout_percent must be > 0"):
    peer.held_out_images(str(tmp_path), 0, 20, 0)


def test_rank_k_and_tar_by_hand():
  gallery = np.array([[1, 0], [0, 1], [-1, 0]], float)
  gl = np.array([0, 1, 2])
  # probe 0 -> own first; probe 1 (person 1) has person 0 closer: rank 2; probe 2 rank 3.
  probes = np.array([[1, 0.1], [1, 0.5], [0.2, 1]], float)
  pl = np.array([0, 1, 2])
  r = peer.rank_k(peer.similarity(gallery, probes), gl, pl, ks=(1, 2, 3))
  assert r == {"rank1": pytest.approx(1 / 3), "rank2": pytest.approx(2 / 3), "rank3": 1.0}
  # 3 genuine, 6 impostor scores; at FAR 1/6 one impostor may pass.
  sim = (probes / np.linalg.norm(probes, axis=1, keepdims=True)) @ gallery.T
  gen = sim[np.arange(3), pl]
  imp = np.sort(sim[~np.eye(3, dtype=bool)])[::-1]
  want = float((gen >= imp[0]).mean())  # threshold at the best impostor accepts 1 of 6
  got = peer.tar_at_far(peer.similarity(gallery, probes), gl, pl, fars=(1 / 6,))
  assert got[f"{1 / 6:g}"] == pytest.approx(want)


def test_identity_ranks_count_people_not_images():
  # Gallery: person 0 twice (0.9, 0.8), person 1 (0.85), person 2 (0.95); probe of 1.
  sim = np.array([[0.9, 0.8, 0.85, 0.95], [0.9, 0.8, 0.85, 0.95]])
  gl = np.array([0, 0, 1, 2])
  ranks = identification.identity_ranks(sim, gl, np.array([1, 7]))
  # Person 1 is beaten by persons 2 and 0 (0.8 does not count twice): rank 3; person 7 is
  # not enrolled.
  assert ranks.tolist() == [3.0, np.inf]
  assert identification.identity_ranks(sim[:1], gl, np.array([2])).tolist() == [1.0]


@pytest.fixture(scope="module")
def lfw_protocol(shared_data):
  if not landmarks.available():
    pytest.skip(f"dlib not installed: {landmarks.INSTALL}")
  p = peer.held_out_images(str(shared_data / "lfw"), 15, 20, 0, limit_identities=12)
  faces = peer.locate_faces(p)
  return p, faces, peer.probe_views(faces, p, ("kn95",), 1000)


def test_real_faces_are_found_and_masked_where_the_face_is(lfw_protocol):
  p, faces, views = lfw_protocol
  assert faces.detected.mean() > 0.8
  n_probe = int((~p.is_gallery).sum())
  assert all(len(views[v][0]) == n_probe for v in peer.VIEWS[1:])
  probe0 = int(np.flatnonzero(~p.is_gallery)[0])
  raw = faces.photos[probe0].astype(int)
  masked = views["masked_detector"][0][0].astype(int)
  changed = np.abs(raw - masked).max(axis=2) > 0
  ys, _ = np.nonzero(changed)
  eyes_y, mouth_y = faces.five[probe0][:2, 1].mean(), faces.five[probe0][3:, 1].mean()
  assert changed.mean() > 0.02 and eyes_y < np.median(ys) and ys.max() > mouth_y


@needs_dlib
def test_dlib_is_strong_unmasked_and_hurt_by_masks(lfw_protocol):
  p, faces, views = lfw_protocol
  got = peer.run_dlib(faces, views, p)
  assert got["embeddings"]["unmasked"].shape == (len(p.rels), 128)
  r = peer.evaluate(got["embeddings"], p)
  assert r["unmasked"]["rank1"] >= 0.8      # a pretrained recogniser on 12 people
  assert r["masked_detector"]["rank1"] < r["unmasked"]["rank1"]


def test_mirror_box_is_the_same_pixels_mirrored():
  img = np.zeros((5, 8), np.uint8)
  img[1:4, 1:3] = 1                                   # columns 1..2, rows 1..3
  x0, y0, x1, y1 = peer.mirror_box((1, 1, 2, 3), img.shape[1])
  assert (x0, y0, x1, y1) == (5, 1, 6, 3)
  assert transforms.hflip(img)[y0:y1 + 1, x0:x1 + 1].all() and transforms.hflip(img).sum() == 6
  assert peer.mirror_box((x0, y0, x1, y1), 8) == (1, 1, 2, 3)


@needs_dlib
def test_dlib_flip_is_its_descriptor_plus_the_mirrored_ones(lfw_protocol):
  """Flip TTA for dlib as for mfrjax runs: the mirrored photo's descriptor is added, so a
  mirrored photo (box mirrored too) gets the very same flipped descriptor."""
  p, faces, _ = lfw_protocol
  net = peer.DlibRecogniser()
  img, box = faces.photos[0], faces.boxes[0]
  m_img, m_box = transforms.hflip(img), np.asarray([peer.mirror_box(box, img.shape[1])])
  plain = net.embed([img], box[None], [img])
  mirrored = net.embed([m_img], m_box, [m_img])
  both = net.embed([img], box[None], [img], flip=True)
  np.testing.assert_allclose(both, plain + mirrored, rtol=1e-6)
  np.testing.assert_allclose(net.embed([m_img], m_box, [m_img], flip=True), both, rtol=1e-6)
  assert np.abs(plain - mirrored).max() > 1e-3      # the mirror is another view


def _run_json(tmp_path, holdout):
  cfg = load_config("margin", "lfw", **{"data.holdout_percent": holdout})
  (tmp_path / "w").mkdir()
  run_info.write(str(tmp_path / "w"), cfg, 10)
  return str(tmp_path / "w")


def test_tool_refuses_runs_that_saw_protocol_people(tmp_path):
  with pytest.raises(ValueError, match=r"holdout_percent=5.0.*--holdout_percent=15"):
    tool.main(["--root", str(tmp_path), "--out", str(tmp_path / "o"),
               "--run", f"x={_run_json(tmp_path, 5.0)}"])
  with pytest.raises(ValueError, match="NAME=WORKDIR"):
    tool.parse_run("no_name")


@needs_dlib
def test_tool_end_to_end_with_a_run_and_dlib(shared_data, tmp_path):
  workdir = str(tmp_path / "arc")
  train.train_and_evaluate(load_config("margin", "smoke"), workdir)  # synthetic: allowed
  out = tmp_path / "peer"
  assert tool.main(["--root", str(shared_data / "lfw"), "--dlib", "--quiet",
                    "--run", f"smoke={workdir},{workdir}", "--out", str(out),
                    "--limit_identities", "6", "--cache", str(tmp_path / "c")]) == 0
  res = json.loads((out / "peer.json").read_text())
  rows = res["rows"]
  assert set(rows) == {peer.DlibRecogniser.name, "smoke"}
  assert rows["smoke"]["seeds"] == 2 and rows["smoke"]["unmasked"]["rank1_std"] == 0.0
  assert rows[peer.DlibRecogniser.name]["unmasked"]["rank1"] > rows["smoke"]["unmasked"]["rank1"]
  assert "| smoke |" in (out / "peer.md").read_text()
  assert len(list((tmp_path / "c").iterdir())) == 2   # faces and dlib's embeddings kept


def test_arcface_lfw_is_the_aligned_recipe_and_lfw_centre_the_old_one():
  aligned, centre = load_config("margin", "lfw"), load_config("margin", "lfw_centre")
  assert (aligned.data.alignment, aligned.data.image_size, aligned.data.mask_source,
          aligned.data.max_images_per_identity, aligned.num_epochs,
          aligned.optimizer.cycle_epochs, aligned.data.masked_share
          ) == ("112x112", 64, "render", 0, 96, 48, 0.25)
  assert (centre.data.alignment, centre.data.image_size, centre.data.mask_source,
          centre.num_epochs) == ("none", 48, "render", 16)
  assert aligned.data.holdout_percent == centre.data.holdout_percent == 15
  barlow = {k: v for k, v in load_config("barlow", "lfw").data.to_dict().items()
            if k != "pair_sampler"}  # Barlow Twins' own key
  assert centre.data.to_dict() == barlow | {
      k: v for k, v in centre.data.to_dict().items() if k in ("augment", "masked_share")}


def test_unknown_alignment_is_refused_before_training():
  from mfrjax.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"config.data.alignment='112'; valid: \('none', "
                                       r"'112x112', '96x112'\)"):
    recognition.setup(load_config("margin", **{"data.alignment": "112"}), mesh_lib.make_mesh())
