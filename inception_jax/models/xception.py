"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions").

Figure 5 of the paper: 36 convolutions in 14 blocks, a linear stack of depthwise separable
convolutions with residual connections around all blocks but the first and the last.

* entry flow: ``block1`` (two plain 3x3 convs, VALID as in Keras and timm), then ``block2``,
  ``block3``, ``block4``: two separable convs and a stride-2 max pool, with a strided 1x1 conv+BN
  shortcut (128, 256, 728 channels);
* middle flow: ``block5`` ... ``block12``, three separable convs of 728 with an identity shortcut;
* exit flow: ``block13`` (728 -> 1024 with a conv shortcut), ``block14`` (separable 1536 and 2048,
  each followed by ReLU), global average pool, dropout, classifier (no auxiliary tower,
  Section 4.3).

Scopes and end points follow Keras' layer names (``keras.applications.Xception``): end points
``block1_conv1`` (149x149x32 at 299), ``block1_conv2`` (147x147x64), ``block2`` (74x74x128),
``block3`` (37x37x256), ``block4`` (19x19x728, end of the entry flow), ``block5`` ... ``block12``
(19x19x728, ``block12`` ends the middle flow), ``block13`` (10x10x1024), ``block14``
(10x10x2048, after its last ReLU), ``PreLogits`` (2048). The end points of blocks 2-13 are the sums
of residual and shortcut, before the ReLU with which the next block starts.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.registry import register

# (name, widths of the separable convs, stride, ReLU before the first separable conv), Figure 5.
# block2 follows block1's own ReLU, so it starts with its separable conv.
BLOCKS: tuple[tuple[str, tuple[int, ...], int, bool], ...] = (
    ('block2', (128, 128), 2, False),
    ('block3', (256, 256), 2, True),
    ('block4', (728, 728), 2, True),
    *((f'block{i}', (728, 728, 728), 1, True) for i in range(5, 13)),
    ('block13', (728, 1024), 2, True),
)


class SeparableConvBN(nn.Module):
  """Depthwise 3x3 conv, pointwise 1x1 conv, BatchNorm (Section 3, Figure 5).

  No BN or ReLU between depthwise and pointwise: the paper (Section 4.7, Figure 10) found the
  intermediate non-linearity harmful, and Keras' SeparableConv2D and timm have none.
  """

  features: int
  conventions: Conventions
  activation: Callable[[jax.Array], jax.Array] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    plain = dict(conventions=self.conventions, use_bn=False, use_bias=False, activation=None,
                 dtype=self.dtype)
    x = layers.ConvBN(x.shape[-1], 3, feature_group_count=x.shape[-1], name='depthwise',
                      **plain)(x)
    x = layers.ConvBN(self.features, 1, name='pointwise', **plain)(x)
    x = layers.batch_norm(self.conventions, self.dtype, name='bn')(x, use_running_average=not train)
    return x if self.activation is None else self.activation(x)


class XceptionBlock(nn.Module):
  """A residual block of the entry, middle or exit flow (Figure 5).

  ReLU precedes each separable conv inside the residual branch; the shortcut takes the block's
  input before that ReLU, so the sum that leaves the block is not rectified.
  """

  widths: Sequence[int]
  conventions: Conventions
  strides: int = 1
  start_with_relu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.widths[-1]:
      shortcut = layers.ConvBN(self.widths[-1], 1, self.conventions, strides=self.strides,
                               activation=None, dtype=self.dtype, name='residual')(x, train)
    for i, width in enumerate(self.widths):
      if i > 0 or self.start_with_relu:
        x = nn.relu(x)
      x = SeparableConvBN(width, self.conventions, dtype=self.dtype,
                          name=f'sepconv{i + 1}')(x, train)
    if self.strides != 1:
      x = layers.max_pool(x, 3, self.strides, 'SAME', self.conventions)
    return x + shortcut


@register('xception', paper='Chollet 2017, Xception: Deep Learning with Depthwise Separable '
          'Convolutions', input_size=299, default_conventions='tf')
class Xception(nn.Module):
  """Xception for ImageNet (Figure 5); see the module docstring for scopes and end points."""

  # Two VALID 3x3 convs (the first with stride 2) need 7 pixels to leave one; every later op is
  # padded. Keras refuses inputs below 71 by policy, not necessity.
  min_size: ClassVar[int] = 7

  num_classes: int = 1000
  conventions: Conventions = TF
  # Section 4.3: "a dropout layer of rate 0.5 before the logistic regression layer" on ImageNet
  # (none on JFT). Keras and timm's ports default to no dropout; eval outputs are unaffected.
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_input(images, self.min_size, 'xception')
    c, dt = self.conventions, self.dtype
    x = images.astype(dt)
    x = layers.ConvBN(32, 3, c, strides=2, padding='VALID', dtype=dt, name='block1_conv1')(x, train)
    layers.endpoint(self, 'block1_conv1', x)
    x = layers.ConvBN(64, 3, c, padding='VALID', dtype=dt, name='block1_conv2')(x, train)
    layers.endpoint(self, 'block1_conv2', x)

    for name, widths, strides, start_with_relu in BLOCKS:
      x = XceptionBlock(widths, c, strides, start_with_relu, dtype=dt, name=name)(x, train)
      layers.endpoint(self, name, x)

    x = SeparableConvBN(1536, c, nn.relu, dtype=dt, name='block14_sepconv1')(x, train)
    x = SeparableConvBN(2048, c, nn.relu, dtype=dt, name='block14_sepconv2')(x, train)
    layers.endpoint(self, 'block14', x)

    x = layers.endpoint(self, 'PreLogits', layers.global_avg_pool(x))
    if self.num_classes == 0:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, dt, name='Logits')(x)
