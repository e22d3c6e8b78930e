"""Inception-ResNet-v1 and -v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, arXiv:1602.07261).

Both networks follow the schema of Figure 15: a stem, 35x35 residual blocks (Inception-ResNet-A),
Reduction-A (Figure 7), 17x17 residual blocks (B), Reduction-B, 8x8 residual blocks (C), average
pooling, dropout and the classifier. The structure is written once; the two networks differ only
by the widths of :data:`VARIANTS` and by their stem:

* v1: the stem of Figure 14; blocks of Figures 10 (A), 11 (B), 13 (C); Reduction-B of Figure 12;
  Reduction-A with Table 1's k, l, m, n = 192, 192, 256, 384. Layout and names follow David
  Sandberg's facenet (``src/models/inception_resnet_v1.py``), whose weights facenet-pytorch ports.
* v2: blocks of Figures 16 (A), 17 (B), 19 (C); Reduction-B of Figure 18; Reduction-A with
  k, l, m, n = 256, 256, 384, 384. The released network (TF-slim ``nets/inception_resnet_v2.py``,
  the weights that Keras and timm carry) differs from the paper: its stem is Inception-v3's up to
  a 35x35x192 max pool followed by an Inception-v3-style Mixed_5b (320 channels), not Figure 3's
  384-channel stem; hence its residual blocks are 320 / 1088 / 2080 channels wide (the figures:
  384 / 1154 / 2048), and a 1x1 conv to 1536 channels (Conv2d_7b_1x1) precedes the pooling.
  The released network is followed.

Section 3.3: every residual is scaled before the addition (0.17 for A, 0.10 for B, 0.20 for C) so
that training does not diverge. The up-projection 1x1 conv that restores the block's width has
a bias and no BatchNorm. The last 8x8 block (``Block8``) has no ReLU after its addition and a
residual scale of 1.0, as in every released implementation.

Module and parameter names are TF-slim's: ``Repeat/block35_1/Branch_2/Conv2d_0c_3x3``,
``Mixed_6a``, ``Repeat_1/block17_20``, ``Repeat_2/block8_9``, ``Block8``, ``Conv2d_7b_1x1``.
There are no auxiliary heads (TF-slim can add one to v2; the model contract gives auxiliary heads
to inception_v1 and inception_v3 only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.inception_v4 import ReductionA
from inception_jax.models.registry import register

# One conv of a branch: (TF-slim scope, output channels, kernel).
Conv = tuple[str, int, int | tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Variant:
  """Widths of one Inception-ResNet (Figure 15's schema)."""

  # Residual blocks: number of repeats and the widths of each branch's convs (the kernels are
  # the block's, see _BLOCK35/_BLOCK17/_BLOCK8).
  repeats: tuple[int, int, int]
  block35: tuple[tuple[int, ...], ...]
  block17: tuple[tuple[int, ...], ...]
  block8: tuple[tuple[int, ...], ...]
  # Reduction-A filters k, l, m, n (Table 1).
  reduction_a: tuple[int, int, int, int]
  # Reduction-B: widths of its three conv branches (v1 Figure 12, v2 Figure 18).
  reduction_b: tuple[tuple[int, ...], ...]
  # Width of the 1x1 conv before the pooling (0: none).
  conv_7b: int


VARIANTS = {
    'v1': Variant(repeats=(5, 10, 5),
                  block35=((32,), (32, 32), (32, 32, 32)),
                  block17=((128,), (128, 128, 128)),
                  block8=((192,), (192, 192, 192)),
                  reduction_a=(192, 192, 256, 384),
                  reduction_b=((256, 384), (256, 256), (256, 256, 256)),
                  conv_7b=0),
    'v2': Variant(repeats=(10, 20, 9),
                  block35=((32,), (32, 32), (32, 48, 64)),
                  block17=((192,), (128, 160, 192)),
                  block8=((192,), (192, 224, 256)),
                  reduction_a=(256, 256, 384, 384),
                  reduction_b=((256, 384), (256, 288), (256, 288, 320)),
                  conv_7b=1536),
}

# TF-slim scopes and kernels of the residual blocks' branches; widths come from the Variant.
_BLOCK35 = ((('Conv2d_1x1', 1),),
            (('Conv2d_0a_1x1', 1), ('Conv2d_0b_3x3', 3)),
            (('Conv2d_0a_1x1', 1), ('Conv2d_0b_3x3', 3), ('Conv2d_0c_3x3', 3)))
_BLOCK17 = ((('Conv2d_1x1', 1),),
            (('Conv2d_0a_1x1', 1), ('Conv2d_0b_1x7', (1, 7)), ('Conv2d_0c_7x1', (7, 1))))
_BLOCK8 = ((('Conv2d_1x1', 1),),
           (('Conv2d_0a_1x1', 1), ('Conv2d_0b_1x3', (1, 3)), ('Conv2d_0c_3x1', (3, 1))))


def _branches(kernels, widths) -> tuple[tuple[Conv, ...], ...]:
  if [len(k) for k in kernels] != [len(w) for w in widths]:
    raise ValueError(f'widths {widths} do not fit the block {kernels}')
  return tuple(tuple((name, width, kernel) for (name, kernel), width in zip(ks, ws))
               for ks, ws in zip(kernels, widths))


class ResidualBlock(layers.Block):
  """An Inception-ResNet block: parallel conv branches, a 1x1 up-projection, a scaled residual.

  Figures 10/16 (35x35), 11/17 (17x17) and 13/19 (8x8); the scaling is Section 3.3 (Figure 20).
  ``branches`` lists each branch's convs as (scope, width, kernel).
  """

  branches: Sequence[Sequence[Conv]] = ()
  scale: float = 1.0
  activate: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    outs = []
    for i, branch in enumerate(self.branches):
      y = x
      for name, features, kernel in branch:
        y = self.conv(features, kernel, f'Branch_{i}/{name}')(y, train)
      outs.append(y)
    # Linear, with a bias in place of BN: it restores the block's width for the addition.
    up = layers.ConvBN(x.shape[-1], 1, self.conventions, use_bn=False, activation=None,
                       dtype=self.dtype, name='Conv2d_1x1')(jnp.concatenate(outs, -1), train)
    x = x + self.scale * up
    return nn.relu(x) if self.activate else x


class Mixed5b(layers.Block):
  """v2's Mixed_5b (TF-slim; not in the paper): 96 + 64 + 96 + 64 = 320 channels at 35x35."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b0 = self.conv(96, 1, 'Branch_0/Conv2d_1x1')(x, train)
    b1 = self.conv(48, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    b1 = self.conv(64, 5, 'Branch_1/Conv2d_0b_5x5')(b1, train)
    b2 = self.conv(64, 1, 'Branch_2/Conv2d_0a_1x1')(x, train)
    b2 = self.conv(96, 3, 'Branch_2/Conv2d_0b_3x3')(b2, train)
    b2 = self.conv(96, 3, 'Branch_2/Conv2d_0c_3x3')(b2, train)
    b3 = layers.avg_pool(x, 3, 1, 'SAME', self.conventions)
    b3 = self.conv(64, 1, 'Branch_3/Conv2d_0b_1x1')(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class ReductionB(layers.Block):
  """v1 Figure 12 / v2 Figure 18, 17x17 -> 8x8: three conv towers ending 3x3/2, and max pool.

  ``widths``: the convs of towers 0 (1x1, 3x3/2), 1 (1x1, 3x3/2) and 2 (1x1, 3x3, 3x3/2).
  """

  widths: tuple[tuple[int, ...], ...] = ((256, 384), (256, 288), (256, 288, 320))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    (a0, a1), (b0, b1), (c0, c1, c2) = self.widths
    t0 = self.conv(a0, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    t0 = self.conv(a1, 3, 'Branch_0/Conv2d_1a_3x3', strides=2, padding='VALID')(t0, train)
    t1 = self.conv(b0, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    t1 = self.conv(b1, 3, 'Branch_1/Conv2d_1a_3x3', strides=2, padding='VALID')(t1, train)
    t2 = self.conv(c0, 1, 'Branch_2/Conv2d_0a_1x1')(x, train)
    t2 = self.conv(c1, 3, 'Branch_2/Conv2d_0b_3x3')(t2, train)
    t2 = self.conv(c2, 3, 'Branch_2/Conv2d_1a_3x3', strides=2, padding='VALID')(t2, train)
    t3 = layers.max_pool(x, 3, 2, 'VALID', self.conventions)
    return jnp.concatenate([t0, t1, t2, t3], axis=-1)


class Bottleneck(nn.Module):
  """facenet's embedding layer: a linear map without bias, then BatchNorm (facenet's
  ``Bottleneck`` scope; facenet-pytorch's ``last_linear`` and ``last_bn``)."""

  features: int
  conventions: Conventions
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.Dense(self.features, use_bias=False, kernel_init=layers.dense_init, dtype=self.dtype,
                 param_dtype=jnp.float32, name='dense')(x)
    return layers.batch_norm(self.conventions, self.dtype, name='bn')(
        x, use_running_average=not train)


_PAPER = ('Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual '
          'Connections on Learning')


@register('inception_resnet_v1', paper=_PAPER, input_size=299, default_conventions='tf',
          variant='v1', dropout_rate=0.6)
@register('inception_resnet_v2', paper=_PAPER, input_size=299, default_conventions='tf',
          variant='v2')
class InceptionResNet(nn.Module):
  """Inception-ResNet-v1 or -v2 (Figure 15), registered as ``inception_resnet_v1``/``_v2``.

  Output of ``apply`` (eval and train alike; no auxiliary heads):

  * ``num_classes > 0``: logits. With ``embedding_dim > 0`` the classifier reads the (not
    normalised) embedding, as facenet-pytorch's ``classify=True`` does.
  * ``num_classes == 0, embedding_dim == 0``: the pooled features, [batch, 1792] (v1) or
    [batch, 1536] (v2).
  * ``num_classes == 0, embedding_dim > 0``: the L2-normalised embedding [batch, embedding_dim]
    (facenet-pytorch's output with ``classify=False``).
  """

  num_classes: int = 1000
  conventions: Conventions = TF
  # TF-slim's dropout_keep_prob=0.8 for v2; inception_resnet_v1 registers facenet-pytorch's
  # InceptionResnetV1(dropout_prob=0.6).
  dropout_rate: float = 0.2
  # 'v1' or 'v2', a key of VARIANTS; fixed by the registered name.
  variant: str = 'v2'
  # facenet's embedding between the pooled features and the classifier: a linear map to this
  # many dimensions and BatchNorm (facenet-pytorch's last_linear/last_bn, 512 there); 0: none.
  embedding_dim: int = 0
  dtype: Any = jnp.float32

  # The stride-2 VALID stages (Conv2d_1a, MaxPool_3a, MaxPool_5a or Conv2d_4b, Mixed_6a,
  # Mixed_7a) map n to (n - 3) // 2 + 1 and the 3x3 VALID convs (Conv2d_2a, Conv2d_4a) to n - 2;
  # 75 is the least input that leaves 1x1 after Mixed_7a (75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3
  # -> 1), in both variants and conventions (the SAME ops here are all stride 1).
  min_size: ClassVar[int] = 75

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if self.variant not in VARIANTS:
      raise ValueError(f'variant must be one of {sorted(VARIANTS)}, got {self.variant!r}')
    layers.check_input(images, self.min_size, f'inception_resnet_{self.variant}')
    v = VARIANTS[self.variant]
    block = dict(conventions=self.conventions, dtype=self.dtype)
    x = images.astype(self.dtype)

    def conv(x, features, kernel, scope, strides=1, padding='SAME'):
      out = layers.ConvBN(features, kernel, self.conventions, strides=strides, padding=padding,
                          dtype=self.dtype, name=scope)(x, train)
      return layers.endpoint(self, scope, out)

    def repeat(x, scope, kind, kernels, widths, scale, count):
      branches = _branches(kernels, widths)
      for i in range(1, count + 1):
        x = ResidualBlock(**block, branches=branches, scale=scale,
                          name=f'{scope}/{kind}_{i}')(x, train)
      return layers.endpoint(self, scope, x)

    # Stem: v1 Figure 14; v2 as released (Inception-v3's stem, then Mixed_5b).
    x = conv(x, 32, 3, 'Conv2d_1a_3x3', strides=2, padding='VALID')
    x = conv(x, 32, 3, 'Conv2d_2a_3x3', padding='VALID')
    x = conv(x, 64, 3, 'Conv2d_2b_3x3')
    x = layers.endpoint(self, 'MaxPool_3a_3x3',
                        layers.max_pool(x, 3, 2, 'VALID', self.conventions))
    x = conv(x, 80, 1, 'Conv2d_3b_1x1', padding='VALID')
    x = conv(x, 192, 3, 'Conv2d_4a_3x3', padding='VALID')
    if self.variant == 'v1':
      x = conv(x, 256, 3, 'Conv2d_4b_3x3', strides=2, padding='VALID')
    else:
      x = layers.endpoint(self, 'MaxPool_5a_3x3',
                          layers.max_pool(x, 3, 2, 'VALID', self.conventions))
      x = layers.endpoint(self, 'Mixed_5b', Mixed5b(**block, name='Mixed_5b')(x, train))

    # Figure 15: A blocks, Reduction-A, B blocks, Reduction-B, C blocks (Section 3.3's scales).
    k, l, m, n = v.reduction_a
    x = repeat(x, 'Repeat', 'block35', _BLOCK35, v.block35, 0.17, v.repeats[0])
    x = layers.endpoint(self, 'Mixed_6a',
                        ReductionA(**block, k=k, l=l, m=m, n=n, name='Mixed_6a')(x, train))
    x = repeat(x, 'Repeat_1', 'block17', _BLOCK17, v.block17, 0.10, v.repeats[1])
    x = layers.endpoint(self, 'Mixed_7a',
                        ReductionB(**block, widths=v.reduction_b, name='Mixed_7a')(x, train))
    x = repeat(x, 'Repeat_2', 'block8', _BLOCK8, v.block8, 0.20, v.repeats[2])
    x = ResidualBlock(**block, branches=_branches(_BLOCK8, v.block8), scale=1.0,
                      activate=False, name='Block8')(x, train)
    layers.endpoint(self, 'Block8', x)
    if v.conv_7b:
      x = conv(x, v.conv_7b, 1, 'Conv2d_7b_1x1')

    # TF-slim pools with an 8x8 VALID window (global at 299); global pooling, as Keras, timm and
    # facenet-pytorch do, keeps other input sizes meaningful.
    x = layers.endpoint(self, 'PreLogits', layers.global_avg_pool(x))
    if not self.num_classes and not self.embedding_dim:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.embedding_dim:
      x = Bottleneck(self.embedding_dim, **block, name='Bottleneck')(x, train)
      layers.endpoint(self, 'Bottleneck', x)
      if not self.num_classes:
        # F.normalize(p=2): divide by max(||x||, 1e-12), in float32.
        e = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True))
        return (e / jnp.maximum(norm, 1e-12)).astype(self.dtype)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
