"""Helpers of the training tests: a tiny dataset, tiny configs, and reading a workdir."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from experiments.configs import (inception_resnet_v1, inception_resnet_v2, v1, v2, v3, v4,
                                 xception)
from inception_jax import checkpoint, data, evaluate, models
from inception_jax.data import digits

CONFIGS = {'v1': v1, 'v2': v2, 'v3': v3, 'v4': v4, 'inception_resnet_v1': inception_resnet_v1,
           'inception_resnet_v2': inception_resnet_v2, 'xception': xception}

TINY = {'train': 8, 'test': 12}


def _tiny_info(config):
  return data.DatasetInfo(num_classes=10, num_examples=dict(TINY))


def _tiny_batches(config, split, **kw):
  images, labels = digits._split(split)
  return digits.batches_of(images[:TINY[split]], labels[:TINY[split]], config, **kw)


NAN_STEP = 3  # the step whose batch is NaN in 'digits_tiny_nan'


def _nan_batches(config, split, *, train, start_step=0, **kw):
  """'digits_tiny' with the images of training step NAN_STEP all NaN."""
  inner = _tiny_batches(config, split, train=train, start_step=start_step, **kw)
  for step, batch in enumerate(inner, start_step + 1):
    if train and step == NAN_STEP:
      batch = dict(batch, image=np.full_like(batch['image'], np.nan))
    yield batch


if 'digits_tiny' not in data.names():
  data.register('digits_tiny', info=_tiny_info, batches=_tiny_batches)
  data.register('digits_tiny_nan', info=_tiny_info, batches=_nan_batches)


def tiny(name: str = 'v1', **overrides) -> ml_collections.ConfigDict:
  """``name``'s quick config at its smallest: the model's minimum input size, 8 training digits
  and batch 8, so that every step sees the same batch (no augmentation), 2 steps, a learning
  rate that decays at every step (no warm-up), 12 eval digits; ``overrides`` by dotted name
  (``{'optimizer.lr': 0.1}``). All tiny runs of one model share their compiled programs."""
  c = CONFIGS[name].get_config('quick')
  c.data.name = 'digits_tiny'
  c.data.augment = 0.0
  c.data.image_size = models.info(c.model.name).min_size
  if 'scan' in c.model.options:
    c.model.options.scan = True  # at the minimum size scanned blocks compile faster, run as fast
  c.batch_size = 8
  c.eval_batch_size = 8
  c.total_steps = 2
  c.optimizer.decay_epochs = 1.0  # one step: the rate decays at every step
  c.optimizer.decay_rate = 0.9
  c.optimizer.warmup_epochs = 0.0
  c.log_every_steps = 1
  c.eval_every_epochs = 0.0
  c.tensorboard = False
  c.update_from_flattened_dict(overrides)
  return c


def read_metrics(workdir: str, split: str = 'train') -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def final_state(workdir: str, config):
  """The training state of ``workdir``'s latest checkpoint, on the host."""
  return jax.device_get(evaluate.restore_state(config, workdir)[1])


def check_run(workdir: str, results: dict, steps: int) -> None:
  """What every finished run leaves: results, a metrics line per step, the last checkpoint."""
  assert results['steps'] == steps and results['eval_split'] == 'test'
  ema = ('ema_top1', 'ema_top5') if 'ema_loss' in results['eval'] else ()
  for key in ('top1', 'top5', *ema):
    assert 0.0 <= results['eval'][key] <= 1.0
  assert np.isfinite(results['eval']['loss'])
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == list(range(1, steps + 1))
  assert np.all(np.isfinite([r['loss'] for r in records]))
  assert steps in checkpoint.Checkpointer(workdir).all_steps()
