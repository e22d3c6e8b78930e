"""Pooling over NHWC maps, with explicit padding, and max pooling's gradient on a CPU.

Padding is given as ``(lo, hi)`` pairs per spatial dimension; the model layer
(:mod:`inception_jax.models.layers`) works them out under a weights' origin's conventions.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from inception_jax.kernels.conv import pair, seen_by_tap


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             pads: Sequence[tuple[int, int]]) -> jax.Array:
  """Max pooling over NHWC ``x`` with ``pads`` (padded cells are -inf); on a CPU its gradient is
  :func:`max_pool_gradient`."""
  return _max_pool(x, tuple(window), tuple(strides),
                   tuple((int(lo), int(hi)) for lo, hi in pads))


def _reduce_max(x, window, strides, pads):
  # A scalar identity lets JAX use its differentiable reduce_window_max.
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1),
                           [(0, 0), *pads, (0, 0)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  return _reduce_max(x, window, strides, pads)


def _max_pool_fwd(x, window, strides, pads):
  y = _reduce_max(x, window, strides, pads)
  return y, (x, y)


def _max_pool_bwd(window, strides, pads, residuals, g):
  def autodiff(x, y, g):  # XLA's select-and-scatter
    del y
    return jax.vjp(lambda x: _reduce_max(x, window, strides, pads), x)[1](g)[0]

  def by_taps(x, y, g):
    return max_pool_gradient(x, y, g, window, strides, pads)

  return (lax.platform_dependent(*residuals, g, cpu=by_taps, default=autodiff),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_gradient(x: jax.Array, y: jax.Array, g: jax.Array, window: Sequence[int],
                      strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> jax.Array:
  """dL/dx of ``y = max_pool(x)`` given ``g = dL/dy``, as JAX, TF and PyTorch define it: each
  window's gradient goes to its maximum, the first in row-major order where several tie (ReLU
  outputs tie at 0 often). Written as elementwise steps over the window's taps: the tap that
  equals the window's maximum and no earlier tap did takes ``g``, and each tap's share is put
  back at the input pixels it saw (a pad with the stride less one as interior padding): XLA:CPU
  compiles the select-and-scatter that autodiff gives into a slower scatter."""
  (kh, kw), (sh, sw) = window, strides
  oh, ow = y.shape[1:3]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  h, w = xp.shape[1:3]
  acc = jnp.promote_types(g.dtype, jnp.float32)
  g, zero = g.astype(acc), jnp.zeros((), acc)
  free = jnp.ones(y.shape, bool)  # windows whose maximum no earlier tap was
  dx = None
  for a in range(kh):
    for b in range(kw):
      hit = free & (seen_by_tap(xp, a, b, strides, (oh, ow)) == y)
      free = free & ~hit
      share = lax.pad(jnp.where(hit, g, zero), zero,
                      [(0, 0, 0), (a, h - a - sh * (oh - 1) - 1, sh - 1),
                       (b, w - b - sw * (ow - 1) - 1, sw - 1), (0, 0, 0)])
      dx = share if dx is None else dx + share
  (top, bottom), (left, right) = pads
  return dx[:, top:h - bottom, left:w - right].astype(x.dtype)


def avg_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             pads: Sequence[tuple[int, int]],
             counted: Sequence[tuple[int, int]] | None = None) -> jax.Array:
  """Average pooling over NHWC ``x`` with ``pads``. The divisor counts the window's real pixels,
  plus the part ``counted`` of the padding (PyTorch's ``count_include_pad``: its explicit padding,
  not the overhang of ceil mode)."""
  size = x.shape[1:3]
  dims, step = (1, *window, 1), (1, *strides, 1)
  summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, step,
                                 [(0, 0), *pads, (0, 0)])
  counts = _window_counts(tuple(size), tuple(window), tuple(strides), tuple(map(tuple, pads)),
                          tuple(map(tuple, counted or ())), counted is not None)
  return summed / jnp.asarray(counts, x.dtype)[None, :, :, None]


@functools.lru_cache(maxsize=None)
def _window_counts(size, window, strides, pads, counted, include_pad) -> np.ndarray:
  """Number of pixels each pooling window divides by (a static numpy table)."""
  ones = np.ones(size, np.float64)
  if include_pad:
    ones = np.pad(ones, counted, constant_values=1.0)
    pads = [(p - c[0], q - c[1]) for (p, q), c in zip(pads, counted)]
  ones = np.pad(ones, pads)
  out = [(ones.shape[i] - window[i]) // strides[i] + 1 for i in range(2)]
  counts = np.empty(out)
  for i in range(out[0]):
    for j in range(out[1]):
      r, c = i * strides[0], j * strides[1]
      counts[i, j] = ones[r:r + window[0], c:c + window[1]].sum()
  return counts


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over the spatial dimensions, accumulated in float32 at least (float64 stays)."""
  return jnp.mean(x, axis=(1, 2), dtype=jnp.promote_types(x.dtype, jnp.float32)).astype(x.dtype)


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
  """PyTorch's ``adaptive_avg_pool2d``: window i spans [floor(i*n/o), ceil((i+1)*n/o))."""
  oh, ow = pair(output_size)
  h, w = x.shape[1:3]
  rows = []
  for i in range(oh):
    r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)

