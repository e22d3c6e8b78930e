"""BatchNorm's training-mode function with its own gradient and compensated sums.

The ``BatchNorm`` module (:mod:`inception_jax.models.layers`) holds the variables and the running
averages; this is the function it computes, in training (:func:`batch_norm_train`) and in
evaluation (:func:`normalize`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from inception_jax.kernels.conv import Dtype


def normalize(x, mean, inv, scale, bias, relu, dtype):
  """``(x - mean) * (inv * scale) + bias`` over the last axis, in float32 at least, then the ReLU
  where ``relu``, cast to ``dtype``: BatchNorm's output in training and in evaluation."""
  if scale is not None:
    inv = inv * scale
  y = (x - mean) * inv + bias
  if relu:
    y = jnp.maximum(y, 0)
  return y.astype(dtype)


def _sums(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sums of ``a`` and ``b`` over all axes but the last: one reduction of both (XLA:CPU emits
  one loop for it where it emits several for two sums), each sum carried with the rounding error
  of its additions (Knuth's TwoSum), as XLA:CPU accumulates such a reduction in a single float
  per channel, whose rounding would otherwise reach the gradients."""
  axes = tuple(range(a.ndim - 1))
  zero = jnp.zeros((), a.dtype)

  def add(s, c, t, d):
    total = s + t
    back = total - s
    return total, c + d + ((s - (total - back)) + (t - back))

  def reducer(p, q):
    s0, c0 = add(p[0], p[1], q[0], q[1])
    s1, c1 = add(p[2], p[3], q[2], q[3])
    return s0, c0, s1, c1

  s0, c0, s1, c1 = lax.reduce((a, jnp.zeros_like(a), b, jnp.zeros_like(b)),
                              (zero, zero, zero, zero), reducer, axes)
  return s0 + c0, s1 + c1


def _batch_norm_forward(x, scale, bias, epsilon, relu, dtype):
  acc = jnp.promote_types(x.dtype, jnp.float32)
  n = math.prod(x.shape[:-1])
  x = x.astype(acc)
  total, squares = _sums(x, x * x)
  mean = total / n
  var = jnp.maximum(squares / n - mean * mean, 0.0)
  inv = lax.rsqrt(var + epsilon)
  return normalize(x, mean, inv, scale, bias, relu, dtype), mean, var, inv


def batch_norm_train(x: jax.Array, scale: jax.Array | None, bias: jax.Array, epsilon: float,
                     relu: bool = False, dtype: Dtype | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm (then a ReLU where ``relu``) of ``x`` over all axes but the last:
  ``(y, batch mean, biased batch variance)``, ``y`` in ``dtype`` (default: float32 at least),
  computed in float32 at least. Gradients flow to ``x``, ``scale`` and ``bias`` through ``y``
  only (the statistics feed the running averages), by the rule of :func:`_batch_norm_bwd`: two
  reductions and two elementwise passes, where autodiff of flax's form gives XLA several more
  small programs per BatchNorm to compile."""
  dtype = jnp.promote_types(x.dtype, jnp.float32) if dtype is None else jnp.dtype(dtype)
  return _batch_norm_train(x, scale, bias, float(epsilon), bool(relu), dtype,
                           jnp.dtype(bias.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _batch_norm_train(x, scale, bias, epsilon, relu, dtype, param_dtype):
  del param_dtype
  y, mean, var, _ = _batch_norm_forward(x, scale, bias, epsilon, relu, dtype)
  return y, mean, var


def _batch_norm_fwd(x, scale, bias, epsilon, relu, dtype, param_dtype):
  del param_dtype
  y, mean, var, inv = _batch_norm_forward(x, scale, bias, epsilon, relu, dtype)
  return (y, mean, var), (x, scale, mean, inv, y if relu else None)


def _batch_norm_bwd(epsilon, relu, dtype, param_dtype, residuals, cotangents):
  """With xhat = (x - mean) * inv and g the output gradient (zero where the ReLU was off):
  dbias = sum g, dscale = sum g * xhat, dx = inv * scale * (g - mean(g) - xhat * mean(g * xhat))
  (the statistics' own dependence on x included)."""
  del epsilon, dtype
  x, scale, mean, inv, y = residuals
  acc = jnp.promote_types(x.dtype, jnp.float32)
  g = cotangents[0].astype(acc)
  if relu:
    g = jnp.where(y > 0, g, jnp.zeros((), acc))
  n = math.prod(x.shape[:-1])
  xhat = (x.astype(acc) - mean) * inv
  dbias, dscale = _sums(g, g * xhat)
  a = inv if scale is None else inv * scale
  dx = a * (g - dbias / n - xhat * (dscale / n))
  return (dx.astype(x.dtype), None if scale is None else dscale.astype(scale.dtype),
          dbias.astype(param_dtype))


_batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)
