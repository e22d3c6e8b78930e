"""Inception-v3: Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision".

Table 1 as released with the TF-slim checkpoint (and ported by Keras, torchvision, timm): stem,
3 x Figure 5, Figure 10's reduction, 4 x Figure 6, a second reduction, 2 x Figure 7, and the aux
classifier of Section 4 on the 17x17 grid. Where the release departs from Table 1 (the stem; a
5x5 branch in Figure 5) it is followed, since every pretrained weight set has that shape. Scopes
are slim's, with the regular name wherever slim's repeats are inconsistent (``Conv_1_0c_5x5`` in
Mixed_5c, ``Conv2d_0b_3x1`` in Mixed_7b).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import global_avg_pool
from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.layers import Conv, Pool, Spec
from inception_jax.models.registry import register


def inception_a(pool_features: int, widths=((64,), (48, 64), (64, 96, 96)),
                branch0_scope: str = 'Conv2d_0a_1x1') -> tuple[Spec, ...]:
  """Figure 5, the 35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1. ``widths`` are the
  convs' widths per branch (IRv2's Mixed_5b reuses the module with wider 1x1s)."""
  (w0,), (w1a, w1b), (w2a, w2b, w2c) = widths
  return (
      Spec((Conv(branch0_scope, w0, 1),)),
      Spec((Conv('Conv2d_0a_1x1', w1a, 1), Conv('Conv2d_0b_5x5', w1b, 5))),
      Spec((Conv('Conv2d_0a_1x1', w2a, 1), Conv('Conv2d_0b_3x3', w2b, 3),
            Conv('Conv2d_0c_3x3', w2c, 3))),
      Spec((Pool('avg', 3), Conv('Conv2d_0b_1x1', pool_features, 1))),
  )


def reduction_a() -> tuple[Spec, ...]:
  """Figure 10, the 35x35 -> 17x17 reduction (Mixed_6a): stride-2 convs beside a pool, so the
  grid shrinks without a representational bottleneck (Section 5)."""
  return (
      Spec((Conv('Conv2d_1a_3x3', 384, 3, 2, 'VALID'),)),
      Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3),
            Conv('Conv2d_1a_3x3', 96, 3, 2, 'VALID'))),
      Spec((Pool('max', 3, 2, 'VALID'),)),
  )


def inception_b(channels_7x7: int) -> tuple[Spec, ...]:
  """Figure 6, the 17x17 module: 7x7 convs factorised into 1x7 and 7x1 (Section 3.2);
  ``channels_7x7`` is the width inside the factorised branches."""
  c = channels_7x7
  return (
      Spec((Conv('Conv2d_0a_1x1', 192, 1),)),
      Spec((Conv('Conv2d_0a_1x1', c, 1), Conv('Conv2d_0b_1x7', c, (1, 7)),
            Conv('Conv2d_0c_7x1', 192, (7, 1)))),
      Spec((Conv('Conv2d_0a_1x1', c, 1), Conv('Conv2d_0b_7x1', c, (7, 1)),
            Conv('Conv2d_0c_1x7', c, (1, 7)), Conv('Conv2d_0d_7x1', c, (7, 1)),
            Conv('Conv2d_0e_1x7', 192, (1, 7)))),
      Spec((Pool('avg', 3), Conv('Conv2d_0b_1x1', 192, 1))),
  )


def reduction_b() -> tuple[Spec, ...]:
  """Figure 10's reduction on the 17x17 grid (Mixed_7a): 17x17 -> 8x8."""
  return (
      Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_1a_3x3', 320, 3, 2, 'VALID'))),
      Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_0b_1x7', 192, (1, 7)),
            Conv('Conv2d_0c_7x1', 192, (7, 1)), Conv('Conv2d_1a_3x3', 192, 3, 2, 'VALID'))),
      Spec((Pool('max', 3, 2, 'VALID'),)),
  )


def inception_c() -> tuple[Spec, ...]:
  """Figure 7, the 8x8 module: the 3x3s fork into parallel 1x3 and 3x1, widening the output on
  the coarsest grid (Section 2)."""
  fork = lambda a, b: (Conv(a, 384, (1, 3)), Conv(b, 384, (3, 1)))
  return (
      Spec((Conv('Conv2d_0a_1x1', 320, 1),)),
      Spec((Conv('Conv2d_0a_1x1', 384, 1),), fork('Conv2d_0b_1x3', 'Conv2d_0c_3x1')),
      Spec((Conv('Conv2d_0a_1x1', 448, 1), Conv('Conv2d_0b_3x3', 384, 3)),
           fork('Conv2d_0c_1x3', 'Conv2d_0d_3x1')),
      Spec((Pool('avg', 3), Conv('Conv2d_0b_1x1', 192, 1))),
  )


# Table 1 as released: the stem up to the 35x35 grid, then every Mixed block as
# (name, spec function, arguments). Converters derive their scope names from these tables.
STEM = (Conv('Conv2d_1a_3x3', 32, 3, 2, 'VALID'), Conv('Conv2d_2a_3x3', 32, 3, 1, 'VALID'),
        Conv('Conv2d_2b_3x3', 64, 3), Pool('max', 3, 2, 'VALID', name='MaxPool_3a_3x3'),
        Conv('Conv2d_3b_1x1', 80, 1, 1, 'VALID'), Conv('Conv2d_4a_3x3', 192, 3, 1, 'VALID'),
        Pool('max', 3, 2, 'VALID', name='MaxPool_5a_3x3'))
MIXED = (('Mixed_5b', inception_a, (32,)), ('Mixed_5c', inception_a, (64,)),
         ('Mixed_5d', inception_a, (64,)), ('Mixed_6a', reduction_a, ()),
         ('Mixed_6b', inception_b, (128,)), ('Mixed_6c', inception_b, (160,)),
         ('Mixed_6d', inception_b, (160,)), ('Mixed_6e', inception_b, (192,)),
         ('Mixed_7a', reduction_b, ()), ('Mixed_7b', inception_c, ()),
         ('Mixed_7c', inception_c, ()))
AUX_AFTER = 'Mixed_6e'  # Section 4: the auxiliary classifier sits on the last 17x17 module
AUX_CONVS = (Conv('Conv2d_1b_1x1', 128, 1), Conv('Conv2d_2a_5x5', 768, 5))  # Figure 8


class AuxHead(nn.Module):
  """Section 4, Figure 8: the auxiliary classifier with BN (5x5/3 avg pool, 1x1 conv 128, 5x5
  conv 768, global average, linear). Below 299 px an op whose window exceeds its map is declared
  SAME instead of VALID, so the 5x5 kernel (and the parameter shapes) serve every input size;
  TF-slim shrinks the kernel instead and torchvision fails."""

  num_classes: int
  conventions: Conventions
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.avg_pool(x, 5, 3, _fitting(x, 5), self.conventions)
    for op in AUX_CONVS:
      x = layers.apply_op(op._replace(padding=_fitting(x, op.kernel)), x, train,
                          self.conventions, dtype=self.dtype,
                          cpu_convolutions=self.cpu_convolutions)
    x = global_avg_pool(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)


def _fitting(x: jax.Array, window: int) -> str:
  return 'VALID' if min(x.shape[1:3]) >= window else 'SAME'


@register('inception_v3', input_size=299,
          paper='Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision')
class InceptionV3(nn.Module):
  """Inception-v3 (Table 1). See the module docstring.

  Attributes:
    num_classes: classifier size; 0 returns the 2048-d pooled features (no heads at all).
    conventions: numeric conventions of the weights' origin (see ``conventions.py``).
    dropout_rate: before the classifier. 0.2 is TF-slim's ``dropout_keep_prob=0.8``, the
      setting of the released checkpoint; torchvision trains with 0.5.
    aux_logits: the auxiliary classifier after Mixed_6e (Section 4); its logits go to
      ``intermediates/aux_logits`` (see ``models/__init__.py``).
    dtype: compute dtype (parameters stay float32).
    cpu_convolutions: the library XLA:CPU runs convolutions with, 'ynnpack' or 'xla' (see
      ``layers``): the forms of the gradients, not the function.
  """

  num_classes: int = 1000
  conventions: Conventions = TF
  dropout_rate: float = 0.2
  aux_logits: bool = True
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'

  # Mixed_7a's stride-2 VALID 3x3 needs a 3x3 map, which a 75x75 input leaves (Keras and
  # torchvision document the same minimum); the aux head runs there too (see AuxHead).
  min_size: ClassVar[int] = 75

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    kw, point = layers.begin(self, images, 'inception_v3')
    x = layers.stem(STEM, images, train, kw, point)
    for name, specs, args in MIXED:
      x = point(name, layers.Mixed(specs(*args), name=name, **kw)(x, train))
      if (name == AUX_AFTER and self.aux_logits and self.num_classes
          and layers.wants_aux(self)):
        aux = AuxHead(self.num_classes, name='AuxLogits', **kw)(x, train)
        layers.aux_logits(self, point('AuxLogits', aux))

    # Table 1's 8x8 pool taken over the whole map (as Keras and torchvision do), so that every
    # input size gives one feature vector.
    x = point('PreLogits', global_avg_pool(x))
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
