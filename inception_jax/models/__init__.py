"""The Inception family as flax.linen modules.

>>> from inception_jax import models
>>> model = models.create('inception_v3', num_classes=1000)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
>>> logits = model.apply(variables, images, train=False)            # [batch, 1000]

Contract of every model (``module.apply(variables, images, train=...)``, NHWC float images):

* ``train=False``: logits ``[batch, num_classes]``; with ``num_classes=0`` the pooled pre-logits
  features ``[batch, features]`` instead.
* ``train=True`` (pass ``mutable=['batch_stats']`` and a ``'dropout'`` rng): models with auxiliary
  classifiers (inception_v1: after Mixed_4b and Mixed_4e, i.e. the paper's 4a and 4d;
  inception_v3: after Mixed_6e) return ``(logits, aux)``, ``aux`` a tuple of auxiliary logits
  ordered from shallowest to deepest; every other model, and these with ``aux_logits=False`` or
  ``num_classes=0``, return the logits alone, as in eval.
* Named intermediates (TF-slim's end points: ``Conv2d_1a_3x3``, ``Mixed_5b``, ..., ``PreLogits``)
  are sown into the ``'intermediates'`` collection; :func:`endpoints` returns them as a dict.

Importing this package imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from inception_jax.models.conventions import TF, TORCH, Conventions, resolve
from inception_jax.models.registry import ModelInfo, create, info, list_models, register


def _example(name: str, image_size: int | None, batch: int = 1):
  size = image_size or info(name).input_size
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


def _rngs():
  return {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}


def variable_shapes(name: str, image_size: int | None = None, **options: Any) -> dict:
  """Shapes of the variables of ``create(name, **options)``, without allocating them."""
  module = create(name, **options)
  return jax.eval_shape(module.init, _rngs(), _example(name, image_size), train=False)


def param_count(name: str, **options: Any) -> int:
  """Trainable parameters of ``create(name, **options)``."""
  shapes = variable_shapes(name, **options)
  return sum(int(x.size) for x in jax.tree.leaves(shapes['params']))


def flops(name: str, image_size: int | None = None, **options: Any) -> dict[str, float]:
  """Forward cost of one image in eval mode, from XLA's cost analysis of the lowered program.

  Returns ``{'flops': ..., 'macs': flops / 2}``. XLA counts a multiply-add as two FLOPs, and also
  counts BatchNorm, activations and pooling, which add about 1% over the convolutions alone.
  """
  module = create(name, **options)
  x = _example(name, image_size)
  variables = jax.eval_shape(module.init, _rngs(), x, train=False)
  lowered = jax.jit(lambda v, im: module.apply(v, im, train=False)).lower(variables, x)
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  total = float(cost['flops'])
  return {'flops': total, 'macs': total / 2}


def endpoints(module, variables, images, *, train: bool = False, **apply_kw) -> dict[str, Any]:
  """All named intermediates of one forward pass, ``{name: array}``, plus ``'Logits'``."""
  mutable = ['intermediates'] + (['batch_stats'] if train else [])
  out, state = module.apply(variables, images, train=train, mutable=mutable, **apply_kw)
  points = {k: v[0] for k, v in state['intermediates'].items()}
  points['Logits'] = out
  return points


__all__ = ['Conventions', 'ModelInfo', 'TF', 'TORCH', 'create', 'endpoints', 'flops', 'info',
           'list_models', 'param_count', 'register', 'resolve', 'variable_shapes']
