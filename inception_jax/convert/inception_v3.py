"""Inception-v3 weights from torchvision, timm and Keras.

Inputs each source's weights expect (ours take the same input as the source they came from):

* Keras ``InceptionV3`` and the TF-slim checkpoint behind every release: RGB in [-1, 1]
  (``x / 127.5 - 1``, Keras' ``inception_v3.preprocess_input``).
* timm ``inception_v3.tf_in1k`` / ``tf_adv_in1k`` (ports of the TF weights): [-1, 1] too, timm's
  mean = std = 0.5 normalisation; ``gluon_in1k`` expects ImageNet mean/std normalisation.
* torchvision ``Inception_V3_Weights.IMAGENET1K_V1`` (ported TF weights) is built with
  ``transform_input=True``: its input is normalised with the ImageNet mean/std and the model maps
  it back to [-1, 1] with ``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel. The converted model
  has no such step: give it [-1, 1] input (equivalently, apply that map yourself).

Keras has no auxiliary head and its conv+BN units have no BN scale, so its weights go to
``conventions='tf', aux_logits=False``; the PyTorch sources go to ``conventions='torch'``.
"""

from __future__ import annotations

from inception_jax.convert import keras_converter, torch_converter
from inception_jax.convert.core import KerasReader, TorchReader
from inception_jax.models import inception_v3 as v3, layers

# torchvision's BasicConv2d names inside each block type, in the order both torchvision and
# Keras' inception_v3.py build the units, which is the order of layers.conv_scopes.
_TORCH_UNITS = {
    v3.inception_a: ('branch1x1', 'branch5x5_1', 'branch5x5_2', 'branch3x3dbl_1',
                     'branch3x3dbl_2', 'branch3x3dbl_3', 'branch_pool'),
    v3.reduction_a: ('branch3x3', 'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'),
    v3.inception_b: ('branch1x1', 'branch7x7_1', 'branch7x7_2', 'branch7x7_3', 'branch7x7dbl_1',
                     'branch7x7dbl_2', 'branch7x7dbl_3', 'branch7x7dbl_4', 'branch7x7dbl_5',
                     'branch_pool'),
    v3.reduction_b: ('branch3x3_1', 'branch3x3_2', 'branch7x7x3_1', 'branch7x7x3_2',
                     'branch7x7x3_3', 'branch7x7x3_4'),
    v3.inception_c: ('branch1x1', 'branch3x3_1', 'branch3x3_2a', 'branch3x3_2b',
                     'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3a', 'branch3x3dbl_3b',
                     'branch_pool'),
}
_AUX = tuple(zip(('AuxLogits.conv0', 'AuxLogits.conv1'),
                 (f'AuxLogits/{op.name}' for op in v3.AUX_CONVS), strict=True))


def _body() -> tuple[tuple[str, str], ...]:
  """(torch module name, our scope) of every conv+BN unit of the body, in build order."""
  units = [(op.name, op.name) for op in v3.STEM if isinstance(op, layers.Conv)]
  for block, specs, args in v3.MIXED:
    scopes = layers.conv_scopes(specs(*args))
    units += [(f'{block}.{t}', f'{block}/{s}')
              for t, s in zip(_TORCH_UNITS[specs], scopes, strict=True)]
  return tuple(units)


BODY = _body()


def _scope(path: str) -> tuple[str, ...]:
  return tuple(path.split('/'))


@torch_converter('inception_v3', sources=('torchvision', 'timm'),
                 heads=(('Logits',), ('AuxLogits',)))
def torch_inception_v3(reader: TorchReader, source: str) -> dict:
  """torchvision ``inception_v3`` / timm ``inception_v3`` (the same names in both).

  ``fc`` gives ``num_classes`` (0 without it: a feature extractor); the aux head
  (``AuxLogits.*``, which timm builds only with ``aux_logits=True``) gives ``aux_logits=True``
  when its classifier is there too. A model without classes has no aux head, so aux tensors
  beside a missing ``fc`` are reported as unexpected rather than silently dropped.
  """
  for name, scope in BODY:
    reader.conv_bn(f'{name}.conv', f'{name}.bn', _scope(scope))
  num_classes = 0
  if reader.has('fc.weight'):
    num_classes = reader.state['fc.weight'].shape[0]
    reader.linear('fc', ('Logits',))
  aux = num_classes > 0 and reader.has('AuxLogits.fc.weight')
  if aux:
    for name, scope in _AUX:
      reader.conv_bn(f'{name}.conv', f'{name}.bn', _scope(scope))
    reader.linear('AuxLogits.fc', ('AuxLogits', 'Logits'))
  return dict(num_classes=num_classes, aux_logits=aux)


@keras_converter('inception_v3', heads=(('Logits',),))
def keras_inception_v3(reader: KerasReader) -> dict:
  """``keras.applications.InceptionV3``, with or without its top.

  Every conv+BN unit is auto-named by Keras (``conv2d_17``, ``batch_normalization_17``); in
  counter order they follow the build order of :data:`BODY`.
  """
  convs = reader.auto_named('Conv2D', 'conv2d')
  norms = reader.auto_named('BatchNormalization', 'batch_normalization')
  if len(convs) != len(BODY) or len(norms) != len(BODY):
    reader.missing.append(f'{len(BODY)} Conv2D and BatchNormalization layers (found '
                          f'{len(convs)} and {len(norms)})')
  for (_, scope), conv, norm in zip(BODY, convs, norms):
    reader.conv_bn(conv, norm, _scope(scope))
  return dict(num_classes=reader.dense('predictions', ('Logits',)), aux_logits=False)
