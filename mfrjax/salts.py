"""The named salts of every seeded random stream, in one place.

Each stream is `np.random.default_rng([seed, SALT, ...])` (or a JAX key folded with a
salt), so two streams of one run never share draws and each is a pure function of the
run's seed and its own position (epoch, row, image): a resumed or re-sharded run draws
the same numbers. The values are those the measured runs used; changing one changes
every result that depends on it. Equal numbers below belong to streams with different
further keys (or different modules' data) and never draw the same sequence.
"""

# Identity split and per-identity caps (data/sources.py, data/pipeline.py).
SPLIT_IDENTITIES = 7
SELECT_IMAGES = 19
# The training streams (data/pipeline.py).
EPOCH_PAIRS = 11          # pair list of an epoch (Barlow Twins)
RENDER_MASK = 13          # masks rendered at load time (config.data.mask_source='render')
IDENTITY_AUGMENT = 23     # augmentation of an identity-batch row
IDENTITY_ROWS = 29        # identity batches of an epoch
MASKED_SHARE = 37         # which rows of an epoch are masked (margin heads)
LABELLED_ORDER = 41       # image order of an epoch (margin heads)
LABELLED_AUGMENT = 43     # augmentation of a labelled row
# The mask-removal input (data/restore_data.py).
RESTORE_DRAW = 41         # masks drawn on synthetic faces at load time
RESTORE_FLIP = 43         # the joint flip of face, masked face and map
RESTORE_ORDER = 47        # epoch order, and the evaluation sample
# Evaluation (eval/).
GALLERY_PROBE = 17        # gallery / probe split of the held-out people
VERIFY_PAIRS = 47         # verification pairs among the held-out people
PEER_GALLERY = 19         # peer benchmark: the gallery image of each person
PEER_SAMPLE = 23          # peer benchmark: the probe sample
# Data preparation and its previews (prep/mask_dataset.py, tools/unmask.py).
PREVIEW_SAMPLE = 53
# JAX keys folded from the run's key (state.py, parallel/grad_reduce.py).
REDUCTION_STATE = 1       # PowerSGD's initial Q matrices
POWERSGD_STEP = 7         # PowerSGD's random warm start inside a step
