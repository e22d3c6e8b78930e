"""Runs of identical blocks, declared once and run unrolled or with ``nn.scan``.

XLA compiles every copy of an unrolled block; scanned, a run of n blocks is compiled once, its
variables stacked on a leading axis of length n (big_vision ``models/vit.py`` does the same for
its encoder). A :class:`Run` names both layouts, so the model and :func:`pyloop_to_scan` /
:func:`scan_to_pyloop` derive them from one table.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

from flax import traverse_util
import flax.linen as nn
import jax
import numpy as np

Path = tuple[str, ...]


class Run(NamedTuple):
  """``blocks`` (unrolled names, in order) or ``scanned`` (one stacked module), under ``scope``."""
  scope: Path
  scanned: str
  blocks: tuple[str, ...]

  @property
  def scanned_path(self) -> Path:
    return (*self.scope, self.scanned)

  @property
  def block_paths(self) -> tuple[Path, ...]:
    return tuple((*self.scope, b) for b in self.blocks)


def run_blocks(make: Callable[..., nn.Module], run: Run, x: Any, train: bool, *, scan: bool,
               remat: bool = False, each: Callable[[str, Any], Any] | None = None) -> Any:
  """Apply the blocks ``make(name=...)`` of ``run`` to ``x`` inside the calling compact module
  (whose path ends with ``run.scope``). A block maps ``(x, train)`` to an ``x`` of the same shape.
  ``remat`` recomputes each block's activations in the backward pass instead of storing them;
  unrolled, ``each(name, x)`` sees every block's output (for per-block end points)."""
  def apply(block, carry):
    return block(carry, train)

  if remat:  # prevent_cse=False is safe, and faster, inside a scan (flax's remat docs)
    apply = nn.remat(apply, prevent_cse=not scan)
  if not scan:
    for name in run.blocks:
      x = apply(make(name=name), x)
      if each is not None:
        x = each(name, x)
    return x
  scanned = nn.scan(lambda block, carry, _: (apply(block, carry), None),
                    variable_axes={'params': 0, 'batch_stats': 0},
                    split_rngs={'params': True, 'dropout': True}, length=len(run.blocks))
  x, _ = scanned(make(name=run.scanned), x, None)
  return x


# ------------------------------------------------------------------------------ layouts

def pyloop_to_scan(variables: Mapping[str, Any], runs: Sequence[Run]) -> dict[str, Any]:
  """Unrolled variables -> scanned: each run's blocks stacked on a new leading axis.

  Also reads checkpoints written before the branches were nested (module names holding a slash,
  ``'Repeat/block35_1'``, ``'Branch_1/Conv2d_0a_1x1'``): those keys are split first.
  Works on any dict of collections (``params``, ``batch_stats``, or an optimizer's per-parameter
  trees passed as ``{'params': tree}``).
  """
  out = {}
  for collection, tree in variables.items():
    flat = _leaves(tree)
    for run in runs if flat is not None else ():
      found = [_subtree(flat, p) for p in run.block_paths]
      if all(f is None for f in found):
        continue
      if any(f is None for f in found):
        missing = [('/'.join(p)) for p, f in zip(run.block_paths, found) if f is None]
        raise ValueError(f'{collection}: the run {"/".join(run.scanned_path)} needs all of its '
                         f'{len(found)} blocks; missing {missing}')
      for p in run.block_paths:
        _drop(flat, p)
      _put(flat, run.scanned_path, jax.tree.map(lambda *xs: np.stack(xs), *found))
    out[collection] = tree if flat is None else traverse_util.unflatten_dict(flat)
  return out


def scan_to_pyloop(variables: Mapping[str, Any], runs: Sequence[Run]) -> dict[str, Any]:
  """Scanned variables -> unrolled: each run's stacked module split into its named blocks."""
  out = {}
  for collection, tree in variables.items():
    flat = _leaves(tree)
    for run in runs if flat is not None else ():
      stacked = _subtree(flat, run.scanned_path)
      if stacked is None:
        continue
      lengths = {int(np.shape(x)[0]) for x in jax.tree.leaves(stacked)}
      if lengths != {len(run.blocks)}:
        raise ValueError(f'{collection}/{"/".join(run.scanned_path)}: leading axes {lengths}, '
                         f'the run has {len(run.blocks)} blocks')
      _drop(flat, run.scanned_path)
      for i, p in enumerate(run.block_paths):
        _put(flat, p, jax.tree.map(lambda x, i=i: x[i], stacked))
    out[collection] = tree if flat is None else traverse_util.unflatten_dict(flat)
  return out


# Paths into a variable tree go through its flat form, {path: leaf} (flax.traverse_util), with
# empty dicts kept as traverse_util.empty_node.

def _leaves(tree: Any) -> dict[Path, Any] | None:
  """``tree``'s leaves by path, keys holding '/' split into their parts; None if not a dict."""
  if not isinstance(tree, Mapping):
    return None
  flat = traverse_util.flatten_dict(dict(tree), keep_empty_nodes=True)
  return {tuple(part for key in path for part in str(key).split('/')): leaf
          for path, leaf in flat.items()}


def _subtree(flat: dict[Path, Any], path: Path) -> dict[str, Any] | None:
  """The tree below ``path``, or None if nothing is."""
  n = len(path)
  below = {k[n:]: v for k, v in flat.items() if len(k) > n and k[:n] == path}
  return traverse_util.unflatten_dict(below) if below else None


def _drop(flat: dict[Path, Any], path: Path) -> None:
  """Removes the tree below ``path`` (scopes it empties go with it)."""
  for k in [k for k in flat if k[:len(path)] == path]:
    del flat[k]


def _put(flat: dict[Path, Any], path: Path, tree: dict[str, Any]) -> None:
  """Puts ``tree`` at ``path``, in place of what was there."""
  _drop(flat, path)
  flat.update({(*path, *k): v
               for k, v in traverse_util.flatten_dict(tree, keep_empty_nodes=True).items()})
