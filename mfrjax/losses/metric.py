"""Triplet and quintuplet losses with online mining inside the (global) batch.

Distances are squared Euclidean between embeddings; the models used with these losses
L2-normalise their output (models/heads.py), so d = 2 - 2 cos lies in [0, 4] and a
margin such as 0.2 means the same thing for every batch and every step. Without the
normalisation the network could meet any margin by scaling all embeddings up.

Mining is vectorised: for every (anchor, positive) pair the candidate negatives are
scored at once as an (anchors, positives, negatives) array, and the choice is an
argmin, so the first index wins among equal distances (the rule the NumPy reference
in the tests follows).

  semihard  the closest negative n with 0 < d(a, n) - d(a, p) < margin (FaceNet). A
            pair without one is left out of the loss (its hinge is either zero already
            or would need a hard negative, which semi-hard mining avoids by design);
            the share of pairs kept is reported as `valid`.
  hardest   the closest negative of the anchor, whatever the positive.
  batch_hard (triplet only) the farthest positive and the closest negative per anchor
            (Hermans et al., 2017).

Anchors are the rows of this device; positives and negatives come from the whole global
batch. Under plain `jax.jit` the batch is one global array and that is automatic. Inside
`shard_map` pass `axis_name`: the embeddings are all-gathered, each device scores its own
anchors against the gathered batch, and the sums are reduced with `psum`, so the loss and
its gradient equal the single-device ones (tested on 8 devices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MINING = ("semihard", "hardest")
TRIPLET_MINING = MINING + ("batch_hard",)


def sq_distances(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Squared Euclidean distances (A, B), clipped at 0 against rounding."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  d = (jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :]
       - 2.0 * jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST))
  return jnp.maximum(d, 0.0)


def _gather(x, axis_name):
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _anchor_rows(n_local: int, axis_name) -> jnp.ndarray:
  """Global row index of each local anchor."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * n_local
  return offset + jnp.arange(n_local)


def _masks(labels, all_labels, rows):
  same = labels[:, None] == all_labels[None, :]
  pos = same & (rows[:, None] != jnp.arange(all_labels.shape[0])[None, :])
  return pos, ~same


def mine_negatives(d_pos: jnp.ndarray, d_neg: jnp.ndarray, neg: jnp.ndarray, margin: float,
                   mode: str) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Chooses a negative for every (anchor, positive) pair.

  Args:
    d_pos: (A, N) distance from anchor a to candidate positive p.
    d_neg: (A, N) distance from anchor a to candidate negative n.
    neg: (A, N) bool, n is a negative of a (another identity).
    margin: the loss margin (the semi-hard window).
    mode: 'semihard' or 'hardest'.

  Returns:
    (index (A, N) int32 of the chosen negative for pair (a, p), found (A, N) bool).
  """
  inf = jnp.asarray(jnp.inf, jnp.float32)
  if mode == "hardest":
    scored = jnp.where(neg, d_neg, inf)
    idx = jnp.argmin(scored, axis=1).astype(jnp.int32)
    found = jnp.any(neg, axis=1)
    return (jnp.broadcast_to(idx[:, None], d_pos.shape),
            jnp.broadcast_to(found[:, None], d_pos.shape))
  if mode == "semihard":
    gap = d_neg[:, None, :] - d_pos[:, :, None]                  # (A, P, N)
    ok = neg[:, None, :] & (gap > 0) & (gap < margin)
    scored = jnp.where(ok, jnp.broadcast_to(d_neg[:, None, :], ok.shape), inf)
    return jnp.argmin(scored, axis=2).astype(jnp.int32), jnp.any(ok, axis=2)
  raise ValueError(f"unknown config.loss.mining={mode!r} for this loss; valid: {MINING}")


def _reduce(per_pair, valid, considered, axis_name):
  """Mean of the hinge over valid tuples of the global batch, with diagnostics:
  'valid' = share of the (anchor, positive) pairs for which mining found a negative,
  'active' = share of the kept tuples with a non-zero hinge."""
  total = jnp.sum(jnp.where(valid, per_pair, 0.0))
  count = jnp.sum(valid).astype(jnp.float32)
  active = jnp.sum(valid & (per_pair > 0)).astype(jnp.float32)
  candidates = jnp.sum(considered).astype(jnp.float32)
  if axis_name is not None:
    total, count, active, candidates = jax.lax.psum((total, count, active, candidates),
                                                    axis_name)
  loss = total / jnp.maximum(count, 1.0)
  return loss, {"valid": count / jnp.maximum(candidates, 1.0),
                "active": active / jnp.maximum(count, 1.0)}


def quintuplet_loss(unmasked: jnp.ndarray, masked: jnp.ndarray, labels: jnp.ndarray,
                    margin: float, mining: str, axis_name: str | None = None,
                    return_choices: bool = False):
  """[d(A,P) + d(A,P_m) - d(A,N) - d(A,N_m) + margin]_+, mean over mined quintuplets.

  Row i of `masked` is the masked copy of row i of `unmasked`. Every unmasked image is
  an anchor A; every other unmasked image of the same person is a positive P, and P's
  masked copy is P_m. N is mined among the unmasked images of other people, N_m among
  their masked images, each with its own window for semi-hard mining
  (0 < d(A,N) - d(A,P) < margin and 0 < d(A,N_m) - d(A,P_m) < margin); a quintuplet
  counts when both are found.

  Args:
    unmasked, masked: (B, D) embeddings of this device's rows.
    labels: (B,) identity labels.
    margin: alpha.
    mining: 'semihard' or 'hardest'.
    axis_name: inside shard_map, the mesh axis the batch is split over.
    return_choices: also return the mined indices (for tests).

  Returns:
    (loss, {'valid', 'active', 'd_ap', 'd_an'}) [, choices dict].
  """
  all_u, all_m = _gather(unmasked, axis_name), _gather(masked, axis_name)
  all_labels = _gather(labels, axis_name)
  rows = _anchor_rows(unmasked.shape[0], axis_name)
  pos, neg = _masks(labels, all_labels, rows)
  d_uu, d_um = sq_distances(unmasked, all_u), sq_distances(unmasked, all_m)
  n_idx, n_ok = mine_negatives(d_uu, d_uu, neg, margin, mining)
  nm_idx, nm_ok = mine_negatives(d_um, d_um, neg, margin, mining)
  d_an = jnp.take_along_axis(d_uu, n_idx, axis=1)
  d_anm = jnp.take_along_axis(d_um, nm_idx, axis=1)
  valid = pos & n_ok & nm_ok
  per_pair = jax.nn.relu(d_uu + d_um - d_an - d_anm + margin)
  loss, parts = _reduce(per_pair, valid, pos, axis_name)
  parts.update(_mean_distances(d_uu, d_an, valid, axis_name))
  if return_choices:
    return loss, parts, {"negative": n_idx, "masked_negative": nm_idx, "valid": valid}
  return loss, parts


def triplet_loss(embeddings: jnp.ndarray, labels: jnp.ndarray, margin: float, mining: str,
                 axis_name: str | None = None, return_choices: bool = False):
  """[d(A,P) - d(A,N) + margin]_+, mean over mined triplets.

  'semihard' and 'hardest' use every (anchor, positive) pair; 'batch_hard' one triplet
  per anchor (its farthest positive, its closest negative).

  Returns:
    (loss, {'valid', 'active', 'd_ap', 'd_an'}) [, choices dict].
  """
  all_e, all_labels = _gather(embeddings, axis_name), _gather(labels, axis_name)
  rows = _anchor_rows(embeddings.shape[0], axis_name)
  pos, neg = _masks(labels, all_labels, rows)
  d = sq_distances(embeddings, all_e)
  if mining == "batch_hard":
    p_idx = jnp.argmax(jnp.where(pos, d, -jnp.inf), axis=1).astype(jnp.int32)
    n_idx = jnp.argmin(jnp.where(neg, d, jnp.inf), axis=1).astype(jnp.int32)
    d_ap = jnp.take_along_axis(d, p_idx[:, None], axis=1)
    d_an = jnp.take_along_axis(d, n_idx[:, None], axis=1)
    valid = (jnp.any(pos, axis=1) & jnp.any(neg, axis=1))[:, None]
    considered = jnp.any(pos, axis=1)[:, None]
    choices = {"positive": p_idx, "negative": n_idx, "valid": valid[:, 0]}
  elif mining in MINING:
    n_idx, n_ok = mine_negatives(d, d, neg, margin, mining)
    d_ap, d_an = d, jnp.take_along_axis(d, n_idx, axis=1)
    valid, considered = pos & n_ok, pos
    choices = {"negative": n_idx, "valid": valid}
  else:
    raise ValueError(f"unknown config.loss.mining={mining!r}; valid: {TRIPLET_MINING}")
  per = jax.nn.relu(d_ap - d_an + margin)
  loss, parts = _reduce(per, valid, considered, axis_name)
  parts.update(_mean_distances(d_ap, d_an, valid, axis_name))
  return (loss, parts, choices) if return_choices else (loss, parts)


def _mean_distances(d_ap, d_an, valid, axis_name):
  """Mean d(A,P) and d(A,N) over the kept tuples: the margin being learned, for logs."""
  s = jnp.stack([jnp.sum(jnp.where(valid, d_ap, 0.0)), jnp.sum(jnp.where(valid, d_an, 0.0)),
                 jnp.sum(valid).astype(jnp.float32)])
  if axis_name is not None:
    s = jax.lax.psum(s, axis_name)
  n = jnp.maximum(s[2], 1.0)
  return {"d_ap": jax.lax.stop_gradient(s[0] / n), "d_an": jax.lax.stop_gradient(s[1] / n)}
