"""The one place that knows the numeric conventions of each weights' origin.

The Inception family was published in TensorFlow (TF-slim, Keras) and ported to PyTorch (torchvision,
timm, pretrainedmodels' Caffe port of BN-Inception, facenet-pytorch). The ports compute a slightly
different function from the TF originals; an exact port must reproduce whichever one the weights
were trained under (each row below was established by logit parity, tests/test_parity_*.py):

* padding of ops that TF-slim declares ``SAME``: TF/XLA pad asymmetrically (the extra pixel of a
  stride-2 op goes to the bottom/right); PyTorch pads ``(k - 1) // 2`` on both sides;
* max/avg pooling that torchvision's GoogLeNet and the Caffe BN-Inception run in ``ceil_mode``;
* average pooling that does (PyTorch's ``count_include_pad=True``) or does not (TF ``SAME``)
  count the padded zeros;
* BatchNorm epsilon and whether it has a scale (gamma) parameter;
* the batch variance BatchNorm's running average takes in training: biased (flax, Keras 3's
  ``ops.moments``) or unbiased, ``n / (n - 1)`` times it (PyTorch's ``BatchNorm2d``; TF1's fused
  batch norm, which TF-slim and the Cloud TPU trainers use);
* GoogLeNet's auxiliary heads: a fixed 5x5/3 average pool (paper, TF) or torchvision's adaptive
  pool to 4x4.

Models declare each op as TF-slim declares it (``'SAME'``/``'VALID'``) and ask a
:class:`Conventions` object how to realise it; nothing else in the code base knows these rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

PaddingSpec = str | int | Sequence[int]


@dataclasses.dataclass(frozen=True)
class Conventions:
  """Numeric conventions of one weights' origin. See the module docstring."""

  name: str
  # How an op declared 'SAME' is padded: 'tf' (XLA/TF SAME: pad total = needed, extra at the
  # end) or 'symmetric' (PyTorch: (k - 1) // 2 * dilation on both sides, floor rounding).
  padding: Literal['tf', 'symmetric'] = 'tf'
  # PyTorch/Caffe ceil_mode pooling: pools declared 'SAME' with stride > 1 are realised as
  # unpadded windows with the output size rounded up (torchvision GoogLeNet, Caffe BN-Inception).
  pool_ceil: bool = False
  # Whether average pooling divides by the full window (padding counted, PyTorch's default) or
  # by the number of real pixels in it (TF SAME, timm's count_include_pad=False).
  avg_pool_include_pad: bool = False
  bn_epsilon: float = 1e-3
  # BatchNorm gamma: TF-slim and Keras' conv2d_bn have none, PyTorch's BatchNorm2d has one.
  bn_scale: bool = False
  # flax momentum = decay of the running averages (TF-slim 0.9997; PyTorch momentum 0.1 -> 0.9).
  bn_momentum: float = 0.9997
  # The variance that enters the running average in training: 'biased' (flax's nn.BatchNorm,
  # Keras 3) or 'unbiased' (PyTorch; TF1's fused_batch_norm). Matters for small batches and
  # small feature maps (n = batch x height x width): 4 examples at 1x1 differ by 4/3.
  bn_running_var: Literal['biased', 'unbiased'] = 'biased'
  # GoogLeNet auxiliary heads: 'fixed' 5x5 stride-3 average pool, or torchvision's adaptive pool.
  aux_pool: Literal['fixed', 'adaptive'] = 'fixed'

  def replace(self, **changes: Any) -> 'Conventions':
    unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise ValueError(f'unknown convention field(s) {sorted(unknown)}; '
                       f'known: {[f.name for f in dataclasses.fields(self)]}')
    return dataclasses.replace(self, **changes)

  # ---------------------------------------------------------------- padding arithmetic

  def conv_padding(self, kernel: Sequence[int], strides: Sequence[int], padding: PaddingSpec,
                   dilation: Sequence[int] = (1, 1)) -> str | list[tuple[int, int]]:
    """Padding argument for ``flax.linen.Conv`` of an op declared with ``padding``.

    ``padding`` is 'SAME', 'VALID', an int (explicit symmetric padding in every convention) or a
    per-dimension sequence of ints.
    """
    if isinstance(padding, str):
      padding = padding.upper()
      if padding == 'VALID':
        return 'VALID'
      if padding != 'SAME':
        raise ValueError(f"padding must be 'SAME', 'VALID' or ints, got {padding!r}")
      if self.padding == 'tf':
        return 'SAME'
      return [((k - 1) * d // 2,) * 2 for k, d in zip(kernel, dilation)]
    return [(p, p) for p in _per_dim(padding, len(kernel))]

  def pool_padding(self, size: Sequence[int], window: Sequence[int], strides: Sequence[int],
                   padding: PaddingSpec) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Explicit (lo, hi) padding of a pooling op, and the part of it that is "real" padding.

    Returns ``(pads, counted)``: ``pads`` is what the window slides over; ``counted`` is the
    padding PyTorch counts in ``count_include_pad`` average pooling (its explicit padding, not
    the overhang that ceil mode adds at the end).
    """
    pads, counted = [], []
    if isinstance(padding, str) and padding.upper() == 'VALID':
      explicit = [0] * len(window)
      ceil = False
    elif isinstance(padding, str) and padding.upper() == 'SAME':
      if self.padding == 'tf' and not self.pool_ceil:
        for n, k, s in zip(size, window, strides):
          out = -(-n // s)
          total = max((out - 1) * s + k - n, 0)
          pads.append((total // 2, total - total // 2))
        return pads, pads
      if self.pool_ceil:
        # Caffe/torchvision GoogLeNet: stride-1 pools keep the size with symmetric padding,
        # strided pools are unpadded and round the output size up.
        explicit = [(k - 1) // 2 if s == 1 else 0 for k, s in zip(window, strides)]
        ceil = True
      else:
        explicit = [(k - 1) // 2 for k in window]
        ceil = False
    elif isinstance(padding, str):
      raise ValueError(f"padding must be 'SAME', 'VALID' or ints, got {padding!r}")
    else:
      explicit = _per_dim(padding, len(window))
      ceil = self.pool_ceil
    for n, k, s, p in zip(size, window, strides, explicit):
      out = _torch_pool_out(n, k, s, p, ceil)
      hi = max((out - 1) * s + k - n - p, 0)
      pads.append((p, hi))
      counted.append((p, min(p, hi)))
    return pads, counted


def _per_dim(value: int | Sequence[int], n: int) -> list[int]:
  if isinstance(value, int):
    return [value] * n
  value = list(value)
  if len(value) != n:
    raise ValueError(f'expected {n} padding values, got {value}')
  return value


def _torch_pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
  """Output size of PyTorch's pooling (aten pooling_output_shape)."""
  num = n + 2 * p - k
  out = (-(-num // s) if ceil else num // s) + 1
  if ceil and (out - 1) * s >= n + p:
    out -= 1  # the last window must start inside the input or its left padding
  if out < 1:
    raise ValueError(f'pooling window {k} does not fit an input of size {n}')
  return out


TF = Conventions(name='tf')
TORCH = Conventions(name='torch', padding='symmetric', avg_pool_include_pad=True, bn_scale=True,
                    bn_momentum=0.9, bn_running_var='unbiased')

_BASE = {'tf': TF, 'torch': TORCH}

# What a model's references do differently from the base convention of their origin. Each row
# was established by logit parity with the reference named beside it (tests/test_parity_*.py).
_MODEL_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    # torchvision GoogLeNet: ceil_mode max pools, adaptive 4x4 pool in the aux heads.
    ('inception_v1', 'torch'): dict(pool_ceil=True, aux_pool='adaptive'),
    # pretrainedmodels bninception (Caffe): ceil_mode pools, PyTorch's BatchNorm epsilon.
    ('inception_v2', 'torch'): dict(pool_ceil=True, bn_epsilon=1e-5),
    # timm inception_v4 (Cadene's port of TF-slim): its 3x3/1 average pools pass
    # count_include_pad=False, i.e. divide by the real pixels as TF's SAME pooling does.
    ('inception_v4', 'torch'): dict(avg_pool_include_pad=False),
    # timm inception_resnet_v2 (the same port): Mixed_5b's 3x3/1 average pool passes
    # count_include_pad=False. (facenet's inception_resnet_v1 has no such pool.)
    ('inception_resnet_v2', 'torch'): dict(avg_pool_include_pad=False),
    # Keras Xception's BatchNorm keeps its scale; timm legacy_xception uses PyTorch's epsilon.
    ('xception', 'tf'): dict(bn_scale=True),
    # The FID graph (TF inception-2015-12-05) has BN with a scale; its PyTorch ports (pytorch-fid's
    # FIDInception* blocks, torch-fidelity) pass count_include_pad=False as TF SAME pools do.
    ('inception_v3_fid', 'tf'): dict(bn_scale=True),
    ('inception_v3_fid', 'torch'): dict(avg_pool_include_pad=False),
    ('xception', 'torch'): dict(bn_epsilon=1e-5),
}


def resolve(model: str, conventions: 'str | Conventions', **overrides: Any) -> Conventions:
  """The conventions ``model`` uses under the origin ``conventions`` ('tf' or 'torch').

  A :class:`Conventions` instance is taken as it is. ``overrides`` (e.g. ``bn_momentum=0.99``)
  replace single fields.
  """
  if isinstance(conventions, Conventions):
    return conventions.replace(**overrides) if overrides else conventions
  if conventions not in _BASE:
    raise ValueError(f"conventions must be one of {sorted(_BASE)} or a Conventions, "
                     f"got {conventions!r}")
  base = _BASE[conventions].replace(**_MODEL_OVERRIDES.get((model, conventions), {}))
  return base.replace(**overrides) if overrides else base


def field_names() -> set[str]:
  return {f.name for f in dataclasses.fields(Conventions)} - {'name'}
