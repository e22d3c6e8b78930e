"""Xception weights: timm ``legacy_xception`` and ``keras.applications.Xception``.

Our scopes are the model's (``STEM``, ``BLOCKS``, ``EXIT``, Keras' names). timm numbers its
residual blocks from 1 where Keras counts the stem as block1 (timm's ``blockN`` is our
``block{N+1}``); its ``conv3``/``conv4`` are block14's separable convs.
"""

from __future__ import annotations

import numpy as np

from inception_jax.convert import keras_converter, torch_converter
from inception_jax.convert.core import KerasReader, TorchReader
from inception_jax.models import xception
from inception_jax.models.repeat import Run

_HEADS = (('Logits',),)


def _blocks():
  """(our block name, its Block) of every residual block, unrolled, in order."""
  for name, spec in xception.BLOCKS:
    for block in (name.blocks if isinstance(name, Run) else (name,)):
      yield block, spec


@torch_converter('xception', sources=('timm',), heads=_HEADS)
def timm_xception(r: TorchReader, source: str) -> dict:
  """timm ``legacy_xception`` (Cadene's port of the Keras weights)."""
  for i, op in enumerate(xception.STEM, start=1):
    r.conv_bn(f'conv{i}', f'bn{i}', (op.name,))
  for n, (scope, spec) in enumerate(_blocks(), start=1):
    if spec.shortcut is not None:
      r.conv_bn(f'block{n}.skip', f'block{n}.skipbn', (scope, spec.shortcut.name))
    # block.rep is a Sequential of [ReLU,] SeparableConv2d, BatchNorm2d per separable conv
    # (ReLU where ours has one), then the max pool.
    index = 0
    for op in spec.ops:
      if isinstance(op, xception.SepConv):
        index += op.relu
        _torch_separable(r, f'block{n}.rep.{index}', f'block{n}.rep.{index + 1}', (scope, op.name))
        index += 2
  for i, op in enumerate(xception.EXIT, start=len(xception.STEM) + 1):
    _torch_separable(r, f'conv{i}', f'bn{i}', (op.name,))

  if not r.has('fc.weight'):
    return {'num_classes': 0}
  r.linear('fc', ('Logits',))
  return {'num_classes': int(r.state['fc.weight'].shape[0])}


def _torch_separable(r: TorchReader, conv: str, bn: str, scope: tuple[str, ...]) -> None:
  r.conv_kernel(f'{conv}.conv1.weight', ('params', *scope, 'depthwise', 'conv', 'kernel'))
  r.conv_kernel(f'{conv}.pointwise.weight', ('params', *scope, 'pointwise', 'conv', 'kernel'))
  r.batch_norm(bn, scope)


def _keras_separable(r: KerasReader, name: str, scope: tuple[str, ...]) -> None:
  got = r.get(name)
  if got is None:
    return
  depthwise, pointwise, *bias = got
  kh, kw, c, mult = depthwise.shape
  # Keras' depthwise kernel is (h, w, in, multiplier); flax's grouped conv wants (h, w, 1, in).
  r.put(('params', *scope, 'depthwise', 'conv', 'kernel'),
        np.reshape(depthwise, (kh, kw, 1, c * mult)))
  r.put(('params', *scope, 'pointwise', 'conv', 'kernel'), pointwise)
  for b in bias:  # none in keras.applications; reported as having no place if present
    r.put(('params', *scope, 'pointwise', 'conv', 'bias'), b)
  r.bn(f'{name}_bn', scope)


@keras_converter('xception', heads=_HEADS)
def keras_xception(r: KerasReader) -> dict:
  """``keras.applications.Xception`` (with or without its top). Keras names its layers
  ``<block>_<op>`` (``block2_sepconv1``, ``_bn``) but leaves the shortcut convs and their
  BatchNorms unnamed (``conv2d_<n>``): those are taken in construction order, the blocks'."""
  for op in xception.STEM:
    r.conv_bn(op.name, f'{op.name}_bn', (op.name,))
  shortcuts = []
  for scope, spec in _blocks():
    for op in spec.ops:
      if isinstance(op, xception.SepConv):
        _keras_separable(r, f'{scope}_{op.name}', (scope, op.name))
    if spec.shortcut is not None:
      shortcuts.append((scope, spec.shortcut.name))
  for op in xception.EXIT:
    _keras_separable(r, op.name, (op.name,))

  convs = r.auto_named('Conv2D', 'conv2d')
  norms = r.auto_named('BatchNormalization', 'batch_normalization')
  if len(convs) != len(shortcuts) or len(norms) != len(shortcuts):
    r.missing.append(f'{len(shortcuts)} unnamed shortcut Conv2D/BatchNormalization layers '
                     f'(found {len(convs)} and {len(norms)})')
  for scope, conv, norm in zip(shortcuts, convs, norms):
    r.conv_bn(conv, norm, scope)

  return {'num_classes': r.dense('predictions', ('Logits',))}
