"""Input pipelines behind one interface, chosen by ``config.data.name``:

* ``'digits'``: scikit-learn's 8x8 handwritten digits, embedded, upsampled (the ``:quick`` configs);
* ``'imagenet2012'`` or any other TFDS image classification dataset by name (``'cifar10'``,
  ``'imagenette'``, ``'tfds:NAME'``), :mod:`inception_jax.data.tfds`;
* ``'imagefolder:PATH'``: one subfolder per class, :mod:`inception_jax.data.imagefolder`;
* ``'synthetic'``: random images, no TensorFlow (benchmarks), :mod:`inception_jax.data.synthetic`.

TFDS datasets and image folders share TF-slim's Inception preprocessing, each knob a
``config.data`` field (:mod:`inception_jax.data.preprocess`).

A dataset module registers itself with :func:`register` and provides two functions:

* ``info(data_config) -> DatasetInfo``: classes and examples per split;
* ``batches(data_config, split, *, batch_size, train, process_index, process_count, seed,
  start_step) -> Iterator[dict]``: host-local numpy batches
  ``{'image': [b, h, w, 3] float32 in [-1, 1], 'label': [b] int32, 'mask': [b] float32}``,
  ``b = batch_size`` (this process' share of the global batch).

Two orders, shared by every dataset through :func:`train_indices` and :func:`eval_indices`:

* train (``train=True``): an endless stream. The examples are laid out as one permutation per
  epoch, seeded by ``(seed, epoch)``, one after the other; global step ``s`` takes positions
  ``[s * B, (s + 1) * B)`` of that stream (``B`` the global batch) and process ``p`` the rows
  ``[p * b, (p + 1) * b)`` of it. The batch is a function of ``(seed, step)`` alone, so a run
  resumed at ``start_step`` sees what an uninterrupted run sees, and an epoch is exactly
  ``num_examples / B`` steps.
* eval (``train=False``): every example of the split exactly once, process ``p`` taking a
  contiguous shard; every process yields the same number of batches, the last ones padded with
  ``mask = 0`` rows, never dropped.

Importing this package imports neither TensorFlow nor PyTorch; datasets that need them import
them when they are used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from inception_jax import errors
from inception_jax.registry import Registry

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_examples: dict[str, int]  # split name -> number of examples


@dataclasses.dataclass(frozen=True)
class _Dataset:
  info: Callable[[Any], DatasetInfo]
  batches: Callable[..., Iterator[Batch]]


# Built-in datasets, imported on first use so that using one loads only its dependencies.
_DATASETS: Registry[_Dataset] = Registry('dataset', modules={
    'digits': 'inception_jax.data.digits',  # scikit-learn's 8x8 digits, embedded (:quick configs)
    'synthetic': 'inception_jax.data.synthetic',  # random images, no TensorFlow (benchmarks)
    'imagefolder': 'inception_jax.data.imagefolder',  # 'imagefolder:PATH'
    'tfds': 'inception_jax.data.tfds',  # 'tfds:NAME', or any other name: a TFDS dataset
})
# Names with a prefix: 'imagefolder:/data/flowers', 'tfds:cifar10'.
_PREFIXED = ('imagefolder', 'tfds')


def register(name: str, *, info: Callable[[Any], DatasetInfo],
             batches: Callable[..., Iterator[Batch]]) -> None:
  _DATASETS.add(name, _Dataset(info, batches))


def names() -> list[str]:
  """The registered and built-in dataset names (besides every TFDS name)."""
  return sorted(_DATASETS.names())


def kind(name: str) -> str:
  """The registered dataset that reads ``name``: itself when registered or built in,
  ``'imagefolder'`` for ``'imagefolder:PATH'``, and ``'tfds'`` for ``'tfds:NAME'`` and for any
  other name (a TFDS dataset such as ``'imagenet2012'``; its module says so when TFDS does not
  know it)."""
  if not isinstance(name, str) or not name:
    raise errors.ConfigError(
        'data.name', f'config.data.name={name!r}: name a dataset ({", ".join(names())}, '
                     "'imagefolder:PATH' or a TFDS name)")
  if _DATASETS.known(name):
    return name
  prefix, sep, _ = name.partition(':')
  if sep and prefix in _PREFIXED:
    return prefix  # its module checks what follows the colon
  if sep:
    raise errors.ConfigError(
        'data.name', f'config.data.name={name!r}: unknown prefix {prefix + ":"!r}; known: '
                     f'{", ".join(p + ":" for p in _PREFIXED)}')
  return 'tfds'


def _get(name: str) -> _Dataset:
  return _DATASETS.lookup(kind(name), lambda: errors.ConfigError(
      'data.name', f'unknown dataset {name!r}; known: {", ".join(names())}'))


def info(data_config) -> DatasetInfo:
  """Classes and split sizes of the dataset ``data_config.name``."""
  return _get(data_config.name).info(data_config)


def check_splits(data_config, dataset: DatasetInfo | None = None) -> DatasetInfo:
  """The dataset's info, or a :class:`~inception_jax.errors.ConfigError` naming the flag that
  picks an existing split when ``train_split`` or ``eval_split`` is not one of its splits."""
  dataset = info(data_config) if dataset is None else dataset
  have = sorted(dataset.num_examples)
  for field in ('train_split', 'eval_split'):
    split = data_config[field]
    if split not in dataset.num_examples:
      near = [s for s in ('validation', 'test', 'train') if s in have and s != split]
      pick = near[0] if field == 'eval_split' and near else have[0]
      raise errors.ConfigError(
          f'data.{field}', f'config.data.{field}={split!r}: {data_config.name} has splits '
                           f'{have}; choose one with --config.data.{field}={pick}')
  return dataset


def batches(data_config, split: str, *, batch_size: int, train: bool, process_index: int = 0,
            process_count: int = 1, seed: int = 0, start_step: int = 0) -> Iterator[Batch]:
  """Host-local batches of ``split``; see the module docstring for the order."""
  return _get(data_config.name).batches(
      data_config, split, batch_size=batch_size, train=train, process_index=process_index,
      process_count=process_count, seed=seed, start_step=start_step)


# ------------------------------------------------------------------------ orders shared by all

def train_indices(num_examples: int, global_batch: int, step: int, seed: int) -> np.ndarray:
  """Example indices of the global batch of ``step`` (see the module docstring)."""
  pos = np.arange(step * global_batch, (step + 1) * global_batch, dtype=np.int64)
  epochs, offsets = np.divmod(pos, num_examples)
  out = np.empty_like(pos)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    sel = epochs == epoch
    out[sel] = perm[offsets[sel]]
  return out


def host_rows(global_batch: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process ``process_index`` feeds."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} does not split over {process_count} processes')
  b = global_batch // process_count
  return slice(process_index * b, (process_index + 1) * b)


def eval_indices(num_examples: int, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """``(indices, mask)`` per host-local eval batch: each example once, the tail padded.

  Padding rows repeat index 0 (any valid example) with mask 0.
  """
  per_process = -(-num_examples // process_count)
  steps = num_eval_steps(num_examples, batch_size, process_count)
  start = min(process_index * per_process, num_examples)
  stop = min(start + per_process, num_examples)
  for i in range(steps):
    idx = np.arange(start + i * batch_size, start + (i + 1) * batch_size)
    mask = (idx < stop).astype(np.float32)
    yield np.where(idx < stop, idx, 0), mask


def num_eval_steps(num_examples: int, batch_size: int, process_count: int = 1) -> int:
  """Eval batches per process (the same on every process)."""
  per_process = -(-num_examples // process_count)
  return max(1, -(-per_process // batch_size))
