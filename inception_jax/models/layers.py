"""Building blocks shared by every architecture: the conv+BN(+ReLU) unit and pooling.

Every padding and normalisation decision is delegated to :class:`Conventions`, so that one model
definition serves weights of TF and of PyTorch origin (the efficientnet-jax approach). The
operations, in the forms XLA:CPU runs fastest, come from :mod:`inception_jax.kernels`.
``cpu_convolutions`` ('ynnpack', XLA:CPU's default, or 'xla'), a field of every model, is the
library the process runs convolutions with, as the entry points chose it
(:func:`inception_jax.machine.set_cpu_convolutions`): it picks the forms of the gradients, not
the function computed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from inception_jax.kernels import pool
from inception_jax.kernels.batch_norm import batch_norm_train, normalize
from inception_jax.kernels.conv import Dtype, conv_general_dilated, pair
from inception_jax.models.conventions import Conventions, PaddingSpec

# He-style initialisation for ReLU networks trained from scratch; pretrained weights replace it.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')
dense_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


class ConvBN(nn.Module):
  """Convolution, then BatchNorm (or a bias when ``use_bn=False``), then the activation (a ReLU
  after BatchNorm is folded into it: :class:`BatchNorm`).

  The unit TF-slim builds with ``slim.conv2d`` + ``batch_norm`` and torchvision calls
  ``BasicConv2d``. Parameters: ``conv/kernel`` (HWIO), ``conv/bias`` without BN, ``bn/scale``
  (only where the conventions have one), ``bn/bias``; statistics in ``batch_stats``. The
  convolution is :func:`inception_jax.kernels.conv.conv_general_dilated` for
  ``cpu_convolutions``.
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
  cpu_convolutions: str = 'ynnpack'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    kernel, strides = pair(self.kernel_size), pair(self.strides)
    use_bias = (not self.use_bn) if self.use_bias is None else self.use_bias
    x = nn.Conv(self.features, kernel, strides,
                padding=self.conventions.conv_padding(kernel, strides, self.padding),
                feature_group_count=self.feature_group_count, use_bias=use_bias,
                kernel_init=conv_init, dtype=self.dtype, param_dtype=jnp.float32,
                conv_general_dilated=functools.partial(
                    conv_general_dilated, cpu_convolutions=self.cpu_convolutions),
                name='conv')(x)
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
  """Base of the blocks built from conv units: the conventions, compute dtype and CPU
  convolution library every conv of the block shares (keyword-only, so a subclass's own fields
  come first and stay positional)."""

  conventions: Conventions = dataclasses.field(kw_only=True)
  dtype: Dtype = dataclasses.field(default=jnp.float32, kw_only=True)
  cpu_convolutions: str = dataclasses.field(default='ynnpack', kw_only=True)


def op_kwargs(module: nn.Module, **extra) -> dict:
  """What every conv unit of ``module`` (a model or a :class:`Block`) is built with: its
  conventions, compute dtype and CPU convolution library, plus ``extra``."""
  return dict(conventions=module.conventions, dtype=module.dtype,
              cpu_convolutions=module.cpu_convolutions, **extra)


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
             use_bn: bool = True, use_bias: bool | None = None, dtype: Dtype = jnp.float32,
             cpu_convolutions: str = 'ynnpack') -> jax.Array:
  """Run one op inside the calling compact module: a :class:`Conv` becomes the
  :class:`ConvBN` named ``op.name`` (``bn=None`` takes ``use_bn``), a :class:`Pool` pools."""
  if isinstance(op, Pool):
    pooling = max_pool if op.kind == 'max' else avg_pool
    return pooling(x, op.window, op.strides, op.padding, conventions)
  bn = use_bn if op.bn is None else op.bn
  return ConvBN(op.features, op.kernel, conventions, strides=op.strides, padding=op.padding,
                use_bn=bn, use_bias=use_bias if bn else None,
                activation=nn.relu if op.relu else None, dtype=dtype,
                cpu_convolutions=cpu_convolutions, name=op.name)(x, train)


class Branch(Block):
  """One TF-slim ``Branch_<i>`` scope, the branch of every family, built from a :class:`Spec`.
  Parameters nest as ``Branch_<i>/<conv scope>/{conv,bn}``."""

  spec: Spec
  use_bn: bool = True
  use_bias: bool | None = None  # None: a bias exactly where there is no BN

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    apply = functools.partial(apply_op, train=train, use_bn=self.use_bn, use_bias=self.use_bias,
                              **op_kwargs(self))
    for op in self.spec.ops:
      x = apply(op, x)
    if self.spec.fork:
      x = jnp.concatenate([apply(c, x) for c in self.spec.fork], axis=-1)
    return x


class Mixed(Block):
  """An Inception module: the branches ``Branch_0..n`` of ``specs`` side by side, concatenated
  along channels (Figure 2(b) of GoogLeNet and every module after it)."""

  specs: Sequence[Spec]
  use_bn: bool = True
  use_bias: bool | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    outs = [Branch(spec, self.use_bn, self.use_bias, name=f'Branch_{i}',
                   **op_kwargs(self))(x, train)
            for i, spec in enumerate(self.specs)]
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
  where ``relu``. In training it is :func:`inception_jax.kernels.batch_norm.batch_norm_train`,
  one function with its own gradient and compensated sums. With ``unbiased_running_var`` the
  running variance averages the unbiased batch variance, ``n / (n - 1)`` times the biased one
  (PyTorch's ``BatchNorm2d``, TF1's fused batch norm), instead of the biased one (flax, Keras
  3)."""

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
      return normalize(x, ra_mean.value, lax.rsqrt(ra_var.value + self.epsilon), scale, bias,
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


# ------------------------------------------------------------------------------ pooling

def max_pool(x: jax.Array, window: int | Sequence[int], strides: int | Sequence[int],
             padding: PaddingSpec, conventions: Conventions) -> jax.Array:
  """Max pooling over NHWC ``x``; padding realised by ``conventions`` (padded cells are -inf)."""
  window, strides = pair(window), pair(strides)
  pads, _ = conventions.pool_padding(x.shape[1:3], window, strides, padding)
  return pool.max_pool(x, window, strides, pads)


def avg_pool(x: jax.Array, window: int | Sequence[int], strides: int | Sequence[int],
             padding: PaddingSpec, conventions: Conventions) -> jax.Array:
  """Average pooling over NHWC ``x``.

  The divisor counts the window's real pixels, plus its explicit padding where the conventions
  say ``avg_pool_include_pad`` (PyTorch's ``count_include_pad``); ceil-mode overhang is never
  counted, as in PyTorch.
  """
  window, strides = pair(window), pair(strides)
  pads, counted = conventions.pool_padding(x.shape[1:3], window, strides, padding)
  return pool.avg_pool(x, window, strides, pads,
                       counted if conventions.avg_pool_include_pad else None)


# ------------------------------------------------------------------------- model helpers

def check_input(images: jax.Array, min_size: int, model: str) -> None:
  """Fail with a clear message on input that is not NHWC or is below the model's minimum."""
  if images.ndim != 4:
    raise ValueError(f'{model} expects NHWC images of rank 4, got shape {images.shape}')
  h, w = images.shape[1:3]
  if h < min_size or w < min_size:
    raise ValueError(f'{model} needs inputs of at least {min_size}x{min_size} pixels, '
                     f'got {h}x{w}')


def begin(module: nn.Module, images: jax.Array, name: str, **extra):
  """The start of every model's ``__call__``: check ``images`` against ``module.min_size``
  (naming the model ``name``), then return the conv units' keyword arguments
  (:func:`op_kwargs` with ``extra``) and ``point(name, x)``, which records an end point."""
  check_input(images, module.min_size, name)
  return op_kwargs(module, **extra), functools.partial(endpoint, module)


def stem(ops: Sequence[BranchOp], x: jax.Array, train: bool, kw: dict, point) -> jax.Array:
  """Apply ``ops`` in sequence inside the calling compact module, recording each output as the
  end point named like its op."""
  for op in ops:
    x = point(op.name, apply_op(op, x, train, **kw))
  return x


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

