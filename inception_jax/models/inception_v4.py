"""Inception-v4 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, arXiv:1602.07261), Figures 3-9.

The stem of Figure 3, 4 Inception-A (Figure 4), Reduction-A (Figure 7), 7 Inception-B (Figure 5),
Reduction-B (Figure 8), 3 Inception-C (Figure 6), pooling, dropout, classifier (Figure 9); each
block is branch data (:class:`layers.Spec`). Names are TF-slim's (``nets/inception_v4.py``); where
the figures order the factorised 1xn/nx1 convs otherwise, the released network (TF-slim's
checkpoint, ported by timm) is followed. No auxiliary head: Figure 9 and timm have none.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import global_avg_pool
from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.layers import Conv, Pool, Spec
from inception_jax.models.registry import register
from inception_jax.models.repeat import Run, run_blocks


def mixed_3a() -> tuple[Spec, ...]:
  """Figure 3, first filter concatenation: max pool | 96 conv, both 3x3/2 VALID."""
  return Spec((Pool('max', 3, 2, 'VALID'),)), Spec((Conv('Conv2d_0a_3x3', 96, 3, 2, 'VALID'),))


def mixed_4a() -> tuple[Spec, ...]:
  """Figure 3, second filter concatenation (1x7 before 7x1, as released)."""
  return (Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_1a_3x3', 96, 3, 1, 'VALID'))),
          Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_1x7', 64, (1, 7)),
                Conv('Conv2d_0c_7x1', 64, (7, 1)), Conv('Conv2d_1a_3x3', 96, 3, 1, 'VALID'))))


def mixed_5a() -> tuple[Spec, ...]:
  """Figure 3, last filter concatenation: 192 conv | max pool, both 3x3/2 VALID (the figure
  omits the conv's stride; the 35x35 output needs 2)."""
  return Spec((Conv('Conv2d_1a_3x3', 192, 3, 2, 'VALID'),)), Spec((Pool('max', 3, 2, 'VALID'),))


def inception_a() -> tuple[Spec, ...]:
  """Figure 4, the 35x35 block: 4 x 96 = 384 channels."""
  return (Spec((Conv('Conv2d_0a_1x1', 96, 1),)),
          Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3))),
          Spec((Conv('Conv2d_0a_1x1', 64, 1), Conv('Conv2d_0b_3x3', 96, 3),
                Conv('Conv2d_0c_3x3', 96, 3))),
          Spec((Pool('avg', 3), Conv('Conv2d_0b_1x1', 96, 1))))


def reduction_a(k: int, l: int, m: int, n: int) -> tuple[Spec, ...]:
  """Figure 7, 35x35 -> 17x17, shared by the paper's three networks with Table 1's k, l, m, n."""
  return (Spec((Conv('Conv2d_1a_3x3', n, 3, 2, 'VALID'),)),
          Spec((Conv('Conv2d_0a_1x1', k, 1), Conv('Conv2d_0b_3x3', l, 3),
                Conv('Conv2d_1a_3x3', m, 3, 2, 'VALID'))),
          Spec((Pool('max', 3, 2, 'VALID'),)))


def inception_b() -> tuple[Spec, ...]:
  """Figure 5, the 17x17 block: 384 + 256 + 256 + 128 = 1024 channels."""
  return (Spec((Conv('Conv2d_0a_1x1', 384, 1),)),
          Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_0b_1x7', 224, (1, 7)),
                Conv('Conv2d_0c_7x1', 256, (7, 1)))),
          Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_0b_7x1', 192, (7, 1)),
                Conv('Conv2d_0c_1x7', 224, (1, 7)), Conv('Conv2d_0d_7x1', 224, (7, 1)),
                Conv('Conv2d_0e_1x7', 256, (1, 7)))),
          Spec((Pool('avg', 3), Conv('Conv2d_0b_1x1', 128, 1))))


def reduction_b() -> tuple[Spec, ...]:
  """Figure 8, 17x17 -> 8x8: 192 + 320 + 1024 (pool) = 1536 channels."""
  return (Spec((Conv('Conv2d_0a_1x1', 192, 1), Conv('Conv2d_1a_3x3', 192, 3, 2, 'VALID'))),
          Spec((Conv('Conv2d_0a_1x1', 256, 1), Conv('Conv2d_0b_1x7', 256, (1, 7)),
                Conv('Conv2d_0c_7x1', 320, (7, 1)), Conv('Conv2d_1a_3x3', 320, 3, 2, 'VALID'))),
          Spec((Pool('max', 3, 2, 'VALID'),)))


def inception_c() -> tuple[Spec, ...]:
  """Figure 6, the 8x8 block (1536 channels); branches 1 and 2 end in a 1x3 | 3x1 fork."""
  return (Spec((Conv('Conv2d_0a_1x1', 256, 1),)),
          Spec((Conv('Conv2d_0a_1x1', 384, 1),),
               (Conv('Conv2d_0b_1x3', 256, (1, 3)), Conv('Conv2d_0c_3x1', 256, (3, 1)))),
          Spec((Conv('Conv2d_0a_1x1', 384, 1), Conv('Conv2d_0b_3x1', 448, (3, 1)),
                Conv('Conv2d_0c_1x3', 512, (1, 3))),
               (Conv('Conv2d_0d_1x3', 256, (1, 3)), Conv('Conv2d_0e_3x1', 256, (3, 1)))),
          Spec((Pool('avg', 3), Conv('Conv2d_0b_1x1', 256, 1))))


def _run(grid: str, letters: str) -> Run:
  """TF-slim's Mixed_<grid><letter> blocks; scanned as one module, Mixed_5b_to_5e etc."""
  return Run((), f'Mixed_{grid}{letters[0]}_to_{grid}{letters[-1]}',
             tuple(f'Mixed_{grid}{c}' for c in letters))


# Figure 3 (stem) and Figure 9, in order: plain convs, then (name or run, spec function, args).
STEM = (Conv('Conv2d_1a_3x3', 32, 3, 2, 'VALID'), Conv('Conv2d_2a_3x3', 32, 3, 1, 'VALID'),
        Conv('Conv2d_2b_3x3', 64, 3))
BLOCKS = (('Mixed_3a', mixed_3a, ()), ('Mixed_4a', mixed_4a, ()), ('Mixed_5a', mixed_5a, ()),
          (_run('5', 'bcde'), inception_a, ()),
          ('Mixed_6a', reduction_a, (192, 224, 256, 384)),
          (_run('6', 'bcdefgh'), inception_b, ()),
          ('Mixed_7a', reduction_b, ()),
          (_run('7', 'bcd'), inception_c, ()))
RUNS = tuple(name for name, _, _ in BLOCKS if isinstance(name, Run))


@register('inception_v4', paper='Szegedy et al. 2016, Inception-v4, Inception-ResNet and the '
          'Impact of Residual Connections on Learning', input_size=299)
class InceptionV4(nn.Module):
  """Inception-v4, Figure 9. ``scan``: each run of identical blocks (4 A, 7 B, 3 C) is one scanned
  module and sows only its last block's end point (``Mixed_5e``, ...); ``scan=False`` unrolls
  them (TF-slim's per-block names and end points). ``remat`` recomputes their activations."""

  num_classes: int = 1000
  conventions: Conventions = TF
  dropout_rate: float = 0.2  # Figure 9, "Dropout (keep 0.8)"
  scan: bool = True
  remat: bool = False
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'  # XLA:CPU's convolution library (see layers)

  # 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1 through the VALID stages up to Mixed_7a.
  min_size: ClassVar[int] = 75

  def runs(self) -> tuple[Run, ...]:
    return RUNS

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    kw, point = layers.begin(self, images, 'inception_v4')
    x = layers.stem(STEM, images.astype(self.dtype), train, kw, point)
    for name, specs, args in BLOCKS:
      make = functools.partial(layers.Mixed, specs(*args), **kw)
      if not isinstance(name, Run):
        x = point(name, make(name=name)(x, train))
      else:
        x = run_blocks(make, name, x, train, scan=self.scan, remat=self.remat, each=point)
        if self.scan:
          point(name.blocks[-1], x)

    x = point('PreLogits', global_avg_pool(x))
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
