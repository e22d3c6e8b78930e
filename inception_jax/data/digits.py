"""scikit-learn's 8x8 handwritten digits, upsampled to the model's input size.

The 1,797 digits ship inside scikit-learn (no download), which makes them the offline dataset of
the ``:quick`` configs. A fixed 80/20 split (a permutation seeded with 0, independent of the
training seed): ``'train'`` 1,438 images, ``'test'`` 359. Pixels (0..16, ink high) are scaled to
[-1, 1], resized bilinearly to ``data.image_size`` and repeated over 3 channels.

``data.augment`` (train only): a random translation of up to that many 8x8-pixels in each
direction, applied inside the resize, deterministic in (seed, step).
"""

from __future__ import annotations

import functools

import numpy as np

from inception_jax import data as data_lib

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
_PAD = 2  # zero border (in 8x8 pixels) that translations move into view


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = digits.images.astype(np.float32) / 16.0
  labels = digits.target.astype(np.int32)
  perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
  cut = int(round(TRAIN_FRACTION * len(labels)))
  return {'train': (images[perm[:cut]], labels[perm[:cut]]),
          'test': (images[perm[cut:]], labels[perm[cut:]])}


def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
  splits = _load()
  if split not in splits:
    raise ValueError(f'digits has splits {sorted(splits)}, not {split!r}')
  return splits[split]


def info(config) -> data_lib.DatasetInfo:
  del config
  return data_lib.DatasetInfo(num_classes=10,
                              num_examples={k: len(v[1]) for k, v in _load().items()})


def _resize_weights(size: int, shift: np.ndarray) -> np.ndarray:
  """Bilinear (half-pixel centres) weights ``[b, size, 8 + 2 * _PAD]`` from the padded 8x8 grid
  to ``size`` pixels, the content moved by ``shift`` 8x8-pixels."""
  n = 8 + 2 * _PAD
  src = (np.arange(size) + 0.5) * 8 / size - 0.5 + _PAD          # [size]
  src = np.clip(src[None, :] - shift[:, None], 0, n - 1)         # [b, size]
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, n - 1)
  frac = (src - lo).astype(np.float32)
  w = np.zeros((len(shift), size, n), np.float32)
  b, i = np.meshgrid(np.arange(len(shift)), np.arange(size), indexing='ij')
  np.add.at(w, (b, i, lo), 1 - frac)
  np.add.at(w, (b, i, hi), frac)
  return w


def _images(raw: np.ndarray, size: int, shifts: np.ndarray) -> np.ndarray:
  x = np.pad(raw * 2 - 1, ((0, 0), (_PAD, _PAD), (_PAD, _PAD)), constant_values=-1.0)
  wy = _resize_weights(size, shifts[:, 0])
  wx = _resize_weights(size, shifts[:, 1])
  x = np.matmul(np.matmul(wy, x), wx.transpose(0, 2, 1))
  return np.repeat(x[..., None], 3, axis=-1)


def batches(config, split, *, batch_size, train, process_index=0, process_count=1, seed=0,
            start_step=0):
  images, labels = _split(split)
  return batches_of(images, labels, config, batch_size=batch_size, train=train,
                    process_index=process_index, process_count=process_count, seed=seed,
                    start_step=start_step)


def batches_of(images, labels, config, *, batch_size, train, process_index=0, process_count=1,
               seed=0, start_step=0):
  """The batches of any set of 8x8 ``images`` in [0, 1] (the digits or a part of them)."""
  size = int(config.image_size)
  if not train:
    for idx, mask in data_lib.eval_indices(len(labels), batch_size, process_index, process_count):
      yield {'image': _images(images[idx], size, np.zeros((len(idx), 2), np.float32)),
             'label': labels[idx], 'mask': mask}
    return
  global_batch = batch_size * process_count
  rows = data_lib.host_rows(global_batch, process_index, process_count)
  max_shift = float(config.get('augment', 0.0))
  step = start_step
  while True:
    idx = data_lib.train_indices(len(labels), global_batch, step, seed)[rows]
    # Drawn for the whole global batch, so an example's augmentation does not depend on the
    # number of processes.
    shifts = np.random.default_rng([seed, 1, step]).uniform(
        -max_shift, max_shift, (global_batch, 2)).astype(np.float32)[rows]
    yield {'image': _images(images[idx], size, shifts), 'label': labels[idx],
           'mask': np.ones(len(idx), np.float32)}
    step += 1


data_lib.register('digits', info=info, batches=batches)
