"""Triplet loss on the upper half of the face (occlusion removal).

The aligned face is cut into a 10 x 10 grid of blocks and only the top 50 blocks (the
upper half, where a mask never is) reach the network, in training and in evaluation.
It needs no masked training data: it trains on unmasked images, and masked probes are
evaluated by their upper half against the unmasked gallery.

Variants (`--config=configs/triplet_upper.py:<variant>`):
  default  embedded synthetic faces, tiny ResNet, 32x32 grey -> 16x32 upper half:
             python -m mfrjax.main --config=configs/triplet_upper.py --workdir=/tmp/upper
  smoke    the same, a few steps; what the tests run.
  lfw      ../shared/data/lfw (the same data block as barlow.py:lfw); masks drawn only
           for the evaluation probes.
  paper    ResNet-50 embedding head as in quintuplet.py:paper, 112x112 -> 56x112.
The baseline of the comparison (full face, no masks in training) is this config with
--config.data.upper_face.enabled=False.
"""

import ml_collections

from mfrjax.configs import common

VARIANTS = common.DATA_VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, VARIANTS, "configs/triplet_upper.py")
  c = common.run(variant)
  c.method = "triplet"
  c.num_epochs = {"smoke": 8, "lfw": 12, "paper": 10}.get(variant, 40)
  c.batch_size = {"smoke": 24, "paper": 60}.get(variant, 48)  # K people x M images

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet50" if variant == "paper" else "resnet_tiny"
  # bf16 compute on GPUs/TPUs (float32 weights, BN statistics and loss); CPUs emulate it.
  c.model.dtype = "bfloat16" if variant == "paper" else "float32"
  c.model.embed_dim = 512 if variant == "paper" else 128
  c.model.dropout = 0.2 if variant in ("default", "smoke") else 0.6  # as quintuplet.py
  c.model.normalize = True

  c.loss = ml_collections.ConfigDict()
  c.loss.margin = 0.2
  c.loss.mining = "batch_hard"  # "semihard", "hardest" or "batch_hard" (Hermans et al.)
  c.loss.later_mining = "batch_hard"
  c.loss.switch_epoch = -1      # epoch from which later_mining is used; -1: never

  c.optimizer = common.optimizer(name="sgd", learning_rate=0.05, schedule="step",
                                 decay_every_epochs={"smoke": 4, "lfw": 4, "paper": 2}
                                 .get(variant, 15), decay_factor=0.1, weight_decay=5e-4)

  c.data = common.data(variant)
  c.data.batch_images_per_person = 3
  c.data.upper_face.enabled = True
  c.eval = common.evaluation(variant)
  c.eval.classifiers = ("knn", "svm", "mlp")
  return c
