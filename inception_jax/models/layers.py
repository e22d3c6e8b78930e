"""Building blocks shared by every architecture: the conv+BN(+ReLU) unit and pooling.

Every padding and normalisation decision is delegated to :class:`Conventions`, so that one model
definition serves weights of TF and of PyTorch origin (the efficientnet-jax approach).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from inception_jax import machine
from inception_jax.models.conventions import Conventions, PaddingSpec

Dtype = Any

# He-style initialisation for ReLU networks trained from scratch; pretrained weights replace it.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')
dense_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class ConvBN(nn.Module):
  """Convolution, then BatchNorm (or a bias when ``use_bn=False``), then the activation (a ReLU
  after BatchNorm is folded into it: :class:`BatchNorm`).

  The unit TF-slim builds with ``slim.conv2d`` + ``batch_norm`` and torchvision calls
  ``BasicConv2d``. Parameters: ``conv/kernel`` (HWIO), ``conv/bias`` without BN, ``bn/scale``
  (only where the conventions have one), ``bn/bias``; statistics in ``batch_stats``.
  """

  features: int
  kernel_size: int | Sequence[int]
  conventions: Conventions
  strides: int | Sequence[int] = 1
  padding: PaddingSpec = 'SAME'
  use_bn: bool = True
  use_bias: bool | None = None  # default: a bias exactly when there is no BN
  activation: Callable[[jax.Array], jax.Array] | None = nn.relu
  feature_group_count: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    kernel, strides = _pair(self.kernel_size), _pair(self.strides)
    use_bias = (not self.use_bn) if self.use_bias is None else self.use_bias
    x = nn.Conv(self.features, kernel, strides,
                padding=self.conventions.conv_padding(kernel, strides, self.padding),
                feature_group_count=self.feature_group_count, use_bias=use_bias,
                kernel_init=conv_init, dtype=self.dtype, param_dtype=jnp.float32,
                conv_general_dilated=conv_general_dilated, name='conv')(x)
    activation = self.activation
    if self.use_bn:
      fuse = activation is nn.relu
      x = batch_norm(self.conventions, self.dtype, name='bn', relu=fuse)(
          x, use_running_average=not train)
      activation = None if fuse else activation
    if activation is not None:
      x = activation(x)
    return x


class Block(nn.Module):
  """Base of the Inception blocks: the conventions and compute dtype every conv of a block shares,
  and ``conv(...)``, a :class:`ConvBN` bound to them."""

  conventions: Conventions
  dtype: Dtype = jnp.float32

  def conv(self, features: int, kernel: int | Sequence[int], name: str, strides: int = 1,
           padding: PaddingSpec = 'SAME') -> ConvBN:
    return ConvBN(features, kernel, self.conventions, strides=strides, padding=padding,
                  dtype=self.dtype, name=name)


class Conv(NamedTuple):
  """One conv unit of a branch, as TF-slim declares it: scope (``Conv2d_0b_3x3``), width, kernel,
  stride, padding; ``bn=None`` takes the branch's ``use_bn``; ``relu=False`` leaves it linear."""
  name: str
  features: int
  kernel: int | tuple[int, int]
  strides: int = 1
  padding: PaddingSpec = 'SAME'
  bn: bool | None = None
  relu: bool = True


class Pool(NamedTuple):
  """A pooling op (slim's ``MaxPool_0a_3x3``/``AvgPool_0a_3x3``); no parameters. ``name`` is
  the end point a stem records it under."""
  kind: str  # 'max' or 'avg'
  window: int
  strides: int = 1
  padding: PaddingSpec = 'SAME'
  name: str | None = None


BranchOp = Conv | Pool


class Spec(NamedTuple):
  """One branch as data: ``ops`` in sequence, then the ``fork`` convs applied in parallel to the
  result and concatenated (Inception-v3 Figure 7's expanded filter bank)."""
  ops: Sequence[BranchOp]
  fork: Sequence[Conv] = ()


def apply_op(op: BranchOp, x: jax.Array, train: bool, conventions: Conventions,
             use_bn: bool = True, use_bias: bool | None = None,
             dtype: Dtype = jnp.float32) -> jax.Array:
  """Run one op inside the calling compact module: a :class:`Conv` becomes the
  :class:`ConvBN` named ``op.name`` (``bn=None`` takes ``use_bn``), a :class:`Pool` pools."""
  if isinstance(op, Pool):
    pool = max_pool if op.kind == 'max' else avg_pool
    return pool(x, op.window, op.strides, op.padding, conventions)
  bn = use_bn if op.bn is None else op.bn
  return ConvBN(op.features, op.kernel, conventions, strides=op.strides, padding=op.padding,
                use_bn=bn, use_bias=use_bias if bn else None,
                activation=nn.relu if op.relu else None, dtype=dtype, name=op.name)(x, train)


class Branch(nn.Module):
  """One TF-slim ``Branch_<i>`` scope, the branch of every family, built from a :class:`Spec`.
  Parameters nest as ``Branch_<i>/<conv scope>/{conv,bn}``."""

  spec: Spec
  conventions: Conventions
  use_bn: bool = True
  use_bias: bool | None = None  # None: a bias exactly where there is no BN
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    run = functools.partial(apply_op, train=train, conventions=self.conventions,
                            use_bn=self.use_bn, use_bias=self.use_bias, dtype=self.dtype)
    for op in self.spec.ops:
      x = run(op, x)
    if self.spec.fork:
      x = jnp.concatenate([run(c, x) for c in self.spec.fork], axis=-1)
    return x


class Mixed(nn.Module):
  """An Inception module: the branches ``Branch_0..n`` of ``specs`` side by side, concatenated
  along channels (Figure 2(b) of GoogLeNet and every module after it)."""

  specs: Sequence[Spec]
  conventions: Conventions
  use_bn: bool = True
  use_bias: bool | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    outs = [Branch(spec, self.conventions, self.use_bn, self.use_bias, self.dtype,
                   name=f'Branch_{i}')(x, train) for i, spec in enumerate(self.specs)]
    sizes = {o.shape[1:3] for o in outs}
    if len(sizes) > 1:  # e.g. Caffe's unpadded ceil-mode pool beside padded stride-2 convs
      raise ValueError(
          f'{self.name}: its stride-2 branches give different sizes {sorted(sizes)} for a '
          f'{x.shape[1]}x{x.shape[2]} input under the {self.conventions.name!r} conventions; '
          'choose an image size that gives them one (e.g. 224)')
    return jnp.concatenate(outs, axis=-1)


def conv_scopes(specs: Sequence[Spec]) -> list[str]:
  """``Branch_<i>/<conv scope>`` of every conv unit of ``specs``, in order: the names converters
  map reference parameters onto, so that no scope string is written twice."""
  return [f'Branch_{i}/{op.name}' for i, spec in enumerate(specs)
          for op in (*spec.ops, *spec.fork) if isinstance(op, Conv)]


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with ``nn.BatchNorm``'s variables (``scale`` where
  ``use_scale``, ``bias``; ``batch_stats`` ``mean`` and ``var``) and function (the biased batch
  variance ``E[x^2] - E[x]^2``, ``(x - mean) * rsqrt(var + eps) * scale + bias``), then a ReLU
  where ``relu``. In training it is :func:`batch_norm_train`, one function with its own gradient
  and compensated sums. With ``unbiased_running_var`` the running variance averages the unbiased
  batch variance, ``n / (n - 1)`` times the biased one (PyTorch's ``BatchNorm2d``, TF1's fused
  batch norm), instead of the biased one (flax, Keras 3)."""

  momentum: float = 0.99
  epsilon: float = 1e-5
  use_scale: bool = True
  relu: bool = False
  unbiased_running_var: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    features = x.shape[-1]
    f32 = jnp.float32
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), f32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), f32))
    scale = (self.param('scale', nn.initializers.ones, (features,), f32) if self.use_scale
             else None)
    bias = self.param('bias', nn.initializers.zeros, (features,), f32)
    dtype = jnp.promote_types(x.dtype, f32) if self.dtype is None else self.dtype
    if use_running_average:
      return _normalize(x, ra_mean.value, lax.rsqrt(ra_var.value + self.epsilon), scale, bias,
                        self.relu, dtype)
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.relu, dtype)
    if not self.is_initializing():
      if self.unbiased_running_var:
        n = math.prod(x.shape[:-1])
        var = var * (n / max(n - 1, 1))
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * lax.stop_gradient(mean)
      ra_var.value = m * ra_var.value + (1 - m) * lax.stop_gradient(var)
    return y


def _normalize(x, mean, inv, scale, bias, relu, dtype):
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
  per channel: uncompensated, GoogLeNet's float32 gradients were 3% from float64's, against 0.14%
  for flax's BatchNorm and 0.02% with the compensation (BENCHMARKS.md, "BatchNorm with its own
  gradient")."""
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
  return _normalize(x, mean, inv, scale, bias, relu, dtype), mean, var, inv


def batch_norm_train(x: jax.Array, scale: jax.Array | None, bias: jax.Array, epsilon: float,
                     relu: bool = False, dtype: Dtype | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm (then a ReLU where ``relu``) of ``x`` over all axes but the last:
  ``(y, batch mean, biased batch variance)``, ``y`` in ``dtype`` (default: float32 at least),
  computed in float32 at least. Gradients flow to ``x``, ``scale`` and ``bias`` through ``y``
  only (the statistics feed the running averages), by the rule of :func:`_batch_norm_bwd`: two
  reductions and two elementwise passes, where autodiff of flax's form gives XLA about ten small
  programs per BatchNorm to compile (Inception-ResNet-v2's scanned gradient: 714 fusions against
  1,060; BENCHMARKS.md, "BatchNorm with its own gradient")."""
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


def batch_norm(conventions: Conventions, dtype: Dtype, name: str | None = None,
               relu: bool = False) -> BatchNorm:
  """BatchNorm (then a ReLU where ``relu``) with the conventions' epsilon, scale, momentum and
  running-variance convention; statistics kept in float32.

  Under ``jax.jit`` with a batch sharded over a mesh, the mean and variance are those of the
  global batch (XLA inserts the cross-device reduction).
  """
  return BatchNorm(momentum=conventions.bn_momentum, epsilon=conventions.bn_epsilon,
                   use_scale=conventions.bn_scale, relu=relu, dtype=dtype,
                   unbiased_running_var=conventions.bn_running_var == 'unbiased', name=name)


def dense(features: int, dtype: Dtype, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=dense_init, dtype=dtype, param_dtype=jnp.float32,
                  name=name)


# -------------------------------------------------------------------------- convolution

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs: Any) -> jax.Array:
  """``jax.lax.conv_general_dilated`` (the same function), whose gradient on a CPU is written in
  the forms XLA:CPU's libraries run fastest, and whose depthwise form on a CPU is a sum over the
  kernel taps (:func:`depthwise_by_taps`, forward and gradients).

  JAX's transpose rules emit the input gradient with the kernel's in/out dimensions swapped and
  the kernel gradient with batch and channels swapped (``f01b_i01o->01bf``). XLA:CPU rewrites
  such convolutions into its library layout with explicit transposes, but not inside a while
  loop's body, where they fall back to a naive loop nest: the backward pass of a scanned run of
  blocks (``runs.run_blocks``) then ran 5-40x slower than the same blocks unrolled
  (BENCHMARKS.md, "Compile time of scanned blocks"). Here the input gradient is a library-layout
  convolution and the kernel gradient matrix products (:func:`conv_gradients`), so both layouts
  run the same operations. Other backends (cuDNN matches JAX's forms to its backward kernels)
  keep JAX's own rules and convolutions, chosen per platform when lowered, and so does float64
  for ungrouped convolutions, which no XLA:CPU library takes.

  NHWC x HWIO with stride, explicit/'SAME'/'VALID' padding and feature groups (depthwise
  included) take this path; anything else is passed to ``jax.lax.conv_general_dilated``.
  """
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
  return _conv(lhs, rhs, strides, pads, int(feature_group_count), precision)


def _plain_conv(x, w, strides, pads, groups, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                  feature_group_count=groups, precision=precision)


def _seen_by_tap(xp: jax.Array, a: int, b: int, strides: Sequence[int],
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
  them as generic loops, 6-23x slower forward and 6-9x slower differentiated on Xception's
  shapes (BENCHMARKS.md, "Depthwise convolutions as taps"). Accumulated in float32 at least."""
  acc = jnp.promote_types(x.dtype, jnp.float32)
  kh, kw = w.shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0))).astype(acc)
  out_hw = [(size - k) // s + 1 for size, k, s in zip(xp.shape[1:3], (kh, kw), strides)]
  y = None
  for a in range(kh):
    for b in range(kw):
      term = _seen_by_tap(xp, a, b, strides, out_hw) * w[a, b, 0].astype(acc)
      y = term if y is None else y + term
  return y.astype(x.dtype)


def _forward(x, w, strides, pads, groups, precision):
  if not _is_depthwise(x.shape, w.shape, groups):
    return _plain_conv(x, w, strides, pads, groups, precision)
  return lax.platform_dependent(
      x, w, cpu=lambda x, w: depthwise_by_taps(x, w, strides, pads),
      default=lambda x, w: _plain_conv(x, w, strides, pads, groups, precision))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, pads, groups, precision):
  return _forward(x, w, strides, pads, groups, precision)


def _conv_fwd(x, w, strides, pads, groups, precision):
  return _forward(x, w, strides, pads, groups, precision), (x, w)


def _conv_bwd(strides, pads, groups, precision, residuals, g):
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
    return conv_gradients(x, w, g, strides, pads, groups, precision)

  return tuple(lax.platform_dependent(x, w, g, cpu=canonical, default=autodiff))


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_gradients(x: jax.Array, w: jax.Array, g: jax.Array, strides: Sequence[int],
                   pads: Sequence[tuple[int, int]], groups: int = 1,
                   precision: Any = None, kernel_form: str = 'auto'
                   ) -> tuple[jax.Array, jax.Array]:
  """``(dL/dx, dL/dw)`` of the NHWC x HWIO convolution of ``x`` with ``w`` (explicit ``pads``),
  given ``g = dL/dy``: what :func:`conv_general_dilated`'s gradient runs on a CPU for float32 and
  narrower types. The input gradient is a library-layout convolution. A 1x1 convolution (stride
  1, unpadded, ungrouped) is a matrix product, and so are both of its gradients.

  The kernel gradient of a larger ungrouped kernel takes the form the process' convolution
  library runs fastest (``kernel_form='auto'``): under YNNPACK (XLA:CPU's default) one matrix
  product over the pixels per kernel tap (``'taps'``), as YNNPACK runs the convolution form, with
  the whole output map as its window and the batch as its channels, at a few GFLOP/s
  (BENCHMARKS.md, "Filter gradients as matrix products"); under XLA's own emitter
  (:func:`inception_jax.machine.set_cpu_convolutions`) that convolution (``'convolution'``),
  which it runs 1.8x faster than the taps over Inception-v3's train step ("Each convolution
  against PyTorch"). Grouped ones are always convolutions (depthwise ones do not come here on a
  CPU: :func:`depthwise_by_taps`)."""
  if kernel_form not in ('auto', 'taps', 'convolution'):
    raise ValueError(f"kernel_form must be 'auto', 'taps' or 'convolution', got {kernel_form!r}")
  if w.shape[:2] == (1, 1) and groups == 1 and tuple(strides) == (1, 1) and not any(
      lo or hi for lo, hi in pads):
    dx = jnp.einsum('nhwo,io->nhwi', g, w[0, 0], precision=precision).astype(g.dtype)
  else:
    dx = _input_grad(g, w, x.shape, strides, pads, groups, precision)
  if kernel_form == 'auto':
    kernel_form = 'taps' if machine.ynnpack_convolutions() else 'convolution'
  if groups > 1 or (kernel_form == 'convolution' and w.shape[:2] != (1, 1)):
    return dx, _kernel_grad(x, g, w.shape, strides, pads, groups, precision)
  return dx, _kernel_grad_by_taps(x, g, w.shape, strides, pads, precision)


def _kernel_grad_by_taps(x, g, w_shape, strides, pads, precision):
  """dL/dw[a, b] = sum over n, i, j of x_padded[n, s*i + a, s*j + b]^T g[n, i, j]: one matrix
  product over the pixels per kernel tap, of the input seen through that tap."""
  kh, kw = w_shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  taps = [jnp.einsum('nhwi,nhwo->io', _seen_by_tap(xp, a, b, strides, g.shape[1:3]), g,
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


# ------------------------------------------------------------------------------ pooling

def max_pool(x: jax.Array, window: int | Sequence[int], strides: int | Sequence[int],
             padding: PaddingSpec, conventions: Conventions) -> jax.Array:
  """Max pooling over NHWC ``x``; padding realised by ``conventions`` (padded cells are -inf)."""
  window, strides = _pair(window), _pair(strides)
  pads, _ = conventions.pool_padding(x.shape[1:3], window, strides, padding)
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
  back at the input pixels it saw (a pad with the stride less one as interior padding).
  XLA:CPU compiles the select-and-scatter that autodiff gives into a scatter, 4-7x slower than
  this on strided pools and 21-23x on stride-1 ones (BENCHMARKS.md, "Max-pool gradients as
  taps")."""
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
      hit = free & (_seen_by_tap(xp, a, b, strides, (oh, ow)) == y)
      free = free & ~hit
      share = lax.pad(jnp.where(hit, g, zero), zero,
                      [(0, 0, 0), (a, h - a - sh * (oh - 1) - 1, sh - 1),
                       (b, w - b - sw * (ow - 1) - 1, sw - 1), (0, 0, 0)])
      dx = share if dx is None else dx + share
  (top, bottom), (left, right) = pads
  return dx[:, top:h - bottom, left:w - right].astype(x.dtype)


def avg_pool(x: jax.Array, window: int | Sequence[int], strides: int | Sequence[int],
             padding: PaddingSpec, conventions: Conventions) -> jax.Array:
  """Average pooling over NHWC ``x``.

  The divisor counts the window's real pixels, plus its explicit padding where the conventions
  say ``avg_pool_include_pad`` (PyTorch's ``count_include_pad``); ceil-mode overhang is never
  counted, as in PyTorch.
  """
  window, strides = _pair(window), _pair(strides)
  size = x.shape[1:3]
  pads, counted = conventions.pool_padding(size, window, strides, padding)
  dims, step = (1, *window, 1), (1, *strides, 1)
  summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, step,
                                 [(0, 0), *pads, (0, 0)])
  counts = _window_counts(tuple(size), window, strides, tuple(map(tuple, pads)),
                          tuple(map(tuple, counted)), conventions.avg_pool_include_pad)
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
  oh, ow = _pair(output_size)
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


# ------------------------------------------------------------------------- model helpers

def check_input(images: jax.Array, min_size: int, model: str) -> None:
  """Fail with a clear message on input that is not NHWC or is below the model's minimum."""
  if images.ndim != 4:
    raise ValueError(f'{model} expects NHWC images of rank 4, got shape {images.shape}')
  h, w = images.shape[1:3]
  if h < min_size or w < min_size:
    raise ValueError(f'{model} needs inputs of at least {min_size}x{min_size} pixels, '
                     f'got {h}x{w}')


def endpoint(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
  """Record a named intermediate (TF-slim's end_points) in the 'intermediates' collection.

  All end points of a module go into one dict-valued variable, ``intermediates/endpoints``:
  flax reserves submodule names in every collection, and an end point is usually named like the
  submodule that produced it (``Mixed_5b``).
  """
  module.sow('intermediates', 'endpoints', {name: x}, init_fn=dict,
             reduce_fn=lambda points, new: {**points, **new})
  return x


def wants_aux(module: nn.Module) -> bool:
  """Whether auxiliary heads run: at init (so that their parameters exist in every mode) and
  whenever the caller can read their output, i.e. 'intermediates' is mutable."""
  return module.is_initializing() or module.is_mutable_collection('intermediates')


def aux_logits(module: nn.Module, logits: jax.Array) -> jax.Array:
  """Append an auxiliary head's logits to ``intermediates/aux_logits``, a tuple ordered from
  the shallowest head to the deepest; the model itself returns only the main logits."""
  module.sow('intermediates', 'aux_logits', logits)
  return logits

