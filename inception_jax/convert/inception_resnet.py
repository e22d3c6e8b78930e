"""Inception-ResNet weights -> :mod:`inception_jax.models.inception_resnet`.

* ``facenet`` (facenet-pytorch ``InceptionResnetV1``) -> ``inception_resnet_v1``. Its modules are
  ``conv2d_1a`` ... ``conv2d_4b``, ``repeat_1`` (35x35 blocks), ``mixed_6a``, ``repeat_2`` (17x17),
  ``mixed_7a``, ``repeat_3`` (8x8), ``block8``, then the embedding ``last_linear`` (no bias) and
  ``last_bn``, and ``logits`` when built with ``classify=True``. The state dict implies the
  options: ``embedding_dim`` = rows of ``last_linear`` (our ``Bottleneck``), ``num_classes`` = rows
  of ``logits`` (0 without it). So ``from_torch('inception_resnet_v1', sd, source='facenet')``
  returns facenet-pytorch's own output: the L2-normalised embedding (``classify=False``) or the
  logits (``classify=True``); ``num_classes=0`` drops ``logits`` and keeps the embedding. For the
  pooled 1792-d features instead, drop the embedding from the state dict yourself
  (``{k: v for k, v in sd.items() if not k.startswith(('last_', 'logits.'))}``): every tensor
  given is either mapped or reported, never skipped.
  The pretrained VGGFace2 / CASIA-WebFace weights expect 160x160 face crops standardised as
  (pixel - 127.5) / 128.
* ``timm`` ``inception_resnet_v2`` -> ``inception_resnet_v2``: the same module names (repeats
  ``repeat``, ``repeat_1``, ``repeat_2``), plus ``mixed_5b``, ``conv2d_7b`` and the classifier
  ``classif``. timm's ``inception_resnet_v2.tf_in1k`` (TF-slim's weights without the background
  class) expects RGB in [-1, 1] at 299x299 (crop 0.8975, bicubic).
* ``keras.applications.InceptionResNetV2`` -> ``inception_resnet_v2``. Keras names the residual
  blocks' up-projections (``block35_3_conv``), the last conv (``conv_7b``, ``conv_7b_bn``) and the
  classifier (``predictions``, softmax by default: our model returns the logits before it); every
  other conv and BatchNorm is ``conv2d_<n>`` / ``batch_normalization_<n>`` with a global counter,
  so those are taken in the counter's (= construction) order. Keras' ``model.layers`` lists them
  in graph order, which interleaves the branches, so that order is not used.

Each torch conv is a conv without bias + ``BatchNorm2d`` (facenet's ``BasicConv2d``, timm's
``ConvNormAct``: ``<prefix>.conv`` and ``<prefix>.bn``); each residual block's up-projection
``conv2d`` has a bias and no BatchNorm.
"""

from __future__ import annotations

import re
from typing import Any

from inception_jax.convert import keras_converter, torch_converter
from inception_jax.convert.core import KerasReader, TorchReader

# (our scope, torch prefix) of the convs of each module, relative to the module; the residual
# blocks' up-projection is ('Conv2d_1x1', 'conv2d') in every block.
_MIXED_5B = (('Branch_0/Conv2d_1x1', 'branch0'),
             ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_5x5', 'branch1.1'),
             ('Branch_2/Conv2d_0a_1x1', 'branch2.0'), ('Branch_2/Conv2d_0b_3x3', 'branch2.1'),
             ('Branch_2/Conv2d_0c_3x3', 'branch2.2'),
             ('Branch_3/Conv2d_0b_1x1', 'branch3.1'))  # branch3.0 is the pool
_BLOCK35 = (('Branch_0/Conv2d_1x1', 'branch0'),
            ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_3x3', 'branch1.1'),
            ('Branch_2/Conv2d_0a_1x1', 'branch2.0'), ('Branch_2/Conv2d_0b_3x3', 'branch2.1'),
            ('Branch_2/Conv2d_0c_3x3', 'branch2.2'))
_MIXED_6A = (('Branch_0/Conv2d_1a_3x3', 'branch0'),
             ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_3x3', 'branch1.1'),
             ('Branch_1/Conv2d_1a_3x3', 'branch1.2'))
_BLOCK17 = (('Branch_0/Conv2d_1x1', 'branch0'),
            ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_1x7', 'branch1.1'),
            ('Branch_1/Conv2d_0c_7x1', 'branch1.2'))
_MIXED_7A = (('Branch_0/Conv2d_0a_1x1', 'branch0.0'), ('Branch_0/Conv2d_1a_3x3', 'branch0.1'),
             ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_1a_3x3', 'branch1.1'),
             ('Branch_2/Conv2d_0a_1x1', 'branch2.0'), ('Branch_2/Conv2d_0b_3x3', 'branch2.1'),
             ('Branch_2/Conv2d_1a_3x3', 'branch2.2'))
_BLOCK8 = (('Branch_0/Conv2d_1x1', 'branch0'),
           ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_1x3', 'branch1.1'),
           ('Branch_1/Conv2d_0c_3x1', 'branch1.2'))

_STEM = {'conv2d_1a': 'Conv2d_1a_3x3', 'conv2d_2a': 'Conv2d_2a_3x3', 'conv2d_2b': 'Conv2d_2b_3x3',
         'conv2d_3b': 'Conv2d_3b_1x1', 'conv2d_4a': 'Conv2d_4a_3x3'}

# The torch module of each of our top-level stages, per source.
_TORCH_STAGES = {
    'facenet': dict(stem={**_STEM, 'conv2d_4b': 'Conv2d_4b_3x3'}, mixed_5b=None,
                    repeats=('repeat_1', 'repeat_2', 'repeat_3'), conv_7b=None),
    'timm': dict(stem=_STEM, mixed_5b='mixed_5b', repeats=('repeat', 'repeat_1', 'repeat_2'),
                 conv_7b='conv2d_7b'),
}


def _torch_body(r: TorchReader, source: str) -> None:
  stages = _TORCH_STAGES[source]
  for theirs, ours in stages['stem'].items():
    r.conv_bn(f'{theirs}.conv', f'{theirs}.bn', (ours,))

  def module(prefix: str, scope: str, convs) -> None:
    for ours, theirs in convs:
      r.conv_bn(f'{prefix}.{theirs}.conv', f'{prefix}.{theirs}.bn', (scope, ours))

  def repeat(prefix: str, scope: str, kind: str, convs) -> None:
    i = 0
    while r.has(f'{prefix}.{i}.conv2d.weight'):
      block = f'{scope}/{kind}_{i + 1}'
      module(f'{prefix}.{i}', block, convs)
      r.conv_bias(f'{prefix}.{i}.conv2d', (block, 'Conv2d_1x1'))
      i += 1

  if stages['mixed_5b']:
    module(stages['mixed_5b'], 'Mixed_5b', _MIXED_5B)
  rep35, rep17, rep8 = stages['repeats']
  repeat(rep35, 'Repeat', 'block35', _BLOCK35)
  module('mixed_6a', 'Mixed_6a', _MIXED_6A)
  repeat(rep17, 'Repeat_1', 'block17', _BLOCK17)
  module('mixed_7a', 'Mixed_7a', _MIXED_7A)
  repeat(rep8, 'Repeat_2', 'block8', _BLOCK8)
  module('block8', 'Block8', _BLOCK8)
  r.conv_bias('block8.conv2d', ('Block8', 'Conv2d_1x1'))
  if stages['conv_7b']:
    r.conv_bn(f'{stages["conv_7b"]}.conv', f'{stages["conv_7b"]}.bn', ('Conv2d_7b_1x1',))


def _classifier(r: TorchReader, prefix: str) -> int:
  if not r.has(f'{prefix}.weight'):
    return 0
  r.linear(prefix, ('Logits',))
  return int(r.state[f'{prefix}.weight'].shape[0])


@torch_converter('inception_resnet_v1', sources=('facenet',), heads=(('Logits',),))
def facenet_inception_resnet_v1(r: TorchReader, source: str) -> dict[str, Any]:
  """facenet-pytorch ``InceptionResnetV1``; see the module docstring for the options implied."""
  _torch_body(r, source)
  embedding_dim = 0
  if r.has('last_linear.weight'):
    weight = r.take('last_linear.weight')
    embedding_dim = int(weight.shape[0])
    r.put(('params', 'Bottleneck', 'dense', 'kernel'), weight.T)
    r.batch_norm('last_bn', ('Bottleneck',))
  return {'num_classes': _classifier(r, 'logits'), 'embedding_dim': embedding_dim}


@torch_converter('inception_resnet_v2', sources=('timm',), heads=(('Logits',),))
def timm_inception_resnet_v2(r: TorchReader, source: str) -> dict[str, Any]:
  """timm ``inception_resnet_v2`` (with or without its classifier ``classif``)."""
  _torch_body(r, source)
  return {'num_classes': _classifier(r, 'classif')}


# ------------------------------------------------------------------------------------ Keras

# Our scopes of the unnamed conv + BN pairs, in the order keras.applications builds them, per
# stage; each residual block's named up-projection follows its branch convs.
_KERAS_ORDER = {
    'Mixed_5b': ('Branch_0/Conv2d_1x1', 'Branch_1/Conv2d_0a_1x1', 'Branch_1/Conv2d_0b_5x5',
                 'Branch_2/Conv2d_0a_1x1', 'Branch_2/Conv2d_0b_3x3', 'Branch_2/Conv2d_0c_3x3',
                 'Branch_3/Conv2d_0b_1x1'),
    'block35': tuple(ours for ours, _ in _BLOCK35),
    'Mixed_6a': tuple(ours for ours, _ in _MIXED_6A),
    'block17': tuple(ours for ours, _ in _BLOCK17),
    'Mixed_7a': tuple(ours for ours, _ in _MIXED_7A),
    'block8': tuple(ours for ours, _ in _BLOCK8),
}
_KERAS_STEM = ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'Conv2d_3b_1x1',
               'Conv2d_4a_3x3')
_KERAS_REPEATS = {'block35': 'Repeat', 'block17': 'Repeat_1', 'block8': 'Repeat_2'}


@keras_converter('inception_resnet_v2', heads=(('Logits',),))
def keras_inception_resnet_v2(r: KerasReader) -> dict[str, Any]:
  """``keras.applications.InceptionResNetV2`` (with or without its top)."""
  convs = iter(r.auto_named('Conv2D', 'conv2d'))
  bns = iter(r.auto_named('BatchNormalization', 'batch_normalization'))

  def conv_bn(scope: tuple[str, ...], conv: str | None = None, bn: str | None = None) -> None:
    conv, bn = conv or next(convs, None), bn or next(bns, None)
    if conv is None or bn is None:
      r.missing.append(f'a further unnamed Conv2D/BatchNormalization for {"/".join(scope)}')
      return
    r.conv_bn(conv, bn, scope)

  def up_projection(name: str, scope: str) -> None:
    r.conv(name, (scope, 'Conv2d_1x1'))

  names = set(r.names())

  def mixed(scope: str) -> None:
    for ours in _KERAS_ORDER[scope]:
      conv_bn((scope, ours))

  def repeat(kind: str) -> None:
    """Keras' ``<kind>_1`` ... ``<kind>_n``; the last block8 (no ReLU) is our Block8."""
    n = 0
    while f'{kind}_{n + 1}_conv' in names:
      n += 1
    for i in range(1, n + 1):
      scope = 'Block8' if kind == 'block8' and i == n else f'{_KERAS_REPEATS[kind]}/{kind}_{i}'
      for ours in _KERAS_ORDER[kind]:
        conv_bn((scope, ours))
      up_projection(f'{kind}_{i}_conv', scope)

  for scope in _KERAS_STEM:
    conv_bn((scope,))
  mixed('Mixed_5b')
  repeat('block35')
  mixed('Mixed_6a')
  repeat('block17')
  mixed('Mixed_7a')
  repeat('block8')
  conv_bn(('Conv2d_7b_1x1',), conv='conv_7b', bn='conv_7b_bn')

  return {'num_classes': r.dense('predictions', ('Logits',))}
