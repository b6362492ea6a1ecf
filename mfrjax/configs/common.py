"""Config blocks shared by the experiment configs (configs/*.py).

Methods compared "on the same data" must read the same data block: the dataset, crop,
image size, identity split and evaluation protocol live here, once, per data variant
('default' embedded synthetic faces, 'smoke' for tests, 'lfw', 'paper' = aligned 112x112).
Each config file adds its method's own keys and prints as a complete recipe
(`print(get_config())`); library code never supplies a default of its own.
"""

from __future__ import annotations

import ml_collections

DATA_VARIANTS = ("default", "smoke", "lfw", "paper")


def parse_variant(arg: str | None, valid: tuple[str, ...], path: str) -> str:
  variant = arg or "default"
  if variant not in valid:
    raise ValueError(f"unknown variant {variant!r} of {path}; valid: {valid}")
  return variant


def run(variant: str) -> ml_collections.ConfigDict:
  """Seed, logging, checkpointing and the gradient all-reduce."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.log_every = {"smoke": 2, "lfw": 20, "paper": 100}.get(variant, 25)
  c.checkpoint_every = {"smoke": 4, "lfw": 100, "paper": 2000}.get(variant, 200)
  c.keep_checkpoints = 3
  c.eval_at_init = variant != "smoke"  # also evaluate the untrained network
  # Evaluate every this many steps during training (0: only at the end): TensorBoard
  # scalars, results.json "evaluations", and the best weights by config.eval.best_metric
  # kept in <workdir>/best/. Off on the CPU variants, where an evaluation costs more than
  # a few percent of the run.
  c.eval_every = {"paper": 5000}.get(variant, 0)
  c.resume = ""                # another run's checkpoints dir, used if workdir has none
  # Exponential moving average of the weights (and BN statistics), used for evaluation.
  c.ema = ml_collections.ConfigDict()
  c.ema.enabled = False
  c.ema.decay = 0.999

  # Gradient all-reduce: "mean" (XLA's, under jit), "flat" or "powersgd" (shard_map).
  c.grad_reduce = "mean"
  # BatchNorm statistics over the global batch (synchronised BN, one small all-reduce per
  # BN layer and pass: ~80 per step for a ResNet-18 Barlow step, each a barrier between
  # hosts). False: each device normalises with its own batch's statistics, as PyTorch DDP
  # without SyncBatchNorm, and the running averages are averaged once per step; only with
  # grad_reduce 'flat' or 'powersgd' (README: PowerSGD gradient compression).
  c.sync_batch_norm = True
  c.powersgd = ml_collections.ConfigDict()
  c.powersgd.rank = 2
  c.powersgd.start_step = 10          # plain mean all-reduce before this step
  c.powersgd.min_compression_rate = 2.0  # compress a matrix only if it saves >= 2x
  c.powersgd.error_feedback = True
  c.powersgd.warm_start = True
  return c


def data(variant: str) -> ml_collections.ConfigDict:
  """Dataset, preprocessing, identity split and augmentation."""
  d = ml_collections.ConfigDict()
  d.source = "synthetic"       # or "folder"
  d.root = ""
  d.masked_root = ""           # parallel tree of masked images, if not beside them
  # The masked view (data/sources.MASK_SOURCES): "files" made by mfrjax-mask, or
  # "render": the same realistic masks (prep/masking.py) drawn at load time on the
  # template's landmarks, a new mask per image and draw.
  d.mask_source = "files"
  d.mask_types = ("surgical", "n95", "cloth")  # "render": KN95 is left for evaluation
  d.mask_box = 1.0             # "render": side of the template square / crop side
  d.mask_landmarks = ""        # "render": CSV of each file's five points (path,x1,y1,...)
                               # to place masks by instead of the template, e.g. the
                               # <out>.crop_landmarks.csv that mfrjax-align writes
  d.image_size = 32
  d.channels = 1
  d.crop_fraction = 1.0        # central square crop before resizing (LFW: ~0.5)
  d.test_fraction = 0.2        # share of identities held out for evaluation
  # Share of people (percent) removed from the folder set by a fixed hash of their name
  # (sources.held_out): never trained on by any run, whatever the seed, and the test
  # people of mfrjax-peer. LFW: 15 (666 of 4,293 people, 204 with 2+ images).
  d.holdout_percent = 0.0
  # What the images of the set are: "none" (photos, centre-cropped by crop_fraction) or
  # "112x112" (crops aligned to the ArcFace five-point template: mfrjax-align).
  # Stored with the run, so a trained model can be given raw photos plus landmarks
  # (mfrjax.embedder, mfrjax-peer) and align them as its training data was.
  d.alignment = "none"
  d.max_images_per_identity = 0  # seeded cap per identity (0 = all); LFW: 20
  d.batch_images_per_person = 3  # identity batches (metric methods): M images of each person
  d.batch_min_images = 2       # identity batches: people with fewer images are not drawn
  d.groups_csv = ""            # identity,group table for per-group results
  d.exclude_list = ""          # images to leave out, one path per line (mfrjax-clean)
  d.check_files = True         # decode every training file once before step 1 (folder sets)
  d.num_workers = 2            # reader threads (per worker process, if any)
  d.worker_processes = 0       # grain worker processes; 0 = read in the training process
  d.prefetch = 4
  # Niceness added to the reader threads (Linux; 0-19, 0: off). When the step runs on
  # the host's cores (CPU training) or every core is busy, a reader then yields its core
  # to the step instead of stalling it; idle cores still read at full speed. 0 on a
  # machine shared with other jobs (README: Throughput and bf16).
  d.reader_nice = 19
  # Decoded + resized images kept in memory per reader process (0: off). Small sets fit
  # and skip the decode after the first epoch; large ones (paper) are decoded each time.
  d.cache_mb = 512
  d.upper_face = ml_collections.ConfigDict()  # occlusion removal (triplet_upper)
  d.upper_face.enabled = False
  d.upper_face.grid = 10       # the face as a grid x grid block layout ...
  d.upper_face.keep_blocks = 50  # ... of which the top rows are kept (50 of 100: upper half)
  d.synthetic = ml_collections.ConfigDict()
  d.synthetic.num_identities = 200
  d.synthetic.images_per_identity = 10
  d.synthetic.seed = 0
  d.augment = ml_collections.ConfigDict()
  d.augment.flip = True
  d.augment.max_shift = 0.06
  d.augment.brightness = 0.1
  d.augment.contrast = 0.2
  d.augment.brightness_contrast_p = 1.0
  # The recognition recipe's extra augmentations (transforms.photometric), off here;
  # configs/margin.py turns them on. Each is applied with its probability.
  d.augment.crop_p = 0.0
  d.augment.crop_min_area = 0.8
  d.augment.blur_p = 0.0
  d.augment.gaussian_blur_p = 0.0
  d.augment.motion_blur_p = 0.0
  d.augment.blur_limit = 5     # largest blur kernel (odd, pixels)
  d.augment.rgb_shift_p = 0.0
  d.augment.rgb_shift_limit = 20
  d.augment.jpeg_p = 0.0
  d.augment.jpeg_quality = 40  # lowest JPEG quality drawn
  d.masked_share = 0.1         # "labelled" stream: exact share of masked training images
  if variant == "smoke":
    d.image_size = 16
    d.num_workers = 1
    d.synthetic.num_identities = 12
    d.synthetic.images_per_identity = 6
    d.test_fraction = 0.25
  elif variant == "lfw":
    d.source = "folder"
    d.root = "../shared/data/lfw"
    d.mask_source = "render"   # the face fills the centre crop: the template's square
    d.crop_fraction = 0.5      # LFW is unaligned: the face fills the central ~120 px
    d.image_size = 48
    d.test_fraction = 0.1
    d.max_images_per_identity = 20
    d.holdout_percent = 15.0
  elif variant == "paper":
    d.source = "folder"
    d.image_size = 112
    d.channels = 3
    d.num_workers = 16
    d.prefetch = 16            # grain runs at most `prefetch` of the threads at once
    d.cache_mb = 0
    d.test_fraction = 0.1
    d.alignment = "112x112"
  return d


def evaluation(variant: str) -> ml_collections.ConfigDict:
  """Identification of unseen people: gallery/probe split and classifiers."""
  e = ml_collections.ConfigDict()
  e.batch_size = {"smoke": 16, "paper": 512}.get(variant, 128)
  e.gallery_fraction = 0.5
  e.k = 1
  # Classifiers fitted on the gallery embeddings (eval/classifiers.py): "knn" (k-NN with
  # k above), "svm" (linear SVM), "mlp" (one hidden layer); results per classifier.
  e.classifiers = ("knn",)
  # What "best" means for config.eval_every: a scalar the evaluation writes, e.g.
  # "eval/masked_vs_unmasked" (1-NN accuracy) or "verify/test_identities/combined/accuracy".
  e.best_metric = "eval/masked_vs_unmasked"
  e.svm_c = 1.0
  e.mlp_hidden = 256
  # Pair verification (eval/verification.py): seeded pairs among the unseen identities,
  # a masked and a standard track, 10-fold accuracy, ROC, TAR@FAR, roc.png.
  e.verification = ml_collections.ConfigDict()
  e.verification.pairs = {"smoke": 200, "paper": 6000}.get(variant, 2000)  # 0: off
  e.verification.folds = 10
  # Sets users already have, comma-separated: "lfw.bin,pairs.txt@/data/lfw" (a pairs
  # list is followed by its image root); embedded with the training preprocessing.
  e.verification.sets = ""
  return e


def optimizer(**overrides) -> ml_collections.ConfigDict:
  """SGD/LARS/Adam block; every key present, the method sets its own values."""
  o = ml_collections.ConfigDict()
  o.name = "sgd"               # or "lars", "adam"
  o.learning_rate = 0.05
  o.scale_by_batch = False     # peak LR = learning_rate * batch_size / 256 if set
  o.schedule = "step"          # or "warmup_cosine", "cyclic_cosine"
  o.warmup_epochs = 0.0
  o.final_lr_fraction = 0.01   # warmup_cosine: end LR as a fraction of the peak
  o.decay_every_epochs = 2.0   # step: multiply by decay_factor every this many epochs
  o.decay_factor = 0.1
  o.cycle_epochs = 1.0         # cyclic_cosine: length of one cosine cycle
  o.cycle_decay = 1.0          # cyclic_cosine: peak of cycle k = peak * cycle_decay**k
  o.weight_decay = 5e-4
  o.momentum = 0.9             # Adam: its b1
  o.adam_b2 = 0.999
  o.nesterov = False
  o.trust_coefficient = 0.001  # LARS only
  o.update(overrides)
  return o


def masked_faces(variant: str) -> ml_collections.ConfigDict:
  """Data block of mask removal (configs/mask_seg.py, configs/inpaint.py): triples of
  face, masked face and mask map (data/restore_data.py). Both methods read this one
  block, so the segmenter and the inpainter are trained and evaluated on the same people
  and masks."""
  d = data("lfw" if variant == "lfw" else "paper" if variant == "paper" else variant)
  d.max_images_per_identity = 0  # no cap: the triples do not feed identity-balanced batches
  d.template_box = 0.9         # synthetic source: masks placed by the template in 90%
  d.holdout_mask_type = "kn95"  # never trained on; reported on its own ("unseen_type")
  d.eval_max_images = {"smoke": 0}.get(variant, 400)  # per evaluation group (0: all)
  d.augment.flip = True
  if variant == "lfw":
    # Aligned LFW and the masking tool's output with every mask type (README: Mask
    # removal and inpainting has the commands); the held-out share of people (15%) is
    # the evaluation set, as for the recognition runs and the peer benchmark.
    d.root = "/tmp/lfw112"
    d.masked_root = "/tmp/lfw112_masked_4types"
    d.alignment = "112x112"
    d.crop_fraction = 1.0
    d.image_size = 64
  elif variant == "paper":
    d.image_size = 112
    d.alignment = "112x112"
    d.holdout_percent = 15.0
  return d
