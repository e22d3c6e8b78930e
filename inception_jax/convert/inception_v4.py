"""timm ``inception_v4`` -> :mod:`inception_jax.models.inception_v4`.

timm's model (Cadene's port of TF-slim's checkpoint) is one ``features`` Sequential in the order
of the model's ``STEM`` and ``BLOCKS``, then ``last_linear``. Its conv units are ``ConvNormAct``
(``<prefix>.conv``, ``<prefix>.bn``). Our scopes come from the model's specs; this file holds
timm's names only. timm's ``inception_v4.tf_in1k`` expects RGB in [-1, 1] at 299 (crop 0.875,
bicubic).
"""

from __future__ import annotations

from typing import Any, Sequence

from inception_jax.convert import torch_converter
from inception_jax.convert.core import TorchReader
from inception_jax.models import inception_v4, layers
from inception_jax.models.repeat import Run


def torch_prefixes(specs: Sequence[layers.Spec]) -> list[str]:
  """timm/facenet/Cadene module names of the convs of ``specs``, in ``layers.conv_scopes``
  order: ``branch<i>`` for a one-op branch, else ``branch<i>.<index of the op>`` (pools count)."""
  out = []
  for i, spec in enumerate(specs):
    if spec.fork:
      raise ValueError('forked branches have no structural torch names')
    ops = spec.ops
    out += [f'branch{i}' if len(ops) == 1 else f'branch{i}.{j}'
            for j, op in enumerate(ops) if isinstance(op, layers.Conv)]
  return out


def conv_bns(r: TorchReader, prefix: str, scope: tuple[str, ...], specs, names: Sequence[str]):
  """Each conv+BN of ``specs`` (our ``conv_scopes``) from ``prefix.<name>.{conv,bn}``."""
  ours = layers.conv_scopes(specs)
  if len(ours) != len(names):
    raise ValueError(f"{'/'.join(scope)}: {len(ours)} convs, {len(names)} torch names")
  for theirs, path in zip(names, ours):
    r.conv_bn(f'{prefix}.{theirs}.conv', f'{prefix}.{theirs}.bn', (*scope, *path.split('/')))


# timm's names where they are not structural: the stem's one-conv blocks and Inception-C's
# fork members (branch1_1a, ...).
_TIMM_NAMES = {
    'Mixed_3a': ('conv',), 'Mixed_5a': ('conv',),
    'Mixed_7b': ('branch0', 'branch1_0', 'branch1_1a', 'branch1_1b', 'branch2_0', 'branch2_1',
                 'branch2_2', 'branch2_3a', 'branch2_3b', 'branch3.1'),
}


@torch_converter('inception_v4', sources=('timm',), heads=(('Logits',),))
def timm_inception_v4(r: TorchReader, source: str) -> dict[str, Any]:
  index = 0
  for op in inception_v4.STEM:
    r.conv_bn(f'features.{index}.conv', f'features.{index}.bn', (op.name,))
    index += 1
  for name, specs, args in inception_v4.BLOCKS:
    blocks = name.blocks if isinstance(name, Run) else (name,)
    specs = specs(*args)
    names = _TIMM_NAMES.get(blocks[0]) or torch_prefixes(specs)
    for block in blocks:
      conv_bns(r, f'features.{index}', (block,), specs, names)
      index += 1
  num_classes = 0
  if r.has('last_linear.weight'):
    num_classes = r.state['last_linear.weight'].shape[0]
    r.linear('last_linear', ('Logits',))
  return {'num_classes': num_classes}
