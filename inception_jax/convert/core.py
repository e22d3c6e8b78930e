"""Name-mapping machinery shared by every converter.

A converter for one (source, architecture) pair is a function that walks the reference's tensor
names with a :class:`TorchReader` or :class:`KerasReader` and says where each tensor goes in the
flax variable tree. It knows names, not architecture: shapes and completeness are checked here,
against the variables the flax module itself declares, and every problem is reported at once.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

# A variable tree <-> {path: leaf}, each path the tuple of keys down to its leaf.
from flax.traverse_util import flatten_dict as flatten, unflatten_dict as unflatten
import numpy as np

from inception_jax import errors

Path = tuple[str, ...]

# PyTorch bookkeeping that has no counterpart in a flax variable tree.
_IGNORED_SUFFIXES = ('num_batches_tracked',)


class ConversionError(errors.UserError, ValueError):
  """A state dict that does not fit the architecture; the message lists every offending key, or,
  for the weights of another architecture, says how many keys match and what they look like."""


class WeightsFileError(errors.UserError, ValueError):
  """A weights file that is missing, not a weights file, or holds pickled objects rather than a
  state dict."""


class WeightsFileNotFoundError(WeightsFileError, FileNotFoundError):
  """No file at the given path."""


# ------------------------------------------------------------------------------- loading

def load_state_dict(obj: Any) -> dict[str, np.ndarray]:
  """A torch ``state_dict()`` (tensors or arrays) or a file path -> ``{name: float32 array}``.

  ``.safetensors`` files are read with ``safetensors.numpy`` (no torch needed); ``.pth``/``.bin``/
  ``.pt`` files with ``torch.load(weights_only=True)``, which refuses to run pickled code. A
  file that is missing, unreadable, or holds a pickled whole model raises
  :class:`WeightsFileError` with the one thing to do about it.
  """
  if isinstance(obj, (str, os.PathLike)):
    path = os.fspath(obj)
    if not os.path.isfile(path):
      raise WeightsFileNotFoundError(f'{path}: no such weights file')
    if path.endswith('.safetensors'):
      from safetensors.numpy import load_file
      try:
        obj = load_file(path)
      except Exception as err:  # noqa: BLE001 - safetensors' own error types vary by version
        raise WeightsFileError(f'{path}: not a readable safetensors file ({_first_line(err)})'
                               ) from None
    elif path.endswith(('.pth', '.pt', '.bin', '.ckpt')):
      obj = _torch_load(path)
      for key in ('state_dict', 'model', 'model_state_dict'):  # common training-loop wrappers
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
          obj = obj[key]
    else:
      raise WeightsFileError(f'{path}: unknown weights format; expected .safetensors, .pth, '
                             '.pt, .bin or .ckpt')
    if not isinstance(obj, Mapping):
      raise WeightsFileError(
          f'{path} holds a {type(obj).__name__}, not a state dict; save the model\'s weights: '
          'torch.save(model.state_dict(), PATH) or safetensors.torch.save_file(...)')
  if not isinstance(obj, Mapping):
    raise TypeError(f'expected a state dict (a mapping of names to tensors), got {type(obj)}')
  out = {}
  for name, value in obj.items():
    if hasattr(value, 'detach'):  # a torch tensor
      value = value.detach().cpu().float().numpy() if value.is_floating_point() \
          else value.detach().cpu().numpy()
    out[str(name)] = np.asarray(value)
  return out


def _first_line(err: BaseException) -> str:
  return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _torch_load(path: str):
  import pickle

  import torch
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as err:
    found = re.search(r'(?i)unsupported(?: global:)? GLOBAL ([\w.]+)', str(err))
    if found:  # pickled objects, such as a whole model: loading them would run their code
      raise WeightsFileError(
          f'{path} holds a pickled {found.group(1)} (a whole model saved with '
          'torch.save(model)?), not a state dict; loading it would run its code. Save its '
          'weights instead: torch.save(model.state_dict(), PATH) or '
          'safetensors.torch.save_file(model.state_dict(), PATH)') from None
    raise WeightsFileError(f'{path}: not a PyTorch weights file (torch.load with '
                           'weights_only=True cannot read it)') from None
  except (RuntimeError, EOFError, OSError, ValueError) as err:
    raise WeightsFileError(f'{path}: not a PyTorch weights file ({_first_line(err)})') from None


# ------------------------------------------------------------------------------- readers

class _Reader:
  """Collects ``{flax path: array}`` assignments and remembers which source keys were used."""

  def __init__(self) -> None:
    self.assigned: dict[Path, np.ndarray] = {}
    self.errors: list[str] = []

  def put(self, path: Path, value: np.ndarray) -> None:
    if path in self.assigned:
      self.errors.append(f'{"/".join(path)} assigned twice')
    self.assigned[path] = np.asarray(value, np.float32)

  # ConvBN of inception_jax.models.layers: params/<scope>/conv/kernel, bn/{scale,bias},
  # batch_stats/<scope>/bn/{mean,var}.
  def _bn(self, scope: Path, gamma, beta, mean, var) -> None:
    if gamma is not None:
      self.put(('params', *scope, 'bn', 'scale'), gamma)
    self.put(('params', *scope, 'bn', 'bias'), beta)
    self.put(('batch_stats', *scope, 'bn', 'mean'), mean)
    self.put(('batch_stats', *scope, 'bn', 'var'), var)


class TorchReader(_Reader):
  """Reads a PyTorch state dict: OIHW conv kernels, (out, in) linear weights."""

  def __init__(self, state: Mapping[str, np.ndarray]):
    super().__init__()
    self.state = dict(state)
    self.used: set[str] = set()
    self.missing: list[str] = []

  def has(self, key: str) -> bool:
    return key in self.state

  def take(self, key: str) -> np.ndarray | None:
    if key not in self.state:
      self.missing.append(key)
      return None
    self.used.add(key)
    return self.state[key]

  def conv_kernel(self, key: str, path: Path) -> None:
    """``key`` (O, I, kh, kw) -> ``path`` (kh, kw, I, O); depthwise (C, 1, kh, kw) included."""
    w = self.take(key)
    if w is not None:
      self.put(path, np.transpose(w, (2, 3, 1, 0)))

  def vector(self, key: str, path: Path) -> None:
    v = self.take(key)
    if v is not None:
      self.put(path, v)

  def batch_norm(self, prefix: str, scope: Path, *, scale: bool = True) -> None:
    """``prefix.{weight,bias,running_mean,running_var}`` -> the BN of the ConvBN at ``scope``."""
    vals = [self.take(f'{prefix}.{k}') if (k != 'weight' or scale) else None
            for k in ('weight', 'bias', 'running_mean', 'running_var')]
    if all(v is not None for v in vals[1:]):
      self._bn(scope, *vals)

  def conv_bn(self, conv: str, bn: str, scope: Path) -> None:
    """A conv without bias followed by BatchNorm2d (torchvision's BasicConv2d)."""
    self.conv_kernel(f'{conv}.weight', ('params', *scope, 'conv', 'kernel'))
    self.batch_norm(bn, scope)

  def conv_bias(self, conv: str, scope: Path) -> None:
    """A conv with bias and no BatchNorm."""
    self.conv_kernel(f'{conv}.weight', ('params', *scope, 'conv', 'kernel'))
    self.vector(f'{conv}.bias', ('params', *scope, 'conv', 'bias'))

  def linear(self, prefix: str, scope: Path) -> None:
    w = self.take(f'{prefix}.weight')
    if w is not None:
      self.put(('params', *scope, 'kernel'), w.T)
    self.vector(f'{prefix}.bias', ('params', *scope, 'bias'))

  def unused(self) -> list[str]:
    return sorted(k for k in self.state
                  if k not in self.used and not k.endswith(_IGNORED_SUFFIXES))

  def match_count(self) -> tuple[int, int]:
    """``(keys used, keys that a conversion must use)`` of the state dict."""
    total = sum(1 for k in self.state if not k.endswith(_IGNORED_SUFFIXES))
    return len(self.used), total


class KerasReader(_Reader):
  """Reads the layers of a ``keras.applications`` model by name.

  Keras names the layers it is not given names for with per-class counters (``conv2d``,
  ``conv2d_1``, ...) that follow construction order, while ``model.layers`` lists layers in graph
  order, which interleaves the parallel branches of an Inception block. :meth:`auto_named` gives
  such layers in construction order; converters pair them with our modules in that order.
  """

  def __init__(self, layers: Iterable[tuple[str, str, list[np.ndarray]]]):
    """``layers``: (name, class name, weights) of every layer that has weights."""
    super().__init__()
    self.layers = [(n, c, [np.asarray(w) for w in ws]) for n, c, ws in layers]
    self.used: set[str] = set()
    self.missing: list[str] = []

  @classmethod
  def from_model(cls, model: Any) -> 'KerasReader':
    return cls((l.name, type(l).__name__, l.get_weights()) for l in _flat_layers(model)
               if l.get_weights())

  def names(self, kind: str | None = None) -> list[str]:
    return [n for n, k, _ in self.layers if kind is None or k == kind]

  def auto_named(self, kind: str, prefix: str) -> list[str]:
    """Names ``prefix``, ``prefix_1``, ``prefix_2``, ... of ``kind`` layers, in counter order."""
    found = []
    for name in self.names(kind):
      m = re.fullmatch(re.escape(prefix) + r'(?:_(\d+))?', name)
      if m:
        found.append((int(m.group(1) or 0), name))
    return [name for _, name in sorted(found)]

  def get(self, name: str) -> list[np.ndarray] | None:
    for n, _, weights in self.layers:
      if n == name:
        self.used.add(name)
        return weights
    self.missing.append(name)
    return None

  def conv(self, name: str, scope: Path) -> None:
    """Conv2D ``name`` (HWIO kernel[, bias]) -> ``scope/conv``."""
    got = self.get(name)
    if got is not None:
      self.put(('params', *scope, 'conv', 'kernel'), got[0])
      if len(got) > 1:
        self.put(('params', *scope, 'conv', 'bias'), got[1])

  def bn(self, name: str, scope: Path) -> None:
    """BatchNormalization ``name`` ([gamma,] beta, moving mean, moving var) -> ``scope/bn``."""
    got = self.get(name)
    if got is None:
      return
    if len(got) not in (3, 4):
      self.errors.append(f'{name}: expected [gamma,] beta, mean and variance, got {len(got)} '
                         'arrays')
      return
    gamma = got[0] if len(got) == 4 else None
    self._bn(scope, gamma, *got[-3:])

  def conv_bn(self, conv: str, bn: str, scope: Path) -> None:
    self.conv(conv, scope)
    self.bn(bn, scope)

  def dense(self, name: str, scope: Path) -> int:
    """Dense ``name`` -> ``scope``; returns its number of outputs (0 when absent)."""
    if name not in self.names('Dense'):
      return 0
    kernel, bias = self.get(name)
    self.put(('params', *scope, 'kernel'), kernel)
    self.put(('params', *scope, 'bias'), bias)
    return int(kernel.shape[-1])

  def unused(self) -> list[str]:
    return [n for n, _, _ in self.layers if n not in self.used]


def _flat_layers(model: Any) -> list[Any]:
  out = []
  for layer in model.layers:
    if hasattr(layer, 'layers') and layer.layers:  # a nested Functional/Sequential
      out.extend(_flat_layers(layer))
    else:
      out.append(layer)
  return out


# ------------------------------------------------------------------------------ assembly

def assemble(reader: '_Reader', expected: Mapping[str, Any], *, what: str,
             allow_missing: Iterable[Path] = ()) -> dict[str, Any]:
  """Check ``reader``'s assignments against the module's own variable shapes.

  ``expected`` is ``jax.eval_shape(module.init, ...)``. ``allow_missing`` are variables the caller
  fills itself (a re-initialised head). Raises one :class:`ConversionError` naming every missing,
  unexpected and mis-shaped tensor.
  """
  want = {p: tuple(v.shape) for p, v in flatten(expected).items()}
  allow = set(allow_missing)
  problems = list(reader.errors)
  if reader.missing:
    problems.append('missing in the source: ' + ', '.join(reader.missing))
  unused = reader.unused()
  if unused:
    problems.append('unexpected in the source (not used by the conversion): ' + ', '.join(unused))
  not_filled = sorted('/'.join(p) for p in want if p not in reader.assigned and p not in allow)
  if not_filled and not reader.missing:
    problems.append('model variables the source does not provide: ' + ', '.join(not_filled))
  for path, value in reader.assigned.items():
    if path not in want:
      problems.append(f'{"/".join(path)} has no place in the model')
    elif tuple(value.shape) != want[path]:
      problems.append(f'{"/".join(path)}: source shape {tuple(value.shape)}, model expects '
                      f'{want[path]}')
  if problems:
    raise ConversionError(f'cannot convert {what}:\n  ' + '\n  '.join(problems))
  return unflatten(reader.assigned)
