"""Inception-ResNet-v1 and -v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, arXiv:1602.07261).

Figure 15's schema written once: a stem, 35x35 residual blocks, Reduction-A (Figure 7, shared
with Inception-v4), 17x17 blocks, Reduction-B, 8x8 blocks, pooling, dropout, classifier. The
variants differ by :data:`VARIANTS`' widths and their stems. v1: Figures 10-14 as in David
Sandberg's facenet (``src/models/inception_resnet_v1.py``, ported by facenet-pytorch). v2: TF-slim
``nets/inception_resnet_v2.py``, the released network (Keras, timm), whose stem is Inception-v3's
plus a Mixed_5b, so its blocks are 320/1088/2080 wide (the paper's Figure 3 stem: 384/1154/2048).
Names are TF-slim's (``Repeat/block35_1/Branch_2/Conv2d_0c_3x3``, ``Block8``, ``Conv2d_7b_1x1``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import global_avg_pool
from inception_jax.models import inception_v3, inception_v4, layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.layers import Conv, Pool, Spec
from inception_jax.models.registry import register
from inception_jax.models.repeat import Run, run_blocks

# The up-projection of every residual block (Figures 10-13, 16-19): linear, with a bias in place
# of BatchNorm; it restores the block's width for the addition.
UP_PROJECTION = 'Conv2d_1x1'


@dataclasses.dataclass(frozen=True)
class Variant:
  """Widths of one Inception-ResNet (Figure 15's schema); kernels are the spec functions'."""

  repeats: tuple[int, int, int]  # residual blocks per grid (35x35, 17x17, 8x8), Block8 apart
  block35: tuple[tuple[int, ...], ...]
  block17: tuple[tuple[int, ...], ...]
  block8: tuple[tuple[int, ...], ...]
  reduction_a: tuple[int, int, int, int]  # Table 1's k, l, m, n
  reduction_b: tuple[tuple[int, ...], ...]  # v1 Figure 12, v2 Figure 18
  conv_7b: int  # width of the 1x1 conv before the pooling (0: none)


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


def block35(widths) -> tuple[Spec, ...]:
  """Figures 10 (v1) and 16 (v2), the 35x35 residual block's branches."""
  (a,), (b0, b1), (c0, c1, c2) = widths
  return (Spec((Conv('Conv2d_1x1', a, 1),)),
          Spec((Conv('Conv2d_0a_1x1', b0, 1), Conv('Conv2d_0b_3x3', b1, 3))),
          Spec((Conv('Conv2d_0a_1x1', c0, 1), Conv('Conv2d_0b_3x3', c1, 3),
                Conv('Conv2d_0c_3x3', c2, 3))))


def block17(widths) -> tuple[Spec, ...]:
  """Figures 11 (v1) and 17 (v2), the 17x17 residual block's branches (1x7 before 7x1)."""
  (a,), (b0, b1, b2) = widths
  return (Spec((Conv('Conv2d_1x1', a, 1),)),
          Spec((Conv('Conv2d_0a_1x1', b0, 1), Conv('Conv2d_0b_1x7', b1, (1, 7)),
                Conv('Conv2d_0c_7x1', b2, (7, 1)))))


def block8(widths) -> tuple[Spec, ...]:
  """Figures 13 (v1) and 19 (v2), the 8x8 residual block's branches (1x3 before 3x1)."""
  (a,), (b0, b1, b2) = widths
  return (Spec((Conv('Conv2d_1x1', a, 1),)),
          Spec((Conv('Conv2d_0a_1x1', b0, 1), Conv('Conv2d_0b_1x3', b1, (1, 3)),
                Conv('Conv2d_0c_3x1', b2, (3, 1)))))


def reduction_b(widths) -> tuple[Spec, ...]:
  """v1 Figure 12 / v2 Figure 18, 17x17 -> 8x8: three conv towers ending 3x3/2, and max pool."""
  (a0, a1), (b0, b1), (c0, c1, c2) = widths
  return (Spec((Conv('Conv2d_0a_1x1', a0, 1), Conv('Conv2d_1a_3x3', a1, 3, 2, 'VALID'))),
          Spec((Conv('Conv2d_0a_1x1', b0, 1), Conv('Conv2d_1a_3x3', b1, 3, 2, 'VALID'))),
          Spec((Conv('Conv2d_0a_1x1', c0, 1), Conv('Conv2d_0b_3x3', c1, 3),
                Conv('Conv2d_1a_3x3', c2, 3, 2, 'VALID'))),
          Spec((Pool('max', 3, 2, 'VALID'),)))


# Stems: v2 as released is Inception-v3's stem, then Mixed_5b (v3's Figure 5 module with wider
# convs); v1 is Figure 14, whose last conv reduces 71x71 to 35x35.
STEMS = {'v1': (*inception_v3.STEM[:-1], Conv('Conv2d_4b_3x3', 256, 3, 2, 'VALID')),
         'v2': inception_v3.STEM}
MIXED_5B = ((96,), (48, 64), (64, 96, 96)), 64, 'Conv2d_1x1'  # widths, pool width, branch 0


def runs(variant: Variant) -> tuple[Run, ...]:
  """TF-slim's ``Repeat``/``Repeat_1``/``Repeat_2`` scopes, blocks ``block35_1`` ... (scanned:
  ``Repeat/block35`` ...); the last 8x8 block is ``Block8``, apart (no ReLU, scale 1)."""
  return tuple(Run((scope,), kind, tuple(f'{kind}_{i}' for i in range(1, n + 1)))
               for scope, kind, n in zip(('Repeat', 'Repeat_1', 'Repeat_2'),
                                         ('block35', 'block17', 'block8'), variant.repeats))


class ResidualBlock(layers.Block):
  """Parallel branches, the linear up-projection, the scaled residual (Figures 10-13, 16-19).

  Section 3.3 scales residuals by 0.1-0.3 before the addition so that training does not
  diverge; ``scale`` is TF-slim's choice in that range (0.17, 0.10, 0.20).
  """

  specs: tuple[Spec, ...]
  scale: float = 1.0
  activate: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    mixed = jnp.concatenate(
        [layers.Branch(spec, name=f'Branch_{i}', **layers.op_kwargs(self))(x, train)
         for i, spec in enumerate(self.specs)], axis=-1)
    up = layers.ConvBN(x.shape[-1], 1, use_bn=False, activation=None, name=UP_PROJECTION,
                       **layers.op_kwargs(self))(mixed, train)
    x = x + self.scale * up
    return nn.relu(x) if self.activate else x


class Repeat(nn.Module):
  """TF-slim's ``slim.repeat`` scope: one run of identical residual blocks."""

  block: Any  # a ResidualBlock factory (functools.partial)
  run: Run
  scan: bool = True
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return run_blocks(self.block, self.run, x, train, scan=self.scan, remat=self.remat)


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


@register('inception_resnet_v1', paper=_PAPER, input_size=299,
          variant='v1')
@register('inception_resnet_v2', paper=_PAPER, input_size=299,
          variant='v2')
class InceptionResNet(nn.Module):
  """Inception-ResNet-v1 or -v2 (Figure 15), registered as ``inception_resnet_v1``/``_v2``.

  Output: logits; with ``num_classes=0`` the pooled features (1792 / 1536), or with
  ``embedding_dim > 0`` the L2-normalised embedding (facenet-pytorch's ``classify=False``; with
  classes, the logits read the embedding). ``scan``: each run of residual blocks is one scanned
  module (``Repeat/block35`` ...; ``scan=False``: ``Repeat/block35_1`` ...); the run's end point
  (``Repeat``) is the same either way. ``remat`` recomputes the blocks' activations.
  """

  num_classes: int = 1000
  conventions: Conventions = TF
  # Figure 15's dropout (keep 0.8) for both; TF-slim's dropout_keep_prob=0.8 for v2.
  # facenet-pytorch trains v1 with dropout_prob=0.6.
  dropout_rate: float = 0.2
  variant: str = 'v2'  # a key of VARIANTS, fixed by the registered name
  # facenet's Bottleneck: linear map + BN between pooling and classifier (512 there); 0: none.
  embedding_dim: int = 0
  scan: bool = True
  remat: bool = False
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'  # XLA:CPU's convolution library (see layers)

  # 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1 through the VALID stages up to Mixed_7a, in both
  # variants and conventions (the SAME ops are all stride 1).
  min_size: ClassVar[int] = 75

  def _variant(self) -> Variant:
    if self.variant not in VARIANTS:
      raise ValueError(f'variant must be one of {sorted(VARIANTS)}, got {self.variant!r}')
    return VARIANTS[self.variant]

  def runs(self) -> tuple[Run, ...]:
    return runs(self._variant())

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    v = self._variant()
    kw, point = layers.begin(self, images, f'inception_resnet_{self.variant}')
    x = layers.stem(STEMS[self.variant], images.astype(self.dtype), train, kw, point)
    if self.variant == 'v2':
      widths, pool, branch0 = MIXED_5B
      x = point('Mixed_5b', layers.Mixed(inception_v3.inception_a(pool, widths, branch0),
                                         name='Mixed_5b', **kw)(x, train))

    def repeat(x, run, specs, scale):
      block = functools.partial(ResidualBlock, specs=specs, scale=scale, **kw)
      x = Repeat(block, run, self.scan, self.remat, name=run.scope[0])(x, train)
      return point(run.scope[0], x)

    run35, run17, run8 = runs(v)
    x = repeat(x, run35, block35(v.block35), 0.17)
    x = point('Mixed_6a', layers.Mixed(inception_v4.reduction_a(*v.reduction_a), name='Mixed_6a',
                                       **kw)(x, train))
    x = repeat(x, run17, block17(v.block17), 0.10)
    x = point('Mixed_7a', layers.Mixed(reduction_b(v.reduction_b), name='Mixed_7a', **kw)(x, train))
    x = repeat(x, run8, block8(v.block8), 0.20)
    x = point('Block8', ResidualBlock(specs=block8(v.block8), scale=1.0, activate=False,
                                      name='Block8', **kw)(x, train))
    if v.conv_7b:
      x = point('Conv2d_7b_1x1', layers.ConvBN(v.conv_7b, 1, name='Conv2d_7b_1x1', **kw)(x, train))

    # TF-slim pools 8x8 VALID (global at 299); global pooling, as Keras, timm and facenet-pytorch
    # do, keeps other input sizes meaningful.
    x = point('PreLogits', global_avg_pool(x))
    if not self.num_classes and not self.embedding_dim:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.embedding_dim:
      x = point('Bottleneck', Bottleneck(self.embedding_dim, self.conventions, self.dtype,
                                         name='Bottleneck')(x, train))
      if not self.num_classes:
        # F.normalize(p=2): divide by max(||x||, 1e-12), in float32.
        e = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True))
        return (e / jnp.maximum(norm, 1e-12)).astype(self.dtype)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
