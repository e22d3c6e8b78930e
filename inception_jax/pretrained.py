"""Converted weights on disk.

A converted model is a directory: ``model.json`` (the registry name, every option needed to rebuild
the module, its conventions, and the input preprocessing its weights expect) and ``variables/``,
an orbax checkpoint of ``{'params', 'batch_stats'}``. Loading reads JSON and tensorstore arrays:
no pickle, no code execution. The published weights of the reference implementations, and
fetching them, are :mod:`inception_jax.convert.known`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import errors, models
from inception_jax.models.conventions import Conventions
# Re-exported: a converted model's ``preprocess`` is one of these input normalisations.
from inception_jax.normalization import (CAFFE_BGR, FACENET, FID, IMAGENET,  # noqa: F401
                                         INCEPTION, NORMALIZATIONS)

FORMAT_VERSION = 1


class WeightsNotFoundError(errors.UserError, FileNotFoundError):
  """A path that should be a converted-weights directory is not one."""


class WeightsFormatError(errors.UserError, ValueError):
  """A converted-weights directory this version cannot read, or unknown published weights."""


class OutputExistsError(errors.UserError, FileExistsError):
  """:func:`save` refuses to replace an existing directory."""


# ------------------------------------------------------------------------------ save / load

def describe(module) -> dict[str, Any]:
  """The create() options that rebuild ``module`` (JSON-serialisable); not the process' CPU
  convolution library (``cpu_convolutions``), which the loading process passes."""
  out = {}
  for field in dataclasses.fields(module):
    if field.name in ('parent', 'name', 'cpu_convolutions'):
      continue
    value = getattr(module, field.name)
    if isinstance(value, Conventions):
      value = dataclasses.asdict(value)
    elif field.name == 'dtype':
      value = jnp.dtype(value).name
    elif not isinstance(value, (int, float, str, bool, type(None))):
      raise TypeError(f'cannot describe option {field.name}={value!r}')
    out[field.name] = value
  return out


def check_new_directory(directory: str) -> str:
  """The absolute ``directory``, or :class:`OutputExistsError` when something is there."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise OutputExistsError(f'{directory} exists; choose a new directory for converted weights '
                            '(nothing there was changed)')
  return directory


def save(directory: str, name: str, module, variables, *, preprocess: dict | None = None,
         source: str | None = None, classes: list[str] | None = None) -> str:
  """Write ``variables`` of ``module`` (registry ``name``) as an orbax checkpoint + model.json.

  ``classes``: the class names in index order, for ``predict`` (default: none recorded;
  ``predict`` then names the classes of a 1000-class model by ImageNet's and others by index).
  Refuses to overwrite an existing directory, so a good checkpoint is never replaced by accident;
  the directory appears whole or not at all.
  """
  import orbax.checkpoint as ocp
  directory = check_new_directory(directory)
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  meta = {'format': FORMAT_VERSION, 'model': models.info(name).name, 'options': describe(module),
          'preprocess': preprocess or dict(INCEPTION), 'source': source}
  if classes is not None:
    if len(classes) != getattr(module, 'num_classes', len(classes)):
      raise ValueError(f'{len(classes)} class names for a model of {module.num_classes} classes')
    meta['classes'] = [str(c) for c in classes]
  tmp = directory + '.partial'
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  try:
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(os.path.join(tmp, 'variables'), jax.device_get(variables))
    with open(os.path.join(tmp, 'model.json'), 'w') as f:
      json.dump(meta, f, indent=2)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  os.replace(tmp, directory)
  return directory


def load_meta(directory: str) -> dict[str, Any]:
  """The ``model.json`` of a converted-weights directory; :class:`WeightsNotFoundError` when
  ``directory`` is not one, :class:`WeightsFormatError` when it is unreadable."""
  path = os.path.join(directory, 'model.json')
  if not os.path.isdir(directory):
    raise WeightsNotFoundError(f'{directory}: no such directory; converted weights are a '
                               'directory made by `python -m inception_jax.convert --out DIR`')
  if not os.path.exists(path):
    raise WeightsNotFoundError(f'{directory} is not a converted-weights directory (no model.json);'
                               ' create one with `python -m inception_jax.convert`')
  try:
    with open(path) as f:
      meta = json.load(f)
  except ValueError as err:
    raise WeightsFormatError(f'{path}: not JSON ({err}); convert the weights again') from None
  if not isinstance(meta, dict) or meta.get('format') != FORMAT_VERSION:
    raise WeightsFormatError(f'{path}: unsupported format '
                             f'{meta.get("format") if isinstance(meta, dict) else meta!r}; '
                             'convert the weights again with this version')
  return meta


def build(meta: dict[str, Any], **overrides: Any):
  """The module described by ``meta`` (``overrides`` replace options, e.g. ``num_classes``)."""
  options = dict(meta['options'])
  options['conventions'] = Conventions(**options['conventions'])  # written by describe()
  options.update(overrides)
  return models.create(meta['model'], **options)


def load(directory: str, **overrides: Any):
  """Load converted weights. Returns ``(module, variables, meta)``."""
  import orbax.checkpoint as ocp
  from flax import traverse_util
  directory = os.path.abspath(directory)
  meta = load_meta(directory)
  size = models.info(meta['model']).input_size

  def shapes_of(module):
    shapes = jax.eval_shape(module.init, {'params': jax.random.PRNGKey(0)},
                            jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    return {k: shapes[k] for k in ('params', 'batch_stats') if k in shapes}

  with ocp.StandardCheckpointer() as ckpt:  # as saved, then what ``overrides`` keep of it
    variables = ckpt.restore(os.path.join(directory, 'variables'), shapes_of(build(meta)))
  module = build(meta, **overrides)
  if overrides:
    want = traverse_util.flatten_dict(shapes_of(module))
    have = traverse_util.flatten_dict(variables)
    lacking = ['/'.join(k) for k, v in want.items()
               if k not in have or tuple(have[k].shape) != tuple(v.shape)]
    if lacking:
      raise ValueError(f'{directory}: the weights have nothing of the right shape for '
                       f'{", ".join(lacking[:4])}{" ..." if len(lacking) > 4 else ""} under '
                       f'{overrides}; to fine-tune for new classes, use '
                       f'config.init_from={directory} (it initialises the new head)')
    variables = traverse_util.unflatten_dict({k: have[k] for k in want})
  return module, variables, meta


def preprocess_image(image: np.ndarray, size: int, preprocess: dict[str, Any]) -> np.ndarray:
  """HWC uint8 RGB image -> [size, size, 3] float32 as the weights expect (resize, crop, scale)."""
  from PIL import Image
  method = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC,
            'nearest': Image.NEAREST}[preprocess.get('interpolation', 'bilinear')]
  img = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  scaled = int(round(size / preprocess.get('crop_pct', 0.875)))
  w, h = img.size
  ratio = scaled / min(w, h)
  img = img.resize((max(size, round(w * ratio)), max(size, round(h * ratio))), method)
  w, h = img.size
  left, top = (w - size) // 2, (h - size) // 2
  img = img.crop((left, top, left + size, top + size))
  x = np.asarray(img, np.float32) / 255.0 * preprocess.get('scale', 1.0)
  if preprocess.get('bgr'):
    x = x[..., ::-1]
  return (x - np.asarray(preprocess['mean'], np.float32)) / np.asarray(preprocess['std'],
                                                                        np.float32)


def imagenet_classes() -> list[str]:
  """The 1000 ImageNet-1k class names in index order (shipped with the package)."""
  path = os.path.join(os.path.dirname(__file__), 'imagenet_classes.txt')
  with open(path) as f:
    names = [line.rstrip('\n') for line in f]
  assert len(names) == 1000, len(names)
  return names
