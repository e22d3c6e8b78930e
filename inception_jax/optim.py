"""Optimizers, learning-rate schedules and durations of the papers' recipes.

Every recipe of the family is one of two optimizers behind a staircase exponential decay:

* ``'rmsprop'``, TensorFlow's RMSProp (Inception v3 Section 8, Inception-v4 Section 5, TF-slim's
  ``train_image_classifier.py``): ``ms = decay * ms + (1 - decay) * g**2``,
  ``mom = momentum * mom + lr * g / sqrt(ms + epsilon)``, ``w -= mom``. TF1's
  ``RMSPropOptimizer`` initialises ``ms`` to ones (``tensorflow/python/training/rmsprop.py``,
  ``_create_slots``: ``init_ops.ones_initializer``), hence ``initial_scale=1.0``; epsilon is
  inside the square root, and the learning rate is applied before the momentum, as in optax.
* ``'momentum'``, SGD with momentum (GoogLeNet Section 6, BN-Inception, Xception Section 4.2):
  ``acc = momentum * acc + g``, ``w -= lr * acc``, as TF's ``MomentumOptimizer``.

In front of either: L2 weight decay on kernels only (TF-slim's ``l2_regularizer`` on conv and
fully-connected weights, ``wd * sum(w**2) / 2`` added to the loss, i.e. ``wd * w`` added to the
gradient) and then gradient clipping by global norm (Inception v3 Section 8, threshold 2.0,
citing Pascanu et al., who clip the norm of the whole gradient).

Learning rate and global batch: ``lr = optimizer.lr * batch_size / optimizer.lr_batch``, linear
scaling (Goyal et al. 2017, Section 2.1) from the batch of the published reproduction the rate
comes from (each config cites it). The EMA's decay follows the batch the same way
(:func:`ema_step_decay`). This is the one place the rules live.
"""

from __future__ import annotations

import numbers
from fractions import Fraction

import jax
import jax.numpy as jnp
import optax

from inception_jax import errors

OPTIMIZERS = ('rmsprop', 'momentum')


def steps_per_epoch(num_examples: int, batch_size: int) -> Fraction:
  """Steps per epoch as the exact ratio ``num_examples / batch_size`` (ImageNet's 1,281,167 at
  batch 32 is 1281167/32): every duration in steps is rounded from it once, never from a float
  quotient."""
  if num_examples <= 0 or batch_size <= 0:
    raise ValueError(f'need positive sizes, got {num_examples} examples in batches of {batch_size}')
  return Fraction(num_examples, batch_size)


def _exact(x) -> Fraction:
  """``x`` as a rational: a ``Rational`` (int, Fraction) as it is, a float as the decimal it
  prints as (``repr``), so that 0.1 epoch is a tenth and ``1281167 / 1000`` is 1281.167."""
  if isinstance(x, numbers.Rational):
    return Fraction(x)
  return Fraction(repr(float(x)))


def epochs_to_steps(epochs: float, steps_per_epoch: float | Fraction) -> int:
  """A duration in epochs as a whole number of steps (at least one for a positive duration).

  ``round(epochs * steps_per_epoch)`` in exact rational arithmetic (:func:`_exact` reads each
  argument; pass :func:`steps_per_epoch`'s Fraction for the exact ratio), rounded to the nearest
  step, ties to the even one (Python's ``round``): two epochs of ImageNet at batch 32 are
  ``round(2 * 1281167 / 32) = round(80072.9375) = 80073`` steps at every batch size and length."""
  if epochs <= 0:
    return 0
  return max(1, round(_exact(epochs) * _exact(steps_per_epoch)))


def epoch(step: int, steps_per_epoch: float | Fraction) -> float:
  """The epoch reached after ``step`` steps, ``step / steps_per_epoch`` computed exactly and
  rounded once to a float."""
  return float(Fraction(int(step)) / _exact(steps_per_epoch))


def eval_steps(every_epochs: float, steps_per_epoch: float | Fraction, total: int
               ) -> frozenset[int]:
  """The steps after which a run of ``total`` steps evaluates: the end of every ``every_epochs``
  epochs (the ``k``-th at ``epochs_to_steps(k * every_epochs, steps_per_epoch)``, exact, so the
  100th of 100 one-epoch periods is the 100-epoch length itself) and the last step;
  ``every_epochs <= 0``: the last step only."""
  steps = {total}
  if every_epochs > 0:
    every = _exact(every_epochs)
    k = 1
    while (step := epochs_to_steps(k * every, steps_per_epoch)) < total:
      steps.add(step)
      k += 1
  return frozenset(steps)


def learning_rate(config) -> float:
  """The peak learning rate for ``config.batch_size`` (linear scaling, see the module doc)."""
  opt = config.optimizer
  return opt.lr * config.batch_size / opt.lr_batch


def final_lr_ratio(opt, peak_lr: float, total_steps: int,
                   steps_per_epoch: float | Fraction) -> float:
  """The rate of the last of ``total_steps`` steps over the peak rate: how far the recipe
  anneals."""
  return float(schedule(opt, peak_lr, steps_per_epoch)(total_steps - 1)) / peak_lr


def schedule(opt, peak_lr: float, steps_per_epoch: float | Fraction) -> optax.Schedule:
  """Linear warm-up over ``opt.warmup_epochs``, then ``peak_lr * opt.decay_rate ** k`` with
  ``k`` the number of whole ``opt.decay_epochs`` since the warm-up (TF's ``exponential_decay``
  with ``staircase=True``, ``tensorflow/python/training/learning_rate_decay.py``), never below
  ``opt.min_lr``. Both periods are whole steps (:func:`epochs_to_steps`).

  The schedule takes an integer step (the train state's int32, optax's int32 count) and works in
  integers until the last moment: the warm-up rate is ``peak_lr * (step + 1) / warmup`` and the
  exponent ``k = (step - warmup) // decay_steps``, an integer floor division, exact at every
  boundary up to the largest step of the step's type (2^31 - 1 for int32). A float quotient is
  not: XLA compiles a float division by a constant as a product with its rounded reciprocal
  (``640584 * float32(1 / 640584) = 0.99999994``, a decay one step late), and float32 cannot hold
  a step number beyond 2^24. The rate is in JAX's default float dtype (float64 in a float64
  run)."""
  warmup = epochs_to_steps(opt.warmup_epochs, steps_per_epoch)
  decay_steps = max(epochs_to_steps(opt.decay_epochs, steps_per_epoch), 1)

  def lr(step):
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.integer):
      raise TypeError(f'the schedule takes an integer step, got {step.dtype}')
    dtype = jnp.result_type(float)
    k = jnp.maximum(step - warmup, 0) // decay_steps
    decayed = peak_lr * jnp.power(jnp.asarray(opt.decay_rate, dtype), k.astype(dtype))
    if warmup:
      # (step + 1) / warmup only where step < warmup: the clamp keeps step + 1 from overflowing.
      ramp = peak_lr * ((jnp.minimum(step, warmup - 1) + 1).astype(dtype) / warmup)
      decayed = jnp.where(step < warmup, ramp, decayed)
    return jnp.maximum(decayed, jnp.asarray(opt.min_lr, dtype))

  return lr


def kernel_mask(params):
  """True for the weights L2 decay applies to: conv and dense kernels (not biases, not BN)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def make(opt, peak_lr: float, steps_per_epoch: float | Fraction):
  """``(optax transformation, schedule)`` for the ``config.optimizer`` fields ``opt``."""
  lr = schedule(opt, peak_lr, steps_per_epoch)
  if opt.name == 'rmsprop':
    core = optax.rmsprop(lr, decay=opt.rms_decay, eps=opt.epsilon, initial_scale=1.0,
                         eps_in_sqrt=True, momentum=opt.momentum or None)
  elif opt.name == 'momentum':
    core = optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
  else:
    raise errors.ConfigError('optimizer.name', f'unknown optimizer {opt.name!r}; '
                                               f'known: {", ".join(OPTIMIZERS)}')
  parts = []
  if opt.weight_decay:
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=kernel_mask))
  if opt.clip_norm:
    parts.append(optax.clip_by_global_norm(opt.clip_norm))
  return optax.chain(*parts, core), lr


def ema_step_decay(config) -> float:
  """The EMA's decay per step at ``config.batch_size``: ``config.ema_decay`` is stated per update
  of ``config.ema_batch`` images, so that the average spans the same number of images
  (``ema_batch / (1 - ema_decay)``) at every batch. The papers' 0.9999 per 32 images (about
  320,000 images) is 0.9968 per step of 1024; the Cloud TPU v3 reference (tensorflow/tpu,
  ``models/experimental/inception/inception_v3.py``) uses 0.995 at 1024."""
  if not config.ema_decay:
    return 0.0
  if not 0.0 < config.ema_decay < 1.0:
    raise ValueError(f'config.ema_decay={config.ema_decay} must be in (0, 1), or 0 for no EMA')
  if config.ema_batch <= 0:
    raise ValueError(f'config.ema_batch={config.ema_batch} must be a positive batch size')
  return float(config.ema_decay ** (config.batch_size / config.ema_batch))


def _num_updates_plus_10(step):
  """``step + 10`` as an integer of ``step``'s type, saturating at its largest value."""
  step = jnp.asarray(step)
  if not jnp.issubdtype(step.dtype, jnp.integer):
    raise TypeError(f'the EMA takes an integer step, got {step.dtype}')
  return jnp.minimum(step, jnp.iinfo(step.dtype).max - 10) + 10


def ema_decay(step, decay: float):
  """TF's ``ExponentialMovingAverage(decay, num_updates=step)``: ``min(decay, (1 + t) / (10 + t))``
  (``tensorflow/python/training/moving_averages.py``), as TF-slim's ``train_image_classifier.py``
  uses it, so the average is meaningful from the first hundred steps on. ``decay`` is per step
  (:func:`ema_step_decay`); ``step`` an integer. In JAX's default float dtype (float64 in a
  float64 run). The train step uses :func:`ema_weight`, ``1 -`` this, rounded once."""
  dtype = jnp.result_type(float)
  count = _num_updates_plus_10(step)
  return jnp.minimum(jnp.asarray(decay, dtype), (count - 9).astype(dtype) / count.astype(dtype))


def ema_weight(step, decay: float):
  """``1 - ema_decay(step, decay)``, the weight of the new value in TF's update
  ``average -= (average - value) * (1 - d)`` (``moving_averages.assign_moving_average``):
  ``max(1 - decay, 9 / (10 + step))``, each term rounded once from its exact value (``1 - decay``
  is exact in Python's double for a decay in [0.5, 1]; ``9 / (10 + step)`` is one division of
  integers), where ``1 - float32(d)`` would carry ``d``'s rounding, 1e-5 of the weight at batch
  1024. In JAX's default float dtype (float64 in a float64 run); ``step`` an integer (within 10
  of its type's largest value the count saturates)."""
  dtype = jnp.result_type(float)
  count = _num_updates_plus_10(step)
  return jnp.maximum(jnp.asarray(1.0 - decay, dtype), 9 / count.astype(dtype))


__all__ = ['OPTIMIZERS', 'ema_decay', 'ema_step_decay', 'ema_weight', 'epoch', 'epochs_to_steps',
           'eval_steps', 'final_lr_ratio', 'kernel_mask', 'learning_rate', 'make', 'schedule',
           'steps_per_epoch']
