"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions").

Figure 5: 36 convolutions in 14 blocks, a linear stack of depthwise separable convolutions with
residual connections around all blocks but the first and the last: the entry flow (block1's
two plain convs, block2-4), the middle flow repeated eight times (block5-12), the exit flow
(block13, block14), pooling, dropout, classifier; no auxiliary tower (Section 4.3). Names and end
points are Keras' (``keras.applications.Xception``); the end points of blocks 2-13 are the sums of
residual and shortcut, before the ReLU that starts the next block.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import global_avg_pool
from inception_jax.models import layers
from inception_jax.models.conventions import Conventions, resolve
from inception_jax.models.layers import Conv, Pool
from inception_jax.models.registry import register
from inception_jax.models.repeat import Run, run_blocks


class SepConv(NamedTuple):
  """A separable conv op (Section 3): a ReLU first where ``relu``, then :class:`SeparableConvBN`."""
  name: str
  features: int
  relu: bool = True


class SeparableConvBN(layers.Block):
  """Depthwise 3x3 conv, pointwise 1x1 conv, BatchNorm. Nothing between depthwise and
  pointwise: Section 4.7 (Figure 10) found an intermediate non-linearity harmful."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    plain = layers.op_kwargs(self, use_bn=False, use_bias=False, activation=None)
    x = layers.ConvBN(x.shape[-1], 3, feature_group_count=x.shape[-1], name='depthwise',
                      **plain)(x)
    x = layers.ConvBN(self.features, 1, name='pointwise', **plain)(x)
    return layers.batch_norm(self.conventions, self.dtype, name='bn')(
        x, use_running_average=not train)


class Block(NamedTuple):
  """A residual block of Figure 5: ``ops`` (separable convs, then a max pool where the block
  strides) and the ``shortcut`` (a strided 1x1 conv+BN, or None: identity)."""
  ops: tuple[SepConv | Pool, ...]
  shortcut: Conv | None = None


def block(widths: tuple[int, ...], strides: int = 1, first_relu: bool = True) -> Block:
  ops = tuple(SepConv(f'sepconv{i + 1}', w, relu=i > 0 or first_relu)
              for i, w in enumerate(widths))
  if strides == 1:
    return Block(ops)
  return Block((*ops, Pool('max', 3, strides)),
               Conv('residual', widths[-1], 1, strides, relu=False))


class XceptionBlock(layers.Block):
  """Runs a :class:`Block`; the shortcut takes the block's input before the first ReLU, so the
  sum that leaves the block is not rectified."""

  block: Block

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    kw = layers.op_kwargs(self)
    shortcut = x
    if self.block.shortcut is not None:
      shortcut = layers.apply_op(self.block.shortcut, x, train, **kw)
    for op in self.block.ops:
      if isinstance(op, SepConv):
        x = SeparableConvBN(op.features, name=op.name, **kw)(nn.relu(x) if op.relu else x, train)
      else:
        x = layers.apply_op(op, x, train, **kw)
    return x + shortcut


# Figure 5. block2 follows block1's own ReLU, so it starts with its separable conv; block14's
# separable convs are each followed by a ReLU.
STEM = (Conv('block1_conv1', 32, 3, 2, 'VALID'), Conv('block1_conv2', 64, 3, 1, 'VALID'))
MIDDLE_FLOW = Run((), 'block5_to_12', tuple(f'block{i}' for i in range(5, 13)))
BLOCKS = (('block2', block((128, 128), 2, first_relu=False)),
          ('block3', block((256, 256), 2)),
          ('block4', block((728, 728), 2)),
          (MIDDLE_FLOW, block((728, 728, 728))),
          ('block13', block((728, 1024), 2)))
EXIT = (SepConv('block14_sepconv1', 1536, relu=False), SepConv('block14_sepconv2', 2048))


@register('xception', paper='Chollet 2017, Xception: Deep Learning with Depthwise Separable '
          'Convolutions', input_size=299)
class Xception(nn.Module):
  """Xception for ImageNet (Figure 5). ``scan``: the middle flow is one scanned module
  (``block5_to_12``) that records only ``block12``'s end point; ``scan=False`` unrolls it."""

  # Two VALID 3x3 convs (the first with stride 2) need 7 pixels to leave one; every later op is
  # padded. Keras refuses inputs below 71 by policy, not necessity.
  min_size: ClassVar[int] = 7

  num_classes: int = 1000
  # Keras's conventions (its BatchNorm keeps a scale): what create('xception') builds.
  conventions: Conventions = resolve('xception', 'tf')
  # Section 4.3: dropout 0.5 before the logistic regression on ImageNet; Keras and timm default
  # to none (eval outputs are unaffected).
  dropout_rate: float = 0.5
  scan: bool = True
  remat: bool = False
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'  # XLA:CPU's convolution library (see layers)

  def runs(self) -> tuple[Run, ...]:
    return (MIDDLE_FLOW,)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    kw, point = layers.begin(self, images, 'xception')
    x = layers.stem(STEM, images.astype(self.dtype), train, kw, point)
    for name, spec in BLOCKS:
      make = functools.partial(XceptionBlock, spec, **kw)
      if isinstance(name, Run):
        x = run_blocks(make, name, x, train, scan=self.scan, remat=self.remat, each=point)
        if self.scan:
          point(name.blocks[-1], x)
      else:
        x = point(name, make(name=name)(x, train))
    for op in EXIT:
      x = SeparableConvBN(op.features, name=op.name, **kw)(nn.relu(x) if op.relu else x, train)
    x = point('block14', nn.relu(x))

    x = point('PreLogits', global_avg_pool(x))
    if self.num_classes == 0:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
