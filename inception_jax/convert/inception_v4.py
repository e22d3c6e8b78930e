"""timm ``inception_v4`` -> :mod:`inception_jax.models.inception_v4`.

timm's model (Cadene's port of the TF-slim checkpoint) is a flat ``features`` Sequential: index
0-2 the stem convs, 3-5 Mixed_3a-5a, 6-9 Inception-A, 10 Reduction-A, 11-17 Inception-B,
18 Reduction-B, 19-21 Inception-C; ``last_linear`` is the classifier (absent when built with
``num_classes=0``). Every conv is timm's ``ConvNormAct``: ``<prefix>.conv.weight`` and
``<prefix>.bn.{weight,bias,running_mean,running_var}``.

timm's weights (``inception_v4.tf_in1k``, 1000 classes) expect RGB scaled to [-1, 1]
(mean = std = 0.5), 299x299 after a 0.875 bicubic centre crop.
"""

from __future__ import annotations

from typing import Any

from inception_jax.convert import torch_converter
from inception_jax.convert.core import TorchReader

# (our scope, timm prefix) of the convs of each module, relative to the module.
_STEM_3A = (('Branch_1/Conv2d_0a_3x3', 'conv'),)
_STEM_4A = (('Branch_0/Conv2d_0a_1x1', 'branch0.0'), ('Branch_0/Conv2d_1a_3x3', 'branch0.1'),
            ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_1x7', 'branch1.1'),
            ('Branch_1/Conv2d_0c_7x1', 'branch1.2'), ('Branch_1/Conv2d_1a_3x3', 'branch1.3'))
_STEM_5A = (('Branch_0/Conv2d_1a_3x3', 'conv'),)
_BLOCK_A = (('Branch_0/Conv2d_0a_1x1', 'branch0'),
            ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_3x3', 'branch1.1'),
            ('Branch_2/Conv2d_0a_1x1', 'branch2.0'), ('Branch_2/Conv2d_0b_3x3', 'branch2.1'),
            ('Branch_2/Conv2d_0c_3x3', 'branch2.2'),
            ('Branch_3/Conv2d_0b_1x1', 'branch3.1'))  # branch3.0 is the pool
_REDUCTION_A = (('Branch_0/Conv2d_1a_3x3', 'branch0'),
                ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_3x3', 'branch1.1'),
                ('Branch_1/Conv2d_1a_3x3', 'branch1.2'))
_BLOCK_B = (('Branch_0/Conv2d_0a_1x1', 'branch0'),
            ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_1x7', 'branch1.1'),
            ('Branch_1/Conv2d_0c_7x1', 'branch1.2'),
            ('Branch_2/Conv2d_0a_1x1', 'branch2.0'), ('Branch_2/Conv2d_0b_7x1', 'branch2.1'),
            ('Branch_2/Conv2d_0c_1x7', 'branch2.2'), ('Branch_2/Conv2d_0d_7x1', 'branch2.3'),
            ('Branch_2/Conv2d_0e_1x7', 'branch2.4'),
            ('Branch_3/Conv2d_0b_1x1', 'branch3.1'))
_REDUCTION_B = (('Branch_0/Conv2d_0a_1x1', 'branch0.0'), ('Branch_0/Conv2d_1a_3x3', 'branch0.1'),
                ('Branch_1/Conv2d_0a_1x1', 'branch1.0'), ('Branch_1/Conv2d_0b_1x7', 'branch1.1'),
                ('Branch_1/Conv2d_0c_7x1', 'branch1.2'), ('Branch_1/Conv2d_1a_3x3', 'branch1.3'))
_BLOCK_C = (('Branch_0/Conv2d_0a_1x1', 'branch0'),
            ('Branch_1/Conv2d_0a_1x1', 'branch1_0'), ('Branch_1/Conv2d_0b_1x3', 'branch1_1a'),
            ('Branch_1/Conv2d_0c_3x1', 'branch1_1b'),
            ('Branch_2/Conv2d_0a_1x1', 'branch2_0'), ('Branch_2/Conv2d_0b_3x1', 'branch2_1'),
            ('Branch_2/Conv2d_0c_1x3', 'branch2_2'), ('Branch_2/Conv2d_0d_1x3', 'branch2_3a'),
            ('Branch_2/Conv2d_0e_3x1', 'branch2_3b'),
            ('Branch_3/Conv2d_0b_1x1', 'branch3.1'))

# Our top-level scopes in timm's ``features`` order, with the convs inside each ('' = itself).
_SCOPES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ('Conv2d_1a_3x3', (('', ''),)), ('Conv2d_2a_3x3', (('', ''),)),
    ('Conv2d_2b_3x3', (('', ''),)),
    ('Mixed_3a', _STEM_3A), ('Mixed_4a', _STEM_4A), ('Mixed_5a', _STEM_5A),
    *((f'Mixed_5{c}', _BLOCK_A) for c in 'bcde'),
    ('Mixed_6a', _REDUCTION_A),
    *((f'Mixed_6{c}', _BLOCK_B) for c in 'bcdefgh'),
    ('Mixed_7a', _REDUCTION_B),
    *((f'Mixed_7{c}', _BLOCK_C) for c in 'bcd'),
)


@torch_converter('inception_v4', sources=('timm',), heads=(('Logits',),))
def timm_inception_v4(reader: TorchReader, source: str) -> dict[str, Any]:
  for index, (scope, convs) in enumerate(_SCOPES):
    for ours, theirs in convs:
      prefix = '.'.join(p for p in ('features', str(index), theirs) if p)
      path = (scope, ours) if ours else (scope,)
      reader.conv_bn(f'{prefix}.conv', f'{prefix}.bn', path)
  num_classes = 0
  if reader.has('last_linear.weight'):
    num_classes = reader.state['last_linear.weight'].shape[0]
    reader.linear('last_linear', ('Logits',))
  return {'num_classes': num_classes}
