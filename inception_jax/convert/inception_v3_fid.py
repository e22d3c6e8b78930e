"""The FID network's weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` and
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``.

Both are the TF ``inception-2015-12-05`` graph converted to torchvision's ``Inception3`` names
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight`` with 1008
rows; no auxiliary head), so one name map serves both: torchvision's Inception-v3 map.
Input the converted model expects: ``(x - 128) / 128`` of 0-255 values (see
``inception_jax.fid.normalize``; pytorch-fid's own pipeline computes ``x / 127.5 - 1``).
"""

from __future__ import annotations

from inception_jax.convert import torch_converter
from inception_jax.convert.core import TorchReader
from inception_jax.convert.inception_v3 import BODY


@torch_converter('inception_v3_fid', sources=('pytorch_fid', 'torch_fidelity'),
                 heads=(('Logits',),), conventions='tf')
def torch_inception_v3_fid(reader: TorchReader, source: str) -> dict:
  for name, scope in BODY:
    reader.conv_bn(f'{name}.conv', f'{name}.bn', tuple(scope.split('/')))
  num_classes = 0
  if reader.has('fc.weight'):
    num_classes = reader.state['fc.weight'].shape[0]
    reader.linear('fc', ('Logits',))
  return dict(num_classes=num_classes)
