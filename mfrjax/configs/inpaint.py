"""Inpainting: restore the face under a mask (the second stage of mask removal).

A gated-convolution U-Net generator and a spectrally normalised PatchGAN discriminator
(models/unet.py), two optimisers in one pure step (restoration.py). Generator loss: L1
on the hole and on the rest, hinge adversarial loss, and - with config.loss.recogniser
set to a trained recognition run - an identity loss, 1 - cosine of that network's
embeddings of the restored and the true face. Training uses the true mask map (grown by
config.model.dilate pixels); mfrjax-unmask uses the segmenter's. README: Mask removal
and inpainting.

Variants (`--config=configs/inpaint.py:<variant>`):
  default  embedded synthetic faces masked at load time, 32x32; minutes on a CPU.
  smoke    the same, a few steps; what the tests run.
  lfw      aligned LFW masked by the data tools, 64x64 grey, KN95 and the held-out 15% of
           people never trained on; 10-13 min on a 2-core CPU:
             python -m mfrjax.main --config=configs/inpaint.py:lfw --workdir=/tmp/inp \
               --config.loss.recogniser=/tmp/arc_lfw
  paper    112x112 RGB, wider networks, for a GPU.
"""

import ml_collections

from mfrjax.configs import common

VARIANTS = common.DATA_VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, VARIANTS, "configs/inpaint.py")
  c = common.run(variant)
  c.method = "inpaint"
  c.num_epochs = {"smoke": 2, "lfw": 4, "paper": 20}.get(variant, 8)
  c.batch_size = {"smoke": 8, "paper": 128}.get(variant, 32)
  c.eval_at_init = False

  c.model = ml_collections.ConfigDict()
  c.model.widths = {"smoke": (8, 16), "paper": (64, 128, 256, 256)}.get(variant, (16, 32, 64))
  c.model.dilations = {"smoke": (2,)}.get(variant, (2, 4))
  c.model.disc_widths = {"smoke": (8, 16), "paper": (64, 128, 256)}.get(variant, (32, 64, 128))
  c.model.dilate = 1           # pixels the hole is grown by (the mask's soft edge)

  c.loss = ml_collections.ConfigDict()
  c.loss.hole = 6.0            # L1 weights as in partial convolutions (Liu et al. 2018)
  c.loss.valid = 1.0
  c.loss.adversarial = 0.01
  c.loss.identity = 0.5
  c.loss.recogniser = ""       # workdir of a trained recognition run ("" = no identity loss)

  # Adam (b1 0.5, b2 0.9) with a discriminator learning twice as fast (TTUR), as usual
  # for hinge-loss GANs with spectral normalisation.
  c.optimizer = common.optimizer(name="adam", learning_rate=2e-4, schedule="warmup_cosine",
                                 warmup_epochs=0.2, final_lr_fraction=0.1, weight_decay=0.0,
                                 momentum=0.5, adam_b2=0.9)
  c.disc_optimizer = common.optimizer(name="adam", learning_rate=4e-4,
                                      schedule="warmup_cosine", warmup_epochs=0.2,
                                      final_lr_fraction=0.1, weight_decay=0.0, momentum=0.5,
                                      adam_b2=0.9)
  c.data = common.masked_faces(variant)
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = {"smoke": 8}.get(variant, 64)
  return c
