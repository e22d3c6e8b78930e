"""Name -> architecture registry: ``create(name, **options)`` and the facts listed per model."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import flax.linen as nn

from inception_jax.models import conventions


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  name: str
  cls: type[nn.Module]
  paper: str
  input_size: int
  aliases: tuple[str, ...] = ()
  defaults: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def min_size(self) -> int:
    return self.cls.min_size

  @property
  def default_conventions(self) -> str:
    """The origin ('tf' or 'torch') of the class's own ``conventions`` default: the one place a
    model's default conventions are written, so ``create(name)`` and the bare class agree."""
    return self.cls.__dataclass_fields__['conventions'].default.name


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}

# Which module of inception_jax.models defines each architecture, in publication order. Modules
# are imported on first use of one of their names, so using one model loads only its family.
_MODULES = {
    'inception_v1': 'inception_v1',
    'inception_v2': 'inception_v2',
    'inception_v3': 'inception_v3',
    'inception_v3_fid': 'inception_v3_fid',
    'inception_v4': 'inception_v4',
    'inception_resnet_v1': 'inception_resnet',
    'inception_resnet_v2': 'inception_resnet',
    'xception': 'xception',
}
# Aliases, known before their module is imported.
_STATIC_ALIASES = {
    'googlenet': 'inception_v1',
    'bn_inception': 'inception_v2',
    'bninception': 'inception_v2',
    'inception_resnet': 'inception_resnet_v2',
}


def _import(name: str) -> None:
  if name in _MODULES and name not in _REGISTRY:
    importlib.import_module(f'inception_jax.models.{_MODULES[name]}')


def register(name: str, *, paper: str, input_size: int, aliases: tuple[str, ...] = (),
             **defaults: Any) -> Callable[[type], type]:
  """Class decorator: make ``cls`` available as ``create(name)`` (and under ``aliases``).

  ``defaults`` are constructor options this name implies (e.g. ``variant='paper'``), so one
  class can be registered under several names.
  """
  def wrap(cls: type[nn.Module]) -> type[nn.Module]:
    if not isinstance(getattr(cls, 'min_size', None), int):
      raise TypeError(f'{cls.__name__} must define an int class attribute min_size')
    if 'cpu_convolutions' not in cls.__dataclass_fields__:  # the entry points pass it to all
      raise TypeError(f'{cls.__name__} must have a cpu_convolutions field (see layers)')
    default = getattr(cls.__dataclass_fields__.get('conventions'), 'default', None)
    if (not isinstance(default, conventions.Conventions)
        or default != conventions.resolve(name, default.name)):
      raise TypeError(f'{cls.__name__}.conventions must default to '
                      f'conventions.resolve({name!r}, origin), got {default!r}')
    for key in (name, *aliases):
      if key in _REGISTRY or key in _ALIASES:
        raise ValueError(f'model name {key!r} registered twice')
    _REGISTRY[name] = ModelInfo(name, cls, paper, input_size, aliases,
                                dict(defaults))
    _ALIASES.update({a: name for a in aliases})
    return cls
  return wrap


def info(name: str) -> ModelInfo:
  """Registry entry of ``name`` or one of its aliases."""
  key = name.lower().replace('-', '_')
  key = _STATIC_ALIASES.get(key, _ALIASES.get(key, key))
  _import(key)
  if key not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known models: {", ".join(list_models())} '
                     f'(aliases: {", ".join(sorted({**_STATIC_ALIASES, **_ALIASES}))})')
  return _REGISTRY[key]


def list_models() -> list[str]:
  """Canonical model names, in publication order."""
  for name in _MODULES:
    _import(name)
  return [n for n in _MODULES if n in _REGISTRY] + [n for n in _REGISTRY if n not in _MODULES]


def create(name: str, *, num_classes: int | None = None, **options: Any) -> nn.Module:
  """Build the flax module of a registered architecture.

  Args:
    name: a name of :func:`list_models` or an alias (``googlenet``, ``bn_inception``, ...).
    num_classes: size of the classifier; 0 removes it (and any auxiliary heads), and the model
      returns its pooled pre-logits features. Default: the name's (1000; the FID network 1008).
    **options: module fields (``dropout_rate``, ``dtype``, ``aux_logits``, ``variant``,
      ``cpu_convolutions``: the library XLA:CPU runs the process' convolutions with, ...);
      ``conventions`` ('tf', 'torch' or a :class:`Conventions`), and any single field of
      :class:`Conventions` (e.g. ``bn_momentum=0.99``) to override it.
  """
  entry = info(name)
  options = {**entry.defaults, **options}
  default_classes = options.pop('num_classes', 1000)
  num_classes = default_classes if num_classes is None else num_classes
  if num_classes < 0:
    raise ValueError(f'num_classes must be >= 0, got {num_classes}')
  origin = options.pop('conventions', entry.default_conventions)
  overrides = {k: options.pop(k) for k in list(options) if k in conventions.field_names()}
  options['conventions'] = conventions.resolve(entry.name, origin, **overrides)
  fields = {f.name for f in dataclasses.fields(entry.cls)} - {'parent', 'name'}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise TypeError(f'{entry.name} has no option(s) {unknown}; options: '
                    f'{sorted(fields - {"num_classes"})} and the Conventions fields '
                    f'{sorted(conventions.field_names())}')
  return entry.cls(num_classes=num_classes, **options)
