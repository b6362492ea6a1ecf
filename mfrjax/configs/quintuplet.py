"""Quintuplet loss (masked-aware FaceNet): anchor, positive, negative, masked positive,
masked negative, with semi-hard then hardest mining inside the global batch.

Every batch holds K people x M photos, each photo as an unmasked image and its masked
copy (the seed: 20 x (3 + 3) = 120 images). The embedding (512-d in the paper) is
L2-normalised and compared by squared Euclidean distance, so the margin is on a fixed
scale (see mfrjax/losses/metric.py).

Variants (`--config=configs/quintuplet.py:<variant>`):
  default  embedded synthetic faces, tiny ResNet, 32x32 grey; a few minutes on a CPU:
             python -m mfrjax.main --config=configs/quintuplet.py --workdir=/tmp/quint
  smoke    the same, a few steps; what the tests run.
  lfw      ../shared/data/lfw with drawn masks (the same data block as barlow.py:lfw).
  paper    the paper's recipe: ResNet-50 + Dropout(0.6) -> GAP -> Dense(512) -> BN, 112x112
           RGB, 20 people x 3 photos, margin 0.2, SGD 0.05 divided by 10 every 2 epochs,
           10 epochs, semi-hard mining for 7 epochs then hardest:
             python -m mfrjax.main --config=configs/quintuplet.py:paper \
               --config.data.root=/data/aligned --workdir=/ckpt/quint
           (with D devices, K = batch_size / 3 must divide by D: e.g. batch_size=72 on 8.)
"""

import ml_collections

from mfrjax.configs import common

VARIANTS = common.DATA_VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, VARIANTS, "configs/quintuplet.py")
  c = common.run(variant)
  c.method = "quintuplet"
  # Epochs, and the epoch from which mining switches to the hardest negatives.
  c.num_epochs = {"smoke": 8, "lfw": 12, "paper": 10}.get(variant, 40)
  # Global rows per step = K people x M photos (each row: unmasked + masked image).
  c.batch_size = {"smoke": 24, "paper": 60}.get(variant, 48)

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet50" if variant == "paper" else "resnet_tiny"
  # bf16 compute on GPUs/TPUs (float32 weights, BN statistics and loss); CPUs emulate it.
  c.model.dtype = "bfloat16" if variant == "paper" else "float32"
  c.model.embed_dim = 512 if variant == "paper" else 128
  # On the last feature map, before pooling: the paper's 0.6 (Table 1); 0.2 for the
  # synthetic CPU demo, whose tiny network has 128 channels there.
  c.model.dropout = 0.2 if variant in ("default", "smoke") else 0.6
  c.model.normalize = True     # L2-normalised embeddings (fixed scale for the margin)

  c.loss = ml_collections.ConfigDict()
  c.loss.margin = 0.2
  c.loss.mining = "semihard"   # first phase: "semihard" or "hardest"
  c.loss.later_mining = "hardest"
  c.loss.switch_epoch = {"smoke": 4, "lfw": 8, "paper": 7}.get(variant, 28)  # -1: never

  c.optimizer = common.optimizer(name="sgd", learning_rate=0.05, schedule="step",
                                 decay_every_epochs={"smoke": 4, "lfw": 4, "paper": 2}
                                 .get(variant, 15), decay_factor=0.1, weight_decay=5e-4)

  c.data = common.data(variant)
  c.data.batch_images_per_person = 3
  c.eval = common.evaluation(variant)
  c.eval.classifiers = ("knn", "svm", "mlp")
  return c
