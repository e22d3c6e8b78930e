"""TensorFlow Datasets by name: ``config.data.name = 'imagenet2012'`` (or ``'tfds:NAME'``).

Any TFDS image classification dataset with an ``image`` feature (``[height, width, channels]``)
and a ``label`` ClassLabel: ``imagenet2012``, ``imagenette``, ``cifar10``, ``oxford_flowers102``,
... Boxes, when the dataset has them (a ``bbox`` or ``objects/bbox`` feature), constrain the
training crop (``config.data.use_bboxes``).

Order: index-based access. The dataset is read through ``builder.as_data_source`` (random access
to the serialized records of TFDS's ``array_record`` files), so the shared orders of
:mod:`inception_jax.data` hold exactly and a resumed run reads the same batches
(:mod:`inception_jax.data.pipeline`). Records are parsed in tf.data with the image kept encoded, so
that the training crop decodes only its part of a JPEG.

Preparation (``config.data.data_dir``: TFDS's data dir, empty for its default
``~/tensorflow_datasets``; ``config.data.manual_dir``: empty for ``DATA_DIR/downloads/manual``):

* A dataset with a manual download (``imagenet2012``) is prepared, in ``array_record`` format,
  the first time it is used once its files are in the manual dir; when they are missing, the
  error says which files go where, and suggests the ``:quick`` configs.
* Other datasets are downloaded and prepared only with ``config.data.download=True`` (timm's
  ``--dataset-download``); without it, a dataset that is not prepared is an error.
* A dataset prepared earlier in ``tfrecord`` format has no random access: the error gives the
  one-time conversion (``tfds convert_format``).

Several processes do not prepare a dataset; prepare it once first (``tfds build NAME
--file_format=array_record --data_dir=... --manual_dir=...``, or one single-process run).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from inception_jax import data as data_lib, errors
from inception_jax.data import pipeline

log = logging.getLogger('inception_jax.data')

PREFIX = 'tfds:'
# The files of a manual download, by dataset: {file: split}. Other manual datasets get TFDS's
# own instructions.
MANUAL_FILES = {'imagenet2012': {'ILSVRC2012_img_train.tar': 'train',
                                 'ILSVRC2012_img_val.tar': 'validation'}}
QUICK_HINT = ('No ImageNet at hand? The `:quick` configs train the same models and recipes on an '
              'embedded dataset, offline: python -m experiments.train --config=v3.py:quick '
              '--workdir=workdirs/v3_quick')


def dataset_name(config) -> str:
  name = config.name
  return name[len(PREFIX):] if name.startswith(PREFIX) else name


def _field(config, name, default=''):
  value = config.get(name, default)
  return default if value is None else value


def _known_datasets() -> str:
  names = [n for n in data_lib.names() if n != 'tfds']
  return ', '.join(n + (':PATH' if n == 'imagefolder' else '') for n in names)


def builder(config):
  """The TFDS builder of ``config.data``, prepared (see the module docstring). A dataset that is
  not prepared and will not be is refused before TensorFlow is imported."""
  import tensorflow_datasets as tfds
  name = dataset_name(config)
  data_dir = os.path.expanduser(_field(config, 'data_dir')) or None
  try:
    b = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
        'data.name', f'unknown dataset {config.name!r}: neither a dataset of '
                     f'inception_jax.data ({_known_datasets()}) nor a TFDS dataset') from None
  if not b.is_prepared():
    _refuse_unprepared(b, config)
    pipeline.import_tf()
    _prepare(b, config)
  pipeline.import_tf()
  return b


def _manual_dir(b, config) -> str:
  manual = os.path.expanduser(_field(config, 'manual_dir'))
  return manual or os.path.join(b.data_dir_root, 'downloads', 'manual')


def is_prepared(config) -> bool:
  """Whether ``config``'s dataset is prepared, without TensorFlow and without preparing it; a
  :class:`~inception_jax.errors.ConfigError` for one that is unknown, or not prepared and not
  allowed to be (``config.download`` off, no manual download)."""
  import tensorflow_datasets as tfds
  try:
    b = tfds.builder(dataset_name(config),
                     data_dir=os.path.expanduser(_field(config, 'data_dir')) or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
        'data.name', f'unknown dataset {config.name!r}: neither a dataset of '
                     f'inception_jax.data ({_known_datasets()}) nor a TFDS dataset') from None
  if b.is_prepared():
    return True
  _refuse_unprepared(b, config)
  return False


def _refuse_unprepared(b, config) -> None:
  """A dataset without a manual download that ``config.data.download`` does not let us fetch."""
  manual = bool(getattr(b, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None))
  if not manual and not _field(config, 'download', False):
    where = b.data_dir_root
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r} is not prepared in {where}: TFDS has a '
        f'builder for it. --config.data.download=True downloads and prepares it (needs the '
        f'internet), or prepare it once with `tfds build {dataset_name(config)} '
        f'--file_format=array_record --data_dir={where}`; config.data.data_dir sets the data dir')


def _prepare(b, config) -> None:
  import tensorflow_datasets as tfds
  name = dataset_name(config)
  manual = bool(getattr(b, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None))
  where = b.data_dir_root
  _refuse_unprepared(b, config)
  import jax
  if jax.process_count() > 1:
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r} is not prepared in {where}; prepare it '
        f'once before a multi-process run: tfds build {name} --file_format=array_record '
        f'--data_dir={where}' + (f' --manual_dir={_manual_dir(b, config)}' if manual else ''))
  manual_dir = _manual_dir(b, config)
  log.info('preparing %s in %s (array_record, once; from %s)', name, where,
           manual_dir if manual else 'a download')
  try:
    b.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception as err:  # noqa: BLE001 - any failure is reported with what to do about it
    if manual:
      raise errors.ConfigError('data.name', _manual_message(b, config, manual_dir, err)) from err
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r}: could not download and prepare it in '
                     f'{where}: {type(err).__name__}: {err}') from err


def _manual_message(b, config, manual_dir: str, err: Exception) -> str:
  files = MANUAL_FILES.get(b.name)
  if files:
    lines = [f'  {os.path.join(manual_dir, f)}  ({split} split; '
             f'{"present" if os.path.exists(os.path.join(manual_dir, f)) else "MISSING"})'
             for f, split in files.items()]
    what = ('\n'.join(lines) + '\n(from https://image-net.org/download-images after '
            'registering, as the files are named there)' if b.name == 'imagenet2012' else
            '\n'.join(lines))
  else:
    what = str(getattr(b, 'MANUAL_DOWNLOAD_INSTRUCTIONS', '')).strip()
  missing = files and not all(os.path.exists(os.path.join(manual_dir, f)) for f in files)
  failure = '' if missing else (f'\nPreparing failed with {type(err).__name__}: '
                                f'{str(err).strip()[:1000]}')
  return (f'config.data.name={config.name!r} needs a manual download before it can be prepared '
          f'in {b.data_dir_root} (config.data.data_dir); put these files in {manual_dir} '
          f'(config.data.manual_dir):\n{what}{failure}\n{QUICK_HINT}')


def _check_features(b, config) -> tuple[int, str | None]:
  """``(num_classes, bbox key or None)``; an error naming the problem for a dataset that is not
  an image classification dataset."""
  import tensorflow_datasets as tfds
  features = b.info.features
  keys = list(features.keys()) if hasattr(features, 'keys') else []
  if 'image' not in keys or 'label' not in keys:
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r}: an image classification dataset needs '
                     f'"image" and "label" features; {b.name} has {keys}')
  image = features['image']
  shape = tuple(getattr(image, 'shape', ()))
  if len(shape) != 3 or shape[-1] not in (None, 1, 3, 4):
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r}: images of rank {len(shape)} '
                     f'(shape {shape}); expected [height, width, channels] images')
  if not isinstance(image, tfds.features.Image):
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r}: its "image" feature is a '
                     f'{type(image).__name__}, not an (encoded) Image')
  label = features['label']
  if not isinstance(label, tfds.features.ClassLabel):
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r}: its "label" feature is a '
                     f'{type(label).__name__}, not a ClassLabel')
  bbox = None
  if 'bbox' in keys and isinstance(features['bbox'], tfds.features.BBoxFeature):
    bbox = 'bbox'
  elif 'objects' in keys and 'bbox' in getattr(getattr(features['objects'], 'feature', None),
                                                   'keys', list)():
    bbox = 'objects/bbox'
  return label.num_classes, bbox


def _data_source(b, config, split: str):
  import tensorflow_datasets as tfds
  try:
    return b.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except NotImplementedError as err:
    raise errors.ConfigError(
        'data.name', f'config.data.name={config.name!r} is prepared in {b.data_dir} as '
        f'{b.info.file_format}, which cannot be read by index (the deterministic order and resume '
        f'need random access). Convert it once: tfds convert_format --dataset_dir={b.data_dir} '
        f'--out_file_format=array_record') from err


def info(config) -> data_lib.DatasetInfo:
  b = builder(config)
  num_classes, _ = _check_features(b, config)
  splits = {str(k): int(v.num_examples) for k, v in b.info.splits.items()}
  if not splits:  # no split metadata (tfds.testing.mock_data): the configured splits, by length
    for field in ('train_split', 'eval_split'):
      split = config.get(field, None)
      if split:
        splits[split] = len(_data_source(b, config, split))
  return data_lib.DatasetInfo(num_classes=num_classes, num_examples=splits)


def _records(source, indices: np.ndarray) -> list[bytes]:
  keys = [int(i) for i in indices]
  try:
    return list(source.__getitems__(keys))  # array_record reads a batch in parallel
  except TypeError:  # tfds.testing.mock_data's __getitems__ cannot be called
    return [source[k] for k in keys]


class RecordSource(pipeline.Source):
  """Serialized records of a TFDS split, read by index; parsed in tf.data, image still encoded."""

  def __init__(self, name: str, data_source, features, bbox: str | None):
    self.name, self._source, self._features, self._bbox = name, data_source, features, bbox
    self.num_examples = len(data_source)

  def read(self, indices):
    return {'record': np.asarray(_records(self._source, indices) if len(indices) else [],
                                 dtype=object)}

  def parse(self, element):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    ex = self._features.deserialize_example(element['record'],
                                            decoders={'image': tfds.decode.SkipDecoding()})
    out = {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32)}
    if self._bbox == 'bbox':
      out['bbox'] = tf.reshape(ex['bbox'], [-1, 4])
    elif self._bbox == 'objects/bbox':
      out['bbox'] = tf.reshape(ex['objects']['bbox'], [-1, 4])
    return out


def source(config, split: str) -> RecordSource:
  import tensorflow_datasets as tfds
  b = builder(config)
  _, bbox = _check_features(b, config)
  known = [str(s) for s in b.info.splits]
  if known:
    pipeline.check_split(config.name, split, {str(k): int(v.num_examples)
                                              for k, v in b.info.splits.items()})
  if not _field(config, 'use_bboxes', True):
    bbox = None
  wanted = {'image': True, 'label': True}
  if bbox == 'bbox':
    wanted['bbox'] = True
  elif bbox == 'objects/bbox':
    wanted['objects'] = {'bbox': True}
  features = tfds.decode.PartialDecoding(wanted).extract_features(b.info.features)
  return RecordSource(f'{b.name}/{split}', _data_source(b, config, split), features, bbox)


data_lib.register('tfds', info=info, batches=pipeline.batches_of(source))
