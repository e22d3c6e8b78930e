"""The FID network: TF's ``inception-2015-12-05`` graph, the Inception-v3 that Heusel et al. 2017
("GANs Trained by a Two Time-Scale Update Rule") and Salimans et al. 2016 (Inception
Score) computed their scores with.

It is Inception-v3 (Szegedy et al. 2015, Table 1) as released in December 2015, which differs from
torchvision's port of the later TF-slim checkpoint in three ways that change the features (the
blocks pytorch-fid patches, ``pytorch_fid/inception.py``: ``FIDInceptionA/C/E_1/E_2``; likewise
torch-fidelity's ``feature_extractor_inceptionv3.py``): its 3x3 average pools divide by the real
pixels only (TF ``SAME``), the pool branch of the last 8x8 module (Mixed_7c, the graph's
``mixed_10``) is a max pool, and the classifier has 1008 outputs. Its BatchNorm has a scale.

End points (the 'intermediates' collection) give the other features FID implementations use:
pytorch-fid's ``--dims`` 64 / 192 / 768 are the global averages of ``MaxPool_3a_3x3``,
``MaxPool_5a_3x3`` and ``Mixed_6e``; sFID's spatial features (Nash et al. 2021, "Generating Images
with Sparse Representations"; guided-diffusion ``evaluations/evaluator.py``:
``mixed_6/conv`` channels 0-6) are ``Mixed_6d``'s first 7 channels, since that module's first
branch is the single 1x1 conv ``mixed_6/conv``. ``PreLogits`` is the graph's 2048-d ``pool_3``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.kernels.pool import global_avg_pool
from inception_jax.models import inception_v3, layers
from inception_jax.models.conventions import Conventions, resolve
from inception_jax.models.layers import Pool, Spec
from inception_jax.models.registry import register


def _max_pool_branch(specs: tuple[Spec, ...]) -> tuple[Spec, ...]:
  """``FIDInceptionE_2``: the last branch pools with a 3x3/1 max pool instead of the average."""
  pool, *convs = specs[3].ops
  assert isinstance(pool, Pool) and pool.kind == 'avg', pool
  return (*specs[:3], specs[3]._replace(ops=(pool._replace(kind='max'), *convs)))


# Inception-v3's tables (inception_v3.STEM / MIXED), with the graph's max pool in Mixed_7c.
STEM = inception_v3.STEM
MIXED = tuple((name, fn(*args) if name != 'Mixed_7c' else _max_pool_branch(fn(*args)))
              for name, fn, args in inception_v3.MIXED)


@register('inception_v3_fid', input_size=299,
          paper='Heusel et al. 2017, GANs Trained by a Two Time-Scale Update Rule (FID network: '
                'TF inception-2015-12-05)', num_classes=1008)
class InceptionV3FID(nn.Module):
  """The FID network (see the module docstring). Input: ``(x - 128) / 128`` of 0-255 values.

  Attributes:
    num_classes: 1008 for the released graph; 0 returns the 2048-d ``pool_3`` features.
    conventions: 'tf' or 'torch' give the same function here (stride-1 SAME padding of odd
      kernels is symmetric; pools exclude padding; BN eps 1e-3 with a scale; see
      ``conventions.py``).
    dtype: compute dtype (parameters stay float32).
    cpu_convolutions: the library XLA:CPU runs convolutions with, 'ynnpack' or 'xla' (see
      ``layers``): the forms of the gradients, not the function.
  """

  num_classes: int = 1008
  conventions: Conventions = resolve('inception_v3_fid', 'tf')
  dtype: Any = jnp.float32
  cpu_convolutions: str = 'ynnpack'

  min_size: ClassVar[int] = 75  # Mixed_7a's stride-2 VALID 3x3 needs a 3x3 map

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    kw, point = layers.begin(self, images, 'inception_v3_fid')
    x = layers.stem(STEM, images, train, kw, point)
    for name, specs in MIXED:
      x = point(name, layers.Mixed(specs, name=name, **kw)(x, train))
    x = point('PreLogits', global_avg_pool(x))
    if not self.num_classes:
      return x
    return layers.dense(self.num_classes, self.dtype, name='Logits')(x)
