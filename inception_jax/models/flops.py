"""Forward cost of a model, counted as the published tables count it (torchvision, timm, fvcore).

XLA's cost analysis skips the taps of a convolution that fall on its implicit zero padding, while
the published figures count every tap (without correcting this, the factorised 1x7/7x1 convs of
Inception-v4 on 17x17 maps are under-counted by 4%). So the program is re-traced with each padded
convolution split into an explicit pad and a VALID convolution, inside every sub-program too, and
with every scan unrolled so that a scanned run of blocks counts ``length`` times.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp

from inception_jax.models.registry import create, info

# Call-like higher-order primitives -> the parameter holding the program they run once. Their
# forward cost is that program's, so they are inlined.
_INLINED = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr',
            'core_call': 'call_jaxpr', 'remat2': 'jaxpr', 'checkpoint': 'jaxpr',
            'custom_jvp_call': 'call_jaxpr', 'custom_vjp_call': 'call_jaxpr',
            'custom_vjp_call_jaxpr': 'fun_jaxpr'}


def flops(name: str, image_size: int | None = None, **options: Any) -> dict[str, float]:
  """Forward cost of one image of ``create(name, **options)`` in eval mode: ``{'flops', 'macs'}``.

  XLA counts a multiply-add as two FLOPs (``macs = flops / 2``) and also counts BatchNorm,
  activations and pooling (under 1% here).
  """
  module = create(name, **options)
  size = image_size or info(name).input_size
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  variables = jax.eval_shape(functools.partial(module.init, train=False), rngs, x)
  return count(module, variables, x)


def count(module: Any, variables: Any, images: Any) -> dict[str, float]:
  """``{'flops', 'macs'}`` of ``module.apply(variables, images, train=False)``; shapes
  (``jax.ShapeDtypeStruct``) suffice."""
  forward = explicit_conv_padding(lambda v, im: module.apply(v, im, train=False))
  cost = jax.jit(forward).lower(variables, images).cost_analysis()
  if isinstance(cost, (list, tuple)):  # one entry per device in older JAX releases
    cost = cost[0]
  total = float(cost['flops'])
  return {'flops': total, 'macs': total / 2}


def explicit_conv_padding(fn):
  """``fn`` re-run from its jaxpr with every padded convolution split into pad + VALID conv."""
  def run(*args):
    closed = jax.make_jaxpr(fn)(*args)
    out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(jax.eval_shape(fn, *args)), out)
  return run


def _eval(jaxpr, consts, args) -> list:
  env = {}
  read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    outs = _eval_eqn(eqn, [read(v) for v in eqn.invars])
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _eval_closed(closed, args) -> list:
  if isinstance(closed, jex_core.ClosedJaxpr):
    return _eval(closed.jaxpr, closed.consts, args)
  return _eval(closed, (), args)  # an open jaxpr (remat's)


def _eval_eqn(eqn, invals) -> list:
  name, params = eqn.primitive.name, eqn.params
  if name in _INLINED:
    return _eval_closed(params[_INLINED[name]], invals)
  if name == 'scan':
    return _unrolled_scan(params, invals)
  if name == 'cond':
    index, *ops = invals
    branches = [functools.partial(_eval_closed, b) for b in params['branches']]
    return jax.lax.switch(index, [lambda *a, f=f: f(list(a)) for f in branches], *ops)
  if any(isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr)) or
         (isinstance(v, tuple) and any(isinstance(u, (jex_core.Jaxpr, jex_core.ClosedJaxpr))
                                       for u in v)) for v in params.values()):
    raise NotImplementedError(
        f'flops: the higher-order primitive {name!r} is not supported (its sub-program would '
        'be counted without explicit conv padding, or with an unknown trip count)')
  if name == 'conv_general_dilated' and any(map(any, params['padding'])):
    lhs, rhs = invals
    pads = [(0, 0, 0)] * lhs.ndim
    for dim, (lo, hi) in zip(params['dimension_numbers'].lhs_spec[2:], params['padding']):
      pads[dim] = (lo, hi, 0)
    lhs = jax.lax.pad(lhs, jnp.zeros((), lhs.dtype), pads)
    return [eqn.primitive.bind(lhs, rhs, **{**params,
                                            'padding': ((0, 0),) * len(params['padding'])})]
  outs = eqn.primitive.bind(*invals, **params)
  return outs if eqn.primitive.multiple_results else [outs]


def _unrolled_scan(params, invals) -> list:
  """A scan as ``length`` copies of its body, so that its cost is counted ``length`` times."""
  n_consts, n_carry, length = params['num_consts'], params['num_carry'], params['length']
  consts, carry, xs = (invals[:n_consts], invals[n_consts:n_consts + n_carry],
                       invals[n_consts + n_carry:])
  steps = range(length - 1, -1, -1) if params['reverse'] else range(length)
  ys = {}
  for i in steps:
    outs = _eval_closed(params['jaxpr'], [*consts, *carry, *(x[i] for x in xs)])
    carry, ys[i] = outs[:n_carry], outs[n_carry:]
  n_ys = len(params['jaxpr'].out_avals) - n_carry
  return [*carry, *(jnp.stack([ys[i][k] for i in range(length)]) for k in range(n_ys))]
