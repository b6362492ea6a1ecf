"""Barlow Twins with the mask as the distortion: masked and unmasked views of a person.

Variants (`--config=configs/barlow.py:<variant>`):
  default  embedded synthetic faces, tiny ResNet, 32x32 grey; trains on a 2-core CPU in
           a few minutes:
             python -m mfrjax.main --config=configs/barlow.py --workdir=/tmp/mfr
  smoke    the same, a few steps; what the tests run.
  lfw      ../shared/data/lfw (or --config.data.root=...), masks drawn at load time,
           centre crop, tiny ResNet at 48x48 (CPU-sized, ~15 min; scale up on a GPU:
           --config.model.backbone=resnet50 --config.data.image_size=112).
  paper    the paper's recipe: ResNet-50, 112x112 aligned faces, global batch 512, LARS
           (eta 0.001, momentum 0.9), warm-up + cosine, lambda 0.0051, projector 8192^3:
             python -m mfrjax.main --config=configs/barlow.py:paper \
               --config.data.root=/data/aligned --workdir=/ckpt/barlow
Any key can be overridden: --config.optimizer.name=sgd --config.seed=1 ...
"""

import ml_collections

from mfrjax.configs import common

VARIANTS = common.DATA_VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, VARIANTS, "configs/barlow.py")
  c = common.run(variant)
  c.method = "barlow"
  c.num_epochs = {"smoke": 4, "lfw": 8, "paper": 100}.get(variant, 60)
  # Global pairs per step, over all devices and hosts (smoke: 27 couples/epoch -> 3 steps).
  c.batch_size = {"smoke": 8, "paper": 512}.get(variant, 128)

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet50" if variant == "paper" else "resnet_tiny"
  # bf16 compute on GPUs/TPUs (float32 weights, BN statistics and loss); CPUs emulate it.
  c.model.dtype = "bfloat16" if variant == "paper" else "float32"
  c.model.projector_dims = {"smoke": (32, 32), "paper": (8192, 8192, 8192)}.get(
      variant, (512, 512, 512))

  c.loss = ml_collections.ConfigDict()
  c.loss.lambd = 0.0051

  # LARS as in the paper; "sgd" (momentum) is what the paper found best.
  c.optimizer = common.optimizer(
      name="lars", learning_rate=0.2, scale_by_batch=True, schedule="warmup_cosine",
      warmup_epochs=10.0 if variant == "paper" else 2.0, final_lr_fraction=0.01,
      weight_decay=1.5e-6)

  c.data = common.data(variant)
  # Which pairs of one person's images an epoch makes (data/pipeline.epoch_pairs):
  # "couples" (disjoint couples) or "random" (every image once, with another or itself).
  c.data.pair_sampler = "couples"
  if variant == "lfw":
    c.data.pair_sampler = "random"  # most LFW people have 1 image: pair it with its masked self
  c.eval = common.evaluation(variant)
  return c
