"""Name -> architecture registry: ``create(name, **options)`` and the facts listed per model."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from inception_jax.models import conventions
from inception_jax.registry import Registry


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


# Which module of inception_jax.models defines each architecture, in publication order; its
# weight converters live in the module of the same name under inception_jax.convert. Modules are
# imported on first use of one of their names, so using one model loads only its family.
FAMILIES = {
    'inception_v1': 'inception_v1',
    'inception_v2': 'inception_v2',
    'inception_v3': 'inception_v3',
    'inception_v3_fid': 'inception_v3_fid',
    'inception_v4': 'inception_v4',
    'inception_resnet_v1': 'inception_resnet',
    'inception_resnet_v2': 'inception_resnet',
    'xception': 'xception',
}

_MODELS: Registry[ModelInfo] = Registry(
    'model name', modules={name: f'inception_jax.models.{family}'
                           for name, family in FAMILIES.items()},
    # Aliases, known before their module is imported.
    aliases={
        'googlenet': 'inception_v1',
        'bn_inception': 'inception_v2',
        'bninception': 'inception_v2',
        'inception_resnet': 'inception_resnet_v2',
    })


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
    _MODELS.add(name, ModelInfo(name, cls, paper, input_size, aliases, dict(defaults)), aliases)
    return cls
  return wrap


def info(name: str) -> ModelInfo:
  """Registry entry of ``name`` or one of its aliases."""
  return _MODELS.lookup(name.lower().replace('-', '_'), lambda: ValueError(
      f'unknown model {name!r}; known models: {", ".join(list_models())} '
      f'(aliases: {", ".join(_MODELS.aliases())})'))


def list_models() -> list[str]:
  """Canonical model names, in publication order."""
  _MODELS.load_all()
  return [n for n in _MODELS.names() if n in _MODELS]


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
