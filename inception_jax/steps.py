"""The pure train and eval steps. They know the model only as its ``apply`` function.

``apply_fn(variables, images, train=..., mutable=..., rngs=...)`` follows the models' contract
(:mod:`inception_jax.models`): it returns the logits, and auxiliary heads' logits are read from
``intermediates/aux_logits`` (absent for models without them). The steps are meant for
``jax.jit`` over a mesh with the batch sharded along ``'data'``: every reduction below (the loss,
BatchNorm's moments inside the model, the metrics) is over the global batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from inception_jax import losses, optim
from inception_jax.train_state import TrainState, variables

Batch = dict[str, jax.Array]


def train_step(state: TrainState, batch: Batch, *, apply_fn: Callable[..., Any],
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               label_smoothing: float = 0.0, aux_weight: float = 0.0,
               ema_decay: float = 0.0, ema_floor: jax.Array | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``batch``; returns the new state and scalar metrics (on device).
  The EMA's decay per step is ``ema_decay``, or given as ``ema_floor``, ``1 - decay`` rounded
  once (:func:`optim.ema_weight_of`; data, when the caller traces it)."""
  dropout_rng = jax.random.fold_in(state.rng, state.step)
  labels, mask = batch['label'], batch['mask']

  def loss_fn(params):
    logits, updates = apply_fn(variables(params, state.batch_stats), batch['image'], train=True,
                               mutable=['batch_stats', 'intermediates'],
                               rngs={'dropout': dropout_rng})
    aux = updates.get('intermediates', {}).get('aux_logits', ())
    loss, parts = losses.classification_loss(logits, aux, labels, mask,
                                             label_smoothing=label_smoothing,
                                             aux_weight=aux_weight)
    return loss, (logits, updates.get('batch_stats', {}), parts)

  (loss, (logits, batch_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # ema_decay is per step (optim.ema_step_decay); weights and BatchNorm statistics alike, as TF's
  # ExponentialMovingAverage updates them: ema += w * (new - ema), w = 1 - d from
  # optim.ema_weight. Not d * ema + (1 - d) * new: there the two weights, each rounded, need not
  # sum to 1, so even the average of a constant drifts, and 1 - d inherits d's rounding (in
  # float32, 1e-5 of w at batch 1024); here they sum to 1 by construction, w is rounded once
  # from its exact value, and as the average tracks its weights new - ema is small (exact
  # within a factor 2, Sterbenz), so the only rounding of ema's size is the final sum's.
  if ema_floor is None and isinstance(ema_decay, (int, float)) and not ema_decay:
    ema, ema_stats = params, batch_stats  # no average: exactly the weights
  else:
    w = (optim.ema_weight(state.step, ema_decay) if ema_floor is None else
         optim.ema_weight_of(state.step, ema_floor))
    average = lambda e, p: e + w.astype(e.dtype) * (p - e)  # noqa: E731
    ema = jax.tree.map(average, state.ema_params, params)
    ema_stats = jax.tree.map(average, state.ema_batch_stats, batch_stats)
  metrics = {
      'loss': loss, **parts,
      'top1': losses.masked_mean(losses.topk_correct(logits, labels, 1), mask),
      'top5': losses.masked_mean(losses.topk_correct(logits, labels, 5), mask),
      'grad_norm': optax.global_norm(grads),
      'lr': jnp.asarray(schedule(state.step), jnp.float32),
  }
  # A non-finite loss or gradient leaves the state as it was (the step still counts, so that the
  # data and the schedule move on); the loop stops on it or, by config, counts it and goes on.
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  metrics['nonfinite'] = 1.0 - finite.astype(jnp.float32)
  updated = dict(params=params, batch_stats=batch_stats, opt_state=opt_state, ema_params=ema,
                 ema_batch_stats=ema_stats)
  kept = dict(params=state.params, batch_stats=state.batch_stats,
              opt_state=_with_counts(state.opt_state, opt_state), ema_params=state.ema_params,
              ema_batch_stats=state.ema_batch_stats)
  chosen = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
  new_state = state.replace(step=state.step + 1,
                            skipped_updates=state.skipped_updates + (~finite).astype(jnp.int32),
                            **chosen)
  return new_state, metrics


def _with_counts(old, new):
  """``old`` optimizer state with the step counters of ``new``: a skipped update keeps the
  optimizer's slots but not its clock, so that its schedule stays at ``state.step``, the step
  whose rate is logged."""
  return jax.tree_util.tree_map_with_path(
      lambda path, o, n: n if getattr(path[-1], 'name', None) == 'count' else o, old, new)


def eval_step(params, batch_stats, batch: Batch, *,
              apply_fn: Callable[..., Any]) -> dict[str, jax.Array]:
  """Sums over the real (``mask == 1``) examples of ``batch``: ``count``, ``loss`` (unsmoothed
  cross-entropy of the main head), ``top1``, ``top5``."""
  labels, mask = batch['label'], batch['mask']
  logits = apply_fn(variables(params, batch_stats), batch['image'], train=False)
  return {
      'count': jnp.sum(mask),
      'loss': jnp.sum(losses.cross_entropy(logits, labels) * mask),
      'top1': jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
      'top5': jnp.sum(losses.topk_correct(logits, labels, 5) * mask),
  }
