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
op's output: in 'paper' the LRNs follow ``MaxPool_2a_3x3`` and ``Conv2d_2c_3x3``. In train mode the
aux heads' logits are end points too, ``AuxLogits_4b`` and ``AuxLogits_4e``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import layers
from inception_jax.models.conventions import TF, Conventions
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
# Auxiliary classifiers on the outputs of the paper's 4a and 4d (Section 5).
AUX_AFTER = ('Mixed_4b', 'Mixed_4e')


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


class Branch(nn.Module):
  """One column of an Inception module: an optional 3x3/1 max pool, then convolutions."""

  convs: tuple[tuple[str, int, int], ...]  # (slim scope, filters, kernel size)
  conventions: Conventions
  use_bn: bool
  pool_first: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.pool_first:
      x = layers.max_pool(x, 3, 1, 'SAME', self.conventions)
    for scope, filters, kernel in self.convs:
      x = layers.ConvBN(filters, kernel, self.conventions, use_bn=self.use_bn, dtype=self.dtype,
                        name=scope)(x, train)
    return x


class InceptionModule(nn.Module):
  """Figure 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in 'bn') | 3x3 max pool -> 1x1, concatenated."""

  filters: tuple[int, int, int, int, int, int]
  conventions: Conventions
  variant: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    n1, n3r, n3, n5r, n5, pool_proj = self.filters
    # TF-slim and torchvision replaced the 5x5 by a 3x3 (pytorch/vision#906). Slim also names
    # this conv Conv2d_0a_3x3 in Mixed_5b alone, a typo that a slim converter has to map.
    k5 = 5 if self.variant == 'paper' else 3
    branches = (
        ((('Conv2d_0a_1x1', n1, 1),), False),
        ((('Conv2d_0a_1x1', n3r, 1), ('Conv2d_0b_3x3', n3, 3)), False),
        ((('Conv2d_0a_1x1', n5r, 1), (f'Conv2d_0b_{k5}x{k5}', n5, k5)), False),
        ((('Conv2d_0b_1x1', pool_proj, 1),), True),  # after slim's MaxPool_0a_3x3
    )
    use_bn = self.variant == 'bn'
    return jnp.concatenate(
        [Branch(convs, self.conventions, use_bn, pool_first, self.dtype, name=f'Branch_{i}')(
            x, train) for i, (convs, pool_first) in enumerate(branches)], axis=-1)


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

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.conventions.aux_pool == 'adaptive':
      x = layers.adaptive_avg_pool(x, 4)
    else:
      x = layers.avg_pool(x, 5, 3, 'VALID', self.conventions)
    x = layers.ConvBN(128, 1, self.conventions, use_bn=self.variant == 'bn', dtype=self.dtype,
                      name='Conv2d_1b_1x1')(x, train)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(layers.dense(1024, self.dtype, name='Fc_2a')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)


@register('inception_v1', paper='Szegedy et al. 2014, Going deeper with convolutions',
          input_size=224, default_conventions='tf')
class InceptionV1(nn.Module):
  """GoogLeNet, Table 1 of the paper; see the module docstring for the two variants.

  ``train=True`` with ``aux_logits`` returns ``(logits, (aux_4b, aux_4e))``, shallow to deep;
  torchvision returns ``(logits, aux2, aux1)``, deep first.
  """

  num_classes: int = 1000
  conventions: Conventions = TF
  # None: DEFAULT_DROPOUT[variant], the paper's 0.4 (Section 5) or 0.2 for 'bn'.
  dropout_rate: float | None = None
  aux_dropout_rate: float = 0.7  # Section 5: "dropout layer with 70% ratio of dropped outputs"
  dtype: Any = jnp.float32
  aux_logits: bool = True
  variant: str = 'bn'

  # With the default options under TF conventions, the aux heads' VALID 5x5 pool needs a 5x5
  # Mixed_4b map, i.e. ceil(size / 16) >= 5; the aux heads are built at init in eval mode too.
  # PyTorch conventions need less (their aux pool is adaptive).
  min_size: ClassVar[int] = 65

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'inception_v1 variant must be one of {VARIANTS}, got {self.variant!r}')
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    layers.check_input(images, self.min_size, 'inception_v1')
    conv_kw = dict(conventions=self.conventions, use_bn=self.variant == 'bn', dtype=self.dtype)
    paper = self.variant == 'paper'
    x = images.astype(self.dtype)

    # Stem (Table 1 rows up to "max pool 3x3/2" before 3a; Figure 3 places the LRNs).
    x = layers.ConvBN(64, 7, strides=2, name='Conv2d_1a_7x7', **conv_kw)(x, train)
    layers.endpoint(self, 'Conv2d_1a_7x7', x)
    x = layers.max_pool(x, 3, 2, 'SAME', self.conventions)
    layers.endpoint(self, 'MaxPool_2a_3x3', x)
    if paper:
      x = local_response_norm(x)
    x = layers.ConvBN(64, 1, name='Conv2d_2b_1x1', **conv_kw)(x, train)
    layers.endpoint(self, 'Conv2d_2b_1x1', x)
    x = layers.ConvBN(192, 3, name='Conv2d_2c_3x3', **conv_kw)(x, train)
    layers.endpoint(self, 'Conv2d_2c_3x3', x)
    if paper:
      x = local_response_norm(x)
    x = layers.max_pool(x, 3, 2, 'SAME', self.conventions)
    layers.endpoint(self, 'MaxPool_3a_3x3', x)

    with_aux = self.aux_logits and self.num_classes > 0
    # The aux heads only feed the training loss, but their parameters exist in eval mode too.
    run_aux = with_aux and (train or self.is_initializing())
    aux = []
    for name, *filters in MODULES:
      if name == 'Mixed_4b':
        x = layers.max_pool(x, 3, 2, 'SAME', self.conventions)
        layers.endpoint(self, 'MaxPool_4a_3x3', x)
      elif name == 'Mixed_5b':
        x = layers.max_pool(x, 2, 2, 'SAME', self.conventions)
        layers.endpoint(self, 'MaxPool_5a_2x2', x)
      x = InceptionModule(tuple(filters), self.conventions, self.variant, self.dtype,
                          name=name)(x, train)
      layers.endpoint(self, name, x)
      if run_aux and name in AUX_AFTER:
        scope = f'AuxLogits_{name[-2:]}'
        a = AuxHead(self.num_classes, self.conventions, self.variant, self.aux_dropout_rate,
                    self.dtype, name=scope)(x, train)
        aux.append(layers.endpoint(self, scope, a))

    # Table 1: 7x7/1 average pool at 224; global at any resolution, as torchvision.
    x = layers.global_avg_pool(x)
    layers.endpoint(self, 'PreLogits', x)
    if self.num_classes == 0:
      return x
    rate = DEFAULT_DROPOUT[self.variant] if self.dropout_rate is None else self.dropout_rate
    x = nn.Dropout(rate, deterministic=not train)(x)
    logits = layers.dense(self.num_classes, self.dtype, name='Logits')(x)
    if train and with_aux:
      return logits, tuple(aux)
    return logits
