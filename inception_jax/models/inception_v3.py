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
from typing import Any, ClassVar, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.registry import register


class Conv(NamedTuple):
  """One ``layers.ConvBN`` unit of a branch: its slim scope name, width, kernel, stride, padding."""
  name: str
  features: int
  kernel: int | tuple[int, int]
  strides: int = 1
  padding: str = 'SAME'


class Branch(nn.Module):
  """One TF-slim ``Branch_<i>`` scope: ``convs`` in sequence, then the ``fork`` convs applied in
  parallel to the result and concatenated (Figure 7's expanded filter bank)."""

  convs: Sequence[Conv]
  conventions: Conventions
  fork: Sequence[Conv] = ()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    def unit(c: Conv):
      return layers.ConvBN(c.features, c.kernel, self.conventions, strides=c.strides,
                           padding=c.padding, dtype=self.dtype, name=c.name)
    for c in self.convs:
      x = unit(c)(x, train)
    if self.fork:
      x = jnp.concatenate([unit(c)(x, train) for c in self.fork], axis=-1)
    return x


class _Mixed(nn.Module):
  """Fields shared by the Mixed_* blocks."""

  conventions: Conventions
  dtype: Any = jnp.float32

  def branch(self, name: str, *convs: Conv, fork: Sequence[Conv] = ()) -> Branch:
    return Branch(convs, self.conventions, fork, self.dtype, name=name)

  def avg_pool(self, x: jax.Array) -> jax.Array:
    return layers.avg_pool(x, 3, 1, 'SAME', self.conventions)

  def max_pool(self, x: jax.Array) -> jax.Array:
    return layers.max_pool(x, 3, 2, 'VALID', self.conventions)


def inception_a(pool_features: int, widths=((64,), (48, 64), (64, 96, 96)),
                branch0_scope: str = 'Conv2d_0a_1x1') -> tuple[layers.Spec, ...]:
  """Figure 5, the 35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1. ``widths`` are the
  convs' widths per branch (IRv2's Mixed_5b reuses the module with wider 1x1s)."""
  (w0,), (w1a, w1b), (w2a, w2b, w2c) = widths
  C, P = layers.Conv, layers.Pool
  return (
      layers.Spec((C(branch0_scope, w0, 1),)),
      layers.Spec((C('Conv2d_0a_1x1', w1a, 1), C('Conv2d_0b_5x5', w1b, 5))),
      layers.Spec((C('Conv2d_0a_1x1', w2a, 1), C('Conv2d_0b_3x3', w2b, 3),
                   C('Conv2d_0c_3x3', w2c, 3))),
      layers.Spec((P('avg', 3), C('Conv2d_0b_1x1', pool_features, 1))),
  )


class InceptionA(_Mixed):
  """Figure 5, the 35x35 module (Mixed_5b-5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""

  pool_features: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return jnp.concatenate([
        self.branch('Branch_0', Conv('Conv2d_0a_1x1', 64, 1))(x, train),
        self.branch('Branch_1', Conv('Conv2d_0a_1x1', 48, 1),
                    Conv('Conv2d_0b_5x5', 64, 5))(x, train),
        self.branch('Branch_2', Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3),
                    Conv('Conv2d_0c_3x3', 96, 3))(x, train),
        self.branch('Branch_3', Conv('Conv2d_0b_1x1', self.pool_features, 1))(
            self.avg_pool(x), train),
    ], axis=-1)


class ReductionA(_Mixed):
  """Figure 10, the 35x35 -> 17x17 grid reduction (Mixed_6a): stride-2 convs beside a pool,
  so the grid shrinks without a representational bottleneck (Section 5)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return jnp.concatenate([
        self.branch('Branch_0', Conv('Conv2d_1a_3x3', 384, 3, 2, 'VALID'))(x, train),
        self.branch('Branch_1', Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3),
                    Conv('Conv2d_1a_3x3', 96, 3, 2, 'VALID'))(x, train),
        self.max_pool(x),
    ], axis=-1)


class InceptionB(_Mixed):
  """Figure 6, the 17x17 module (Mixed_6b-6e): 7x7 convolutions factorised into 1x7 and 7x1
  (Section 3.2); ``channels_7x7`` is the width inside the factorised branches."""

  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.channels_7x7
    return jnp.concatenate([
        self.branch('Branch_0', Conv('Conv2d_0a_1x1', 192, 1))(x, train),
        self.branch('Branch_1', Conv('Conv2d_0a_1x1', c, 1), Conv('Conv2d_0b_1x7', c, (1, 7)),
                    Conv('Conv2d_0c_7x1', 192, (7, 1)))(x, train),
        self.branch('Branch_2', Conv('Conv2d_0a_1x1', c, 1), Conv('Conv2d_0b_7x1', c, (7, 1)),
                    Conv('Conv2d_0c_1x7', c, (1, 7)), Conv('Conv2d_0d_7x1', c, (7, 1)),
                    Conv('Conv2d_0e_1x7', 192, (1, 7)))(x, train),
        self.branch('Branch_3', Conv('Conv2d_0b_1x1', 192, 1))(self.avg_pool(x), train),
    ], axis=-1)


class ReductionB(_Mixed):
  """Figure 10's reduction applied to the 17x17 grid (Mixed_7a): 17x17 -> 8x8."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return jnp.concatenate([
        self.branch('Branch_0', Conv('Conv2d_0a_1x1', 192, 1),
                    Conv('Conv2d_1a_3x3', 320, 3, 2, 'VALID'))(x, train),
        self.branch('Branch_1', Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_0b_1x7', 192, (1, 7)),
                    Conv('Conv2d_0c_7x1', 192, (7, 1)),
                    Conv('Conv2d_1a_3x3', 192, 3, 2, 'VALID'))(x, train),
        self.max_pool(x),
    ], axis=-1)


class InceptionC(_Mixed):
  """Figure 7, the 8x8 module (Mixed_7b, 7c): the 3x3 convs fork into parallel 1x3 and 3x1,
  widening the output for high-dimensional representations on the coarsest grid (Section 2)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fork = lambda a, b: (Conv(a, 384, (1, 3)), Conv(b, 384, (3, 1)))
    return jnp.concatenate([
        self.branch('Branch_0', Conv('Conv2d_0a_1x1', 320, 1))(x, train),
        self.branch('Branch_1', Conv('Conv2d_0a_1x1', 384, 1),
                    fork=fork('Conv2d_0b_1x3', 'Conv2d_0c_3x1'))(x, train),
        self.branch('Branch_2', Conv('Conv2d_0a_1x1', 448, 1), Conv('Conv2d_0b_3x3', 384, 3),
                    fork=fork('Conv2d_0c_1x3', 'Conv2d_0d_3x1'))(x, train),
        self.branch('Branch_3', Conv('Conv2d_0b_1x1', 192, 1))(self.avg_pool(x), train),
    ], axis=-1)


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
    conv = functools.partial(layers.ConvBN, **kw)
    point = functools.partial(layers.endpoint, self)

    # Stem: Table 1 up to the 35x35 grid, as released (see the module docstring).
    x = images
    for name, features, kernel, strides, padding in (
        ('Conv2d_1a_3x3', 32, 3, 2, 'VALID'), ('Conv2d_2a_3x3', 32, 3, 1, 'VALID'),
        ('Conv2d_2b_3x3', 64, 3, 1, 'SAME'), ('MaxPool_3a_3x3', None, 3, 2, 'VALID'),
        ('Conv2d_3b_1x1', 80, 1, 1, 'VALID'), ('Conv2d_4a_3x3', 192, 3, 1, 'VALID'),
        ('MaxPool_5a_3x3', None, 3, 2, 'VALID')):
      if features is None:
        x = layers.max_pool(x, kernel, strides, padding, self.conventions)
      else:
        x = conv(features, kernel, strides=strides, padding=padding, name=name)(x, train)
      point(name, x)

    for name, pool_features in (('Mixed_5b', 32), ('Mixed_5c', 64), ('Mixed_5d', 64)):
      x = point(name, InceptionA(pool_features=pool_features, name=name, **kw)(x, train))
    x = point('Mixed_6a', ReductionA(name='Mixed_6a', **kw)(x, train))
    for name, channels in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                           ('Mixed_6e', 192)):
      x = point(name, InceptionB(channels_7x7=channels, name=name, **kw)(x, train))

    aux = None
    # Only train mode uses the aux head; it is also run at init so that eval-mode init creates
    # its parameters.
    if self.aux_logits and self.num_classes and (train or self.is_initializing()):
      aux = point('AuxLogits', AuxHead(self.num_classes, name='AuxLogits', **kw)(x, train))

    x = point('Mixed_7a', ReductionB(name='Mixed_7a', **kw)(x, train))
    for name in ('Mixed_7b', 'Mixed_7c'):
      x = point(name, InceptionC(name=name, **kw)(x, train))

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
