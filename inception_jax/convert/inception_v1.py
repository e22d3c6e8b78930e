"""torchvision ``googlenet`` -> ``inception_v1`` (variant 'bn', PyTorch conventions).

Input: our model has no input transform. torchvision's ``transform_input=True`` (its default with
pretrained weights) rescales ImageNet-normalised input ``(x01 - mean) / std`` channel-wise by
``std / 0.5`` and shifts it by ``(mean - 0.5) / 0.5``, i.e. maps it back to ``2 * x01 - 1``: the
[-1, 1] input the ported TF weights expect. So the converted model applied to [-1, 1] images
equals torchvision's ``googlenet(weights=..., transform_input=True)`` applied to the
ImageNet-normalised images, and ``transform_input=False`` torchvision on the same [-1, 1] images.

In train mode torchvision returns ``(logits, aux2, aux1)``; ours returns the logits and sows
``(aux_4b, aux_4e)`` into ``intermediates/aux_logits``, ``aux_4b`` being torchvision's ``aux1``.
torchvision's aux heads are not pretrained.
"""

from __future__ import annotations

import math

from inception_jax.convert import torch_converter
from inception_jax.convert.core import TorchReader
from inception_jax.models import inception_v1 as v1, layers

# torchvision's attributes, in the order of inception_v1.STEM's convs and of MODULES.
_STEM = ('conv1', 'conv2', 'conv3')
_MIXED = ('inception3a', 'inception3b', 'inception4a', 'inception4b', 'inception4c',
          'inception4d', 'inception4e', 'inception5a', 'inception5b')
# torchvision's branchN submodules, in the order of layers.conv_scopes(inception_module(...)).
_BRANCHES = ('branch1', 'branch2.0', 'branch2.1', 'branch3.0', 'branch3.1', 'branch4.1')
# torchvision's aux1 and aux2 are the heads after 4a and 4d, shallow to deep as AUX_AFTER.
_AUX = dict(zip(('aux1', 'aux2'), v1.AUX_AFTER.values(), strict=True))


def _basic_conv(reader: TorchReader, prefix: str, scope: tuple[str, ...]) -> None:
  """torchvision's BasicConv2d: ``prefix.conv`` (no bias) + ``prefix.bn``."""
  reader.conv_bn(f'{prefix}.conv', f'{prefix}.bn', scope)


def _aux_fc1(reader: TorchReader, prefix: str, scope: tuple[str, ...]) -> None:
  """fc1 reads torchvision's NCHW-flattened conv output, our head flattens NHWC: reorder its
  input rows. Channels come from the aux conv's weight, the (square) grid from fc1's width."""
  w = reader.take(f'{prefix}.fc1.weight')
  if w is not None:
    conv_w = reader.state.get(f'{prefix}.conv.conv.weight')
    channels = conv_w.shape[0] if conv_w is not None else w.shape[1]
    side = math.isqrt(w.shape[1] // channels)
    if side * side * channels == w.shape[1]:  # else left as is, for the shape check to report
      w = w.reshape(-1, channels, side, side).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    reader.put(('params', *scope, 'kernel'), w.T)
  reader.vector(f'{prefix}.fc1.bias', ('params', *scope, 'bias'))


@torch_converter('inception_v1', sources=('torchvision',),
                 heads=(('Logits',), ('AuxLogits_4b',), ('AuxLogits_4e',)), variant='bn')
def torchvision_googlenet(reader: TorchReader, source: str) -> dict:
  """Map ``torchvision.models.googlenet().state_dict()``; implies num_classes and aux_logits."""
  stem = [op.name for op in v1.STEM if isinstance(op, layers.Conv)]
  for prefix, scope in zip(_STEM, stem, strict=True):
    _basic_conv(reader, prefix, (scope,))
  for block, (mixed, *filters) in zip(_MIXED, v1.MODULES, strict=True):
    scopes = layers.conv_scopes(v1.inception_module(*filters))
    for branch, scope in zip(_BRANCHES, scopes, strict=True):
      _basic_conv(reader, f'{block}.{branch}', (mixed, *scope.split('/')))
  aux_logits = reader.has('aux1.fc2.weight') or reader.has('aux2.fc2.weight')
  if aux_logits:
    for prefix, scope in _AUX.items():
      _basic_conv(reader, f'{prefix}.conv', (scope, v1.AUX_CONV.name))
      _aux_fc1(reader, prefix, (scope, 'Fc_2a'))
      reader.linear(f'{prefix}.fc2', (scope, 'Logits'))
  num_classes = 0
  if reader.has('fc.weight'):
    num_classes = int(reader.state['fc.weight'].shape[0])
    reader.linear('fc', ('Logits',))
  return {'num_classes': num_classes, 'aux_logits': aux_logits}
