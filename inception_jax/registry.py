"""Name -> entry registries: the models, datasets, weight converters and preprocessing ops.

The modules that define the entries register them. The names built into the package are known
before their modules are imported, each with the module that registers it, so that looking up
one name imports only its module and that module's dependencies (TensorFlow for a TFDS dataset,
say): importing the package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Hashable, ItemsView, Iterable, Iterator, Mapping, TypeVar

T = TypeVar('T')


class Registry(Generic[T]):
  """``name -> entry``; a name (or alias) registered twice is refused.

  Args:
    what: what a name names, for the error on a name registered twice (``'dataset'``).
    modules: built-in name -> the module that registers it, imported on the first lookup of the
      name (or by :meth:`load_all`); :meth:`names` lists them in this order.
    aliases: alias -> name, known before the name's module is imported.
  """

  def __init__(self, what: str, modules: Mapping[Hashable, str] | None = None,
               aliases: Mapping[Hashable, Hashable] | None = None):
    self.what = what
    self.modules = dict(modules or {})
    self._static_aliases = dict(aliases or {})
    self._entries: dict[Hashable, T] = {}
    self._aliases: dict[Hashable, Hashable] = {}

  def add(self, name: Hashable, entry: T, aliases: Iterable[Hashable] = ()) -> T:
    """Registers ``entry`` under ``name`` and ``aliases``; a ValueError if one is taken."""
    aliases = tuple(aliases)
    for key in (name, *aliases):
      if key in self._entries or key in self._aliases:
        raise ValueError(f'{self.what} {key!r} registered twice')
    self._entries[name] = entry
    self._aliases.update({a: name for a in aliases})
    return entry

  def __contains__(self, name: Any) -> bool:
    """Registered (a built-in name counts once its module is imported)."""
    return name in self._entries

  def __getitem__(self, name: Hashable) -> T:
    """The registered entry of ``name``; no alias, no import."""
    return self._entries[name]

  def __iter__(self) -> Iterator[Hashable]:
    """The registered names, in the order registered."""
    return iter(self._entries)

  def items(self) -> ItemsView[Hashable, T]:
    return self._entries.items()

  def known(self, name: Hashable) -> bool:
    """Registered or built in (its module possibly not imported yet)."""
    return name in self._entries or name in self.modules

  def names(self) -> list[Hashable]:
    """The built-in names, in the order of ``modules``, then the other registered names."""
    return [*self.modules, *(n for n in self._entries if n not in self.modules)]

  def aliases(self) -> list[Hashable]:
    """Every alias, sorted."""
    return sorted({**self._static_aliases, **self._aliases})

  def resolve(self, name: Hashable) -> Hashable:
    """The name ``name`` is an alias of, or ``name``."""
    return self._static_aliases.get(name, self._aliases.get(name, name))

  def load(self, name: Hashable) -> None:
    """Imports the module of the built-in ``name`` unless it is registered already."""
    if name in self.modules and name not in self._entries:
      importlib.import_module(self.modules[name])

  def load_all(self) -> None:
    """Imports the modules of every built-in name."""
    for name in self.modules:
      self.load(name)

  def lookup(self, name: Hashable, unknown: Callable[[], Exception]) -> T:
    """The entry of ``name`` or its alias, its module imported first; raises ``unknown()`` when
    nothing is registered under it."""
    key = self.resolve(name)
    self.load(key)
    if key not in self._entries:
      raise unknown()
    return self._entries[key]
