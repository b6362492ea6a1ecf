"""The softmax baseline (softmax_method.py) on the embedded synthetic faces:

    PYTHONPATH=examples mfrjax-train --config=examples/softmax_config.py --workdir=/tmp/sm
"""

import ml_collections

from mfrjax.configs import common


def get_config(arg=None):
  variant = common.parse_variant(arg, common.DATA_VARIANTS, "examples/softmax_config.py")
  c = common.run(variant)
  c.method = "softmax_method"  # the module's import path
  c.num_epochs = {"smoke": 4}.get(variant, 20)
  c.batch_size = {"smoke": 16}.get(variant, 64)
  c.model = ml_collections.ConfigDict({"backbone": "resnet_tiny", "dtype": "float32"})
  c.optimizer = common.optimizer(name="sgd", learning_rate=0.1, schedule="warmup_cosine",
                                 warmup_epochs=1.0)
  c.data = common.data(variant)
  c.data.masked_share = 0.5  # half of every epoch's images masked
  c.eval = common.evaluation(variant)
  return c
