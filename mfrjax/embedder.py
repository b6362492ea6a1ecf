"""Embeds faces with a trained run, from its workdir alone.

    from mfrjax.embedder import Embedder
    emb = Embedder.from_workdir("/tmp/arc")            # latest step, EMA weights if trained
    x = emb.embed(["a.jpg", "b.jpg"])                 # (2, D) float32, unit length
    score = float(x[0] @ x[1])                        # cosine similarity

Everything needed comes from the run itself (run_info: `run.json` beside the
checkpoints): the config, the class count, and the input contract (size, channels,
centre crop, alignment, upper-face cut). Only the weights are read from the checkpoint,
as NumPy (orbax partial restore), so no optimizer state, dataset or mesh is needed and
a run trained on 8 devices embeds on one. Images are the training images' kind: aligned
crops for an aligned run, photos to be centre-cropped otherwise; `align` turns a photo
plus five landmarks into the former.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mfrjax import methods, run_info
from mfrjax.data import sources, transforms
from mfrjax.eval import embed as embed_lib
from mfrjax.eval import identification
from mfrjax.models.layers import l2_normalize
from mfrjax.prep import align as align_lib


def checkpoint_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps of a run, ascending."""
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d)
                if n.isdigit() and os.path.isdir(os.path.join(d, n, "state")))


def _restore_numpy(ckpt, path, wanted: dict) -> dict:
  return ckpt.restore(path, args=ocp.args.PyTreeRestore(
      item=jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), wanted),
      restore_args=jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), wanted),
      partial_restore=True))


def read_best_weights(workdir: str) -> tuple[dict, int]:
  """The weights of the best evaluation (config.eval_every; recognition.BestWeights), and
  its step."""
  best = os.path.join(workdir, "best")
  steps = sorted(int(n) for n in os.listdir(best) if n.isdigit()) if os.path.isdir(best) else []
  if not steps:
    raise FileNotFoundError(f"{best} holds no weights: the run did not evaluate during "
                            "training (config.eval_every=0)")
  path = epath.Path(best).absolute() / str(steps[-1]) / "weights"
  ckpt = ocp.PyTreeCheckpointer()
  tree = ckpt.metadata(path).item_metadata.tree
  return _restore_numpy(ckpt, path, {k: v for k, v in tree.items() if v}), steps[-1]


def read_weights(workdir: str, step: int | None, use_ema: bool) -> tuple[dict, int]:
  """{'params', 'batch_stats'} of a checkpoint as NumPy arrays, and its step."""
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ValueError(f"step {step} is not among the checkpoints of {workdir}: {steps}")
  path = epath.Path(workdir).absolute() / "checkpoints" / str(step) / "state"
  ckpt = ocp.PyTreeCheckpointer()
  tree = ckpt.metadata(path).item_metadata.tree
  if use_ema and not tree.get("ema"):
    raise ValueError(f"{path} has no moving average of the weights (the run had "
                     "config.ema.enabled=False); use use_ema=False")
  # The partial tree is matched from the checkpoint's root: {'ema': {...}} or the top
  # level's 'params' and 'batch_stats' (a model without BatchNorm has {} there).
  source = tree["ema"] if use_ema else tree
  weights = {k: source[k] for k in ("params", "batch_stats") if source.get(k)}
  wanted = {"ema": weights} if use_ema else weights
  restored = _restore_numpy(ckpt, path, wanted)
  return (restored["ema"] if use_ema else restored), step


def forward(variables, x, *, model, flip: bool, normalize: bool = False):
  """Embeddings of float images `x` (N, H, W, C) already scaled to [-1, 1]; with `flip`
  the mirror image's embedding is added (insightface's test-time augmentation). The one
  graph the Embedder runs and the exporters (exported.py) trace."""
  out = model.apply(variables, x, method=model.embed).astype(jnp.float32)
  if flip:
    out = out + model.apply(variables, x[:, :, ::-1], method=model.embed).astype(jnp.float32)
  if normalize:
    out = l2_normalize(out)
  return out


def _forward(variables, images, *, model, flip: bool):
  return forward(variables, embed_lib.to_float(images), model=model, flip=flip)


class Embedder:
  """A trained network with its input contract; `embed` maps faces to unit vectors.

  Args:
    model: the run's flax module (anything with an `embed` method).
    variables: {'params', 'batch_stats'}.
    preprocessing: run_info.preprocessing of the training data.
    batch_size: images per compiled call; every call pads to it, so one compilation
      serves every input size.
  """

  def __init__(self, model, variables, preprocessing: dict, batch_size: int = 64,
               step: int | None = None):
    self.model, self.preprocessing, self.batch_size, self.step = (
        model, dict(preprocessing), int(batch_size), step)
    self.variables = jax.device_put(variables)
    self._fns = {flip: jax.jit(functools.partial(_forward, model=model, flip=flip))
                 for flip in (False, True)}

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, use_ema: bool | None = None,
                   batch_size: int = 64, best: bool = False) -> Embedder:
    """Loads a run (finished or still training) from its workdir.

    Args:
      step: a checkpoint step; None = the latest.
      use_ema: the moving average of the weights; None = if the run kept one.
      best: the weights of the best evaluation during training (config.eval_every), as
        the evaluator used them (step and use_ema do not apply).
    """
    info = run_info.read(workdir)
    config = info["config"]
    method = methods.get(config.method)
    if not isinstance(method, methods.EmbeddingMethod):
      raise ValueError(f"{workdir} is a config.method={config.method!r} run (mask removal), "
                       "not a recogniser: load it with mfrjax.restoration.Restorer or "
                       "mfrjax-unmask")
    if use_ema is None:
      use_ema = bool(config.ema.enabled)
    if best:
      variables, step = read_best_weights(workdir)
    else:
      variables, step = read_weights(workdir, step, use_ema)
    model = method.build_model(config.model, num_classes=info["num_classes"])
    return cls(model, variables, info["preprocessing"], batch_size, step)

  @property
  def input_shape(self) -> tuple[int, int, int]:
    """(H, W, C) the network takes (pipeline.input_shape at train time)."""
    return tuple(self.preprocessing["input_shape"])

  def align(self, photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A photo as the training images were: aligned to the template if the run's data
    was aligned (landmarks: five (x, y) points, prep/landmarks.py), else unchanged."""
    kind = self.preprocessing["alignment"]
    if kind == "none":
      return photo
    crop, _ = align_lib.align(photo, np.asarray(landmarks, np.float32), kind)
    return crop

  def preprocess(self, img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) as the training images were -> the network's uint8 input."""
    p = self.preprocessing
    out = transforms.preprocess(img, p["image_size"], p["channels"], p["crop_fraction"])
    if p["upper_face"]["enabled"]:
      out = transforms.keep_top_blocks(out, p["upper_face"]["grid"],
                                       p["upper_face"]["keep_blocks"])
    return out

  def embed(self, images, flip: bool = False) -> np.ndarray:
    """Images (uint8 (N, H, W, C) array, a list of arrays, or paths) -> (N, D) float32,
    L2-normalised. `flip`: sum with the mirrored image's embedding before normalising."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
      images = images[None]
    batch = np.stack([self.preprocess(sources.read_image(x) if isinstance(x, (str, os.PathLike))
                                      else np.asarray(x, np.uint8)) for x in images]) \
        if len(images) else np.zeros((0, *self.input_shape), np.uint8)
    if not len(batch):
      return np.zeros((0, 0), np.float32)
    (out,) = embed_lib.in_batches(lambda x: self._fns[flip](self.variables, x), [batch],
                                  self.batch_size)  # one compiled shape for every call
    return identification.l2_normalize(out).astype(np.float32)

