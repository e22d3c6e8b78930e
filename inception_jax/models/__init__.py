"""The Inception family as flax.linen modules.

>>> from inception_jax import models
>>> model = models.create('inception_v3', num_classes=1000)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
>>> logits = model.apply(variables, images, train=False)            # [batch, 1000]

Contract of every model: ``module.apply(variables, images, train=...)`` on NHWC float images
returns one array, the logits ``[batch, num_classes]``, or with ``num_classes=0`` the pooled
features ``[batch, features]``. Everything else is sown into the 'intermediates' collection:

* ``intermediates/aux_logits``: a tuple of auxiliary logits, shallowest head first (inception_v1:
  after Mixed_4b and Mixed_4e, the paper's 4a and 4d; inception_v3: after Mixed_6e). The heads
  run, when the model has them (``aux_logits`` and ``num_classes``), only where 'intermediates' is
  mutable, and at init so that their parameters exist in every mode::

    logits, state = model.apply(variables, images, train=True, rngs={'dropout': key},
                                mutable=['batch_stats', 'intermediates'])
    aux = state['intermediates'].get('aux_logits', ())

* ``intermediates/endpoints``: TF-slim's named end points (``Conv2d_1a_3x3``, ``Mixed_5b``, ...,
  ``PreLogits``) as a dict; :func:`endpoints` returns them.

Importing this package imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

from typing import Any

import functools

import jax
import jax.numpy as jnp

from inception_jax.models import repeat
from inception_jax.models.conventions import TF, TORCH, Conventions, resolve
from inception_jax.models.flops import flops  # models.flops is the function: from-import the rest
from inception_jax.models.registry import ModelInfo, create, info, list_models, register


def _rngs():
  return {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}


def variable_shapes(name: str, image_size: int | None = None, **options: Any) -> dict:
  """Shapes of the variables of ``create(name, **options)``, without allocating them."""
  return module_variable_shapes(create(name, **options), image_size or info(name).input_size)


def module_variable_shapes(module, image_size: int) -> dict:
  """Shapes of the variables ``module`` declares for ``image_size`` inputs. Traced once per
  module (flax modules compare and hash by their fields), size and x64 mode, and copied for
  each caller: tracing takes 1-2 s for Inception-v3, and a converter asks once per state dict
  (a run's weights, their moving average, the optimizer's slots)."""
  x64 = bool(jax.config.jax_enable_x64)
  return jax.tree.map(lambda s: s, _traced_variable_shapes(module, image_size, x64))


@functools.lru_cache(maxsize=16)
def _traced_variable_shapes(module, image_size: int, x64: bool) -> dict:
  del x64  # a key only: the dtypes traced depend on the mode
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(functools.partial(module.init, train=False), _rngs(), x)


def param_count(name: str, **options: Any) -> int:
  """Trainable parameters of ``create(name, **options)``."""
  shapes = variable_shapes(name, **options)
  return sum(int(x.size) for x in jax.tree.leaves(shapes['params']))


def _runs_of(name: str, options: dict[str, Any]) -> tuple[repeat.Run, ...]:
  module = create(name, **options)
  return module.runs() if hasattr(module, 'runs') else ()


def pyloop_to_scan(name: str, variables: dict, **options: Any) -> dict:
  """Variables of ``create(name, scan=False)`` -> those of ``create(name)`` (scanned runs of
  blocks stacked on a leading axis). Also takes checkpoints written before the branches were
  nested (module names holding a slash): restore the saved tree as it is, then pass its
  ``{'params': ..., 'batch_stats': ...}`` here (an optimizer state's per-parameter trees as
  ``{'params': tree}``). The identity for models without runs."""
  return repeat.pyloop_to_scan(variables, _runs_of(name, options))


def scan_to_pyloop(name: str, variables: dict, **options: Any) -> dict:
  """Variables of ``create(name)`` -> those of ``create(name, scan=False)``, whose per-block
  end points (``Mixed_5b`` ... of Inception-v4) only the unrolled model records."""
  return repeat.scan_to_pyloop(variables, _runs_of(name, options))


def endpoints(module, variables, images, *, train: bool = False, **apply_kw) -> dict[str, Any]:
  """All named intermediates of one forward pass, ``{name: array}``, plus ``'Logits'``."""
  mutable = ['intermediates'] + (['batch_stats'] if train else [])
  out, state = module.apply(variables, images, train=train, mutable=mutable, **apply_kw)
  points = dict(state['intermediates']['endpoints'])
  points['Logits'] = out
  return points


__all__ = ['Conventions', 'ModelInfo', 'TF', 'TORCH', 'create', 'endpoints', 'flops', 'info',
           'list_models', 'param_count', 'pyloop_to_scan', 'register', 'resolve',
           'scan_to_pyloop', 'module_variable_shapes', 'variable_shapes']
