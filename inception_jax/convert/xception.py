"""Xception weights: timm ``legacy_xception`` and ``keras.applications.Xception``.

Our scopes follow Keras' layer names (block1_conv1, block2/sepconv1, ..., block14_sepconv2). timm
numbers its residual blocks from 1 where Keras counts the stem as block1, so timm's ``blockN`` is
our ``block{N+1}``; its ``conv3``/``conv4`` are Keras' block14 separable convs.
"""

from __future__ import annotations

import re

import numpy as np

from inception_jax.convert import keras_converter, torch_converter
from inception_jax.convert.core import KerasReader, TorchReader

_HEADS = (('Logits',),)


@torch_converter('xception', sources=('timm',), heads=_HEADS)
def timm_xception(r: TorchReader, source: str) -> dict:
  """timm ``legacy_xception`` (Cadene's port of the Keras weights)."""
  for i, (conv, bn) in enumerate((('conv1', 'bn1'), ('conv2', 'bn2')), start=1):
    r.conv_bn(conv, bn, (f'block1_conv{i}',))

  blocks = sorted({int(m.group(1)) for k in r.state if (m := re.match(r'block(\d+)\.', k))})
  for n in blocks:
    scope = f'block{n + 1}'
    if r.has(f'block{n}.skip.weight'):
      r.conv_bn(f'block{n}.skip', f'block{n}.skipbn', (scope, 'residual'))
    # block.rep is a Sequential of [ReLU,] SeparableConv2d, BatchNorm2d, ..., [MaxPool2d]; each
    # separable conv's BatchNorm is the next entry.
    reps = sorted(int(m.group(1)) for k in r.state
                  if (m := re.fullmatch(rf'block{n}\.rep\.(\d+)\.pointwise\.weight', k)))
    for j, rep in enumerate(reps, start=1):
      _torch_separable(r, f'block{n}.rep.{rep}', f'block{n}.rep.{rep + 1}', (scope, f'sepconv{j}'))

  for i, (conv, bn) in enumerate((('conv3', 'bn3'), ('conv4', 'bn4')), start=1):
    _torch_separable(r, conv, bn, (f'block14_sepconv{i}',))

  if not r.has('fc.weight'):
    return {'num_classes': 0}
  r.linear('fc', ('Logits',))
  return {'num_classes': int(r.state['fc.weight'].shape[0])}


def _torch_separable(r: TorchReader, conv: str, bn: str, scope: tuple[str, ...]) -> None:
  r.conv_kernel(f'{conv}.conv1.weight', ('params', *scope, 'depthwise', 'conv', 'kernel'))
  r.conv_kernel(f'{conv}.pointwise.weight', ('params', *scope, 'pointwise', 'conv', 'kernel'))
  r.batch_norm(bn, scope)


# Keras leaves the shortcut convs and their BatchNorms unnamed (conv2d_<global counter>); they are
# taken in construction order, which is the order of these blocks.
_KERAS_SHORTCUTS = ('block2', 'block3', 'block4', 'block13')


@keras_converter('xception', heads=_HEADS)
def keras_xception(r: KerasReader) -> dict:
  """``keras.applications.Xception`` (with or without its top)."""
  for i in (1, 2):
    name = f'block1_conv{i}'
    r.conv_bn(name, f'{name}_bn', (name,))

  # Every named separable conv, in the order Keras built them: blockN_sepconvM.
  for name in r.names('SeparableConv2D'):
    m = re.fullmatch(r'(block\d+)_(sepconv\d+)', name)
    scope = (name,) if m is None or m.group(1) == 'block14' else m.groups()
    depthwise, pointwise, *bias = r.get(name)
    kh, kw, c, mult = depthwise.shape
    # Keras' depthwise kernel is (h, w, in, multiplier); flax's grouped conv wants (h, w, 1, in).
    r.put(('params', *scope, 'depthwise', 'conv', 'kernel'),
          np.reshape(depthwise, (kh, kw, 1, c * mult)))
    r.put(('params', *scope, 'pointwise', 'conv', 'kernel'), pointwise)
    for b in bias:  # none in keras.applications; reported as having no place if present
      r.put(('params', *scope, 'pointwise', 'conv', 'bias'), b)
    r.bn(f'{name}_bn', scope)

  convs = r.auto_named('Conv2D', 'conv2d')
  norms = r.auto_named('BatchNormalization', 'batch_normalization')
  if len(convs) != len(_KERAS_SHORTCUTS) or len(norms) != len(_KERAS_SHORTCUTS):
    r.missing.append(f'{len(_KERAS_SHORTCUTS)} unnamed shortcut Conv2D/BatchNormalization layers '
                     f'(found {len(convs)} and {len(norms)})')
  for block, conv, norm in zip(_KERAS_SHORTCUTS, convs, norms):
    r.conv_bn(conv, norm, (block, 'residual'))

  return {'num_classes': r.dense('predictions', ('Logits',))}
