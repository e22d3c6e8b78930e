"""Random images of the configured shape: ``config.data.name = 'synthetic'``, for benchmarks.

Imports neither TensorFlow nor any dataset, so that it runs on accelerator machines that have JAX
alone. Splits ``'train'`` (``config.data.synthetic_train_examples``, ImageNet's 1,281,167 by
default) and ``'validation'`` (``synthetic_eval_examples``, 50,000), ``synthetic_classes`` classes
(1,000). The images are one host batch of uniform noise in [-1, 1], drawn once per iterator and
reused at every step, so the host does no work per step; the labels are a fixed function of the
example index, which follows the shared orders of :mod:`inception_jax.data` (the eval split padded
and masked like every other dataset's).
"""

from __future__ import annotations

import numpy as np

from inception_jax import data as data_lib
from inception_jax.data import defaults
from inception_jax.data.order import TrainOrder

def _get(config, field):
  value = config.get(field, None)
  return defaults.SYNTHETIC[field] if value is None else int(value)


def info(config) -> data_lib.DatasetInfo:
  return data_lib.DatasetInfo(
      num_classes=_get(config, 'synthetic_classes'),
      num_examples={'train': _get(config, 'synthetic_train_examples'),
                    'validation': _get(config, 'synthetic_eval_examples')})


def _labels(indices: np.ndarray, num_classes: int) -> np.ndarray:
  return ((indices * 2654435761) % num_classes).astype(np.int32)  # Knuth's multiplicative hash


def batches(config, split, *, batch_size, train, process_index=0, process_count=1, seed=0,
            start_step=0):
  sizes = info(config).num_examples
  if split not in sizes:
    raise ValueError(f'synthetic has splits {sorted(sizes)}, not {split!r}')
  if sizes[split] <= 0:
    raise ValueError(f'synthetic: split {split!r} has no examples')
  size = int(config.image_size)
  images = np.random.default_rng([seed, process_index]).uniform(
      -1.0, 1.0, (batch_size, size, size, 3)).astype(np.float32)
  classes = _get(config, 'synthetic_classes')
  return _train(images, sizes[split], classes, batch_size, process_index, process_count, seed,
                start_step) if train else _eval(images, sizes[split], classes, batch_size,
                                                process_index, process_count)


def _train(images, n, classes, batch_size, process_index, process_count, seed, start_step):
  global_batch = batch_size * process_count
  rows = data_lib.host_rows(global_batch, process_index, process_count)
  order = TrainOrder(n, seed)
  mask = np.ones(batch_size, np.float32)
  step = start_step
  while True:
    yield {'image': images, 'label': _labels(order(global_batch, step)[rows], classes),
           'mask': mask}
    step += 1


def _eval(images, n, classes, batch_size, process_index, process_count):
  for idx, mask in data_lib.eval_indices(n, batch_size, process_index, process_count):
    yield {'image': images, 'label': _labels(idx, classes), 'mask': mask}


data_lib.register('synthetic', info=info, batches=batches)
