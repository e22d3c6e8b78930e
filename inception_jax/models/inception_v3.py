"""Inception-v3: Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision".

The network of Table 1 as released with the TF-slim checkpoint (and ported by Keras, torchvision
and timm): a convolutional stem, three 35x35 modules (Figure 5), a grid reduction (Figure 10),
four 17x17 modules with factorised 7x7 convolutions (Figure 6), a second reduction, two 8x8
modules with expanded filter banks (Figure 7), and one auxiliary classifier on the 17x17 grid
(Section 4, Figure 8). Where the released graph departs from Table 1 (the stem between its two
max pools; a 5x5 branch beside the double 3x3 in the 35x35 modules) it is followed, since every
pretrained weight set has that shape. Branch widths are those of the released graph.

Parameter names follow TF-slim's scopes (``Mixed_6b/Branch_2/Conv2d_0c_1x7``); where slim's own
names are inconsistent between repeats of a module (``Conv_1_0c_5x5`` in Mixed_5c,
``Conv2d_0b_3x1`` in Mixed_7b, ``Conv2d_1a_1x1`` for 3x3 kernels in Mixed_6a) every repeat
here uses the regular name.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.registry import register


C, P = layers.Conv, layers.Pool


def inception_a(pool_features: int, widths=((64,), (48, 64), (64, 96, 96)),
                branch0_scope: str = 'Conv2d_0a_1x1') -> tuple[layers.Spec, ...]:
  """Figure 5, the 35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1. ``widths`` are the
  convs' widths per branch (IRv2's Mixed_5b reuses the module with wider 1x1s)."""
  (w0,), (w1a, w1b), (w2a, w2b, w2c) = widths
  return (
      layers.Spec((C(branch0_scope, w0, 1),)),
      layers.Spec((C('Conv2d_0a_1x1', w1a, 1), C('Conv2d_0b_5x5', w1b, 5))),
      layers.Spec((C('Conv2d_0a_1x1', w2a, 1), C('Conv2d_0b_3x3', w2b, 3),
                   C('Conv2d_0c_3x3', w2c, 3))),
      layers.Spec((P('avg', 3), C('Conv2d_0b_1x1', pool_features, 1))),
  )


def reduction_a() -> tuple[layers.Spec, ...]:
  """Figure 10, the 35x35 -> 17x17 reduction (Mixed_6a): stride-2 convs beside a pool, so the
  grid shrinks without a representational bottleneck (Section 5)."""
  return (
      layers.Spec((C('Conv2d_1a_3x3', 384, 3, 2, 'VALID'),)),
      layers.Spec((C('Conv2d_0a_1x1', 64, 1), C('Conv2d_0b_3x3', 96, 3),
                   C('Conv2d_1a_3x3', 96, 3, 2, 'VALID'))),
      layers.Spec((P('max', 3, 2, 'VALID'),)),
  )


def inception_b(channels_7x7: int) -> tuple[layers.Spec, ...]:
  """Figure 6, the 17x17 module: 7x7 convs factorised into 1x7 and 7x1 (Section 3.2);
  ``channels_7x7`` is the width inside the factorised branches."""
  c = channels_7x7
  return (
      layers.Spec((C('Conv2d_0a_1x1', 192, 1),)),
      layers.Spec((C('Conv2d_0a_1x1', c, 1), C('Conv2d_0b_1x7', c, (1, 7)),
                   C('Conv2d_0c_7x1', 192, (7, 1)))),
      layers.Spec((C('Conv2d_0a_1x1', c, 1), C('Conv2d_0b_7x1', c, (7, 1)),
                   C('Conv2d_0c_1x7', c, (1, 7)), C('Conv2d_0d_7x1', c, (7, 1)),
                   C('Conv2d_0e_1x7', 192, (1, 7)))),
      layers.Spec((P('avg', 3), C('Conv2d_0b_1x1', 192, 1))),
  )


def reduction_b() -> tuple[layers.Spec, ...]:
  """Figure 10's reduction on the 17x17 grid (Mixed_7a): 17x17 -> 8x8."""
  return (
      layers.Spec((C('Conv2d_0a_1x1', 192, 1), C('Conv2d_1a_3x3', 320, 3, 2, 'VALID'))),
      layers.Spec((C('Conv2d_0a_1x1', 192, 1), C('Conv2d_0b_1x7', 192, (1, 7)),
                   C('Conv2d_0c_7x1', 192, (7, 1)), C('Conv2d_1a_3x3', 192, 3, 2, 'VALID'))),
      layers.Spec((P('max', 3, 2, 'VALID'),)),
  )


def inception_c() -> tuple[layers.Spec, ...]:
  """Figure 7, the 8x8 module: the 3x3s fork into parallel 1x3 and 3x1, widening the output on
  the coarsest grid (Section 2)."""
  fork = lambda a, b: (C(a, 384, (1, 3)), C(b, 384, (3, 1)))
  return (
      layers.Spec((C('Conv2d_0a_1x1', 320, 1),)),
      layers.Spec((C('Conv2d_0a_1x1', 384, 1),), fork('Conv2d_0b_1x3', 'Conv2d_0c_3x1')),
      layers.Spec((C('Conv2d_0a_1x1', 448, 1), C('Conv2d_0b_3x3', 384, 3)),
                  fork('Conv2d_0c_1x3', 'Conv2d_0d_3x1')),
      layers.Spec((P('avg', 3), C('Conv2d_0b_1x1', 192, 1))),
  )


# Table 1 as released: the stem up to the 35x35 grid, then every Mixed block as
# (name, spec function, arguments). Converters derive their scope names from these tables.
STEM = (C('Conv2d_1a_3x3', 32, 3, 2, 'VALID'), C('Conv2d_2a_3x3', 32, 3, 1, 'VALID'),
        C('Conv2d_2b_3x3', 64, 3), P('max', 3, 2, 'VALID', name='MaxPool_3a_3x3'),
        C('Conv2d_3b_1x1', 80, 1, 1, 'VALID'), C('Conv2d_4a_3x3', 192, 3, 1, 'VALID'),
        P('max', 3, 2, 'VALID', name='MaxPool_5a_3x3'))
MIXED = (('Mixed_5b', inception_a, (32,)), ('Mixed_5c', inception_a, (64,)),
         ('Mixed_5d', inception_a, (64,)), ('Mixed_6a', reduction_a, ()),
         ('Mixed_6b', inception_b, (128,)), ('Mixed_6c', inception_b, (160,)),
         ('Mixed_6d', inception_b, (160,)), ('Mixed_6e', inception_b, (192,)),
         ('Mixed_7a', reduction_b, ()), ('Mixed_7b', inception_c, ()),
         ('Mixed_7c', inception_c, ()))
AUX_AFTER = 'Mixed_6e'  # Section 4: the auxiliary classifier sits on the last 17x17 module


class AuxHead(nn.Module):
  """Section 4 and Figure 8, the auxiliary classifier on the 17x17 grid, with BN in the side
  head (Figure 8): 5x5/3 average pool, 1x1 conv 128, 5x5 conv 768, global average, linear.

  At 299 pixels the pool leaves 5x5 and the 5x5 conv (declared VALID) 1x1, as in TF-slim and
  torchvision. For smaller inputs TF-slim shrinks the conv's kernel to the map, which makes the
  parameter shapes depend on the input size; torchvision fails below 299 in train mode. Here an
  op whose window is larger than its input map is declared SAME instead (zero padding realised
  by the conventions), so the same 5x5 kernel serves every size down to ``min_size``. The global
  average after the conv is torchvision's adaptive pool, a no-op at 299.
  """

  num_classes: int
  conventions: Conventions
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.avg_pool(x, 5, 3, _fitting(x, 5), self.conventions)
    conv = functools.partial(layers.ConvBN, conventions=self.conventions, dtype=self.dtype)
    x = conv(128, 1, name='Conv2d_1b_1x1')(x, train)
    x = conv(768, 5, padding=_fitting(x, 5), name='Conv2d_2a_5x5')(x, train)
    x = layers.global_avg_pool(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)


def _fitting(x: jax.Array, window: int) -> str:
  return 'VALID' if min(x.shape[1:3]) >= window else 'SAME'


@register('inception_v3', input_size=299, default_conventions='tf',
          paper='Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision')
class InceptionV3(nn.Module):
  """Inception-v3 (Table 1). See the module docstring.

  Attributes:
    num_classes: classifier size; 0 returns the 2048-d pooled features (no heads at all).
    conventions: numeric conventions of the weights' origin (see ``conventions.py``).
    dropout_rate: before the classifier. 0.2 is TF-slim's ``dropout_keep_prob=0.8``, the
      setting of the released checkpoint; torchvision trains with 0.5.
    aux_logits: the auxiliary classifier after Mixed_6e (Section 4); computed in train mode.
    dtype: compute dtype (parameters stay float32).
  """

  num_classes: int = 1000
  conventions: Conventions = TF
  dropout_rate: float = 0.2
  aux_logits: bool = True
  dtype: Any = jnp.float32

  # Mixed_7a's stride-2 VALID 3x3 needs a 3x3 map, which a 75x75 input leaves (Keras and
  # torchvision document the same minimum); the aux head runs there too (see AuxHead).
  min_size: ClassVar[int] = 75

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    layers.check_input(images, self.min_size, 'inception_v3')
    kw = dict(conventions=self.conventions, dtype=self.dtype)
    point = functools.partial(layers.endpoint, self)

    x = images
    for op in STEM:
      x = point(op.name, layers.apply_op(op, x, train, **kw))
    aux = None
    for name, specs, args in MIXED:
      x = point(name, layers.Mixed(specs(*args), name=name, **kw)(x, train))
      # Only train mode uses the aux head; it also runs at init so that eval-mode init creates
      # its parameters.
      if (name == AUX_AFTER and self.aux_logits and self.num_classes
          and (train or self.is_initializing())):
        aux = point('AuxLogits', AuxHead(self.num_classes, name='AuxLogits', **kw)(x, train))

    # Table 1's 8x8 pool taken over the whole map (as Keras and torchvision do), so that every
    # input size gives one feature vector.
    x = point('PreLogits', layers.global_avg_pool(x))
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = layers.dense(self.num_classes, self.dtype, name='Logits')(x)
    if train and aux is not None:
      return logits, (aux,)
    return logits
