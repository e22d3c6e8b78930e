"""The FID network: TF's ``inception-2015-12-05`` graph, the Inception-v3 that Heusel et al. 2017
("GANs Trained by a Two Time-Scale Update Rule", Section 4) and Salimans et al. 2016 (Inception
Score) computed their scores with.

It is Inception-v3 (Szegedy et al. 2015, Table 1) as released in December 2015, which differs from
the TF-slim checkpoint in three ways that change the features (pytorch-fid,
``pytorch_fid/inception.py``: ``FIDInceptionA/C/E_1/E_2``; torch-fidelity,
``feature_extractor_inceptionv3.py``): its 3x3 average pools divide by the real pixels only (TF
``SAME``), the pool branch of the last 8x8 module (Mixed_7c, the graph's ``mixed_10``) is a max
pool, and the classifier has 1008 outputs. Its BatchNorm has a scale, as ported to PyTorch.

End points (the 'intermediates' collection) give the other features FID implementations use:
pytorch-fid's ``--dims`` 64 / 192 / 768 are the global averages of ``MaxPool_3a_3x3``,
``MaxPool_5a_3x3`` and ``Mixed_6e``; sFID's spatial features (Nash et al. 2021, "Generating Images
with Sparse Representations", Section 4; guided-diffusion ``evaluations/evaluator.py``:
``mixed_6/conv`` channels 0-6) are ``Mixed_6d``'s first 7 channels, since that module's first
branch is the single 1x1 conv ``mixed_6/conv``. ``PreLogits`` is the graph's 2048-d ``pool_3``.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import Conventions, resolve
from inception_jax.models.layers import Conv, Pool, Spec
from inception_jax.models.registry import register

AVG = Pool('avg', 3, 1, 'SAME')


def module_35x35(pool_features: int) -> tuple[Spec, ...]:
  """Mixed_5b-5d (Figure 5)."""
  return (Spec((Conv('Conv2d_0a_1x1', 64, 1),)),
          Spec((Conv('Conv2d_0a_1x1', 48, 1), Conv('Conv2d_0b_5x5', 64, 5))),
          Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3),
                Conv('Conv2d_0c_3x3', 96, 3))),
          Spec((AVG, Conv('Conv2d_0b_1x1', pool_features, 1))))


REDUCTION_35 = (Spec((Conv('Conv2d_1a_3x3', 384, 3, 2, 'VALID'),)),
                Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3),
                      Conv('Conv2d_1a_3x3', 96, 3, 2, 'VALID'))),
                Spec((Pool('max', 3, 2, 'VALID'),)))


def module_17x17(c: int) -> tuple[Spec, ...]:
  """Mixed_6b-6e (Figure 6): 7x7 factorised into 1x7 and 7x1, ``c`` channels inside."""
  return (Spec((Conv('Conv2d_0a_1x1', 192, 1),)),
          Spec((Conv('Conv2d_0a_1x1', c, 1), Conv('Conv2d_0b_1x7', c, (1, 7)),
                Conv('Conv2d_0c_7x1', 192, (7, 1)))),
          Spec((Conv('Conv2d_0a_1x1', c, 1), Conv('Conv2d_0b_7x1', c, (7, 1)),
                Conv('Conv2d_0c_1x7', c, (1, 7)), Conv('Conv2d_0d_7x1', c, (7, 1)),
                Conv('Conv2d_0e_1x7', 192, (1, 7)))),
          Spec((AVG, Conv('Conv2d_0b_1x1', 192, 1))))


REDUCTION_17 = (Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_1a_3x3', 320, 3, 2, 'VALID'))),
                Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_0b_1x7', 192, (1, 7)),
                      Conv('Conv2d_0c_7x1', 192, (7, 1)),
                      Conv('Conv2d_1a_3x3', 192, 3, 2, 'VALID'))),
                Spec((Pool('max', 3, 2, 'VALID'),)))


def module_8x8(pool: str) -> tuple[Spec, ...]:
  """Mixed_7b, 7c (Figure 7): 3x3 convs fork into 1x3 and 3x1. ``pool``: the graph's Mixed_7c
  pools its last branch with a max pool (``FIDInceptionE_2``), Mixed_7b with an average."""
  return (Spec((Conv('Conv2d_0a_1x1', 320, 1),)),
          Spec((Conv('Conv2d_0a_1x1', 384, 1),),
               fork=(Conv('Conv2d_0b_1x3', 384, (1, 3)), Conv('Conv2d_0c_3x1', 384, (3, 1)))),
          Spec((Conv('Conv2d_0a_1x1', 448, 1), Conv('Conv2d_0b_3x3', 384, 3)),
               fork=(Conv('Conv2d_0c_1x3', 384, (1, 3)), Conv('Conv2d_0d_3x1', 384, (3, 1)))),
          Spec((Pool(pool, 3, 1, 'SAME'), Conv('Conv2d_0b_1x1', 192, 1))))


STEM = (Conv('Conv2d_1a_3x3', 32, 3, 2, 'VALID'), Conv('Conv2d_2a_3x3', 32, 3, 1, 'VALID'),
        Conv('Conv2d_2b_3x3', 64, 3), Pool('max', 3, 2, 'VALID'),
        Conv('Conv2d_3b_1x1', 80, 1, 1, 'VALID'), Conv('Conv2d_4a_3x3', 192, 3, 1, 'VALID'),
        Pool('max', 3, 2, 'VALID'))
STEM_POOLS = ('MaxPool_3a_3x3', 'MaxPool_5a_3x3')

MODULES = (('Mixed_5b', module_35x35(32)), ('Mixed_5c', module_35x35(64)),
           ('Mixed_5d', module_35x35(64)), ('Mixed_6a', REDUCTION_35),
           ('Mixed_6b', module_17x17(128)), ('Mixed_6c', module_17x17(160)),
           ('Mixed_6d', module_17x17(160)), ('Mixed_6e', module_17x17(192)),
           ('Mixed_7a', REDUCTION_17), ('Mixed_7b', module_8x8('avg')),
           ('Mixed_7c', module_8x8('max')))


@register('inception_v3_fid', input_size=299, default_conventions='tf',
          paper='Heusel et al. 2017, GANs Trained by a Two Time-Scale Update Rule (FID network: '
                'TF inception-2015-12-05)')
class InceptionV3FID(nn.Module):
  """The FID network (see the module docstring). Input: ``(x - 128) / 128`` of 0-255 values.

  Attributes:
    num_classes: 1008 for the released graph; 0 returns the 2048-d ``pool_3`` features.
    conventions: 'tf' or 'torch' give the same function here (stride-1 SAME padding of odd
      kernels is symmetric; pools exclude padding; BN eps 1e-3 with a scale; see
      ``conventions.py``).
    dtype: compute dtype (parameters stay float32).
  """

  num_classes: int = 1008
  conventions: Conventions = resolve('inception_v3_fid', 'tf')
  dtype: Any = jnp.float32

  min_size: ClassVar[int] = 75  # Mixed_7a's stride-2 VALID 3x3 needs a 3x3 map

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_input(images, self.min_size, 'inception_v3_fid')
    conventions = self.conventions
    point = functools.partial(layers.endpoint, self)
    x = images
    pools = iter(STEM_POOLS)
    for op in STEM:
      if isinstance(op, Pool):
        x = point(next(pools), layers.max_pool(x, op.window, op.strides, op.padding, conventions))
      else:
        x = point(op.name, layers.ConvBN(op.features, op.kernel, conventions, strides=op.strides,
                                         padding=op.padding, dtype=self.dtype, name=op.name)(
                                             x, train))
    for name, specs in MODULES:
      x = point(name, layers.Mixed(specs, conventions, dtype=self.dtype, name=name)(x, train))
    x = point('PreLogits', layers.global_avg_pool(x))
    if not self.num_classes:
      return x
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
