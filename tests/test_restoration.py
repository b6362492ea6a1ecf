"""Mask removal: segmentation and inpainting networks, losses, data, trainer, Restorer."""

import csv
import json
import os
import re
import shutil

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfrjax import embedder, methods, restoration, train
from mfrjax.data import restore_data, sources
from mfrjax.eval import image_quality, unmasking
from mfrjax.losses import restore as losses
from mfrjax.methods import inpaint
from mfrjax.models import unet
from mfrjax.parallel import mesh as mesh_lib
from mfrjax.prep import mask_dataset
from tests.conftest import load_config

# Trains, or runs a command end to end: not in the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

rng = np.random.default_rng(0)


# ------------------------------------------------------------------ networks and losses

def test_network_shapes():
  x = jnp.zeros((2, 32, 32, 1))
  m = jnp.zeros((2, 32, 32, 1))
  seg = unet.UNet((8, 16, 32))
  assert seg.apply(seg.init(jax.random.key(0), x), x).shape == (2, 32, 32, 1)
  gen = unet.InpaintGenerator((8, 16, 32), (2,), 3)
  x3 = jnp.zeros((2, 32, 32, 3))
  assert gen.apply(gen.init(jax.random.key(0), x3, m), x3, m).shape == (2, 32, 32, 3)
  disc = unet.PatchDiscriminator((8, 16))
  v = disc.init(jax.random.key(0), x, m)
  assert "batch_stats" in v  # the spectral-norm power iteration state
  assert disc.apply(v, x, m).shape == (2, 8, 8, 1)


def test_composite_leaves_unmasked_pixels_untouched():
  image = rng.uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
  out = rng.uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
  mask = (rng.random((2, 8, 8, 1)) < 0.3).astype(np.float32)
  comp = np.asarray(unet.composite(jnp.asarray(out), jnp.asarray(image), jnp.asarray(mask)))
  np.testing.assert_array_equal(comp[mask == 0], image[mask == 0])
  np.testing.assert_array_equal(comp[mask == 1], out[mask == 1])


def test_losses_against_numpy():
  logits = rng.normal(size=(3, 6, 6, 1)).astype(np.float32)
  target = (rng.random((3, 6, 6, 1)) < 0.4).astype(np.float32)
  p = 1 / (1 + np.exp(-logits))
  bce = np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))
  dice = 1 - np.mean([(2 * (p[i] * target[i]).sum() + 1) / (p[i].sum() + target[i].sum() + 1)
                      for i in range(3)])
  loss, parts = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(target), 0.5)
  np.testing.assert_allclose(float(parts["bce"]), bce, rtol=1e-5)
  np.testing.assert_allclose(float(loss), bce + 0.5 * dice, rtol=1e-5)

  pred = np.zeros((2, 4, 4, 1), np.float32)
  truth = np.zeros((2, 4, 4, 1), np.float32)
  pred[0, :2], truth[0, 1:3] = 1, 1          # 4 shared pixels of 12 in the union
  assert np.allclose(losses.iou(jnp.asarray(pred), jnp.asarray(truth)), [4 / 12, 1.0])

  a, b = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  w = (rng.random((2, 4, 4, 1)) < 0.5).astype(np.float64)
  expect = (np.abs(a - b) * w).sum() / (w.sum() * 3)
  np.testing.assert_allclose(float(losses.masked_l1(jnp.asarray(a), jnp.asarray(b),
                                                    jnp.asarray(w))), expect, rtol=1e-5)

  real, fake = np.array([2.0, 0.5, -1.0]), np.array([-2.0, 0.0, 1.5])
  np.testing.assert_allclose(float(losses.hinge_discriminator(real, fake)),
                             np.mean([0, 0.5, 2.0]) + np.mean([0, 1.0, 2.5]), rtol=1e-6)
  np.testing.assert_allclose(float(losses.hinge_generator(fake)), -np.mean(fake), rtol=1e-6)

  e1, e2 = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
  cos = np.sum(e1 * e2, 1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
  np.testing.assert_allclose(float(losses.identity_loss(e1, e2)), 1 - cos.mean(), rtol=1e-5)


def test_region_scores_by_hand():
  truth = np.full((16, 16, 1), 100.0)
  restored = truth.copy()
  region = np.zeros((16, 16), bool)
  region[4:8, 4:8] = True
  restored[region] += 10.0
  restored[0, 0] = 0  # outside the region: not counted
  s = image_quality.region_scores(restored, truth, region)
  np.testing.assert_allclose(s["psnr"], 10 * np.log10(255 ** 2 / 100.0))
  np.testing.assert_allclose(s["l1"], 10 / 255)
  assert image_quality.region_scores(truth, truth, region)["ssim"] == pytest.approx(1.0)
  assert s["ssim"] < 1.0


def test_one_step_updates_each_network_by_its_own_loss():
  """d total / d gen == d L_G / d gen and d total / d disc == d L_D / d disc."""
  config = load_config("inpaint", "smoke")
  model = inpaint.METHOD.build_model(config)
  v = model.init(jax.random.key(0), jnp.zeros(inpaint.METHOD.input_shape(config)))
  batch = _batch(config)

  def total(p):
    return inpaint.inpaint_loss(p, v["batch_stats"], batch, None, 0, model=model,
                               config=config)[0]

  def part(name):
    return lambda p: inpaint.inpaint_loss(p, v["batch_stats"], batch, None, 0, model=model,
                                         config=config)[1][1][name]
  g = jax.grad(total)(v["params"])
  g_gen = jax.grad(part("loss_g"))(v["params"])
  g_disc = jax.grad(part("loss_d"))(v["params"])
  for a, b in zip(jax.tree.leaves(g["gen"]), jax.tree.leaves(g_gen["gen"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(g["disc"]), jax.tree.leaves(g_disc["disc"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(g["disc"]))


def _batch(config, n=8):
  data = restore_data.MaskedFaces(config.data, config.seed)
  rows, _ = data.split()
  exs = [data.load(int(r)) for r in rows[:n]]
  return {k: jnp.asarray(np.stack([e[k] for e in exs])) for k in exs[0]}


def test_generator_and_discriminator_step_lowers_the_l1_on_a_fixed_batch():
  config = load_config("inpaint", "smoke")
  config.optimizer.learning_rate = config.disc_optimizer.learning_rate = 1e-3
  config.optimizer.warmup_epochs = config.disc_optimizer.warmup_epochs = 0.0
  setup = restoration.Setup(inpaint.METHOD, config, mesh_lib.make_mesh(jax.devices()[:1]))
  batch = _batch(config)
  # The metrics of a step are those of the weights it starts from.
  state, metrics = setup.step_fn(setup.state, batch, jax.random.key(0))
  before = float(metrics["l1_hole"] + metrics["l1_valid"])
  assert int(state.step) == 1
  params = jax.tree.map(np.asarray, state.params)
  _, metrics = setup.step_fn(state, batch, jax.random.key(0))
  assert float(metrics["l1_hole"] + metrics["l1_valid"]) < before
  assert set(params) == {"gen", "disc"}
  assert set(setup.abstract.opt_state.inner_states) == {"gen", "disc"}  # two optimisers


# ----------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def lfw_masked(shared_data, tmp_path_factory):
  """12 real LFW people (2+ photos each) and the masking tool's output for them."""
  lfw = shared_data / "lfw"
  people = sorted(p for p in os.listdir(lfw) if len(os.listdir(lfw / p)) >= 3)[:12]
  root = tmp_path_factory.mktemp("lfw_small") / "faces"
  for p in people:
    shutil.copytree(lfw / p, root / p)
  out = str(root) + "_masked"
  mask_dataset.mask_folder(str(root), out, box=0.5, quiet=True)
  return str(root), out


def lfw_config(method, root, masked):
  c = load_config(method, "smoke")
  c.data.source, c.data.root, c.data.masked_root = "folder", root, masked
  c.data.crop_fraction, c.data.image_size = 0.5, 32
  c.data.holdout_percent, c.data.test_fraction = 0.0, 0.25
  return c


def test_triples_from_the_masking_tool(lfw_masked):
  root, masked = lfw_masked
  c = lfw_config("mask_seg", root, masked)
  data = restore_data.MaskedFaces(c.data, 0)
  train_rows, groups = data.split()
  with open(masked + ".manifest.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(data) == len(rows)
  assert not set(data.mask_types[train_rows]) & {"kn95"}
  assert set(data.mask_types[groups["unseen_type"]]) == {"kn95"}
  test_people = set(data.people[np.concatenate(list(groups.values()))])
  assert test_people and not test_people & set(data.people[train_rows])
  ex = data.load(int(train_rows[0]))
  assert ex["image"].shape == ex["masked"].shape == (32, 32, 1)
  assert set(np.unique(ex["seg"])) <= {0, 1} and ex["seg"].mean() > 0.1
  # The map is where the tool drew: the masked image differs from the photo mostly inside.
  diff = np.abs(ex["image"].astype(int) - ex["masked"].astype(int))[..., 0] > 20
  assert diff[ex["seg"][..., 0] == 1].mean() > 5 * max(diff[ex["seg"][..., 0] == 0].mean(),
                                                       1e-3)


def test_missing_manifest_names_the_key_and_the_command(tmp_path):
  c = lfw_config("mask_seg", str(tmp_path), str(tmp_path / "nothing"))
  with pytest.raises(FileNotFoundError, match="config.data.masked_root.*mfrjax-mask"):
    restore_data.MaskedFaces(c.data, 0)
  c.data.holdout_mask_type = "visor"
  with pytest.raises(ValueError, match="config.data.holdout_mask_type='visor'"):
    restore_data.MaskedFaces(c.data, 0)


def test_segmenter_learns_real_masks(lfw_masked, tmp_path):
  root, masked = lfw_masked
  c = lfw_config("mask_seg", root, masked)
  c.num_epochs, c.batch_size, c.model.widths = 12, 8, (8, 16, 32)
  results = train.train_and_evaluate(c, str(tmp_path))
  # An all-mask or all-face guess scores at most the mask's share of the image (~0.3).
  assert results["final"]["seen_types"]["iou"] > 0.6
  assert os.path.exists(tmp_path / "contact_sheet.png")


# --------------------------------------------------------------------- runs and resume

@pytest.fixture(scope="module")
def inpaint_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("inpaint"))
  return workdir, train.train_and_evaluate(load_config("inpaint", "smoke"), workdir)


def test_inpaint_run_reports_hole_scores(inpaint_run):
  _, results = inpaint_run
  for group in ("seen_types", "unseen_type"):
    r = results["final"][group]
    assert np.isfinite(r["psnr_restored"]) and 0 < r["ssim_restored"] <= 1
  assert np.isfinite(results["last_logged"]["loss_d"])


def test_inpaint_resume_matches_uninterrupted_run(inpaint_run, tmp_path):
  workdir, results = inpaint_run
  crashed = tmp_path / "crashed"
  shutil.copytree(workdir, crashed)
  last = max(embedder.checkpoint_steps(workdir))
  shutil.rmtree(crashed / "checkpoints" / str(last))
  resumed = train.train_and_evaluate(load_config("inpaint", "smoke"), str(crashed))
  assert resumed["final"] == results["final"]
  a, _ = embedder.read_weights(workdir, last, False)
  b, _ = embedder.read_weights(str(crashed), last, False)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("seg"))
  train.train_and_evaluate(load_config("mask_seg", "smoke"), workdir)
  return workdir


def test_a_mask_removal_run_is_not_a_recogniser(seg_run, inpaint_run):
  with pytest.raises(ValueError, match="mask removal.*Restorer"):
    embedder.Embedder.from_workdir(seg_run)
  with pytest.raises(ValueError, match="is a config.method='mask_seg' run, not 'inpaint'"):
    restoration.Restorer(None, seg_run)


def test_inpaint_resume_refuses_a_schedule_change(inpaint_run, tmp_path):
  from mfrjax import run_info
  workdir, _ = inpaint_run
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / str(max(embedder.checkpoint_steps(workdir))))
  longer = load_config("inpaint", "smoke", num_epochs=3)  # warmup_cosine: a new curve
  with pytest.raises(run_info.ConfigChangedError, match="config.num_epochs: 2 -> 3"):
    train.train_and_evaluate(longer, str(copy))
  with pytest.raises(run_info.ConfigChangedError, match="config.seed"):
    train.train_and_evaluate(load_config("inpaint", "smoke", seed=5), str(copy))


def test_restorer_changes_only_the_predicted_mask(inpaint_run, seg_run):
  workdir, _ = inpaint_run
  seg_dir = seg_run
  restorer = restoration.Restorer(seg_dir, workdir)
  c = load_config("inpaint", "smoke")
  data = restore_data.MaskedFaces(c.data, 0)
  faces = np.stack([cv2.resize(data.load(i)["masked"], (40, 40))[..., None] for i in range(5)])
  masks = restorer.segment(faces)
  assert masks.shape == (5, 40, 40) and set(np.unique(masks)) <= {0, 1}
  given = np.zeros_like(masks)
  given[:, 20:32, 8:32] = 1
  out = restorer.restore(faces, given)
  assert out.shape == faces.shape and out.dtype == np.uint8
  # At 40 px the 16-px inpainter's 1-px growth is 2.5 px, plus rounding: 4 px at most.
  grown = cv2.dilate(given[0], np.ones((9, 9), np.uint8))
  np.testing.assert_array_equal(out[0][grown == 0], faces[0][grown == 0])
  assert (out[0][given[0] == 1] != faces[0][given[0] == 1]).any()
  # At the inpainter's own size, exactly the 1-px growth (3x3) may change.
  small = faces[:, :16, :16]
  m = np.zeros((5, 16, 16), np.uint8)
  m[:, 8:12, 3:13] = 1
  out = restorer.restore(small, m)
  keep = cv2.dilate(m[0], np.ones((3, 3), np.uint8)) == 0
  np.testing.assert_array_equal(out[0][keep], small[0][keep])


def test_unknown_method_lists_the_restoration_methods():
  with pytest.raises(ValueError, match="'inpaint', 'margin', 'mask_seg'"):
    methods.get("unmask")


# ------------------------------------------------------------------- mfrjax-unmask

def _tool():

  from mfrjax.tools import unmask as mod
  return mod


def test_unmask_tool_writes_every_image_and_never_overwrites(inpaint_run, seg_run, lfw_masked,
                                                             tmp_path, capsys):
  root, _ = lfw_masked
  tool = _tool()
  out = tmp_path / "restored"
  args = [f"--seg={seg_run}", f"--inpaint={inpaint_run[0]}", f"--root={root}", "--quiet"]
  assert tool.main(args + [f"--out={out}"]) == 0
  rels = sources.list_images(root)
  assert f"written: {len(rels)}" in capsys.readouterr().out
  for rel in rels[:3]:
    stem = os.path.splitext(rel)[0] + ".png"
    src = sources.read_image(os.path.join(root, rel))
    assert sources.read_image(str(out / stem)).shape == src.shape
    assert set(np.unique(cv2.imread(str(tmp_path / "restored.seg" / stem), 0))) <= {0, 255}
  from mfrjax import cli
  assert cli.run(tool.main, args + [f"--out={out}"]) == 2
  assert "nothing is overwritten" in capsys.readouterr().err
  assert tool.main(args + [f"--preview={tmp_path / 'sheet.png'}", "--preview_n=3"]) == 0
  assert cv2.imread(str(tmp_path / "sheet.png")).shape[0] > 3 * 90


def test_unmask_evaluation_scores_every_view(inpaint_run, seg_run, lfw_masked, tmp_path):
  from tests.conftest import smoke_config
  root, _ = lfw_masked
  rec = str(tmp_path / "rec")
  train.train_and_evaluate(smoke_config(), rec)
  tool = _tool()
  out = tmp_path / "unmask.json"
  assert tool.main([f"--seg={seg_run}", f"--inpaint={inpaint_run[0]}", f"--root={root}",
                    "--evaluate", f"--recogniser=barlow={rec}", "--holdout_percent=60",
                    "--box=0.5", f"--json={out}", f"--preview={tmp_path / 'p.png'}"]) == 0
  r = json.loads(out.read_text())
  views = r["recognisers"]["barlow"]
  assert set(views) == set(unmasking.VIEWS)
  for v in views.values():
    assert 0 <= v["rank1"] <= v["rank5"] <= 1
  assert 0 <= r["segmenter_iou"] <= 1 and r["probes"] > 0
  assert os.path.exists(tmp_path / "p.png")
  # Two pipelines (the same one twice): every cell is their mean, the std 0.
  two = tmp_path / "two.json"
  assert tool.main([f"--seg={seg_run},{seg_run}", f"--inpaint={inpaint_run[0]},{inpaint_run[0]}",
                    f"--root={root}", "--evaluate",
                    f"--recogniser=barlow={rec}", "--holdout_percent=60", "--box=0.5",
                    f"--json={two}"]) == 0
  r2 = json.loads(two.read_text())
  assert r2["recognisers"]["barlow"]["restored"]["rank1"] == views["restored"]["rank1"]
  assert "rank1_std" not in r2["recognisers"]["barlow"]["restored"]  # the same every run
  from mfrjax import cli
  assert cli.run(tool.main, [f"--seg={seg_run}", f"--inpaint={inpaint_run[0]},x",
                             f"--root={root}", "--evaluate", f"--recogniser=b={rec}"]) == 2


def test_mean_over_runs_by_hand():
  def run(r1):
    return {"m": {v: {"rank1": r1 if v == "cut" else 0.5, "tar@far=0.001": None}
                  for v in unmasking.VIEWS}}
  out = unmasking.mean_over_runs([run(0.2), run(0.4)])
  assert out["m"]["masked"] == {"rank1": 0.5, "tar@far=0.001": None}
  assert out["m"]["cut"]["rank1"] == pytest.approx(0.3)
  assert out["m"]["cut"]["rank1_std"] == pytest.approx(0.1)
  assert out["m"]["cut"]["tar@far=0.001"] is None
  assert "30.00 ± 10.00" in unmasking.format_table(out)


@pytest.mark.parametrize("name", ["mask_seg", "inpaint"])
def test_paper_variants_build_at_112_rgb(name):
  """Shapes only (jax.eval_shape): the GPU recipes' networks at 112x112 RGB."""
  from mfrjax import state as state_lib
  c = load_config(name, "paper")
  assert c.data.image_size == 112 and c.data.channels == 3
  method = methods.get(name)
  model = method.build_model(c)
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(method.input_shape(c))))
  n = state_lib.count_params(v["params"])
  assert n > (1e6 if name == "mask_seg" else 5e6), n
  if name == "inpaint":
    out = jax.eval_shape(lambda w: model.apply(w, jnp.zeros((2, 112, 112, 3)),
                                               jnp.zeros((2, 112, 112, 1)),
                                               method=model.generate), v)
    assert out.shape == (2, 112, 112, 3)


def _copy_set(lfw_masked, tmp_path):
  """A copy of the faces and the masking tool's output, to damage."""
  (root, masked), copy = lfw_masked, (str(tmp_path / "faces"), str(tmp_path / "masked"))
  shutil.copytree(root, copy[0])
  for suffix in ("", ".seg"):
    shutil.copytree(masked + suffix, copy[1] + suffix)
  shutil.copy(masked + ".manifest.csv", copy[1] + ".manifest.csv")
  return copy


def test_a_corrupt_evaluation_image_stops_before_step_1(lfw_masked, tmp_path):
  c = lfw_config("mask_seg", *_copy_set(lfw_masked, tmp_path))
  data = restore_data.MaskedFaces(c.data, 0)
  _, groups = data.split()
  victim = int(groups["seen_types"][0])
  path = data.describe(victim)
  with open(path, "wb") as f:
    f.write(b"not a png")
  with pytest.raises(sources.ImageReadError, match=re.escape(path)):
    restoration.Setup(methods.get(c.method), c, mesh_lib.make_mesh(jax.devices()[:1]))


def test_a_corrupt_training_file_stops_before_step_1(lfw_masked, tmp_path):
  """A training row's three files (face, masked face, map) are decoded before step 1 too:
  without it, a corrupt one stopped the run at the first batch that held it."""
  c = lfw_config("mask_seg", *_copy_set(lfw_masked, tmp_path))
  data = restore_data.MaskedFaces(c.data, 0)
  train_rows, _ = data.split()
  assert len(data.files(int(train_rows[0]))) == 3
  victims = [data.files(int(train_rows[0]))[0], data.files(int(train_rows[-1]))[2]]
  for path in victims:  # a photo and a mask map
    with open(path, "wb") as f:
      f.write(b"not an image")
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  with pytest.raises(sources.ImageReadError,
                     match=r"2 of \d+ training image files \(faces, masked faces, mask maps\)"
                     ) as e:
    restoration.Setup(methods.get(c.method), c, mesh)
  assert all(v in str(e.value) for v in victims)
  c.data.check_files = False  # skipped: the set builds (and would fail at the batch)
  restoration.Setup(methods.get(c.method), c, mesh)
