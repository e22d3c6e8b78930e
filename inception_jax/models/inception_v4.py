"""Inception-v4 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, arXiv:1602.07261), Figures 3-9.

A pure Inception network (no residual connections): the stem of Figure 3, then 4 Inception-A
(Figure 4), Reduction-A (Figure 7), 7 Inception-B (Figure 5), Reduction-B (Figure 8) and
3 Inception-C (Figure 6) blocks, global average pooling, dropout and the classifier (Figure 9).

Module and parameter names are TF-slim's (``nets/inception_v4.py``): ``Mixed_5b`` ...,
``Branch_1/Conv2d_0b_1x7``. Where the paper's figures and the released network differ in the
order of factorised 1x7/7x1 (and 1x3/3x1) convolutions, the released network is followed: it is
the one TF-slim's checkpoint (and timm's port of it) was trained as.

There is no auxiliary head: TF-slim can add one after Mixed_6h (``create_aux_logits``), but
Figure 9 has none, timm's port has none, and the model contract gives auxiliary heads to
inception_v1 and inception_v3 only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.registry import register


class StemMixed3a(layers.Block):
  """Figure 3, first filter concatenation: max pool | 96 conv, both 3x3/2 VALID -> 73x73x160."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = layers.max_pool(x, 3, 2, 'VALID', self.conventions)
    b1 = self.conv(96, 3, 'Branch_1/Conv2d_0a_3x3', strides=2, padding='VALID')(x, train)
    return jnp.concatenate([b0, b1], axis=-1)


class StemMixed4a(layers.Block):
  """Figure 3, second filter concatenation: two towers ending in 3x3 VALID -> 71x71x192.

  The 7x7 tower runs 1x7 before 7x1 as released (the figure draws 7x1 first).
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(64, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    b0 = self.conv(96, 3, 'Branch_0/Conv2d_1a_3x3', padding='VALID')(b0, train)
    b1 = self.conv(64, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(64, (1, 7), 'Branch_1/Conv2d_0b_1x7')(b1, train)
    b1 = self.conv(64, (7, 1), 'Branch_1/Conv2d_0c_7x1')(b1, train)
    b1 = self.conv(96, 3, 'Branch_1/Conv2d_1a_3x3', padding='VALID')(b1, train)
    return jnp.concatenate([b0, b1], axis=-1)


class StemMixed5a(layers.Block):
  """Figure 3, last filter concatenation: 192 conv | max pool, both 3x3/2 VALID -> 35x35x384.

  The figure omits the conv's stride; it is 2, as the 35x35 output requires.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(192, 3, 'Branch_0/Conv2d_1a_3x3', strides=2, padding='VALID')(x, train)
    b1 = layers.max_pool(x, 3, 2, 'VALID', self.conventions)
    return jnp.concatenate([b0, b1], axis=-1)


class InceptionA(layers.Block):
  """Figure 4, the 35x35 block: 96 + 96 + 96 + 96 = 384 channels."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(96, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(64, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(96, 3, 'Branch_1/Conv2d_0b_3x3')(b1, train)
    b2 = self.conv(64, 1, 'Branch_2/Conv2d_0a_1x1')(x, train)
    b2 = self.conv(96, 3, 'Branch_2/Conv2d_0b_3x3')(b2, train)
    b2 = self.conv(96, 3, 'Branch_2/Conv2d_0c_3x3')(b2, train)
    b3 = layers.avg_pool(x, 3, 1, 'SAME', self.conventions)
    b3 = self.conv(96, 1, 'Branch_3/Conv2d_0b_1x1')(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class ReductionA(layers.Block):
  """Figure 7, 35x35 -> 17x17; the paper's three networks share it with Table 1's widths k, l, m,
  n (Inception-v4: 192, 224, 256, 384; Inception-ResNet-v1: 192, 192, 256, 384; v2: 256, 256, 384,
  384)."""

  k: int = 192
  l: int = 224
  m: int = 256
  n: int = 384

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(self.n, 3, 'Branch_0/Conv2d_1a_3x3', strides=2, padding='VALID')(x, train)
    b1 = self.conv(self.k, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(self.l, 3, 'Branch_1/Conv2d_0b_3x3')(b1, train)
    b1 = self.conv(self.m, 3, 'Branch_1/Conv2d_1a_3x3', strides=2, padding='VALID')(b1, train)
    b2 = layers.max_pool(x, 3, 2, 'VALID', self.conventions)
    return jnp.concatenate([b0, b1, b2], axis=-1)


class InceptionB(layers.Block):
  """Figure 5, the 17x17 block: 384 + 256 + 256 + 128 = 1024 channels.

  The factorised 7x7 convolutions alternate as released (1x7, 7x1 | 7x1, 1x7, 7x1, 1x7).
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(384, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(192, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(224, (1, 7), 'Branch_1/Conv2d_0b_1x7')(b1, train)
    b1 = self.conv(256, (7, 1), 'Branch_1/Conv2d_0c_7x1')(b1, train)
    b2 = self.conv(192, 1, 'Branch_2/Conv2d_0a_1x1')(x, train)
    b2 = self.conv(192, (7, 1), 'Branch_2/Conv2d_0b_7x1')(b2, train)
    b2 = self.conv(224, (1, 7), 'Branch_2/Conv2d_0c_1x7')(b2, train)
    b2 = self.conv(224, (7, 1), 'Branch_2/Conv2d_0d_7x1')(b2, train)
    b2 = self.conv(256, (1, 7), 'Branch_2/Conv2d_0e_1x7')(b2, train)
    b3 = layers.avg_pool(x, 3, 1, 'SAME', self.conventions)
    b3 = self.conv(128, 1, 'Branch_3/Conv2d_0b_1x1')(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class ReductionB(layers.Block):
  """Figure 8, 17x17 -> 8x8: 192 + 320 + 1024 (pool) = 1536 channels."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(192, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    b0 = self.conv(192, 3, 'Branch_0/Conv2d_1a_3x3', strides=2, padding='VALID')(b0, train)
    b1 = self.conv(256, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(256, (1, 7), 'Branch_1/Conv2d_0b_1x7')(b1, train)
    b1 = self.conv(320, (7, 1), 'Branch_1/Conv2d_0c_7x1')(b1, train)
    b1 = self.conv(320, 3, 'Branch_1/Conv2d_1a_3x3', strides=2, padding='VALID')(b1, train)
    b2 = layers.max_pool(x, 3, 2, 'VALID', self.conventions)
    return jnp.concatenate([b0, b1, b2], axis=-1)


class InceptionC(layers.Block):
  """Figure 6, the 8x8 block: 256 + 2x256 + 2x256 + 256 = 1536 channels.

  Branches 1 and 2 end in a 1x3 and a 3x1 conv side by side on the same input (the "expanded
  filter bank" of the v3 paper, Figure 7); branch 2 runs 3x1 (448) before 1x3 (512) as released.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(256, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(384, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = jnp.concatenate([self.conv(256, (1, 3), 'Branch_1/Conv2d_0b_1x3')(b1, train),
                          self.conv(256, (3, 1), 'Branch_1/Conv2d_0c_3x1')(b1, train)], axis=-1)
    b2 = self.conv(384, 1, 'Branch_2/Conv2d_0a_1x1')(x, train)
    b2 = self.conv(448, (3, 1), 'Branch_2/Conv2d_0b_3x1')(b2, train)
    b2 = self.conv(512, (1, 3), 'Branch_2/Conv2d_0c_1x3')(b2, train)
    b2 = jnp.concatenate([self.conv(256, (1, 3), 'Branch_2/Conv2d_0d_1x3')(b2, train),
                          self.conv(256, (3, 1), 'Branch_2/Conv2d_0e_3x1')(b2, train)], axis=-1)
    b3 = layers.avg_pool(x, 3, 1, 'SAME', self.conventions)
    b3 = self.conv(256, 1, 'Branch_3/Conv2d_0b_1x1')(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


# Figure 9: (block, TF-slim scopes), in order after the stem.
_STAGES = (
    (InceptionA, ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_5e')),
    (ReductionA, ('Mixed_6a',)),
    (InceptionB, ('Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e', 'Mixed_6f', 'Mixed_6g',
                  'Mixed_6h')),
    (ReductionB, ('Mixed_7a',)),
    (InceptionC, ('Mixed_7b', 'Mixed_7c', 'Mixed_7d')),
)


@register('inception_v4', paper='Szegedy et al. 2016, Inception-v4, Inception-ResNet and the '
          'Impact of Residual Connections on Learning', input_size=299,
          default_conventions='tf')
class InceptionV4(nn.Module):
  """Inception-v4, Figure 9: stem, 4xA, Reduction-A, 7xB, Reduction-B, 3xC, pool, dropout, FC."""

  num_classes: int = 1000
  conventions: Conventions = TF
  # Figure 9, "Dropout (keep 0.8)"; TF-slim's dropout_keep_prob=0.8.
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32

  # Each stride-2 VALID stage (Conv2d_1a, Mixed_3a, Mixed_5a, Mixed_6a, Mixed_7a) maps n to
  # (n - 3) // 2 + 1 and each 3x3 VALID one (Conv2d_2a, Mixed_4a) to n - 2; 75 is the least
  # input that leaves 1x1 after Mixed_7a (75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1).
  min_size: ClassVar[int] = 75

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_input(images, self.min_size, 'inception_v4')
    block = dict(conventions=self.conventions, dtype=self.dtype)
    x = images.astype(self.dtype)

    # Figure 3 (stem): three plain convs, then three filter concatenations.
    for features, strides, padding, name in ((32, 2, 'VALID', 'Conv2d_1a_3x3'),
                                             (32, 1, 'VALID', 'Conv2d_2a_3x3'),
                                             (64, 1, 'SAME', 'Conv2d_2b_3x3')):
      x = layers.ConvBN(features, 3, self.conventions, strides=strides, padding=padding,
                        dtype=self.dtype, name=name)(x, train)
      layers.endpoint(self, name, x)
    for cls, name in ((StemMixed3a, 'Mixed_3a'), (StemMixed4a, 'Mixed_4a'),
                      (StemMixed5a, 'Mixed_5a')):
      x = layers.endpoint(self, name, cls(**block, name=name)(x, train))

    for cls, names in _STAGES:
      for name in names:
        x = layers.endpoint(self, name, cls(**block, name=name)(x, train))

    x = layers.endpoint(self, 'PreLogits', layers.global_avg_pool(x))
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
