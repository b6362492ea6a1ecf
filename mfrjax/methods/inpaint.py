"""Inpainting GAN: a gated-convolution U-Net generator and a spectrally normalised
PatchGAN discriminator (models/unet.py); L1 on the hole and on the valid region, hinge
adversarial loss and an identity loss (1 - cosine of a trained recogniser's embeddings
of the restored and the true face); PSNR, SSIM and L1 on the hole of the evaluation
people. The second half of mask removal (restoration.py).

Two optimisers in one pure step: the generator and the discriminator are one parameter
tree {'gen', 'disc'} under `optax.multi_transform` (each its own optimiser and learning
rate; config.optimizer and config.disc_optimizer), checkpointed together. Both gradients
come from one scalar,

    L = L_G(gen, stop_gradient(disc)) + L_D(stop_gradient(gen), disc),

whose gradient with respect to the generator is exactly L_G's and with respect to the
discriminator exactly L_D's (simultaneous updates), so `train.train_step` runs it as is.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mfrjax import embedder as embedder_lib
from mfrjax import optim
from mfrjax.eval import image_quality
from mfrjax.eval.embed import in_batches, to_float
from mfrjax.losses import restore as losses
from mfrjax.methods import base
from mfrjax.models import unet


class InpaintGAN(nn.Module):
  """Generator and discriminator as one module, so their parameters are one tree
  {'gen', 'disc'}; `__call__` (used at init) runs both on (image ++ mask) channels."""
  gen_widths: tuple = (32, 64, 128)
  dilations: tuple = (2, 4)
  disc_widths: tuple = (32, 64, 128)
  channels: int = 1

  def setup(self):
    self.gen = unet.InpaintGenerator(self.gen_widths, self.dilations, self.channels)
    self.disc = unet.PatchDiscriminator(self.disc_widths)

  def __call__(self, x, train: bool = False):
    image, mask = x[..., :-1], x[..., -1:]
    out = self.gen(image, mask)
    return self.disc(out, mask, train=train)

  def generate(self, image, mask):
    return self.gen(image, mask)

  def discriminate(self, image, mask, train: bool = False):
    return self.disc(image, mask, train=train)


@functools.partial(jax.jit, static_argnames=("model", "dilate"))
def restore(model, variables, images, seg, dilate):
  """(uint8 faces, {0, 1} maps) -> (restored uint8 at the model size, the hole). Jitted
  once per (model, dilate): the weights are arguments, not constants of the program."""
  m = unet.hole(seg, dilate)
  x = to_float(images)
  out = unet.composite(model.apply(variables, x, m, method=model.generate), x, m)
  return jnp.clip(jnp.round((out + 1.0) * 127.5), 0, 255).astype(jnp.uint8), m


def recogniser_fn(workdir: str):
  """(image in [-1, 1] at any size) -> embedding, of a trained recognition run, frozen."""
  emb = embedder_lib.Embedder.from_workdir(workdir)
  h, w, c = emb.input_shape
  variables = jax.tree.map(jnp.asarray, emb.variables)

  def f(x):
    x = jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "linear")
    if x.shape[-1] != c:
      x = jnp.repeat(x, c, axis=-1) if x.shape[-1] == 1 else jnp.mean(x, -1, keepdims=True)
    return embedder_lib.forward(jax.lax.stop_gradient(variables), x, model=emb.model,
                                flip=False)
  return f


def inpaint_loss(params, batch_stats, batch, rng, step, *, model, config, recognise=None):
  """L_G(gen, sg(disc)) + L_D(sg(gen), disc) (module docstring); BN-free, so the only
  mutable state is the discriminator's spectral-norm estimate."""
  del rng, step
  lc = config.loss
  truth = to_float(batch["image"])
  masked = to_float(batch["masked"])
  m = unet.hole(batch["seg"], config.model.dilate)
  apply = functools.partial(model.apply, {"params": params, "batch_stats": batch_stats})
  out = apply(masked, m, method=model.generate)
  comp = unet.composite(out, masked, m)

  # Discriminator: real faces vs composites of a generator it cannot move.
  real_and_fake = jnp.concatenate([truth, jax.lax.stop_gradient(comp)])
  logits, upd = model.apply({"params": params, "batch_stats": batch_stats}, real_and_fake,
                            jnp.concatenate([m, m]), train=True, method=model.discriminate,
                            mutable=["batch_stats"])
  d_real, d_fake = jnp.split(logits, 2)
  loss_d = losses.hinge_discriminator(d_real, d_fake)

  # Generator: against a discriminator it cannot move.
  frozen = {"gen": params["gen"], "disc": jax.lax.stop_gradient(params["disc"])}
  g_fake = model.apply({"params": frozen, "batch_stats": upd["batch_stats"]}, comp, m,
                       method=model.discriminate)
  parts = {"l1_hole": losses.masked_l1(out, truth, m),
           "l1_valid": losses.masked_l1(out, truth, 1.0 - m),
           "adversarial": losses.hinge_generator(g_fake), "loss_d": loss_d,
           "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
  loss_g = (lc.hole * parts["l1_hole"] + lc.valid * parts["l1_valid"]
            + lc.adversarial * parts["adversarial"])
  if recognise is not None:
    parts["identity"] = losses.identity_loss(recognise(comp),
                                             jax.lax.stop_gradient(recognise(truth)))
    loss_g = loss_g + lc.identity * parts["identity"]
  parts["loss_g"] = loss_g
  return loss_g + loss_d, (upd["batch_stats"], parts)


class Inpaint(base.ImageMethod):
  name = "inpaint"
  sheet_columns = ("original", "masked", "mask", "restored")
  result_keys = ("psnr_restored", "ssim_restored", "l1_restored", "psnr_masked_input",
                 "ssim_masked_input")

  def build_model(self, config) -> InpaintGAN:
    m = config.model
    return InpaintGAN(tuple(m.widths), tuple(m.dilations), tuple(m.disc_widths),
                      config.data.channels)

  def input_shape(self, config) -> tuple[int, ...]:
    s, c = config.data.image_size, config.data.channels
    return (1, s, s, c + 1)  # the image and the mask map, as channels

  def optimizers(self, config) -> dict:
    del config
    return {"gen": "optimizer", "disc": "disc_optimizer"}

  def make_optimizer(self, config, schedules):
    return optax.multi_transform(
        {k: optim.make_optimizer(config[key], schedules[k])
         for k, key in self.optimizers(config).items()},
        lambda params: {k: k for k in params})

  def loss_fn(self, config, model):
    recognise = recogniser_fn(config.loss.recogniser) if config.loss.recogniser else None
    return functools.partial(inpaint_loss, model=model, config=config, recognise=recognise)

  def evaluate(self, model, variables, examples, config) -> tuple[dict, list]:
    restored, region = in_batches(
        lambda x, s: restore(model, variables, x, s, dilate=config.model.dilate),
        [examples["masked"], examples["seg"]], config.eval.batch_size)
    scores = {"restored": [], "masked_input": []}
    for i in range(len(restored)):
      r = region[i, ..., 0] > 0
      truth = examples["image"][i]
      scores["restored"].append(image_quality.region_scores(restored[i], truth, r))
      scores["masked_input"].append(image_quality.region_scores(examples["masked"][i],
                                                                truth, r))
    out = {f"{k}_{name}": float(np.nanmean([s[k] for s in v]))
           for name, v in scores.items() for k in ("psnr", "ssim", "l1")}
    n = self.sheet_rows
    sheet = [(a, b, s * 255, o) for a, b, s, o in
             zip(examples["image"][:n], examples["masked"][:n], examples["seg"][:n],
                 restored[:n])]
    return out, sheet


METHOD = Inpaint()
