"""Inception-ResNet weights -> :mod:`inception_jax.models.inception_resnet`.

* ``facenet`` (facenet-pytorch ``InceptionResnetV1``) -> ``inception_resnet_v1``. The state dict
  implies the options: ``embedding_dim`` = rows of ``last_linear`` (with ``last_bn``: our
  ``Bottleneck``), ``num_classes`` = rows of ``logits`` (0 without), so the model returns what
  facenet-pytorch does (the normalised embedding, or the logits). For the pooled 1792-d features,
  drop ``last_*`` and ``logits.*`` from the state dict: every tensor given is mapped or reported.
  Its weights expect 160x160 face crops, (pixel - 127.5) / 128.
* ``timm`` ``inception_resnet_v2`` -> ``inception_resnet_v2`` (timm's ``tf_in1k``: RGB in
  [-1, 1] at 299, crop 0.8975, bicubic).
* ``keras.applications.InceptionResNetV2`` -> ``inception_resnet_v2``. Keras names only the
  up-projections (``block35_3_conv``), ``conv_7b`` and ``predictions``; the other convs and
  BatchNorms are ``conv2d_<n>``/``batch_normalization_<n>``, taken in the counter's
  (construction) order, since ``model.layers`` interleaves the branches.

Torch modules: ``<prefix>.conv`` + ``<prefix>.bn`` per conv unit; each residual block's
up-projection ``conv2d`` has a bias and no BN. Our scopes come from the model's specs and runs.
"""

from __future__ import annotations

from typing import Any

from inception_jax.convert import keras_converter, torch_converter
from inception_jax.convert.core import KerasReader, TorchReader
from inception_jax.convert.inception_v4 import conv_bns, torch_prefixes
from inception_jax.models import inception_resnet as irn
from inception_jax.models import inception_v3, inception_v4, layers

# The torch module of each of our stages, per source (the stems' convs in the model's order).
_TORCH = {
    'facenet': dict(stem=('conv2d_1a', 'conv2d_2a', 'conv2d_2b', 'conv2d_3b', 'conv2d_4a',
                          'conv2d_4b'), mixed_5b=None, repeats=('repeat_1', 'repeat_2', 'repeat_3'),
                    conv_7b=None),
    'timm': dict(stem=('conv2d_1a', 'conv2d_2a', 'conv2d_2b', 'conv2d_3b', 'conv2d_4a'),
                 mixed_5b='mixed_5b', repeats=('repeat', 'repeat_1', 'repeat_2'),
                 conv_7b='conv2d_7b'),
}


def _specs(v: irn.Variant) -> dict[str, Any]:
  """Our modules' branch specs, by stage."""
  widths, pool, branch0 = irn.MIXED_5B
  return dict(mixed_5b=inception_v3.inception_a(pool, widths, branch0),
              blocks=(irn.block35(v.block35), irn.block17(v.block17), irn.block8(v.block8)),
              mixed_6a=inception_v4.reduction_a(*v.reduction_a),
              mixed_7a=irn.reduction_b(v.reduction_b))


def _torch_body(r: TorchReader, source: str, variant: str) -> None:
  v, stages = irn.VARIANTS[variant], _TORCH[source]
  specs = _specs(v)
  convs = [op.name for op in irn.STEMS[variant] if isinstance(op, layers.Conv)]
  for theirs, ours in zip(stages['stem'], convs, strict=True):
    r.conv_bn(f'{theirs}.conv', f'{theirs}.bn', (ours,))

  def module(prefix: str, scope: tuple[str, ...], specs) -> None:
    conv_bns(r, prefix, scope, specs, torch_prefixes(specs))

  def residual(prefix: str, scope: tuple[str, ...], specs) -> None:
    module(prefix, scope, specs)
    r.conv_bias(f'{prefix}.conv2d', (*scope, irn.UP_PROJECTION))

  if stages['mixed_5b']:
    module(stages['mixed_5b'], ('Mixed_5b',), specs['mixed_5b'])
  reductions = (('mixed_6a', 'Mixed_6a'), ('mixed_7a', 'Mixed_7a'), None)
  for theirs, run, block_specs, reduction in zip(stages['repeats'], irn.runs(v), specs['blocks'],
                                                 reductions):
    for i, path in enumerate(run.block_paths):
      residual(f'{theirs}.{i}', path, block_specs)
    if reduction:
      module(reduction[0], (reduction[1],), specs[reduction[0]])
  residual('block8', ('Block8',), specs['blocks'][2])
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
  _torch_body(r, source, 'v1')
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
  _torch_body(r, source, 'v2')
  return {'num_classes': _classifier(r, 'classif')}


# ------------------------------------------------------------------------------------ Keras

@keras_converter('inception_resnet_v2', heads=(('Logits',),))
def keras_inception_resnet_v2(r: KerasReader) -> dict[str, Any]:
  """``keras.applications.InceptionResNetV2`` (with or without its top). Keras builds the convs
  of each block in our specs' order; its last ``block8_<n>`` is our ``Block8``."""
  convs = iter(r.auto_named('Conv2D', 'conv2d'))
  bns = iter(r.auto_named('BatchNormalization', 'batch_normalization'))

  def conv_bn(scope: tuple[str, ...]) -> None:
    conv, bn = next(convs, None), next(bns, None)
    if conv is None or bn is None:
      r.missing.append(f'a further unnamed Conv2D/BatchNormalization for {"/".join(scope)}')
      return
    r.conv_bn(conv, bn, scope)

  def module(scope: tuple[str, ...], specs) -> None:
    for path in layers.conv_scopes(specs):
      conv_bn((*scope, *path.split('/')))

  v = irn.VARIANTS['v2']
  specs = _specs(v)
  for op in irn.STEMS['v2']:
    if isinstance(op, layers.Conv):
      conv_bn((op.name,))
  module(('Mixed_5b',), specs['mixed_5b'])
  reductions = ('Mixed_6a', 'Mixed_7a', None)
  for kind, run, block_specs, reduction in zip(('block35', 'block17', 'block8'), irn.runs(v),
                                               specs['blocks'], reductions):
    paths = run.block_paths + ((('Block8',),) if reduction is None else ())
    for i, path in enumerate(paths, start=1):
      module(path, block_specs)
      r.conv(f'{kind}_{i}_conv', (*path, irn.UP_PROJECTION))
    if reduction:
      module((reduction,), specs[reduction.lower()])
  r.conv_bn('conv_7b', 'conv_7b_bn', ('Conv2d_7b_1x1',))
  return {'num_classes': r.dense('predictions', ('Logits',))}
