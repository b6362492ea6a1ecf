"""Balanced masked + standard recognition: ArcFace/CosFace on face IResNets with the
paper's changes (focus-style stem unit, SE, DropBlock, EMA, cyclic cosine LR) and an exact
share of masked training images (10%), so masked faces are learnt without losing
accuracy on unmasked ones.

Variants (`--config=configs/margin.py:<variant>`):
  default         embedded synthetic faces, tiny IResNet, 32x32 grey; minutes on a CPU:
                    python -m mfrjax.main --config=configs/margin.py --workdir=/tmp/arc
  smoke           the same, a few steps; what the tests run.
  lfw             the best recipe measured against dlib's network on held-out LFW people
                  (README: Against dlib's face_recognition): LFW aligned to 112x112, the
                  masking tool's surgical, N95 and cloth masks drawn at load on a quarter
                  of the images (KN95 is kept for the test), 15% of people never trained
                  on, every image of the others (no per-person cap), tiny IResNet at
                  64x64 grey, 96 epochs (two cosine cycles of 48); about 19 min on a
                  2-core CPU. Embedded with the flip (mfrjax-embed --flip,
                  mfrjax-peer --flip) it passes dlib's masked rank-1. Align the photos
                  first:
                    mfrjax-align --root=../shared/data/lfw --out=/tmp/lfw112
  lfw_centre      the earlier recipe, no preparation: ../shared/data/lfw centre crops at
                  48x48 grey with the tool's masks rendered at load (the data block of the
                  other configs' lfw variants), 16 epochs; about 4 min.
  paper           the seed: ArcFace (s 64, m 0.5) on IResNet-100 at 112x112 RGB with the
                  focus stem, SE, DropBlock in the last two stages, EMA; SGD 0.1, momentum
                  0.9, weight decay 5e-4, cyclic cosine with warm-up; 10% masked images;
                  class centres sharded over the devices (model-parallel FC):
                    python -m mfrjax.main --config=configs/margin.py:paper \\
                      --config.data.root=/data/webface_aligned --workdir=/ckpt/arc
  paper_cosface   the same with CosFace (s 64, m 0.35).
  paper_baseline  plain ArcFace IResNet-100 (standard stem, no SE/DropBlock/EMA) - the
                  reference the paper's changes are measured against.
Other backbones: --config.model.backbone=iresnet_small|iresnet34|iresnet50|iresnet124.
"""

import ml_collections

from mfrjax.configs import common

VARIANTS = ("default", "smoke", "lfw", "lfw_centre", "paper", "paper_cosface",
            "paper_baseline")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, VARIANTS, "configs/margin.py")
  paper = variant.startswith("paper")
  data_variant = "paper" if paper else "lfw" if variant.startswith("lfw") else variant
  aligned_lfw = variant == "lfw"
  c = common.run(data_variant)
  c.method = "margin"
  c.num_epochs = {"smoke": 2, "lfw": 96, "lfw_centre": 16}.get(variant, 24 if paper else 20)
  c.batch_size = {"smoke": 16}.get(variant, 512 if paper else 64)

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "iresnet100" if paper else "iresnet_tiny"
  c.model.dtype = "bfloat16" if paper else "float32"
  c.model.embed_dim = 512 if paper else 128
  c.model.dropout = 0.0
  c.model.stem = "standard" if variant == "paper_baseline" else "focus"
  c.model.se = variant != "paper_baseline"
  c.model.dropblock = ml_collections.ConfigDict()
  c.model.dropblock.rate = 0.0 if variant == "paper_baseline" else 0.1
  c.model.dropblock.block_size = 3
  c.model.dropblock.stages = 2           # the last two stages
  # Model-parallel FC: the class centres split over devices along the class axis; the
  # class count is padded to a multiple of class_pad (divisible by the device count).
  c.model.shard_classes = paper
  c.model.class_pad = 128

  c.loss = ml_collections.ConfigDict()
  c.loss.head = "cosface" if variant == "paper_cosface" else "arcface"
  # s = 64 is the papers' scale for large sets; on the small CPU/LFW sets a tiny network
  # trained from scratch stalls at s = 64 (measured on `default`: 30% / 36% masked /
  # unmasked-probe 1-NN vs 45% / 84% at s = 32, README), so those variants use 32.
  c.loss.scale = 64.0 if paper else 32.0
  c.loss.margin = 0.35 if variant == "paper_cosface" else 0.5
  c.loss.easy_margin = False

  # 0.1 on :lfw too: 0.05 over its 96 epochs gained ~1 rank-1 point, within a standard
  # deviation, and took masked/standard below 0.9 (README: Against dlib's face_recognition).
  c.optimizer = common.optimizer(
      name="sgd", learning_rate=0.1, schedule="cyclic_cosine", warmup_epochs=0.5,
      cycle_epochs={"smoke": 1, "lfw": 48}.get(variant, 8 if paper else 10),
      final_lr_fraction=0.001,
      cycle_decay=0.5, weight_decay=5e-4, momentum=0.9)
  c.ema.enabled = variant != "paper_baseline"
  c.ema.decay = 0.9999 if paper else 0.999

  c.data = common.data(data_variant)
  if aligned_lfw:
    # Aligned crops with the masking tool's masks, every image of every training person
    # (README: Against dlib's face_recognition: each beat the centre crops + drawn box and
    # the 20-image cap on every metric; 64x64 matched 112x112 at 24 epochs in a quarter
    # of the time; 16 -> 32 -> 48 -> 64 epochs each beat the one before; 96 epochs with
    # the masks rendered at load on a quarter of the images beat 64 with the tool's mask
    # files on a tenth on masked faces, 33.0 vs 31.0 rank-1; at 16 epochs rendering and a
    # quarter masked each did at least as well, colour and the upper face alone worse).
    c.data.root = "/tmp/lfw112"
    c.data.mask_source = "render"
    c.data.alignment = "112x112"
    c.data.crop_fraction = 1.0
    c.data.image_size = 64
    c.data.max_images_per_identity = 0
  c.data.masked_share = 0.25 if aligned_lfw else 0.1
  a = c.data.augment
  a.flip = True
  a.max_shift = 0.0              # the random crop below replaces the shift
  a.brightness, a.contrast, a.brightness_contrast_p = 0.2, 0.2, 0.3
  a.crop_p, a.crop_min_area = 0.3, 0.8
  a.blur_p = a.gaussian_blur_p = a.motion_blur_p = 0.05
  a.blur_limit = 5
  a.rgb_shift_p, a.rgb_shift_limit = 0.1, 20
  a.jpeg_p, a.jpeg_quality = 0.2, 40
  c.eval = common.evaluation(data_variant)
  return c
