"""The step arithmetic is exact: the compiled schedule's rate on both sides of every decay boundary
of every recipe at four batches over 100 epochs of ImageNet, and at boundaries near 2^24 and
2^31 - 1, against integer math written here; durations, evaluation steps and epochs from exact
rationals; the EMA's weights in the run's float dtype, summing to 1.

The reference: ``W = round(warmup_epochs * N / B)`` and ``D = round(decay_epochs * N / B)`` in
integers (ties to even; the configs' 8/6 read as 4/3), then ``peak * (s + 1) / W`` before ``W``
and ``peak * rate ** ((s - W) // D)`` after, in Python's float64. A decay one step early or late
is 4-6% off the rate (0.94 or 0.96); a warm-up step off by one is at least 1 / W (5e-6 at batch
32). The float64 rate (a float64 run) is held to 4 ulps of it; the float32 rate to 1e-6 of the
same formula with ``peak`` and ``rate`` as float32 holds them (0.96 in float32 is 2.2e-8 low,
1.6e-6 after 71 decays: the float32 run's constant, not its step arithmetic).
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from inception_jax import optim
from train_utils import CONFIGS

IMAGENET_TRAIN = 1_281_167
BATCHES = (32, 256, 1024, 4096)
RTOL32 = 1e-6
RTOL64 = 4 * np.finfo(np.float64).eps


def _round_half_even(num: int, den: int) -> int:
  q, r = divmod(num, den)
  return q + (2 * r > den or (2 * r == den and q % 2 == 1))


def _steps(epochs: float, n: int, batch: int) -> int:
  e = Fraction(epochs).limit_denominator(1000)  # 2.0 -> 2, 8 / 6 -> 4/3, 5.0 -> 5
  return _round_half_even(e.numerator * n, e.denominator * batch)


def _reference(peak: float, rate: float, min_lr: float, warmup: int, decay: int, steps):
  out = []
  for s in steps:
    s = int(s)
    lr = peak * (s + 1) / warmup if s < warmup else peak * rate ** ((s - warmup) // decay)
    out.append(max(lr, min_lr))
  return np.asarray(out)


def _compiled_rates(opt, peak, steps_per_epoch, steps) -> np.ndarray:
  """The schedule compiled as the train step compiles it (periods as constants), over all
  ``steps`` (int32, the train state's step type) in one call."""
  lr = optim.schedule(opt, peak, steps_per_epoch)
  return np.asarray(jax.jit(jax.vmap(lr))(np.asarray(steps, np.int32)))


def _boundaries(warmup: int, decay: int, total: int) -> list[int]:
  """0, the warm-up's end and every decay boundary before ``total``, each with its neighbours."""
  edges = [warmup] + list(range(warmup + decay, total, decay))
  return sorted({0, total - 1} | {e + d for e in edges for d in (-1, 0, 1) if 0 <= e + d < total})


def _as_run(x64: bool, *values: float) -> list[float]:
  """``values`` as a run of that precision holds them."""
  return [v if x64 else float(np.float32(v)) for v in values]


@pytest.mark.parametrize('x64', [False, True], ids=['float32', 'float64'])
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_every_decay_boundary_of_every_recipe_at_every_batch(name, x64):
  with jax.enable_x64(x64):
    _check_recipe(name, x64)


def _check_recipe(name, x64):
  config = CONFIGS[name].get_config()
  opt = config.optimizer
  rtol = RTOL64 if x64 else RTOL32
  checked = 0
  for batch in BATCHES:
    config.batch_size = batch
    peak = optim.learning_rate(config)
    spe = optim.steps_per_epoch(IMAGENET_TRAIN, batch)
    warmup, decay = _steps(opt.warmup_epochs, IMAGENET_TRAIN, batch), _steps(
        opt.decay_epochs, IMAGENET_TRAIN, batch)
    total = _steps(config.num_epochs, IMAGENET_TRAIN, batch)
    assert (optim.epochs_to_steps(opt.warmup_epochs, spe), optim.epochs_to_steps(
        opt.decay_epochs, spe), optim.epochs_to_steps(config.num_epochs, spe)) == (
            warmup, decay, total), batch
    steps = _boundaries(warmup, decay, total)
    got = _compiled_rates(opt, peak, spe, steps)
    assert got.dtype == (np.float64 if x64 else np.float32)
    want = _reference(*_as_run(x64, peak, opt.decay_rate), opt.min_lr, warmup, decay, steps)
    bad = np.flatnonzero(np.abs(got - want) > rtol * want)
    assert not len(bad), (batch, [(steps[i], got[i], want[i]) for i in bad[:5]], len(bad))
    checked += len(range(warmup + decay, total, decay))
  # 100 epochs decayed every 2 (or 4/3) after 5 of warm-up: 47 (or 71) boundaries a batch.
  assert checked >= 4 * 47, checked


def _periods(warmup: int, decay: int) -> ml_collections.ConfigDict:
  """A schedule of ``warmup`` and ``decay`` steps (one step an epoch)."""
  opt = CONFIGS['v3'].get_config().optimizer
  opt.warmup_epochs, opt.decay_epochs, opt.decay_rate, opt.min_lr = warmup, decay, 0.9, 0.0
  return opt


# (warm-up, decay period) in steps: boundaries at 2^24 - 1, 2^24, 2^24 + 1 and beyond, the
# warm-up ending past 2^24, and a first decay at 2^31 - 1, the last step of an int32 counter.
LARGE = [(0, 2 ** 24 - 1), (0, 2 ** 24), (1, 2 ** 24), (5, 2 ** 23 + 1), (2 ** 24 + 1, 7),
         (1000, 2 ** 31 - 1 - 1000), (3, 2 ** 30 - 1)]


@pytest.mark.parametrize('x64', [False, True], ids=['float32', 'float64'])
def test_boundaries_near_2_to_24_and_2_to_31(x64):
  with jax.enable_x64(x64):
    for warmup, decay in LARGE:
      opt = _periods(warmup, decay)
      edges = [warmup] + [warmup + k * decay for k in (1, 2, 3)]
      steps = sorted({e + d for e in edges for d in (-1, 0, 1) if 0 <= e + d < 2 ** 31}
                     | {2 ** 31 - 2, 2 ** 31 - 1})
      got = _compiled_rates(opt, 0.1, Fraction(1), steps)
      assert got.dtype == (np.float64 if x64 else np.float32)
      want = _reference(*_as_run(x64, 0.1, 0.9), 0.0, warmup, decay, steps)
      if not x64:  # XLA:CPU flushes float32 subnormals to zero
        want[want < np.finfo(np.float32).tiny] = 0.0
      rtol = RTOL64 if x64 else RTOL32
      bad = np.flatnonzero(np.abs(got - want) > rtol * want)
      assert not len(bad), (warmup, decay, [(steps[i], got[i], want[i]) for i in bad[:5]])


def test_durations_are_rounded_from_exact_ratios():
  spe = optim.steps_per_epoch(IMAGENET_TRAIN, 32)
  assert spe == Fraction(IMAGENET_TRAIN, 32)
  assert optim.epochs_to_steps(2.0, spe) == 80073  # 80072.9375
  # Ties go to the even step: 1.5 steps, 2.5 steps.
  assert [optim.epochs_to_steps(e, Fraction(1, 2)) for e in (3, 5)] == [2, 2]
  # 0.1 epoch is a tenth: 0.1 * 5 = 0.5 exactly, a tie (the double nearest 0.1 is above it).
  assert optim.epochs_to_steps(0.1, 25) == 2 and optim.epochs_to_steps(0.1, 35) == 4
  # At batch 96 the float quotient is not the ratio: the Fraction gives the exact durations.
  assert optim.epochs_to_steps(3, optim.steps_per_epoch(IMAGENET_TRAIN, 96)) == _steps(
      3, IMAGENET_TRAIN, 96)
  assert optim.epochs_to_steps(1e-9, spe) == 1 and optim.epochs_to_steps(0.0, spe) == 0
  # Evaluation after every epoch, and the epoch a step reaches, from the same ratio.
  total = optim.epochs_to_steps(100, spe)
  every = sorted(optim.eval_steps(1.0, spe, total))
  assert len(every) == 100 and every[-1] == total == _steps(100, IMAGENET_TRAIN, 32)
  assert every[:3] == [40036, 80073, 120109]  # 40036.47, 80072.94, 120109.41
  assert every == [_steps(k, IMAGENET_TRAIN, 32) for k in range(1, 101)]
  assert optim.eval_steps(0.0, spe, 7) == frozenset({7})
  assert optim.epoch(80073, spe) == 80073 * 32 / IMAGENET_TRAIN
  assert optim.epoch(2 ** 40, optim.steps_per_epoch(3, 1)) == 2 ** 40 / 3


def test_ema_weights_sum_to_one_in_the_runs_dtype():
  decay = 0.9999 ** (1024 / 32)
  w32 = optim.ema_weight(jnp.int32(10 ** 6), decay)
  assert w32.dtype == jnp.float32
  # Rounded once from the exact 1 - decay; 1 - float32(decay) carries decay's rounding, here
  # 7.6e-7 of the weight (up to 1e-5 at this batch), 20 times as far.
  bound = 0.5 * np.spacing(np.float32(1.0 - decay))
  assert abs(float(w32) - (1.0 - decay)) <= bound
  assert abs(float(1 - np.float32(decay)) - (1.0 - decay)) > 10 * bound
  # TF's warm-up: 1 - (1 + t) / (10 + t) = 9 / (10 + t), and the decay's complement after it.
  np.testing.assert_allclose([float(optim.ema_weight(t, decay)) for t in (0, 90, 10 ** 7)],
                             [0.9, 0.09, 1.0 - decay], rtol=1e-7)
  with jax.enable_x64(True):
    w = optim.ema_weight(jnp.int32(0), 0.9999)
    assert w.dtype == jnp.float64 and float(w) == 0.9
    assert float(optim.ema_weight(jnp.int32(2 ** 31 - 1), 1 - 1e-12)) == pytest.approx(
        9 / (2 ** 31 - 1 + 10), rel=1e-8)
    assert float(optim.ema_decay(jnp.int32(5), 0.9999)) == 6 / 15
