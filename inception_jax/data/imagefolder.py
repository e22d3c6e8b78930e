"""Image folders: ``config.data.name = 'imagefolder:PATH'``, one subfolder per class.

Layout (torchvision's ``ImageFolder``, split in folders)::

    PATH/train/<class>/**/*.jpg     -> split 'train'
    PATH/val/<class>/**/*.jpg       -> split 'validation' (also read from PATH/validation/)
    PATH/test/<class>/**/*.jpg      -> split 'test' (optional)

Without ``val/`` (or when PATH holds the class folders directly, with no ``train/``), a fixed
held-out split: ``config.data.holdout_fraction`` of the images of every class (at least one of a
class of two or more) go to ``'validation'``, drawn by a permutation seeded with 0, independent of
the training seed. Classes are the sorted subfolder names of the training folder and labels their
index; the other splits' classes must be among them. Images: ``.jpg``, ``.jpeg``, ``.png``,
``.bmp``, ``.gif``, ``.webp`` (any case), grey and RGBA converted to RGB.

Order: index-based access (:mod:`inception_jax.data.pipeline`): the sorted file list of a split is
read by example index, so the shared orders of :mod:`inception_jax.data` hold as for every
dataset. A corrupt or unreadable file is skipped, counted and reported (a warning naming the file),
never a crash mid-epoch; an empty or missing folder, or a split that does not exist, is an error
before training.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from inception_jax import data as data_lib, errors
from inception_jax.data import pipeline

PREFIX = 'imagefolder:'
EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
SPLIT_SEED = 0
_SPLIT_DIRS = {'train': ('train',), 'validation': ('val', 'validation'), 'test': ('test',)}


def root_of(config) -> str:
  name = config.name
  if not name.startswith(PREFIX) or not name[len(PREFIX):]:
    raise errors.ConfigError(
        'data.name', f"config.data.name={name!r}: an image folder is named 'imagefolder:PATH'")
  return os.path.abspath(os.path.expanduser(name[len(PREFIX):]))


def _images_under(folder: str) -> list[str]:
  out = []
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames.sort()
    out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
               if f.lower().endswith(EXTENSIONS) and not f.startswith('.'))
  return out


def _class_folders(folder: str) -> dict[str, list[str]]:
  """Class name -> its image paths (sorted), for every subfolder of ``folder``."""
  classes = {}
  for entry in sorted(os.scandir(folder), key=lambda e: e.name):
    if entry.is_dir(follow_symlinks=True) and not entry.name.startswith('.'):
      classes[entry.name] = _images_under(entry.path)
  return classes


@functools.lru_cache(maxsize=8)
def scan(root: str, holdout_fraction: float) -> tuple[list[str], dict[str, tuple]]:
  """``(class names, {split: (paths, labels)})`` of the folder ``root``."""
  if not os.path.isdir(root):
    raise errors.ConfigError('data.name', f"config.data.name='{PREFIX}{root}': no such folder")
  dirs = {split: next((os.path.join(root, d) for d in names
                       if os.path.isdir(os.path.join(root, d))), None)
          for split, names in _SPLIT_DIRS.items()}
  train_dir = dirs['train'] or root
  per_class = _class_folders(train_dir)
  classes = sorted(per_class)
  if not classes or not any(per_class.values()):
    raise errors.ConfigError(
        'data.name', f'{PREFIX}{root}: no images in {train_dir} (expected one subfolder per '
                     f'class holding {"/".join(EXTENSIONS)} files, in PATH/train/ and PATH/val/ '
                     'or directly in PATH)')
  label_of = {c: i for i, c in enumerate(classes)}

  def flat(groups: dict[str, list[str]], folder: str):
    unknown = sorted(set(groups) - set(label_of))
    if unknown:
      raise errors.ConfigError('data.name', f'{PREFIX}{root}: classes {unknown} of {folder} are '
                                            f'not classes of {train_dir}')
    paths = [p for c in sorted(groups) for p in groups[c]]
    labels = [label_of[c] for c in sorted(groups) for _ in groups[c]]
    return np.asarray(paths, dtype=object), np.asarray(labels, np.int32)

  splits = {}
  if dirs['validation'] is not None:
    splits['train'] = flat(per_class, train_dir)
    splits['validation'] = flat(_class_folders(dirs['validation']), dirs['validation'])
  else:
    train, held = {}, {}
    for c in classes:
      files = per_class[c]
      k = (max(1, int(round(holdout_fraction * len(files))))
           if holdout_fraction > 0 and len(files) > 1 else 0)
      perm = np.random.default_rng([SPLIT_SEED, label_of[c]]).permutation(len(files))
      held_out = set(perm[:k].tolist())
      held[c] = [f for i, f in enumerate(files) if i in held_out]
      train[c] = [f for i, f in enumerate(files) if i not in held_out]
    splits['train'] = flat(train, train_dir)
    splits['validation'] = flat(held, f'{train_dir} (held out)')
  if dirs['test'] is not None:
    splits['test'] = flat(_class_folders(dirs['test']), dirs['test'])
  return classes, splits


def _scan(config):
  return scan(root_of(config), float(config.get('holdout_fraction', 0.1)))


def info(config) -> data_lib.DatasetInfo:
  classes, splits = _scan(config)
  return data_lib.DatasetInfo(num_classes=len(classes),
                              num_examples={k: len(v[1]) for k, v in splits.items()})


class FolderSource(pipeline.Source):
  """Files of a split, read by index with ``tf.io.read_file``."""

  def __init__(self, name: str, paths: np.ndarray, labels: np.ndarray):
    self.name, self.paths, self.labels = name, paths, labels
    self.num_examples = len(labels)

  def read(self, indices):
    return {'path': np.asarray([os.fsencode(p) for p in self.paths[indices]], dtype=object),
            'label': self.labels[indices]}

  def parse(self, element):
    import tensorflow as tf
    return {'image': tf.io.read_file(element['path']), 'label': element['label']}

  def describe(self, index):
    return str(self.paths[index])


def source(config, split: str) -> FolderSource:
  classes, splits = _scan(config)
  pipeline.check_split(config.name, split, {k: len(v[1]) for k, v in splits.items()})
  del classes
  return FolderSource(f'{config.name}/{split}', *splits[split])


data_lib.register('imagefolder', info=info, batches=pipeline.batches_of(source))
