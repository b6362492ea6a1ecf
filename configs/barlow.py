"""Barlow Twins with the mask as the distortion: masked and unmasked views of a person.

Variants (`--config=configs/barlow.py:<variant>`):
  default  embedded synthetic faces, tiny ResNet, 32x32 grey; trains on a 2-core CPU in
           a few minutes:
             python -m mfrjax.main --config=configs/barlow.py --workdir=/tmp/mfr
  smoke    the same, a few steps; what the tests run.
  lfw      ../shared/data/lfw (or --config.data.root=...), masks drawn at load time,
           centre crop, tiny ResNet at 48x48 (CPU-sized; scale up on a GPU).
  paper    the seed recipe: ResNet-50, 112x112 aligned faces, global batch 512, LARS
           (eta 0.001, momentum 0.9), warm-up + cosine, lambda 0.0051, projector 8192^3:
             python -m mfrjax.main --config=configs/barlow.py:paper \
               --config.data.root=/data/aligned --workdir=/ckpt/barlow
Any key can be overridden: --config.optimizer.name=sgd --config.seed=1 ...
"""

import ml_collections

VARIANTS = ("default", "smoke", "lfw", "paper")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} of configs/barlow.py; valid: {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_epochs = 60
  c.batch_size = 128           # global, over all devices and hosts
  c.log_every = 25
  c.checkpoint_every = 200
  c.keep_checkpoints = 3
  c.eval_at_init = True        # also evaluate the untrained network, for comparison
  c.resume = ""                # another run's checkpoints dir, used if workdir has none

  # Gradient all-reduce: "mean" (XLA's, under jit) or "powersgd" (low-rank, shard_map).
  c.grad_reduce = "mean"
  c.powersgd = ml_collections.ConfigDict()
  c.powersgd.rank = 2
  c.powersgd.start_step = 10          # plain mean all-reduce before this step
  c.powersgd.min_compression_rate = 2.0  # compress a matrix only if it saves >= 2x
  c.powersgd.error_feedback = True
  c.powersgd.warm_start = True

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet_tiny"
  c.model.dtype = "float32"
  c.model.projector_dims = (512, 512, 512)

  c.loss = ml_collections.ConfigDict()
  c.loss.lambd = 0.0051

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "lars"    # or "sgd" (momentum), which the seed found best
  c.optimizer.learning_rate = 0.2
  c.optimizer.scale_by_batch = True   # peak LR = learning_rate * batch_size / 256
  c.optimizer.warmup_epochs = 2.0
  c.optimizer.final_lr_fraction = 0.01
  c.optimizer.weight_decay = 1.5e-6
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.trust_coefficient = 0.001

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # or "folder"
  c.data.root = ""
  c.data.masked_root = ""      # parallel tree of masked images, if not beside them
  c.data.mask_source = "files"  # "files": masked images on disk; "draw": drawn at load
  c.data.mask_top = 0.5        # "draw": mask top edge as a fraction of the crop height
  c.data.image_size = 32
  c.data.channels = 1
  c.data.crop_fraction = 1.0   # central square crop before resizing (LFW: ~0.5)
  c.data.test_fraction = 0.2   # share of identities held out for evaluation
  c.data.max_images_per_identity = 0  # seeded cap per identity (0 = all); LFW: 20
  c.data.sampler = "couples"   # "couples": all n/2 couples per identity; or "random"
  c.data.groups_csv = ""       # identity,group table for per-group results
  c.data.num_workers = 2
  c.data.prefetch = 4
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_identities = 200
  c.data.synthetic.images_per_identity = 10
  c.data.synthetic.seed = 0
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.flip = True
  c.data.augment.max_shift = 0.06
  c.data.augment.brightness = 0.1
  c.data.augment.contrast = 0.2

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 128
  c.eval.gallery_fraction = 0.5
  c.eval.k = 1

  if variant == "smoke":
    c.num_epochs = 4
    c.batch_size = 8           # 27 couples/epoch -> 3 steps/epoch, 12 steps
    c.log_every = 2
    c.checkpoint_every = 4
    c.eval_at_init = False
    c.model.projector_dims = (32, 32)
    c.data.image_size = 16
    c.data.num_workers = 1
    c.data.synthetic.num_identities = 12
    c.data.synthetic.images_per_identity = 6
    c.data.test_fraction = 0.25
    c.eval.batch_size = 16
  elif variant == "lfw":
    # CPU-sized run on real faces (about 15 minutes on 2 cores). On a GPU, scale it up:
    # --config.model.backbone=resnet50 --config.data.image_size=112 --config.num_epochs=100
    c.num_epochs = 8
    c.batch_size = 128
    c.log_every = 20
    c.checkpoint_every = 100
    c.model.projector_dims = (512, 512, 512)
    c.data.source = "folder"
    c.data.root = "../shared/data/lfw"
    c.data.mask_source = "draw"
    c.data.mask_top = 0.45
    c.data.crop_fraction = 0.5   # LFW is unaligned: the face fills the central ~120 px
    c.data.image_size = 48
    c.data.test_fraction = 0.1
    c.data.max_images_per_identity = 20
    c.data.sampler = "random"    # most LFW people have 1 image: pair it with its masked self
  elif variant == "paper":
    c.num_epochs = 100
    c.batch_size = 512
    c.log_every = 100
    c.checkpoint_every = 2000
    c.model.backbone = "resnet50"
    c.model.projector_dims = (8192, 8192, 8192)
    c.optimizer.warmup_epochs = 10.0
    c.data.source = "folder"
    c.data.image_size = 112
    c.data.channels = 3
    c.data.num_workers = 16
    c.data.test_fraction = 0.1
    c.eval.batch_size = 512
  return c
