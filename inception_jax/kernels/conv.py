"""Convolutions whose gradients on a CPU take the forms XLA:CPU's libraries run fastest.

:func:`conv_general_dilated` is ``jax.lax.conv_general_dilated`` with its own gradient rule
(:func:`conv_gradients`), and with depthwise convolutions summed over the kernel taps on a CPU
(:func:`depthwise_by_taps`). Which form a filter gradient takes follows the library XLA:CPU hands
convolutions to (``cpu_convolutions``, chosen by the entry points with
:func:`inception_jax.machine.set_cpu_convolutions`); every form computes the same function up to
float rounding, and other backends keep JAX's own rules. BENCHMARKS.md has the measurements.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

# The filter gradient's form each XLA:CPU convolution library runs fastest: under YNNPACK
# (XLA's default) one matrix product per kernel tap, under XLA's own emitter a convolution.
FILTER_GRADIENTS = {'ynnpack': 'taps', 'xla': 'convolution'}


def pair(v: int | Sequence[int]) -> tuple[int, int]:
  """``v`` for both spatial dimensions: an int repeated, a pair as a tuple."""
  return (v, v) if isinstance(v, int) else tuple(v)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, *, cpu_convolutions: str = 'ynnpack',
                         **kwargs: Any) -> jax.Array:
  """``jax.lax.conv_general_dilated`` (the same function), whose gradient on a CPU is written in
  the forms XLA:CPU's libraries run fastest, and whose depthwise form on a CPU is a sum over the
  kernel taps (:func:`depthwise_by_taps`, forward and gradients).

  JAX's transpose rules emit the input gradient with the kernel's in/out dimensions swapped and
  the kernel gradient with batch and channels swapped (``f01b_i01o->01bf``). XLA:CPU rewrites
  such convolutions into its library layout with explicit transposes, but not inside a while
  loop's body (a scanned run of blocks), where they fall back to a naive loop nest. Here the
  input gradient is a library-layout convolution and the kernel gradient takes the form
  ``FILTER_GRADIENTS[cpu_convolutions]`` (:func:`conv_gradients`), so the scanned and the
  unrolled layouts run the same operations. Other backends (cuDNN matches JAX's forms to its
  backward kernels) keep JAX's own rules and convolutions, chosen per platform when lowered, and
  so does float64 for ungrouped convolutions, which no XLA:CPU library takes.

  NHWC x HWIO with stride, explicit/'SAME'/'VALID' padding and feature groups (depthwise
  included) take this path; anything else is passed to ``jax.lax.conv_general_dilated``.
  ``cpu_convolutions`` ('ynnpack' or 'xla') is the library XLA:CPU runs the process'
  convolutions with; it changes the program, not the function.
  """
  if cpu_convolutions not in FILTER_GRADIENTS:
    raise ValueError(f'cpu_convolutions must be one of {sorted(FILTER_GRADIENTS)}, '
                     f'got {cpu_convolutions!r}')
  default = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  dims = (default if dimension_numbers is None else
          lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
  if (kwargs or dims != default or lhs.ndim != 4 or any(d != 1 for d in lhs_dilation or ())
      or any(d != 1 for d in rhs_dilation or ())):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    precision=precision, **kwargs)
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return _conv(lhs, rhs, strides, pads, int(feature_group_count), precision,
               FILTER_GRADIENTS[cpu_convolutions])


def _plain_conv(x, w, strides, pads, groups, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                  feature_group_count=groups, precision=precision)


def seen_by_tap(xp: jax.Array, a: int, b: int, strides: Sequence[int],
                 out_hw: Sequence[int]) -> jax.Array:
  """The padded NHWC input ``xp`` as kernel tap ``(a, b)`` sees it at each of the ``out_hw``
  output positions of a window sliding by ``strides``."""
  (sh, sw), (oh, ow) = strides, out_hw
  return xp[:, a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw]


def _is_depthwise(x_shape, w_shape, groups) -> bool:
  """One filter per input channel (channel multiplier 1): Xception's separable convolutions."""
  return groups > 1 and w_shape[2] == 1 and w_shape[3] == groups == x_shape[-1]


def depthwise_by_taps(x: jax.Array, w: jax.Array, strides: Sequence[int],
                      pads: Sequence[tuple[int, int]]) -> jax.Array:
  """The depthwise convolution of NHWC ``x`` with ``w`` (HWIO, I = 1, O = channels) as a sum over
  the kernel taps of the padded input seen through each tap, times that tap's per-channel
  weights: elementwise steps XLA fuses into one loop over the output (and, differentiated, its
  gradients into a few more), where XLA:CPU hands grouped convolutions to no library and emits
  them as generic loops. Accumulated in float32 at least."""
  acc = jnp.promote_types(x.dtype, jnp.float32)
  kh, kw = w.shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0))).astype(acc)
  out_hw = [(size - k) // s + 1 for size, k, s in zip(xp.shape[1:3], (kh, kw), strides)]
  y = None
  for a in range(kh):
    for b in range(kw):
      term = seen_by_tap(xp, a, b, strides, out_hw) * w[a, b, 0].astype(acc)
      y = term if y is None else y + term
  return y.astype(x.dtype)


def _forward(x, w, strides, pads, groups, precision):
  if not _is_depthwise(x.shape, w.shape, groups):
    return _plain_conv(x, w, strides, pads, groups, precision)
  return lax.platform_dependent(
      x, w, cpu=lambda x, w: depthwise_by_taps(x, w, strides, pads),
      default=lambda x, w: _plain_conv(x, w, strides, pads, groups, precision))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv(x, w, strides, pads, groups, precision, filter_gradient):
  del filter_gradient
  return _forward(x, w, strides, pads, groups, precision)


def _conv_fwd(x, w, strides, pads, groups, precision, filter_gradient):
  del filter_gradient
  return _forward(x, w, strides, pads, groups, precision), (x, w)


def _conv_bwd(strides, pads, groups, precision, filter_gradient, residuals, g):
  x, w = residuals

  def autodiff(x, w, g):  # JAX's own transpose rules
    _, vjp = jax.vjp(lambda x, w: _plain_conv(x, w, strides, pads, groups, precision), x, w)
    return vjp(g)

  if _is_depthwise(x.shape, w.shape, groups):
    def by_taps(x, w, g):  # any dtype: elementwise steps, no library involved
      return jax.vjp(lambda x, w: depthwise_by_taps(x, w, strides, pads), x, w)[1](g)
    return tuple(lax.platform_dependent(x, w, g, cpu=by_taps, default=autodiff))
  if x.dtype == jnp.float64:  # XLA:CPU's libraries do not take float64: a loop nest either way,
    return autodiff(x, w, g)  # and JAX's forms are the ones it runs fastest

  def canonical(x, w, g):
    return conv_gradients(x, w, g, strides, pads, groups, precision, filter_gradient)

  return tuple(lax.platform_dependent(x, w, g, cpu=canonical, default=autodiff))


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_gradients(x: jax.Array, w: jax.Array, g: jax.Array, strides: Sequence[int],
                   pads: Sequence[tuple[int, int]], groups: int = 1,
                   precision: Any = None, filter_gradient: str = 'taps'
                   ) -> tuple[jax.Array, jax.Array]:
  """``(dL/dx, dL/dw)`` of the NHWC x HWIO convolution of ``x`` with ``w`` (explicit ``pads``),
  given ``g = dL/dy``: what :func:`conv_general_dilated`'s gradient runs on a CPU for float32 and
  narrower types. The input gradient is a library-layout convolution. A 1x1 convolution (stride
  1, unpadded, ungrouped) is a matrix product, and so are both of its gradients.

  The kernel gradient of a larger ungrouped kernel takes the form ``filter_gradient``: one matrix
  product over the pixels per kernel tap (``'taps'``, what YNNPACK runs fastest: it runs the
  convolution form, with the whole output map as its window and the batch as its channels,
  slowly), or that convolution (``'convolution'``, what XLA's own emitter runs fastest).
  Grouped ones are always convolutions (depthwise ones do not come here on a CPU:
  :func:`depthwise_by_taps`)."""
  if filter_gradient not in ('taps', 'convolution'):
    raise ValueError(f"filter_gradient must be 'taps' or 'convolution', got {filter_gradient!r}")
  if w.shape[:2] == (1, 1) and groups == 1 and tuple(strides) == (1, 1) and not any(
      lo or hi for lo, hi in pads):
    dx = jnp.einsum('nhwo,io->nhwi', g, w[0, 0], precision=precision).astype(g.dtype)
  else:
    dx = _input_grad(g, w, x.shape, strides, pads, groups, precision)
  if groups > 1 or (filter_gradient == 'convolution' and w.shape[:2] != (1, 1)):
    return dx, _kernel_grad(x, g, w.shape, strides, pads, groups, precision)
  return dx, _kernel_grad_by_taps(x, g, w.shape, strides, pads, precision)


def _kernel_grad_by_taps(x, g, w_shape, strides, pads, precision):
  """dL/dw[a, b] = sum over n, i, j of x_padded[n, s*i + a, s*j + b]^T g[n, i, j]: one matrix
  product over the pixels per kernel tap, of the input seen through that tap."""
  kh, kw = w_shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  taps = [jnp.einsum('nhwi,nhwo->io', seen_by_tap(xp, a, b, strides, g.shape[1:3]), g,
                     precision=precision)
          for a in range(kh) for b in range(kw)]
  return jnp.stack(taps).reshape(w_shape).astype(x.dtype)


def _input_grad(g, w, x_shape, strides, pads, groups, precision):
  """dL/dx: the output gradient, dilated by the stride, correlated with the kernel flipped in
  space and with each group's in/out channels exchanged (HWIO with I = out, O = in)."""
  kh, kw, cin_g, cout = w.shape
  cout_g = cout // groups
  wt = jnp.flip(w, (0, 1)).reshape(kh, kw, cin_g, groups, cout_g)
  wt = wt.transpose(0, 1, 4, 3, 2).reshape(kh, kw, cout_g, groups * cin_g)
  grad_pads = []
  for size, k, s, (lo, _), out in zip(x_shape[1:3], (kh, kw), strides, pads, g.shape[1:3]):
    before = k - 1 - lo
    grad_pads.append((before, size + k - 1 - ((out - 1) * s + 1) - before))
  return lax.conv_general_dilated(g, wt, (1, 1), grad_pads, lhs_dilation=strides,
                                  dimension_numbers=_NHWC, feature_group_count=groups,
                                  precision=precision).astype(g.dtype)


def _kernel_grad(x, g, w_shape, strides, pads, groups, precision):
  """dL/dw[a, b, c, o] = sum over n, i, j of x_padded[n, s*i + a, s*j + b, c] * g[n, i, j, o]:
  a convolution with each group's input channels as the batch, the images as the features (one
  group of them per feature group) and the output gradient, dilated by the stride, as the
  window."""
  n, h, wd, c = x.shape
  kh, kw, cin_g, cout = w_shape
  lhs = x.reshape(n, h, wd, groups, cin_g).transpose(4, 1, 2, 3, 0)
  lhs = lhs.reshape(cin_g, h, wd, groups * n)
  rhs = g.transpose(1, 2, 0, 3)  # (i, j, n, o): window, in = images, out = channels
  grad_pads = []
  for size, k, s, (lo, _), out in zip((h, wd), (kh, kw), strides, pads, g.shape[1:3]):
    grad_pads.append((lo, k + s * (out - 1) - size - lo))
  dw = lax.conv_general_dilated(lhs, rhs, (1, 1), grad_pads, rhs_dilation=strides,
                                dimension_numbers=_NHWC, feature_group_count=groups,
                                precision=precision)
  return dw.transpose(1, 2, 0, 3).astype(x.dtype)

