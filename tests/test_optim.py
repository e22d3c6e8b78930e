"""The recipes' optimizer chain and schedule: rates at the default batch against the published
large-batch reproductions, the EMA horizon, warm-up, floor, Nesterov, SGD momentum against
PyTorch, the weight-decay mask on every real model, and skipped updates."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from inception_jax import models, optim, steps, train_state
from train_utils import CONFIGS

IMAGENET_TRAIN = 1_281_167

# Acceptance bands at batch 1024 (module docstring of experiments/configs/common.py): RMSProp
# recipes around the Cloud TPU v3 reference's 0.66, SGD recipes around Goyal et al.'s 0.4.
BAND_CENTRE = {'rmsprop': 0.66, 'momentum': 0.4}
FAMILY = {'v1': 'momentum', 'v2': 'momentum', 'xception': 'momentum', 'v3': 'rmsprop',
          'v4': 'rmsprop', 'inception_resnet_v1': 'rmsprop', 'inception_resnet_v2': 'rmsprop'}


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_default_rate_lies_in_the_published_band(name):
  c = CONFIGS[name].get_config()
  assert c.optimizer.name == FAMILY[name]
  peak = optim.learning_rate(c)
  at_1024 = peak * 1024 / c.batch_size
  centre = BAND_CENTRE[FAMILY[name]]
  assert centre / 1.5 <= at_1024 <= centre * 1.5, (name, at_1024)
  steps_per_epoch = IMAGENET_TRAIN / c.batch_size
  if c.batch_size >= 1024:
    assert optim.epochs_to_steps(c.optimizer.warmup_epochs, steps_per_epoch) >= steps_per_epoch
  # The schedule anneals: the last step's rate is at most a tenth of the peak.
  total = optim.epochs_to_steps(c.num_epochs, steps_per_epoch)
  assert optim.final_lr_ratio(c.optimizer, peak, total, steps_per_epoch) < 0.1, name


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_quick_run_anneals_like_its_recipe(name):
  # The quick version shrinks warm-up and decay period with its length (common.quick).
  full, quick = CONFIGS[name].get_config(), CONFIGS[name].get_config('quick')
  spe_full, spe_quick = IMAGENET_TRAIN / full.batch_size, 1438 / quick.batch_size
  ratio_full = optim.final_lr_ratio(full.optimizer, 1.0,
                                    optim.epochs_to_steps(full.num_epochs, spe_full), spe_full)
  ratio_quick = optim.final_lr_ratio(quick.optimizer, 1.0,
                                     optim.epochs_to_steps(quick.num_epochs, spe_quick), spe_quick)
  assert ratio_quick < 0.1 and ratio_full < 0.1
  # Rounding decay periods to whole steps moves the quick ratio by a few decays at most.
  assert ratio_full / 2.5 < ratio_quick < ratio_full * 2.5, (ratio_full, ratio_quick)


def test_inception_resnet_v1_dropout_is_figure_15s():
  # Figure 15: dropout keep 0.8 before the classifier.
  assert CONFIGS['inception_resnet_v1'].get_config().model.options.dropout_rate == 0.2


def test_ema_horizon_is_the_same_number_of_images_at_every_batch():
  c = CONFIGS['v3'].get_config()
  horizons = {}
  for batch in (32, 256, 1024, 4096):
    c.batch_size = batch
    decay = optim.ema_step_decay(c)
    horizons[batch] = batch / (1.0 - decay)
  assert optim.ema_step_decay(CONFIGS['v3'].get_config()) == pytest.approx(0.99680, abs=2e-5)
  c.batch_size = 32
  assert optim.ema_step_decay(c) == pytest.approx(0.9999)
  np.testing.assert_allclose(list(horizons.values()), 320_000, rtol=0.01)
  c.ema_decay = 1.5
  with pytest.raises(ValueError, match=r'config.ema_decay=1.5 must be in \(0, 1\)'):
    optim.ema_step_decay(c)


def _opt(**changes):
  opt = CONFIGS['v3'].get_config().optimizer
  opt.update(dict(dict(weight_decay=0.0, clip_norm=0.0, warmup_epochs=0.0), **changes))
  return opt


def test_warmup_then_staircase_then_floor():
  # 10 steps an epoch: 2 epochs of warm-up (20 steps), x0.5 every epoch after it, floor 0.02.
  opt = _opt(warmup_epochs=2.0, decay_rate=0.5, decay_epochs=1.0, min_lr=0.02)
  lr = optim.schedule(opt, 0.4, steps_per_epoch=10.0)
  got = [float(lr(s)) for s in (0, 9, 19, 20, 29, 30, 40, 50, 1000)]
  np.testing.assert_allclose(got, [0.02, 0.2, 0.4, 0.4, 0.4, 0.2, 0.1, 0.05, 0.02], rtol=1e-6)


def _torch_sgd_trajectory(w0, grads, lrs, nesterov):
  import torch
  w = torch.tensor(w0, requires_grad=True)
  opt = torch.optim.SGD([w], lr=lrs[0], momentum=0.9, nesterov=nesterov)
  out = []
  for g, lr in zip(grads, lrs):
    for group in opt.param_groups:
      group['lr'] = lr
    w.grad = torch.tensor(g)
    opt.step()
    out.append(w.detach().numpy().copy())
  return np.asarray(out)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_and_nesterov_are_pytorchs(nesterov):
  """TF's MomentumOptimizer and torch.optim.SGD (dampening 0) both accumulate the raw gradient
  and multiply by the current rate; Nesterov's look-ahead is ``g + momentum * acc``."""
  opt = _opt(name='momentum', nesterov=nesterov, decay_rate=0.5, decay_epochs=1.0)
  tx, schedule = optim.make(opt, 0.1, steps_per_epoch=1.0)
  rng = np.random.default_rng(1)
  w0 = rng.normal(size=(6,)).astype(np.float32)
  grads = rng.normal(size=(5, 6)).astype(np.float32)
  w, state, ours = jnp.asarray(w0), tx.init(jnp.asarray(w0)), []
  for g in grads:
    updates, state = tx.update(jnp.asarray(g), state, w)
    w = optax.apply_updates(w, updates)
    ours.append(np.asarray(w))
  lrs = [float(schedule(i)) for i in range(len(grads))]
  np.testing.assert_allclose(ours, _torch_sgd_trajectory(w0, grads, lrs, nesterov), rtol=1e-5,
                             atol=1e-6)
  if nesterov:  # and it is not plain momentum
    assert not np.allclose(ours, _torch_sgd_trajectory(w0, grads, lrs, False), atol=1e-4)


@pytest.mark.parametrize('name', models.list_models())
def test_weight_decay_mask_on_every_model(name):
  """L2 on conv and dense kernels only (TF-slim's weights_regularizer): every kernel, depthwise
  ones included, and no BatchNorm offset or scale, no bias."""
  options = {'aux_logits': True} if name == 'inception_v3' else {}
  scans = 'scan' in {f.name for f in dataclasses.fields(models.info(name).cls)}
  for conventions in ('tf', 'torch'):
    # Unrolled, so that a leaf's rank says what it is.
    params = models.variable_shapes(name, conventions=conventions, **options,
                                    **({'scan': False} if scans else {}))['params']
    mask = traverse_util.flatten_dict(optim.kernel_mask(params))
    shapes = traverse_util.flatten_dict(params)
    decayed = {k for k, v in mask.items() if v}
    # Kernels are the 4-d conv and 2-d dense weights; everything 1-d is a bias or BN.
    assert decayed == {k for k, v in shapes.items() if len(v.shape) in (2, 4)}, name
    assert all(len(shapes[k].shape) == 1 for k in set(mask) - decayed)
    assert len(decayed) >= 50
    if name == 'xception':
      depthwise = [k for k in decayed if 'depthwise' in k]
      assert len(depthwise) == 34 and all(shapes[k].shape[2] == 1 for k in depthwise)
    if scans:  # the scanned layout (the default) decays the same weights, stacked
      scanned = models.variable_shapes(name, conventions=conventions)['params']
      smask = traverse_util.flatten_dict(optim.kernel_mask(scanned))
      sshapes = traverse_util.flatten_dict(scanned)
      count = lambda m, sh: sum(int(np.prod(sh[k].shape)) for k, v in m.items() if v)
      assert count(smask, sshapes) == count(mask, shapes), name


def test_skipped_update_keeps_the_rate_in_step():
  """After a non-finite step, the rate the optimizer applies at step t is schedule(t), the rate
  the metrics log (the optimizer's counter moves on with the step counter)."""
  opt = _opt(name='momentum', decay_rate=0.5, decay_epochs=1.0)
  tx, schedule = optim.make(opt, 1.0, steps_per_epoch=1.0)

  def apply_fn(variables, x, train=False, mutable=(), rngs=None):
    del train, rngs
    logits = x @ variables['params']['w']
    return (logits, {}) if mutable else logits

  params = {'w': jnp.zeros((3, 2))}
  state = train_state.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
      ema_params=params, ema_batch_stats={}, rng=jnp.zeros((2,), jnp.uint32),
      skipped_updates=jnp.zeros((), jnp.int32))
  x = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  good = {'image': x, 'label': jnp.asarray([0, 1]), 'mask': jnp.ones(2)}
  bad = dict(good, image=jnp.full_like(x, jnp.nan))
  step = jax.jit(lambda s, b: steps.train_step(s, b, apply_fn=apply_fn, tx=tx,
                                               schedule=schedule))
  state, m0 = step(state, good)
  state, m1 = step(state, bad)
  assert float(m1['nonfinite']) == 1.0 and int(state.skipped_updates) == 1
  momentum_before = state.opt_state[0][0].trace['w']  # chain(sgd = chain(trace, scale))
  before = state.params['w']
  state, m2 = step(state, good)
  assert float(m2['lr']) == pytest.approx(0.25)  # schedule(2)
  # Momentum SGD: w -= lr * (0.9 * trace + g); recover the rate the update used.
  g = jax.grad(lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, good['label'])
               .mean())(before)
  used = (before - state.params['w']) / (0.9 * momentum_before + g)
  np.testing.assert_allclose(used[np.abs(0.9 * momentum_before + g) > 1e-3], 0.25, rtol=1e-5)
