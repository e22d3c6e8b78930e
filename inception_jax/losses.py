"""Classification losses and accuracy counts (in float32 at least, whatever the compute dtype)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy against one-hot labels smoothed as TF's
  ``softmax_cross_entropy(label_smoothing=s)``: ``(1 - s) * onehot + s / num_classes``
  (Inception v3 Section 7). ``label_smoothing`` may be traced (a sweep's data)."""
  num_classes = logits.shape[-1]
  dtype = jnp.promote_types(logits.dtype, jnp.float32)  # float64 stays: float64 parity checks
  targets = jax.nn.one_hot(labels, num_classes, dtype=dtype)
  if isinstance(label_smoothing, jax.Array) or label_smoothing:
    s = jnp.asarray(label_smoothing, dtype)
    targets = targets * (1.0 - s) + s / num_classes
  return optax.softmax_cross_entropy(logits.astype(dtype), targets)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def classification_loss(logits: jax.Array, aux: Sequence[jax.Array], labels: jax.Array,
                        mask: jax.Array, *, label_smoothing: float, aux_weight: float):
  """Main cross-entropy plus ``aux_weight`` times each auxiliary head's cross-entropy.

  Returns ``(total, {'loss_main': ..., 'loss_aux': ...})``; ``loss_aux`` is the unweighted mean
  of the auxiliary losses (0 without aux heads).
  """
  main = masked_mean(cross_entropy(logits, labels, label_smoothing), mask)
  aux_losses = [masked_mean(cross_entropy(a, labels, label_smoothing), mask) for a in aux]
  total = main + aux_weight * sum(aux_losses) if aux_losses else main
  aux_mean = sum(aux_losses) / len(aux_losses) if aux_losses else jnp.zeros((), jnp.float32)
  return total, {'loss_main': main, 'loss_aux': aux_mean}


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where ``labels`` is among the ``k`` largest logits (a tie does not push it out)."""
  logits = logits.astype(jnp.float32)
  true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  # The rank of the true class: how many classes score strictly higher.
  rank = jnp.sum(logits > true, axis=-1)
  return (rank < k).astype(jnp.float32)
