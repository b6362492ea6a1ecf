"""Losses of mask segmentation and inpainting (README: Mask removal and inpainting).

Images are float in [-1, 1], (N, H, W, C); masks are float in {0, 1}, (N, H, W, 1),
1 on the mask (the hole). Every loss is a mean over the global batch, so under jit with
the batch sharded XLA adds the cross-device reductions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mfrjax.models.layers import l2_normalize


def segmentation_loss(logits: jax.Array, target: jax.Array, dice_weight: float = 1.0
                      ) -> tuple[jax.Array, dict]:
  """Binary cross-entropy per pixel + soft Dice over each image.

  BCE alone under-weights the mask when it covers a third of the face; Dice measures the
  overlap the metric (IoU) measures, per image, whatever the mask's size.
  """
  bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))
  p = jax.nn.sigmoid(logits)
  inter = jnp.sum(p * target, axis=(1, 2, 3))
  total = jnp.sum(p, axis=(1, 2, 3)) + jnp.sum(target, axis=(1, 2, 3))
  dice = 1.0 - jnp.mean((2.0 * inter + 1.0) / (total + 1.0))
  return bce + dice_weight * dice, {"bce": bce, "dice_loss": dice}


def iou(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Intersection over union per image of two binary maps (N, H, W, 1); 1 when both are
  empty (nothing to find, nothing found)."""
  inter = jnp.sum(pred * target, axis=(1, 2, 3))
  union = jnp.sum(jnp.maximum(pred, target), axis=(1, 2, 3))
  return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)


def masked_l1(pred: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean |pred - target| over the pixels where `weight` is 1 (the hole, or the valid
  region with 1 - mask): normalised by that region's size, so the hole's loss does not
  shrink with small masks as a mean over the whole image would."""
  err = jnp.abs(pred - target) * weight
  count = jnp.sum(weight) * pred.shape[-1]
  return jnp.sum(err) / jnp.maximum(count, 1.0)


def hinge_discriminator(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Hinge loss of the discriminator (Lim & Ye 2017; SAGAN, BigGAN)."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_generator(fake_logits: jax.Array) -> jax.Array:
  return -jnp.mean(fake_logits)


def identity_loss(restored_emb: jax.Array, true_emb: jax.Array) -> jax.Array:
  """1 - cosine between the recogniser's embeddings of the restored and the true face:
  what recognition needs of a restored face, which no pixel loss asks for."""
  return 1.0 - jnp.mean(jnp.sum(l2_normalize(restored_emb) * l2_normalize(true_emb), axis=-1))
