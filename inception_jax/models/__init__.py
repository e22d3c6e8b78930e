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
  are sown into ``intermediates/endpoints`` (a dict); :func:`endpoints` returns them.

Importing this package imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

from typing import Any

import functools

import jax
import jax.extend.core as jex_core
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
  return jax.eval_shape(functools.partial(module.init, train=False), _rngs(),
                        _example(name, image_size))


def param_count(name: str, **options: Any) -> int:
  """Trainable parameters of ``create(name, **options)``."""
  shapes = variable_shapes(name, **options)
  return sum(int(x.size) for x in jax.tree.leaves(shapes['params']))


def flops(name: str, image_size: int | None = None, **options: Any) -> dict[str, float]:
  """Forward cost of one image in eval mode, from XLA's cost analysis of the lowered program.

  Returns ``{'flops': ..., 'macs': flops / 2}``: XLA counts a multiply-add as two FLOPs, and also
  counts BatchNorm, activations and pooling (under 1% here). XLA's analysis skips the taps of a
  convolution that fall on its implicit zero padding, while the published figures (torchvision,
  timm, fvcore) count every tap; the program is therefore lowered with each convolution's padding
  made explicit, so that the count is the conventional one (without this, the factorised 1x7/7x1
  convolutions of Inception-v4 on 17x17 maps would be under-counted by 4%).
  """
  module = create(name, **options)
  x = _example(name, image_size)
  variables = jax.eval_shape(functools.partial(module.init, train=False), _rngs(), x)
  forward = _explicit_conv_padding(lambda v, im: module.apply(v, im, train=False))
  cost = jax.jit(forward).lower(variables, x).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  total = float(cost['flops'])
  return {'flops': total, 'macs': total / 2}


def _explicit_conv_padding(fn):
  """``fn`` re-run from its jaxpr with every padded convolution split into pad + VALID conv."""
  def run(*args):
    closed = jax.make_jaxpr(fn)(*args)
    out = _eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(jax.eval_shape(fn, *args)), out)
  return run


def _eval_jaxpr(jaxpr, consts, args):
  env = {}
  read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    params = eqn.params
    inner = params.get('jaxpr') if eqn.primitive.name in ('pjit', 'jit') else \
        params.get('call_jaxpr') if eqn.primitive.name == 'custom_jvp_call' else None
    if inner is not None:
      outs = _eval_jaxpr(inner.jaxpr, inner.consts, invals)
    elif eqn.primitive.name == 'conv_general_dilated' and any(map(any, params['padding'])):
      lhs, rhs = invals
      pads = [(0, 0, 0)] * lhs.ndim
      for dim, (lo, hi) in zip(params['dimension_numbers'].lhs_spec[2:], params['padding']):
        pads[dim] = (lo, hi, 0)
      lhs = jax.lax.pad(lhs, jnp.zeros((), lhs.dtype), pads)
      outs = [eqn.primitive.bind(lhs, rhs, **{**params,
                                              'padding': ((0, 0),) * len(params['padding'])})]
    else:
      outs = eqn.primitive.bind(*invals, **params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def endpoints(module, variables, images, *, train: bool = False, **apply_kw) -> dict[str, Any]:
  """All named intermediates of one forward pass, ``{name: array}``, plus ``'Logits'``."""
  mutable = ['intermediates'] + (['batch_stats'] if train else [])
  out, state = module.apply(variables, images, train=train, mutable=mutable, **apply_kw)
  points = dict(state['intermediates']['endpoints'])
  points['Logits'] = out
  return points


__all__ = ['Conventions', 'ModelInfo', 'TF', 'TORCH', 'create', 'endpoints', 'flops', 'info',
           'list_models', 'param_count', 'register', 'resolve', 'variable_shapes']
