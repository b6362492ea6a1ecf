"""Mask segmentation: which pixels of a face are mask (the first stage of mask removal).

A small U-Net (models/unet.UNet) trained on the masking tool's images and the binary
maps it writes, so real photos need no hand-drawn segmentation; evaluated by IoU on
people it never trained on, for the mask types it trained on and for one it did not
(config.data.holdout_mask_type, KN95). README: Mask removal and inpainting.

Variants (`--config=configs/mask_seg.py:<variant>`):
  default  embedded synthetic faces masked at load time, 32x32; a few minutes on a CPU:
             python -m mfrjax.main --config=configs/mask_seg.py --workdir=/tmp/seg
  smoke    the same, a few steps; what the tests run.
  lfw      aligned LFW (mfrjax-align) masked with all four types
           (mfrjax-mask --out=/tmp/lfw112_masked_4types), 64x64 grey; KN95 and the
           held-out 15% of people are never trained on; ~5 min on a 2-core CPU.
  paper    112x112 RGB, a wider U-Net, for a GPU: --config.data.root=/data/aligned
           --config.data.masked_root=/data/aligned_masked
"""

import ml_collections

from mfrjax.configs import common

VARIANTS = common.DATA_VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, VARIANTS, "configs/mask_seg.py")
  c = common.run(variant)
  c.method = "mask_seg"
  c.num_epochs = {"smoke": 2, "lfw": 3, "paper": 10}.get(variant, 8)
  c.batch_size = {"smoke": 8, "paper": 256}.get(variant, 32)
  c.eval_at_init = False

  c.model = ml_collections.ConfigDict()
  c.model.widths = {"smoke": (8, 16), "paper": (32, 64, 128, 256)}.get(variant, (16, 32, 64))

  c.loss = ml_collections.ConfigDict()
  c.loss.dice_weight = 1.0     # BCE + this x soft Dice (losses/restore.py)

  c.optimizer = common.optimizer(name="adam", learning_rate=2e-3, schedule="warmup_cosine",
                                 warmup_epochs=0.2, final_lr_fraction=0.01, weight_decay=0.0)
  c.data = common.masked_faces(variant)
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = {"smoke": 8}.get(variant, 64)
  return c
