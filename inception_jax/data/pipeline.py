"""The tf.data pipeline of the datasets read by example index (TFDS array_record, image folders).

Deterministic scheme: index-based access. For every host-local batch, Python computes the example
indices from the shared orders of :mod:`inception_jax.data` (``train_indices``/``host_rows`` for
training, ``eval_indices`` for eval) and the seed of each example's augmentation,
``(seed, global position)`` with ``global position = step * global_batch + row``; the source
fetches those examples by index (a TFDS ``array_record`` record, a file of an image folder) and
tf.data decodes and preprocesses them in parallel, batch by batch, in order. A batch is therefore a
function of ``(seed, step)`` and the process' rows alone: a run resumed at ``start_step`` reads
exactly what an uninterrupted run reads, and an example's crop and flip do not depend on the number
of processes.

An example that cannot be read or decoded (a corrupt or unreadable file) is dropped from its batch
(``ignore_errors`` on the per-batch map), logged once with its error and counted in
:attr:`Batches.skipped`; the batch keeps its shape, the missing rows filled with ``mask = 0``, so
training never stops mid-epoch and the following batches are unchanged. When failures outnumber
successes (16 or more), or every example of an eval pass fails, the cause is not a few corrupt
files: that is an error. A pipeline that does not give ``[image_size, image_size, 3]`` images
fails when it is built, before training.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import re
import weakref
from typing import Any, Callable

import numpy as np

from inception_jax import data as data_lib
from inception_jax.data.order import TrainOrder

log = logging.getLogger('inception_jax.data')

# Iterators still open at exit are closed while Python can still finalize their generators.
_OPEN: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [b.close() for b in list(_OPEN)])


def import_tf():
  """TensorFlow for input pipelines only: it never takes a GPU from JAX."""
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # already initialised; tensorflow-cpu has no GPU anyway
    pass
  return tf


class Source:
  """A split of a dataset that can be read by example index."""

  name: str  # for messages: 'imagenet2012/train', 'imagefolder:/data/x/train'
  num_examples: int

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Host side: what tf.data needs to load ``indices`` (paths, serialized records, ...)."""
    raise NotImplementedError

  def parse(self, element: dict[str, Any]) -> dict[str, Any]:
    """TF side, one example of :meth:`read`'s output -> ``{'image': encoded bytes,
    'label': int32, ['bbox': float32 [n, 4]]}``."""
    raise NotImplementedError

  def describe(self, index: int) -> str:
    return f'{self.name}[{index}]'


class Batches:
  """Iterator of host-local batches ``{'image', 'label', 'mask'}``; :attr:`skipped` lists the
  examples dropped as unreadable so far."""

  def __init__(self, source: Source, spec: str, *, batch_size: int, train: bool,
               process_index: int, process_count: int, seed: int, start_step: int,
               image_shape: tuple[int, int, int], threads: int = 0, batches_in_flight: int = 2):
    if source.num_examples <= 0:
      raise ValueError(f'{source.name} has no examples')
    self.source = source
    self.batch_size = batch_size
    self.train = train
    self.image_shape = image_shape
    self.skipped: list[str] = []
    self._reported: set[int] = set()
    self._loaded = 0
    self._why_last = ''
    self._requested: dict[int, np.ndarray] = {}
    self._num_batches = None if train else data_lib.num_eval_steps(
        source.num_examples, batch_size, process_count)
    self._plan = self._train_plan(process_index, process_count, seed, start_step) if train \
        else self._eval_plan(process_index, process_count)
    self._ds = self._dataset(spec, threads, batches_in_flight)
    self._it = None
    self._next_id = 0
    _OPEN.add(self)

  def close(self) -> None:
    """Releases the tf.data pipeline (also done at exit)."""
    self._it = self._ds = None
    self._num_batches = 0

  # ----------------------------------------------------------------------- which examples

  def _train_plan(self, process_index, process_count, seed, start_step):
    global_batch = self.batch_size * process_count
    rows = data_lib.host_rows(global_batch, process_index, process_count)
    order = TrainOrder(self.source.num_examples, seed)
    for step in itertools.count(start_step):
      idx = order(global_batch, step)[rows]
      pos = step * global_batch + np.arange(rows.start, rows.stop, dtype=np.int64)
      yield idx, np.stack([np.full_like(pos, seed), pos], axis=1)

  def _eval_plan(self, process_index, process_count):
    for idx, mask in data_lib.eval_indices(self.source.num_examples, self.batch_size,
                                           process_index, process_count):
      idx = idx[mask > 0]  # the padding rows are added back on the host, never loaded
      yield idx, np.zeros((len(idx), 2), np.int64)

  def _elements(self):
    for batch_id, (idx, rng) in enumerate(self._plan):
      self._requested[batch_id] = idx
      yield {'batch_id': np.int64(batch_id), 'index': idx.astype(np.int64), 'rng': rng,
             **self.source.read(idx)}

  # ----------------------------------------------------------------------- tf.data

  def _dataset(self, spec: str, threads: int, in_flight: int):
    tf = import_tf()
    probe = self.source.read(np.zeros(1, np.int64))
    signature = {'batch_id': tf.TensorSpec([], tf.int64),
                 'index': tf.TensorSpec([None], tf.int64),
                 'rng': tf.TensorSpec([None, 2], tf.int64)}
    for k, v in probe.items():
      v = np.asarray(v)
      dtype = tf.string if v.dtype.kind in 'OSU' else tf.as_dtype(v.dtype)
      signature[k] = tf.TensorSpec([None, *v.shape[1:]], dtype)
    from inception_jax.data import preprocess  # TensorFlow: only once batches are wanted
    pp = self._pp = preprocess.parse(spec)
    source = self.source
    shape = tuple(self.image_shape)

    def load(element):
      features = source.parse(element)
      features['rng'] = element['rng']
      image = pp(features)['image']
      if tuple(image.shape) != shape:
        raise ValueError(f'the pipeline {spec!r} gives images of shape {image.shape}, not '
                         f'{list(shape)} (config.data.image_size)')
      return {'image': tf.ensure_shape(tf.cast(image, tf.float32), shape),
              'label': tf.cast(features['label'], tf.int32), 'index': element['index']}

    def one_batch(element):
      examples = {k: v for k, v in element.items() if k != 'batch_id'}
      # A last row with index -1 closes every batch, so that a batch whose examples all failed
      # still comes out (tf.data would otherwise read on and on for a non-empty batch).
      end = {'image': tf.zeros(shape), 'label': tf.constant(0, tf.int32),
             'index': tf.constant(-1, tf.int64)}
      return (tf.data.Dataset.from_tensor_slices(examples)
              .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
              .ignore_errors()
              .concatenate(tf.data.Dataset.from_tensors(end))
              .batch(self.batch_size + 1))

    ds = tf.data.Dataset.from_generator(self._elements, output_signature=signature)
    ds = ds.interleave(one_batch, cycle_length=in_flight, block_length=1,
                       num_parallel_calls=in_flight, deterministic=True)
    ds = ds.prefetch(1)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    if threads:
      options.threading.private_threadpool_size = threads
    return ds.with_options(options)

  # ----------------------------------------------------------------------- host batches

  def __iter__(self):
    return self

  def __next__(self) -> data_lib.Batch:
    if self._num_batches is not None and self._next_id >= self._num_batches:
      if self.skipped and not self._loaded and self._ds is not None:
        raise RuntimeError(f'every example of {self.source.name} failed: {self.skipped[-1]}: '
                           f'{self._why_last}')
      raise StopIteration
    if self._it is None:
      self._it = self._ds.as_numpy_iterator()
    batch_id = self._next_id
    self._next_id += 1
    return self._assemble(batch_id, next(self._it))

  def _assemble(self, batch_id: int, element) -> data_lib.Batch:
    requested = self._requested.pop(batch_id)
    got = element['index'][:-1]  # the last row closes the batch
    self._loaded += len(got)
    if len(got) < len(requested):
      missing = collections.Counter(requested.tolist()) - collections.Counter(got.tolist())
      for index in sorted(missing.elements()):
        self.skipped.append(self.source.describe(index))
        if index not in self._reported:  # once per example, not once per epoch
          self._reported.add(index)
          self._why_last = self._why(index)
          log.warning('skipped an unreadable or corrupt example (%d skipped so far): %s: %s',
                      len(self.skipped), self.skipped[-1], self._why_last)
      if len(self.skipped) >= 16 and len(self.skipped) > self._loaded:
        raise RuntimeError(
            f'{len(self.skipped)} of the {len(self.skipped) + self._loaded} examples read so far '
            f'from {self.source.name} failed; more than corrupt files: '
            f'{self.skipped[-1]}: {self._why_last}')
    b, k = self.batch_size, len(got)
    if k == b:
      return {'image': element['image'][:b], 'label': element['label'][:b],
              'mask': np.ones(b, np.float32)}
    image = np.zeros((b, *self.image_shape), np.float32)
    label = np.zeros(b, np.int32)
    if k:
      # Rows of mask 0 copy a real example, so that BatchNorm's batch statistics stay those of
      # real images.
      image[:] = element['image'][0]
      label[:] = element['label'][0]
      image[:k] = element['image'][:k]
      label[:k] = element['label'][:k]
    mask = np.zeros(b, np.float32)
    mask[:k] = 1.0
    return {'image': image, 'label': label, 'mask': mask}


  def _why(self, index: int) -> str:
    """The error of example ``index``, loaded again eagerly."""
    try:
      element = {k: v[0] for k, v in self.source.read(np.array([index], np.int64)).items()}
      features = self.source.parse(element)
      features['rng'] = np.zeros(2, np.int64)
      self._pp(features)
    except Exception as err:  # noqa: BLE001 - reported, not handled
      message = re.sub(r'\{\{[^}]*\}\}\s*', '', str(err))  # TF's op context
      message = re.sub(r'\s*\[Op:\w+\].*', '', message, flags=re.S).strip()
      return f'{type(err).__name__}: {message.splitlines()[0][:300] if message else ""}'
    return 'failed inside tf.data only'


def batches(source: Source, config, *, batch_size: int, train: bool, process_index: int = 0,
            process_count: int = 1, seed: int = 0, start_step: int = 0) -> Batches:
  """Host-local batches of ``source`` preprocessed as ``config`` (a ``config.data``) says."""
  from inception_jax.data import preprocess  # TensorFlow: only once batches are wanted
  spec = preprocess.train_spec(config) if train else preprocess.eval_spec(config)
  size = int(config.image_size)
  return Batches(source, spec, batch_size=batch_size, train=train, process_index=process_index,
                 process_count=process_count, seed=seed, start_step=start_step,
                 image_shape=(size, size, 3), threads=int(config.get('threads', 0) or 0))


def batches_of(source: Callable[[Any, str], Source]) -> Callable[..., Batches]:
  """The registry's ``batches`` for a dataset whose examples ``source(config, split)`` lists:
  they go through :func:`batches` (same keyword arguments)."""

  def dataset_batches(config, split: str, *, batch_size: int, train: bool, **kw) -> Batches:
    return batches(source(config, split), config, batch_size=batch_size, train=train, **kw)

  return dataset_batches


def check_split(name: str, split: str, num_examples: dict[str, int]) -> None:
  if split not in num_examples:
    raise ValueError(f'{name} has splits {sorted(num_examples)}, not {split!r}')
  if num_examples[split] == 0:
    raise ValueError(f'{name}: split {split!r} has no examples')


__all__ = ['Batches', 'Source', 'batches', 'check_split', 'import_tf']

