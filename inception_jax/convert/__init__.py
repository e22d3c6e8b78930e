"""Pretrained weights from torchvision, timm, pretrainedmodels, facenet-pytorch and Keras.

``from_torch(name, state_dict, source=...)`` and ``from_keras(name, model_or_path)`` return
``(module, variables)`` where ``module`` carries the numeric conventions of the source, so that
``module.apply(variables, x_nhwc, train=False)`` equals the reference's eval-mode output on
``x_nhwc.transpose(0, 3, 1, 2)``. The per-architecture name maps live beside this file, one module
per family; they know names, not architecture (see :mod:`inception_jax.convert.core`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import errors, models
from inception_jax.convert import core
from inception_jax.convert.core import (ConversionError, KerasReader, TorchReader,
                                        WeightsFileError, assemble, flatten, load_state_dict,
                                        unflatten)
from inception_jax.registry import Registry

log = logging.getLogger('inception_jax.convert')

TORCH_SOURCES = ('torchvision', 'timm', 'pretrainedmodels', 'facenet', 'pytorch_fid',
                 'torch_fidelity')


@dataclasses.dataclass(frozen=True)
class Converter:
  fn: Callable[..., dict[str, Any]]
  # Scopes of the classifier layers (main and auxiliary): re-initialised when num_classes changes.
  heads: tuple[tuple[str, ...], ...]
  # Fixed create() options for this source (e.g. transform-free torchvision models).
  options: dict[str, Any]


# The converters of each model, in the module of its family (the one that defines the model under
# inception_jax.models); all are imported on first use (the errors name every conversion), so that
# importing this package stays light.
_MODULES = {name: f'inception_jax.convert.{family}'
            for name, family in models.registry.FAMILIES.items()}
_TORCH: Registry[dict[str, Converter]] = Registry('PyTorch converters of', modules=_MODULES)
_KERAS: Registry[Converter] = Registry('Keras converter of', modules=_MODULES)

# Below this share of a state dict's keys used by the conversion, the state dict is taken for
# another architecture's: the error then names the closest one instead of listing every key.
ANOTHER_ARCHITECTURE = 0.5


class UnsupportedError(errors.UserError, ValueError):
  """A model, source or option this package cannot convert."""


def torch_converter(model: str, sources: tuple[str, ...], *, heads: tuple[tuple[str, ...], ...],
                    **options: Any):
  """Register ``fn(reader: TorchReader, source: str) -> dict of create() options``.

  ``fn`` maps every tensor of the source's state dict with ``reader``; the options it returns
  describe what the state dict implies (``num_classes``, ``aux_logits``, ...).
  """
  def wrap(fn):
    for source in sources:
      if source not in TORCH_SOURCES:
        raise ValueError(f'unknown source {source!r}')
      by_source = _TORCH[model] if model in _TORCH else _TORCH.add(model, {})
      if source in by_source:
        raise ValueError(f'{source} converter of {model!r} registered twice')
      by_source[source] = Converter(fn, heads, options)
    return fn
  return wrap


def keras_converter(model: str, *, heads: tuple[tuple[str, ...], ...], **options: Any):
  """Register ``fn(reader: KerasReader) -> dict of create() options``."""
  def wrap(fn):
    _KERAS.add(model, Converter(fn, heads, options))
    return fn
  return wrap


def _load_converters() -> None:
  _TORCH.load_all()
  _KERAS.load_all()


def _torch_converters() -> list[tuple[str, str, Converter]]:
  """``(source, model, converter)`` of every PyTorch conversion, in the order registered."""
  return [(s, m, c) for m, by_source in _TORCH.items() for s, c in by_source.items()]


def supported() -> dict[str, list[str]]:
  """{source: [model names]} of every registered conversion."""
  _load_converters()
  out: dict[str, list[str]] = {}
  for source, model, _ in _torch_converters():
    out.setdefault(source, []).append(model)
  out['keras'] = list(_KERAS)
  return out


def from_torch(name: str, state_dict: Any, *, source: str, num_classes: int | None = None,
               drop_background: bool = False, **options: Any):
  """Convert a PyTorch reference's weights. Returns ``(module, variables)``.

  Args:
    name: our model name (``inception_v3``, ``googlenet``, ...).
    state_dict: the reference's ``state_dict()``, or a ``.pth``/``.bin``/``.safetensors`` path.
    source: 'torchvision', 'timm', 'pretrainedmodels', 'facenet', or for the FID network
      'pytorch_fid' / 'torch_fidelity'.
    num_classes: classes of the returned model; ``None`` keeps the checkpoint's, 0 drops the
      classifier(s) and returns pooled features, any other number re-initialises the
      classifier(s) (fine-tuning) and loads the body.
    drop_background: for 1001-class TF-origin checkpoints, drop class 0 (background).
    **options: further create() options (``dtype``, ``dropout_rate``, ...).
  """
  _load_converters()
  model = _model_name(name)
  if source not in TORCH_SOURCES:
    raise UnsupportedError(f'source must be one of {TORCH_SOURCES}, got {source!r}')
  conv = _TORCH[model].get(source) if model in _TORCH else None
  if conv is None:
    have = sorted(m for s, m, _ in _torch_converters() if s == source)
    raise UnsupportedError(f'no {source} converter for {model}; {source} converts: {have}')
  state = load_state_dict(state_dict)
  reader = TorchReader(state)
  try:
    implied = conv.fn(reader, source)
  except KeyError as err:  # a converter that reads a key the state dict lacks, such as fc
    reader.missing.append(str(err.args[0]) if err.args else '?')
    implied = None
  used, total = reader.match_count()
  if used < ANOTHER_ARCHITECTURE * total:
    raise ConversionError(f'cannot convert a {source} state dict to {model}: {used} of {total} '
                          f'keys match; {closest_architecture(state, source)}')
  if implied is None:
    raise ConversionError(f'cannot convert a {source} state dict to {model}: missing in the '
                          f'source: {", ".join(reader.missing)}')
  return _finish(model, reader, conv, implied, num_classes, drop_background,
                 {'conventions': 'torch', **conv.options, **options},
                 what=f'a {source} state dict to {model}')


def _model_name(name: str) -> str:
  try:
    return models.info(name).name
  except ValueError as err:
    raise UnsupportedError(str(err)) from None


def closest_architecture(state, source: str | None = None) -> str:
  """What the state dict looks like: the registered conversion that uses most of its keys (on a
  tie, one of ``source``), as a sentence with the flags that convert it."""
  _load_converters()
  best = None
  for src, model, conv in _torch_converters():
    reader = TorchReader(state)
    try:
      conv.fn(reader, src)
    except Exception:  # noqa: BLE001 - a converter meeting foreign keys: it matched too few
      pass
    used, total = reader.match_count()
    rank = (used, src == source)
    if best is None or rank > best[0]:
      best = (rank, src, model, used, total)
  if best is None or best[3] == 0:
    keys = sorted(state)[:3]
    return f'it matches none of the known architectures (its first keys: {", ".join(keys)})'
  _, src, model, used, total = best
  return (f'it looks like {model} ({used} of {total} keys match a {src} {model}): '
          f'--model {model} --source {src}')


def from_keras(name: str, model_or_path: Any, *, num_classes: int | None = None,
               drop_background: bool = False, **options: Any):
  """Convert a ``keras.applications`` model (or the path of its weights file).

  A path is loaded into the matching ``keras.applications`` constructor (this imports Keras and
  its backend); Keras' ``.weights.h5``/``.h5`` files hold arrays only, no code.
  """
  _load_converters()
  model = _model_name(name)
  conv = _KERAS[model] if model in _KERAS else None
  if conv is None:
    raise UnsupportedError(f'no Keras converter for {model}; Keras converts: {sorted(_KERAS)}')
  if isinstance(model_or_path, (str, os.PathLike)):
    model_or_path = _build_keras(model, os.fspath(model_or_path))
  reader = KerasReader.from_model(model_or_path)
  implied = conv.fn(reader)
  return _finish(model, reader, conv, implied, num_classes, drop_background,
                 {'conventions': 'tf', **conv.options, **options},
                 what=f'Keras {getattr(model_or_path, "name", "model")} to {model}')


KERAS_APPLICATIONS = {'inception_v3': 'InceptionV3', 'inception_resnet_v2': 'InceptionResNetV2',
                      'xception': 'Xception'}


def _build_keras(model: str, path: str):
  if not os.path.isfile(path):
    raise core.WeightsFileNotFoundError(f'{path}: no such Keras weights file')
  import keras
  ctor = getattr(keras.applications, KERAS_APPLICATIONS[model])
  try:
    try:
      return ctor(weights=path)
    except ValueError:  # a notop file
      return ctor(weights=path, include_top=False, pooling='avg')
  except (OSError, ValueError) as err:
    raise WeightsFileError(f'{path}: not a Keras weights file of {KERAS_APPLICATIONS[model]} '
                           f'({core._first_line(err)})') from None


def _finish(model, reader, conv: Converter, implied, num_classes, drop_background, options,
            *, what):
  source_classes = implied.pop('num_classes', 0)
  flat = reader.assigned

  def in_head(path):
    return any(path[1:1 + len(h)] == h for h in conv.heads)

  if drop_background:
    if source_classes != 1001:
      raise UnsupportedError(f'drop_background needs a 1001-class checkpoint; this one has '
                       f'{source_classes} classes')
    for path in [p for p in flat if in_head(p)]:
      flat[path] = flat[path][..., 1:]
    source_classes = 1000
  if num_classes is None:
    num_classes = source_classes
  module = models.create(model, num_classes=num_classes, **implied, **options)
  # Converters name every block of a run of identical blocks (their errors name the block); a
  # scanned model gets those stacked at the end (models.pyloop_to_scan).
  scanned = getattr(module, 'scan', False)
  if scanned:
    module = module.clone(scan=False)
  shapes = models.module_variable_shapes(module, models.info(model).input_size)
  shapes = {k: v for k, v in shapes.items() if k in ('params', 'batch_stats')}
  reinit: list[tuple[str, ...]] = []
  if num_classes != source_classes:
    dropped = sorted({'/'.join(p[1:-1]) for p in flat if in_head(p)})
    for path in [p for p in flat if in_head(p)]:
      del flat[path]
    reinit = [p for p in flatten(shapes) if in_head(p)]
    if num_classes == 0:
      log.warning('%s: classifier(s) %s dropped; the model returns pooled features', model,
                  dropped)
    else:
      log.warning('%s: classifier(s) %s re-initialised for %d classes (checkpoint has %d); the '
                  'body is loaded', model, dropped, num_classes, source_classes)
  variables = assemble(reader, shapes, what=what, allow_missing=reinit)
  if reinit:
    dummy = _dummy(model)
    # Under jit, XLA drops the forward pass: no parameter depends on it.
    init = jax.jit(functools.partial(module.init, train=False))
    # An RngBitGenerator key: XLA compiles its initialisers several times faster than threefry's.
    key = jax.random.wrap_key_data(jnp.zeros(4, jnp.uint32), impl='rbg')
    fresh = flatten(init({'params': key, 'dropout': key}, jnp.zeros(dummy.shape, dummy.dtype)))
    variables = flatten(variables)
    variables.update({p: np.asarray(fresh[p]) for p in reinit})
    variables = unflatten(variables)
  if scanned:
    module = module.clone(scan=True)
    variables = models.pyloop_to_scan(model, variables, **implied, **options)
  variables = jax.tree.map(jnp.asarray, variables)
  return module, variables


def _dummy(model):
  size = models.info(model).input_size
  return jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)


__all__ = ['ConversionError', 'UnsupportedError', 'WeightsFileError', 'closest_architecture',
           'from_keras', 'from_torch', 'keras_converter', 'load_state_dict', 'supported',
           'torch_converter']
