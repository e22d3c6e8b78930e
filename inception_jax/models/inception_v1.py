"""Inception v1 (GoogLeNet): Szegedy et al. 2014, "Going deeper with convolutions".

Two networks share this definition (``variant``):

* ``'paper'``: Table 1 as published: convolutions with biases and no BatchNorm, a 5x5 conv in the
  third branch of every Inception module, local response normalisation in the stem (Figure 3 and
  the Caffe ``bvlc_googlenet`` model), dropout 0.4.
* ``'bn'``: the network behind the widely used pretrained weights (TF-slim ``inception_v1``,
  torchvision ``googlenet``): BatchNorm after every conv, a 3x3 conv in the branch the paper calls
  5x5, no LRN, dropout 0.2 (slim's keep_prob 0.8, torchvision's ``dropout=0.2``).

Scopes and end points follow TF-slim (``Conv2d_1a_7x7``, ``Mixed_3b``, ..., ``Mixed_5c``); the
paper's module "3a" is slim's ``Mixed_3b``, "4a" is ``Mixed_4b`` and so on. Each end point is its
op's output: in 'paper' the LRNs follow ``MaxPool_2a_3x3`` and ``Conv2d_2c_3x3``. When the aux heads
run, their logits are end points too, ``AuxLogits_4b`` and ``AuxLogits_4e``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import adaptive_avg_pool, global_avg_pool
from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
from inception_jax.models.layers import Conv, Pool, Spec
from inception_jax.models.registry import register
VARIANTS = ('paper', 'bn')

# Classifier dropout when ``dropout_rate`` is None: the paper's 40% (Section 5); 20% for the
# network of the pretrained weights (TF-slim keep_prob 0.8, torchvision dropout=0.2).
DEFAULT_DROPOUT = {'paper': 0.4, 'bn': 0.2}

# Table 1, one row per Inception module: (slim scope, #1x1, #3x3 reduce, #3x3, #5x5 reduce,
# #5x5, pool proj). Max pools sit before Mixed_4b and Mixed_5b.
MODULES = (
    ('Mixed_3b', 64, 96, 128, 16, 32, 32),
    ('Mixed_3c', 128, 128, 192, 32, 96, 64),
    ('Mixed_4b', 192, 96, 208, 16, 48, 64),
    ('Mixed_4c', 160, 112, 224, 24, 64, 64),
    ('Mixed_4d', 128, 128, 256, 24, 64, 64),
    ('Mixed_4e', 112, 144, 288, 32, 64, 64),
    ('Mixed_4f', 256, 160, 320, 32, 128, 128),
    ('Mixed_5b', 256, 160, 320, 32, 128, 128),
    ('Mixed_5c', 384, 192, 384, 48, 128, 128),
)
# Max pools between the stages, before the module named.
POOL_BEFORE = {'Mixed_4b': Pool('max', 3, 2, 'SAME', name='MaxPool_4a_3x3'),
               'Mixed_5b': Pool('max', 2, 2, 'SAME', name='MaxPool_5a_2x2')}
# Table 1 up to module 3a; in 'paper' an LRN follows the ops named in LRN_AFTER (Figure 3).
STEM = (Conv('Conv2d_1a_7x7', 64, 7, 2), Pool('max', 3, 2, 'SAME', name='MaxPool_2a_3x3'),
        Conv('Conv2d_2b_1x1', 64, 1), Conv('Conv2d_2c_3x3', 192, 3),
        Pool('max', 3, 2, 'SAME', name='MaxPool_3a_3x3'))
LRN_AFTER = ('MaxPool_2a_3x3', 'Conv2d_2c_3x3')
# Auxiliary classifiers on the outputs of the paper's 4a and 4d (Section 5).
AUX_AFTER = {'Mixed_4b': 'AuxLogits_4b', 'Mixed_4e': 'AuxLogits_4e'}
AUX_CONV = Conv('Conv2d_1b_1x1', 128, 1)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """Caffe's across-channel LRN, as in bvlc_googlenet (``local_size 5, alpha 1e-4, beta 0.75``).

  ``y_c = x_c / (k + alpha / size * sum_{|c' - c| <= size // 2} x_{c'}^2) ** beta``, the sum over
  the channels that exist (zero padding at the ends). Caffe, and PyTorch's LocalResponseNorm,
  divide ``alpha`` by ``size``; TF's ``tf.nn.local_response_normalization`` does not, so its
  equivalent is ``depth_radius=2, alpha=1e-4 / 5``.
  """
  sq = jnp.square(x.astype(jnp.float32))
  half = size // 2
  summed = jax.lax.reduce_window(sq, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1),
                                 [(0, 0), (0, 0), (0, 0), (half, size - 1 - half)])
  return (x / jnp.power(k + alpha / size * summed, beta)).astype(x.dtype)


def inception_module(n1: int, n3r: int, n3: int, n5r: int, n5: int, pool_proj: int,
                     k5: int = 3) -> tuple[Spec, ...]:
  """Figure 2(b): 1x1 | 1x1-3x3 | 1x1-5x5 | 3x3 max pool-1x1, widths from a row of Table 1.
  TF-slim and torchvision made the 5x5 a 3x3 (``k5=3``, pytorch/vision#906)."""
  return (
      Spec((Conv('Conv2d_0a_1x1', n1, 1),)),
      Spec((Conv('Conv2d_0a_1x1', n3r, 1), Conv('Conv2d_0b_3x3', n3, 3))),
      Spec((Conv('Conv2d_0a_1x1', n5r, 1), Conv(f'Conv2d_0b_{k5}x{k5}', n5, k5))),
      Spec((Pool('max', 3, 1, 'SAME'), Conv('Conv2d_0b_1x1', pool_proj, 1))),
  )


class AuxHead(nn.Module):
  """Section 5's auxiliary classifier: 5x5/3 average pool (4x4 at 224), 1x1 conv 128 + ReLU,
  FC 1024 + ReLU, dropout 0.7, linear classifier.

  ``conventions.aux_pool='adaptive'`` replaces the pool by torchvision's adaptive pool to 4x4,
  which keeps the FC input at 4x4x128 at any resolution; with the fixed pool the FC's input size
  follows the resolution the model is initialised at (2048 at 224). Features are flattened in
  NHWC order; converters reorder PyTorch's NCHW-flattened FC weights.
  """

  num_classes: int
  conventions: Conventions
  variant: str
  dropout_rate: float = 0.7
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.conventions.aux_pool == 'adaptive':
      x = adaptive_avg_pool(x, 4)
    else:
      x = layers.avg_pool(x, 5, 3, 'VALID', self.conventions)
    x = layers.apply_op(AUX_CONV, x, train, self.conventions, use_bn=self.variant == 'bn',
                        dtype=self.dtype, cpu_convolutions=self.cpu_convolutions)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(layers.dense(1024, self.dtype, name='Fc_2a')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)


@register('inception_v1', paper='Szegedy et al. 2014, Going deeper with convolutions',
          input_size=224)
class InceptionV1(nn.Module):
  """GoogLeNet, Table 1 of the paper; see the module docstring for the two variants.

  The aux heads' logits go to ``intermediates/aux_logits`` as ``(aux_4b, aux_4e)``, shallow to
  deep; torchvision returns ``(logits, aux2, aux1)``, deep first.
  """

  num_classes: int = 1000
  conventions: Conventions = TF
  # None: DEFAULT_DROPOUT[variant], the paper's 0.4 (Section 5) or 0.2 for 'bn'.
  dropout_rate: float | None = None
  aux_dropout_rate: float = 0.7  # Section 5: "dropout layer with 70% ratio of dropped outputs"
  dtype: Any = jnp.float32
  aux_logits: bool = True
  variant: str = 'bn'
  cpu_convolutions: str = 'ynnpack'  # XLA:CPU's convolution library (see layers)

  # With the default options under TF conventions, the aux heads' VALID 5x5 pool needs a 5x5
  # Mixed_4b map, i.e. ceil(size / 16) >= 5; the aux heads are built at init in every mode.
  # PyTorch conventions need less (their aux pool is adaptive).
  min_size: ClassVar[int] = 65

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'inception_v1 variant must be one of {VARIANTS}, got {self.variant!r}')
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    kw, point = layers.begin(self, images, 'inception_v1', use_bn=self.variant == 'bn')
    x = images.astype(self.dtype)
    for op in STEM:
      x = point(op.name, layers.apply_op(op, x, train, **kw))
      if self.variant == 'paper' and op.name in LRN_AFTER:
        x = local_response_norm(x)

    run_aux = self.aux_logits and self.num_classes > 0 and layers.wants_aux(self)
    k5 = 5 if self.variant == 'paper' else 3
    for name, *filters in MODULES:
      if name in POOL_BEFORE:
        x = point(POOL_BEFORE[name].name, layers.apply_op(POOL_BEFORE[name], x, train, **kw))
      x = point(name, layers.Mixed(inception_module(*filters, k5=k5), name=name, **kw)(x, train))
      if run_aux and name in AUX_AFTER:
        a = AuxHead(self.num_classes, self.conventions, self.variant, self.aux_dropout_rate,
                    self.dtype, self.cpu_convolutions, name=AUX_AFTER[name])(x, train)
        layers.aux_logits(self, point(AUX_AFTER[name], a))

    # Table 1: 7x7/1 average pool at 224; global at any resolution, as torchvision.
    x = global_avg_pool(x)
    layers.endpoint(self, 'PreLogits', x)
    if self.num_classes == 0:
      return x
    rate = DEFAULT_DROPOUT[self.variant] if self.dropout_rate is None else self.dropout_rate
    x = nn.Dropout(rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
