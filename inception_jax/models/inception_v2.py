"""BN-Inception (Inception-v2): Ioffe & Szegedy 2015, "Batch Normalization", Section 4.2 and the
Appendix's Figure 5: GoogLeNet with each 5x5 conv made two 3x3s, a third 28x28 module, avg or max
pooling per module, and stride-2 modules (3c, 4e) in place of the pools between stages.

The published weights are the Caffe release (ported by ``pretrainedmodels``), so the default
conventions are 'torch' with Caffe's ceil-mode pools and BN epsilon; under them only input sizes
32k-1 .. 32k+6 give the stride-2 modules even maps, other sizes are refused. Where the paper is
open this follows the release: a plain 7x7 first conv (slim makes it separable), a bias in every
conv ahead of its BN (counted in its 11,295,240 parameters), module widths that sum Figure 5's
columns, no auxiliary classifier. Caffe's inception_3a..5b are TF-slim's Mixed_3b..Mixed_5c.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import global_avg_pool
from inception_jax.models import inception_v1, layers
from inception_jax.models.conventions import Conventions, resolve
from inception_jax.models.layers import Conv, Pool, Spec
from inception_jax.models.registry import register


class Row(NamedTuple):
  """One 'inception' row of Figure 5: its filter columns, pool type and stride."""
  name: str            # TF-slim end point
  conv_1x1: int        # '#1x1' (0: no such branch, the stride-2 modules)
  reduce_3x3: int      # '#3x3 reduce'
  conv_3x3: int        # '#3x3'
  reduce_d3x3: int     # 'double #3x3 reduce'
  conv_d3x3: int       # 'double #3x3'
  pool: str            # 'avg' or 'max'
  proj: int            # 'Pool + proj' (0: "pass through", the pool output is concatenated as is)
  stride: int = 1


# Figure 5, rows 3a..5b, under TF-slim's names.
ROWS = (
    Row('Mixed_3b', 64, 64, 64, 64, 96, 'avg', 32),
    Row('Mixed_3c', 64, 64, 96, 64, 96, 'avg', 64),
    Row('Mixed_4a', 0, 128, 160, 64, 96, 'max', 0, stride=2),
    Row('Mixed_4b', 224, 64, 96, 96, 128, 'avg', 128),
    Row('Mixed_4c', 192, 96, 128, 96, 128, 'avg', 128),
    Row('Mixed_4d', 160, 128, 160, 128, 160, 'avg', 128),
    Row('Mixed_4e', 96, 128, 192, 160, 192, 'avg', 128),
    Row('Mixed_5a', 0, 128, 192, 192, 256, 'max', 0, stride=2),
    Row('Mixed_5b', 352, 192, 320, 160, 224, 'avg', 128),
    # The one stride-1 module whose 'Pool + proj' column is a max pool.
    Row('Mixed_5c', 352, 192, 320, 192, 224, 'max', 128),
)


def inception_module(row: Row) -> tuple[Spec, ...]:
  """A module of Figure 5: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool(-1x1 projection). The stride-2
  rows (3c, 4e; Appendix) have no 1x1 branch, stride the last 3x3 of both conv branches and a
  max pool, and pass the pool output through unprojected."""
  r, s = row, row.stride
  # TF-slim scopes: a stride-2 op is '..._1a_...'; a stride-1 chain counts 0a, 0b, 0c.
  last = 'Conv2d_1a_3x3' if s > 1 else None
  specs = [
      Spec((Conv('Conv2d_0a_1x1', r.conv_1x1, 1),)),
      Spec((Conv('Conv2d_0a_1x1', r.reduce_3x3, 1),
            Conv(last or 'Conv2d_0b_3x3', r.conv_3x3, 3, s))),
      Spec((Conv('Conv2d_0a_1x1', r.reduce_d3x3, 1), Conv('Conv2d_0b_3x3', r.conv_d3x3, 3),
            Conv(last or 'Conv2d_0c_3x3', r.conv_d3x3, 3, s))),
      Spec((Pool(r.pool, 3, s), *((Conv('Conv2d_0b_1x1', r.proj, 1),) if r.proj else ()))),
  ]
  return tuple(specs if r.conv_1x1 else specs[1:])


@register('inception_v2',
          paper='Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training '
                'by Reducing Internal Covariate Shift',
          input_size=224)
class InceptionV2(nn.Module):
  """BN-Inception, Figure 5: stem, ten Inception modules, global average pool, classifier."""

  num_classes: int = 1000
  # The Caffe release's conventions (module docstring): what create('inception_v2') builds.
  conventions: Conventions = resolve('inception_v2', 'torch')
  # Section 4.2.1, "Remove Dropout": the BN network is trained without it.
  dropout_rate: float = 0.0
  # The Caffe release has a bias in every convolution, ahead of the BatchNorm.
  conv_bias: bool = True
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'  # XLA:CPU's convolution library (see layers)

  # Smallest input that runs in both conventions. Under 'torch' (Caffe) the unpadded ceil-mode
  # pools and the padded stride-2 convs of Mixed_4a/Mixed_5a agree only on even maps, which only
  # sizes 32k-1 .. 32k+6 give (31-38, ..., 223-230); any other size is refused with a ValueError.
  # 31 is the first of them (1x1 after Mixed_5a); 'tf' runs from 1 up.
  min_size: ClassVar[int] = 31

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    kw, point = layers.begin(self, images, 'inception_v2', use_bias=self.conv_bias)
    # Stem, Figure 5 rows 1-4: GoogLeNet's, without its LRN (Section 4.2.1).
    x = layers.stem(inception_v1.STEM, images.astype(self.dtype), train, kw, point)
    # Caffe pools in ceil mode without padding while its convs pad symmetrically: on odd maps
    # the stride-2 branches of 3c and 4e disagree by a pixel, and layers.Mixed refuses them.
    for row in ROWS:
      x = point(row.name, layers.Mixed(inception_module(row), name=row.name, **kw)(x, train))

    # Figure 5's final 7x7 average pool, taken over the whole map at any input size.
    x = global_avg_pool(x)
    layers.endpoint(self, 'PreLogits', x)
    if self.num_classes == 0:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
