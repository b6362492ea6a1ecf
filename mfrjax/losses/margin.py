"""ArcFace and CosFace softmax losses, with the class weights optionally sharded.

Both act on cosines between the L2-normalised embedding x and class centres W_c:

  ArcFace  logit_y = s * cos(theta_y + m)   (additive angular margin; s = 64, m = 0.5)
  CosFace  logit_y = s * (cos theta_y - m)  (additive cosine margin;  s = 64, m = 0.35)

and s * cos(theta_c) for every other class. ArcFace's cos(theta + m) stops decreasing
once theta + m > pi, which would reward pushing a sample *away* from its class; the
standard fix (insightface) is used: past the threshold theta > pi - m the target logit
becomes cos(theta) - m * sin(m), a CosFace-like penalty that keeps decreasing. With
`easy_margin` the margin is applied only where cos(theta) > 0 instead.

Model-parallel FC: with hundreds of thousands of identities the (D, C) weight matrix
does not fit on every device. Called with `axis_name`, `margin_loss` expects this
device's *slice of classes* W[:, shard] and its slice of the batch; it all-gathers the
embeddings (B x D, small) rather than the weights (D x C, large), computes its block of
logits, and forms the softmax over all classes with two scalar-per-row collectives
(pmax of the row maxima, psum of the row sums of exponentials). Nothing of size C
crosses devices. Columns past `num_classes` (padding, so that C divides by the device
count) are masked out.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mfrjax.models.layers import l2_normalize

HEADS = ("arcface", "cosface")


def target_logit(cos: jax.Array, head: str, margin: float, easy_margin: bool) -> jax.Array:
  """The margin-penalised cosine of the true class (before the scale s)."""
  if head == "cosface":
    return cos - margin
  if head != "arcface":
    raise ValueError(f"unknown config.loss.head={head!r}; valid: {HEADS}")
  sin = jnp.sqrt(jnp.clip(1.0 - cos * cos, 0.0, 1.0))
  phi = cos * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
  if easy_margin:
    return jnp.where(cos > 0, phi, cos)
  threshold = math.cos(math.pi - margin)
  return jnp.where(cos > threshold, phi, cos - math.sin(math.pi - margin) * margin)


def margin_loss(emb: jax.Array, labels: jax.Array, weight: jax.Array, *, head: str,
                scale: float, margin: float, easy_margin: bool, num_classes: int,
                axis_name: str | None = None):
  """Mean margin-softmax cross-entropy over the (global) batch.

  Args:
    emb: (B, D) embeddings (this device's rows when `axis_name` is set).
    labels: (B,) int class indices in [0, num_classes).
    weight: (D, C) class centres, or this device's (D, C / n) slice of them.
    head, scale, margin, easy_margin: see module docstring.
    num_classes: real classes; columns at or past it are padding.
    axis_name: mesh axis over which batch and classes are split (inside shard_map).

  Returns:
    (loss, metrics) - loss is the same on every device; metrics: `accuracy` (the
    un-margined arg-max is the label) and `cos_target` (mean cosine to the true class).
  """
  if axis_name is not None:
    emb = jax.lax.all_gather(emb, axis_name, tiled=True)
    labels = jax.lax.all_gather(labels, axis_name, tiled=True)
    offset = jax.lax.axis_index(axis_name) * weight.shape[1]
  else:
    offset = 0
  x = l2_normalize(emb.astype(jnp.float32), 1)
  w = l2_normalize(weight.astype(jnp.float32), 0)
  cos = jnp.clip(x @ w, -1.0, 1.0)                                   # (B, C_local)
  cols = offset + jnp.arange(w.shape[1])
  valid = cols[None, :] < num_classes
  is_target = cols[None, :] == labels[:, None]
  logits = scale * jnp.where(is_target, target_logit(cos, head, margin, easy_margin), cos)

  def reduce(x, op):
    return x if axis_name is None else op(x, axis_name)

  # Row maxima for a stable log-sum-exp; a constant, so no gradient flows through it.
  # (stop_gradient before pmax, which has no derivative rule.)
  row_max = reduce(jax.lax.stop_gradient(jnp.max(jnp.where(valid, logits, -jnp.inf), axis=1)),
                   jax.lax.pmax)
  sum_exp = reduce(jnp.sum(jnp.where(valid, jnp.exp(logits - row_max[:, None]), 0.0), axis=1),
                   jax.lax.psum)
  true_logit = reduce(jnp.sum(jnp.where(is_target, logits, 0.0), axis=1), jax.lax.psum)
  loss = jnp.mean(jnp.log(sum_exp) + row_max - true_logit)

  # Metrics without the margin: is the true class the most similar centre?
  cos = jax.lax.stop_gradient(cos)
  best = reduce(jnp.max(jnp.where(valid, cos, -2.0), axis=1), jax.lax.pmax)
  cos_true = reduce(jnp.sum(jnp.where(is_target, cos, 0.0), axis=1), jax.lax.psum)
  metrics = {"accuracy": jnp.mean((cos_true >= best).astype(jnp.float32)),
             "cos_target": jnp.mean(cos_true)}
  return loss, metrics


def padded_classes(num_classes: int, multiple: int) -> int:
  """Columns of the weight matrix: `num_classes` rounded up to a multiple of `multiple`."""
  return -(-num_classes // multiple) * multiple
