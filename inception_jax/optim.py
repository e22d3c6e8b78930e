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


def scalars(opt, peak_lr: float, steps_per_epoch: float | Fraction) -> dict[str, float | int]:
  """The numbers of the ``config.optimizer`` fields ``opt`` at ``peak_lr``: what the train step
  takes as data (:func:`transform`), so that runs differing only in them share one program.
  Durations are whole steps (``warmup_steps``, ``decay_steps``)."""
  return dict(peak_lr=float(peak_lr),
              warmup_steps=epochs_to_steps(opt.warmup_epochs, steps_per_epoch),
              decay_steps=max(epochs_to_steps(opt.decay_epochs, steps_per_epoch), 1),
              decay_rate=float(opt.decay_rate), min_lr=float(opt.min_lr),
              momentum=float(opt.momentum), rms_decay=float(opt.rms_decay),
              epsilon=float(opt.epsilon), weight_decay=float(opt.weight_decay),
              clip_norm=float(opt.clip_norm))


def switches(opt) -> tuple[str, bool, bool, bool, bool]:
  """What of ``opt`` shapes the program rather than its numbers: the optimizer, whether it has a
  momentum slot (and Nesterov's), whether it decays weights and clips gradients."""
  if opt.name not in OPTIMIZERS:
    raise errors.ConfigError('optimizer.name', f'unknown optimizer {opt.name!r}; '
                                               f'known: {", ".join(OPTIMIZERS)}')
  return (str(opt.name), bool(opt.momentum), bool(opt.nesterov), bool(opt.weight_decay),
          bool(opt.clip_norm))


def lr_schedule(hp) -> optax.Schedule:
  """Linear warm-up over ``hp['warmup_steps']``, then ``peak_lr * decay_rate ** k`` with ``k``
  the number of whole ``decay_steps`` since the warm-up (TF's ``exponential_decay`` with
  ``staircase=True``, ``tensorflow/python/training/learning_rate_decay.py``), never below
  ``min_lr``. ``k`` is an integer division of step numbers, exact at every boundary; floats
  enter only for the rate itself. ``hp``'s values may be traced."""
  def lr(step):
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.integer):
      raise TypeError(f'the schedule takes an integer step, got {step.dtype}')
    dtype = jnp.result_type(float)
    peak = jnp.asarray(hp['peak_lr'], dtype)
    warmup = jnp.asarray(hp['warmup_steps'], step.dtype)
    k = jnp.maximum(step - warmup, 0) // jnp.maximum(jnp.asarray(hp['decay_steps'], step.dtype), 1)
    decayed = peak * jnp.power(jnp.asarray(hp['decay_rate'], dtype), k.astype(dtype))
    # (step + 1) / warmup only where step < warmup: the clamp keeps step + 1 from overflowing.
    ramp_steps = jnp.maximum(warmup, 1)
    ramp = peak * ((jnp.minimum(step, ramp_steps - 1) + 1).astype(dtype) / ramp_steps.astype(dtype))
    decayed = jnp.where(step < warmup, ramp, decayed)
    return jnp.maximum(decayed, jnp.asarray(hp['min_lr'], dtype))

  return lr


def schedule(opt, peak_lr: float, steps_per_epoch: float | Fraction) -> optax.Schedule:
  """:func:`lr_schedule` of the ``config.optimizer`` fields ``opt`` at ``peak_lr``."""
  return lr_schedule(scalars(opt, peak_lr, steps_per_epoch))


def kernel_mask(params):
  """True for the weights L2 decay applies to: conv and dense kernels (not biases, not BN)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def transform(switch: tuple[str, bool, bool, bool, bool], hp):
  """``(optax transformation, schedule)`` of the optimizer :func:`switches` with the numbers
  ``hp`` (:func:`scalars`; traced inside the train step, so that one program serves every
  value)."""
  name, momentum, nesterov, decays, clips = switch
  lr = lr_schedule(hp)
  if name == 'rmsprop':
    core = optax.rmsprop(lr, decay=hp['rms_decay'], eps=hp['epsilon'], initial_scale=1.0,
                         eps_in_sqrt=True, momentum=hp['momentum'] if momentum else None)
  else:
    core = optax.sgd(lr, momentum=hp['momentum'] if momentum else None, nesterov=nesterov)
  parts = []
  if decays:
    parts.append(optax.add_decayed_weights(hp['weight_decay'], mask=kernel_mask))
  if clips:
    parts.append(optax.clip_by_global_norm(hp['clip_norm']))
  return optax.chain(*parts, core), lr


def make(opt, peak_lr: float, steps_per_epoch: float | Fraction):
  """``(optax transformation, schedule)`` for the ``config.optimizer`` fields ``opt``."""
  return transform(switches(opt), scalars(opt, peak_lr, steps_per_epoch))


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
  return ema_weight_of(step, 1.0 - decay)


def ema_weight_of(step, floor):
  """:func:`ema_weight` from its floor ``1 - decay`` (computed by the caller, once, from the
  exact decay: the train step takes it as data, :func:`inception_jax.train.hparams`)."""
  dtype = jnp.result_type(float)
  count = _num_updates_plus_10(step)
  return jnp.maximum(jnp.asarray(floor, dtype), 9 / count.astype(dtype))


__all__ = ['OPTIMIZERS', 'ema_decay', 'ema_step_decay', 'ema_weight', 'ema_weight_of', 'epoch',
           'epochs_to_steps', 'eval_steps', 'final_lr_ratio', 'kernel_mask', 'learning_rate',
           'lr_schedule', 'make', 'scalars', 'schedule', 'steps_per_epoch', 'switches',
           'transform']
