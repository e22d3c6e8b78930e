"""The shared pooling and padding arithmetic against PyTorch and TF/XLA semantics, and the
convolution's gradient rule against JAX's."""

import re

import flax.linen as nn
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from inception_jax.kernels import batch_norm
from inception_jax.kernels.conv import conv_general_dilated, conv_gradients
from inception_jax.kernels.pool import adaptive_avg_pool, global_avg_pool
from inception_jax.models import layers
from inception_jax.models.conventions import TF, TORCH

torch = pytest.importorskip('torch')
F = torch.nn.functional

# (input size, window, stride, torch padding, ceil_mode)
TORCH_POOLS = [
    (112, 3, 2, 0, True), (57, 3, 2, 0, True), (28, 3, 1, 1, True), (14, 2, 2, 0, True),
    (147, 3, 2, 1, False), (74, 3, 2, 1, False), (35, 3, 1, 1, False), (8, 3, 1, 1, False),
    (17, 5, 3, 0, False), (13, 3, 2, 0, True),
]


def _x(n, seed=0):
  return np.random.default_rng(seed).normal(size=(2, n, n + 1, 3)).astype(np.float32)


def _torch(fn, x, *args, **kw):
  out = fn(torch.from_numpy(x.transpose(0, 3, 1, 2)), *args, **kw)
  return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize('n,k,s,p,ceil', TORCH_POOLS)
@pytest.mark.parametrize('include_pad', [True, False])
def test_torch_pooling(n, k, s, p, ceil, include_pad):
  conv = TORCH.replace(pool_ceil=ceil, avg_pool_include_pad=include_pad)
  x = _x(n)
  want_max = _torch(F.max_pool2d, x, k, s, p, ceil_mode=ceil)
  want_avg = _torch(F.avg_pool2d, x, k, s, p, ceil_mode=ceil, count_include_pad=include_pad)
  # An explicit int padding is taken as PyTorch's, in every convention.
  got_max = layers.max_pool(jnp.asarray(x), k, s, p, conv)
  got_avg = layers.avg_pool(jnp.asarray(x), k, s, p, conv)
  np.testing.assert_allclose(got_max, want_max, rtol=0, atol=0)
  np.testing.assert_allclose(got_avg, want_avg, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('n,k,s,p,ceil', TORCH_POOLS)
def test_max_pool_gradient_is_pytorchs_and_jaxs(n, k, s, p, ceil):
  """The max pool's gradient (taps on a CPU) against PyTorch's and against JAX's autodiff of
  reduce_window (XLA's select-and-scatter), on inputs full of ties (whole numbers 0..3, a
  quarter of them 0, as after a ReLU): all three give each window's gradient to its first
  maximum in row-major order, so a tie broken otherwise is an O(1) error. float64 to rounding
  (a pixel that is the maximum of several windows sums their gradients in another order);
  bfloat16 as bfloat16 rounds the float32 gradient; the compiled program has none of the scatter
  that XLA:CPU makes of a select-and-scatter."""
  conv = TORCH.replace(pool_ceil=ceil)
  rng = np.random.default_rng(n)
  x = rng.integers(0, 4, size=(2, n, n + 1, 3)).astype(np.float64)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
  yt = F.max_pool2d(xt, k, s, p, ceil_mode=ceil)
  g = rng.normal(size=yt.shape)
  yt.backward(torch.from_numpy(g))
  want = xt.grad.numpy().transpose(0, 2, 3, 1)
  g = g.transpose(0, 2, 3, 1)
  window, strides = (k, k), (s, s)
  pads = [(0, 0), *conv.pool_padding(x.shape[1:3], window, strides, p)[0], (0, 0)]
  with jax.enable_x64(True):
    ours = jax.jit(jax.vjp(lambda x: layers.max_pool(x, k, s, p, conv), jnp.asarray(x))[1])
    jaxs = jax.vjp(lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1),
                                                   (1, *strides, 1), pads), jnp.asarray(x))[1]
    got = ours(jnp.asarray(g))[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, jaxs(jnp.asarray(g))[0], rtol=0, atol=1e-12)
  xb, gb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16)
  got = jax.vjp(lambda x: layers.max_pool(x, k, s, p, conv), xb)[1](gb)[0]
  assert got.dtype == jnp.bfloat16
  exact = jax.vjp(lambda x: layers.max_pool(x, k, s, p, conv), xb.astype(jnp.float32))[1](
      gb.astype(jnp.float32))[0]
  np.testing.assert_allclose(got.astype(jnp.float32), exact, rtol=2 ** -8, atol=0)
  hlo = jax.jit(jax.grad(lambda x: jnp.sum(layers.max_pool(x, k, s, p, conv) ** 2))).lower(
      jnp.asarray(x, jnp.float32)).compile().as_text()
  assert 'scatter(' not in hlo and 'select-and-scatter(' not in hlo


@pytest.mark.parametrize('n,k,s', [(112, 3, 2), (57, 3, 2), (74, 3, 2), (35, 3, 1), (17, 5, 3)])
def test_tf_same_pooling_matches_xla(n, k, s):
  x = jnp.asarray(_x(n))
  want_max = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), 'SAME')
  ones = jnp.ones_like(x)
  win = (1, k, k, 1), (1, s, s, 1), 'SAME'
  want_avg = (jax.lax.reduce_window(x, 0., jax.lax.add, *win) /
              jax.lax.reduce_window(ones, 0., jax.lax.add, *win))
  np.testing.assert_array_equal(layers.max_pool(x, k, s, 'SAME', TF), want_max)
  np.testing.assert_allclose(layers.avg_pool(x, k, s, 'SAME', TF), want_avg, rtol=1e-6)


def test_ceil_pool_declared_same_follows_caffe():
  # torchvision GoogLeNet: MaxPool2d(3, 2, ceil_mode=True) where TF-slim declares SAME;
  # MaxPool2d(3, 1, padding=1, ceil_mode=True) for the stride-1 branch pool.
  conv = TORCH.replace(pool_ceil=True)
  x = _x(57)
  np.testing.assert_array_equal(layers.max_pool(jnp.asarray(x), 3, 2, 'SAME', conv),
                                _torch(F.max_pool2d, x, 3, 2, 0, ceil_mode=True))
  np.testing.assert_array_equal(layers.max_pool(jnp.asarray(x), 3, 1, 'SAME', conv),
                                _torch(F.max_pool2d, x, 3, 1, 1, ceil_mode=True))


@pytest.mark.parametrize('n,k,s', [(224, 7, 2), (75, 3, 2), (35, 3, 1), (17, 7, 1)])
def test_conv_same_padding(n, k, s):
  assert TF.conv_padding((k, k), (s, s), 'SAME') == 'SAME'
  assert TORCH.conv_padding((k, k), (s, s), 'SAME') == [((k - 1) // 2,) * 2] * 2
  assert TORCH.conv_padding((1, 7), (1, 1), 'SAME') == [(0, 0), (3, 3)]
  assert TF.conv_padding((3, 3), (2, 2), 'VALID') == 'VALID'
  assert TF.conv_padding((3, 3), (1, 1), 1) == [(1, 1), (1, 1)]


@pytest.mark.parametrize('n,o', [(14, 4), (7, 4), (17, 5), (5, 5)])
def test_adaptive_avg_pool(n, o):
  x = _x(n)
  want = _torch(F.adaptive_avg_pool2d, x, o)
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), o), want, rtol=1e-5,
                             atol=1e-6)


def test_convbn_parameter_names():
  m = layers.ConvBN(8, 3, TORCH)
  v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 4)))
  assert set(v['params']) == {'conv', 'bn'}
  assert set(v['params']['bn']) == {'scale', 'bias'}
  assert set(v['batch_stats']['bn']) == {'mean', 'var'}
  v = layers.ConvBN(8, 3, TF).init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 4)))
  assert set(v['params']['bn']) == {'bias'}
  v = layers.ConvBN(8, 3, TF, use_bn=False).init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 4)))
  assert set(v['params']) == {'conv'} and 'bias' in v['params']['conv']


@pytest.mark.parametrize('conv', [TF, TORCH.replace(pool_ceil=True)], ids=['tf', 'torch-ceil'])
def test_pooling_is_differentiable(conv):
  """Training differentiates through the pools: each input pixel gets its share of the gradient."""
  x = jnp.asarray(_x(9))
  g = jax.grad(lambda x: layers.max_pool(x, 3, 2, 'SAME', conv).sum())(x)
  # Each output takes the gradient to exactly one input: the sum counts the outputs.
  assert float(g.sum()) == np.prod(layers.max_pool(x, 3, 2, 'SAME', conv).shape)
  g = jax.grad(lambda x: layers.avg_pool(x, 3, 1, 'SAME', conv).sum())(x)
  assert np.all(np.isfinite(g)) and float(g.min()) > 0


@pytest.mark.parametrize('origin', ['torch', 'tf'])
def test_batch_norm_running_variance_follows_the_convention(origin):
  """PyTorch's BatchNorm2d (and TF1's fused batch norm) average the unbiased batch variance into
  the running one; flax and Keras 3 the biased one. Both normalise with the biased variance."""
  conventions = {'torch': TORCH, 'tf': TF}[origin]
  x = np.random.RandomState(0).randn(4, 3, 3, 5).astype(np.float32) * 2 + 1
  bn = layers.batch_norm(conventions, jnp.float32, name='bn')
  v = bn.init(jax.random.key(0), x, use_running_average=True)
  y, updates = bn.apply(v, x, use_running_average=False, mutable=['batch_stats'])
  n = 4 * 3 * 3
  ref = torch.nn.BatchNorm2d(5, eps=conventions.bn_epsilon, momentum=1 - conventions.bn_momentum)
  ref_y = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(y, ref_y, atol=1e-5)
  unbiased = ref.running_var.numpy()
  batch_var = (unbiased - conventions.bn_momentum) / (1 - conventions.bn_momentum) * (n - 1) / n
  expected = unbiased if origin == 'torch' else (conventions.bn_momentum
                                                 + (1 - conventions.bn_momentum) * batch_var)
  np.testing.assert_allclose(updates['batch_stats']['var'], expected, rtol=1e-6, atol=1e-7)

def test_global_avg_pool_keeps_float64_and_accumulates_bfloat16_in_float32():
  """A float32 accumulator under float64 inputs left the float64 step-parity check
  (tests/test_step_parity.py) at 5e-8 in the forward and 2e-3 in some kernels after three steps."""
  with jax.enable_x64(True):
    x = jnp.asarray(np.full((1, 2, 2, 1), 1.0 + 1e-12), jnp.float64)
    out = global_avg_pool(x)
    assert out.dtype == jnp.float64
    assert float(out[0, 0]) == 1.0 + 1e-12  # a float32 accumulator rounds this to 1.0
  x = jnp.full((1, 16, 16, 1), 1.0 + 2.0 ** -7, jnp.bfloat16)
  assert global_avg_pool(x).dtype == jnp.bfloat16
  assert float(global_avg_pool(x)[0, 0]) == 1.0 + 2.0 ** -7


# (input NHWC, kernel HWIO, strides, padding, feature groups): the convolutions the seven families
# have (1x1, 3x3, 1x7/7x1, stride 2, 'VALID', TF's uneven 'SAME', explicit PyTorch pads,
# depthwise) and odd sizes, where the stride leaves rows over.
CONVS = [
    ((2, 9, 10, 4), (3, 3, 4, 6), (1, 1), 'SAME', 1),
    ((2, 9, 10, 4), (3, 3, 4, 6), (2, 2), 'SAME', 1),
    ((2, 9, 10, 4), (3, 3, 4, 6), (2, 2), 'VALID', 1),
    ((2, 8, 8, 4), (1, 7, 4, 6), (1, 1), [(0, 0), (3, 3)], 1),
    ((2, 11, 8, 4), (7, 1, 4, 5), (1, 2), [(3, 2), (1, 0)], 1),
    ((3, 7, 7, 5), (1, 1, 5, 3), (2, 2), 'VALID', 1),
    ((2, 6, 7, 5), (1, 1, 5, 3), (1, 1), 'VALID', 1),  # 1x1: matrix products
    ((1, 12, 13, 3), (5, 5, 3, 4), (3, 3), [(2, 2), (2, 2)], 1),
    ((2, 9, 9, 4), (3, 3, 2, 6), (2, 1), [(1, 1), (0, 2)], 2),  # grouped, 3 per group
    ((2, 9, 9, 4), (3, 3, 1, 8), (1, 1), 'SAME', 4),  # depthwise, channel multiplier 2
]
# Depthwise (one filter per channel, Xception's): summed over the taps on a CPU.
DEPTHWISE = [
    ((2, 10, 10, 6), (3, 3, 1, 6), (2, 2), 'SAME'),
    ((2, 9, 11, 5), (3, 3, 1, 5), (1, 1), 'SAME'),
    ((2, 7, 7, 3), (3, 3, 1, 3), (1, 1), 'VALID'),
    ((1, 8, 7, 4), (5, 3, 1, 4), (2, 1), [(1, 2), (0, 1)]),
]


@pytest.mark.parametrize('x_shape,w_shape,strides,padding,groups', CONVS)
def test_conv_gradients_are_jax_autodiff(x_shape, w_shape, strides, padding, groups):
  """The library-layout gradients (what conv_general_dilated's gradient runs on a CPU in
  float32), the kernel gradient in both of its forms, against JAX differentiating
  lax.conv_general_dilated: in float64 exactly (the same products summed; a misplaced tap, flip,
  pad or group would be O(1)), and through the layer's own gradient rule, jitted, in float32 to
  float32's rounding."""
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=x_shape), rng.normal(size=w_shape)
  jaxs = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)
  pads = (jax.lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding)
          if isinstance(padding, str) else padding)
  with jax.enable_x64(True):
    y, jax_vjp = jax.vjp(jaxs, jnp.asarray(x), jnp.asarray(w))
    g = rng.normal(size=y.shape)
    for form in ('taps', 'convolution'):  # the kernel gradient's form under each CPU library
      got = conv_gradients(jnp.asarray(x), jnp.asarray(w), jnp.asarray(g), strides, pads,
                           groups, filter_gradient=form)
      for a, b in zip(got, jax_vjp(jnp.asarray(g))):
        assert a.shape == b.shape and a.dtype == b.dtype == jnp.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)

  x32, w32, g32 = (jnp.asarray(a, jnp.float32) for a in (x, w, g))
  ours = lambda x, w: conv_general_dilated(x, w, strides, padding,  # noqa: E731
                                           feature_group_count=groups)
  y, ours_vjp = jax.vjp(ours, x32, w32)
  y_ref, jax_vjp = jax.vjp(jaxs, x32, w32)
  np.testing.assert_array_equal(y, y_ref)
  for a, b in zip(jax.jit(ours_vjp)(g32), jax_vjp(g32)):
    assert a.shape == b.shape and a.dtype == b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * float(jnp.abs(b).max()))


def test_the_filter_gradient_form_is_the_model_option():
  """A conv unit's ``cpu_convolutions``, not the process' flags, picks its filter gradient's form
  on a CPU: matrix products per tap for 'ynnpack', a convolution for 'xla'; anything else is
  refused."""
  x = jnp.ones((2, 9, 9, 4))

  def ops(library):
    unit = layers.ConvBN(8, 3, TF, use_bn=False, cpu_convolutions=library)
    params = unit.init(jax.random.PRNGKey(0), x)['params']
    grad = jax.jit(jax.grad(lambda p: unit.apply({'params': p}, x).sum()))
    text = grad.lower(params).as_text()
    return text.count('stablehlo.convolution'), text.count('stablehlo.dot_general')

  (taps_convs, taps_dots), (xla_convs, xla_dots) = ops('ynnpack'), ops('xla')
  assert xla_convs > taps_convs and taps_dots > xla_dots
  with pytest.raises(ValueError, match='cpu_convolutions'):
    ops('eigen')


@pytest.mark.parametrize('x_shape,w_shape,strides,padding', DEPTHWISE)
def test_depthwise_convolution_by_taps_is_the_convolution(x_shape, w_shape, strides, padding):
  """The layer's depthwise convolution and its gradients against lax.conv_general_dilated and
  JAX's autodiff: in float64 to rounding (a misplaced tap, stride or pad would be O(1)), in
  float32 to float32's rounding, in bfloat16 as bfloat16 rounds the float32 result; and on a
  CPU, compiled, with no convolution left in the program."""
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=x_shape), rng.normal(size=w_shape)
  groups = x_shape[-1]
  jaxs = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)
  ours = lambda x, w: conv_general_dilated(x, w, strides, padding,  # noqa: E731
                                           feature_group_count=groups)
  for dtype, tol in ((jnp.float64, 1e-12), (jnp.float32, 2e-6)):
    with jax.enable_x64(dtype == jnp.float64):
      xd, wd = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
      y, ours_vjp = jax.vjp(ours, xd, wd)
      y_ref, jax_vjp = jax.vjp(jaxs, xd, wd)
      g = jnp.asarray(rng.normal(size=y.shape), dtype)
      for a, b in zip((y, *jax.jit(ours_vjp)(g)), (y_ref, *jax_vjp(g))):
        assert a.shape == b.shape and a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * float(jnp.abs(b).max()))
  xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
  yb = ours(xb, wb)
  assert yb.dtype == jnp.bfloat16
  exact = jaxs(xb.astype(jnp.float32), wb.astype(jnp.float32))
  np.testing.assert_allclose(yb.astype(jnp.float32), exact, rtol=2 ** -8, atol=1e-6)
  hlo = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) ** 2), argnums=(0, 1))).lower(
      jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)).compile().as_text()
  assert 'convolution(' not in hlo


def test_scanned_conv_gradients_run_in_the_library_layout():
  """Inside a scan (a while loop), XLA:CPU leaves convolutions in the layout they are written in,
  and JAX writes the gradients in layouts its fast library paths do not take (BENCHMARKS.md,
  "Compile time of scanned blocks"): every convolution of the compiled gradient of a scanned
  ConvBN stack must be NHWC x HWIO -> NHWC (``b01f_01io->b01f``); the kernel gradient of an
  ungrouped convolution is a matrix product per tap instead, and a depthwise convolution is no
  convolution at all (a sum over its taps, forward and backward)."""
  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
      def body(block, h, _):
        return block(h, True), None
      run = nn.scan(body, variable_axes={'params': 0, 'batch_stats': 0},
                           split_rngs={'params': True}, length=3)
      for groups in (1, x.shape[-1]):
        x, _ = run(layers.ConvBN(x.shape[-1], 3, TF, feature_group_count=groups,
                                 name=f'groups_{groups}'), x, None)
      return x

  model = Stack()
  x = jnp.ones((2, 9, 9, 8))
  variables = model.init(jax.random.PRNGKey(0), x)

  def loss(params):
    y, _ = model.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(y ** 2)

  hlo = jax.jit(jax.grad(loss)).lower(variables['params']).compile().as_text()
  labels = re.findall(r'convolution\(.*?dim_labels=([^,]+),', hlo)
  # forward and input gradient of the ungrouped convolution
  assert len(labels) == 2, labels
  assert set(labels) == {'b01f_01io->b01f'}, labels
  assert len(re.findall(r' dot\(', hlo)) >= 9, hlo  # the 3x3 taps of the ungrouped kernel


@pytest.mark.parametrize('scale,relu,unbiased', [(False, True, False), (True, True, True),
                                                 (True, False, False), (False, False, True)])
def test_batch_norm_is_flax_batch_norm_with_its_own_gradient(scale, relu, unbiased):
  """layers.BatchNorm (training: one function with its own gradient, the ReLU folded in) against
  flax's nn.BatchNorm then jax.nn.relu under JAX's autodiff: outputs, running statistics and the
  gradients of x, scale and bias, in float64 to rounding (a missing term of the statistics'
  own gradient, e.g. through the mean, would be O(1)), in float32 to 1e-5. Inputs with a
  large mean, where the statistics' terms matter, and ReLU outputs with exact zeros."""
  for dtype, tol in ((jnp.float64, 1e-12), (jnp.float32, 1e-5)):
    with jax.enable_x64(dtype == jnp.float64):
      rng = np.random.RandomState(0)
      x = jnp.asarray(rng.randn(3, 5, 4, 6) * 3 + 2, dtype)
      g = jnp.asarray(rng.randn(3, 5, 4, 6), dtype)
      kw = dict(momentum=0.9, epsilon=1e-3, use_scale=scale, dtype=dtype)
      ours = layers.BatchNorm(relu=relu, unbiased_running_var=unbiased, **kw)
      ref = nn.BatchNorm(use_bias=True, param_dtype=dtype, **kw)
      v = ref.init(jax.random.key(0), x, use_running_average=True)
      v = jax.tree.map(lambda a: jnp.asarray(rng.rand(*a.shape) + 0.5, dtype), v)
      assert jax.tree.structure(ours.init(jax.random.key(0), x, use_running_average=True)) == \
          jax.tree.structure(v)

      def run(module, act, params, x):
        y, upd = module.apply({'params': params, 'batch_stats': v['batch_stats']}, x,
                              use_running_average=False, mutable=['batch_stats'])
        return jnp.sum(act(y) * g), (act(y), upd['batch_stats'])

      act = jax.nn.relu if relu else (lambda y: y)
      (_, (y, stats)), grads = jax.value_and_grad(
          lambda p, x: run(ours, lambda y: y, p, x), argnums=(0, 1), has_aux=True)(
              v['params'], x)
      (_, (ry, rstats)), rgrads = jax.value_and_grad(
          lambda p, x: run(ref, act, p, x), argnums=(0, 1), has_aux=True)(v['params'], x)
      assert y.dtype == dtype and (not relu or float(jnp.mean(y == 0)) > 0.1)
      np.testing.assert_allclose(y, ry, rtol=tol, atol=tol)
      n = 3 * 5 * 4
      rvar = rstats['var']
      if unbiased:  # flax averages the biased variance: undo and redo with n / (n - 1)
        rvar = 0.9 * v['batch_stats']['var'] + (rvar - 0.9 * v['batch_stats']['var']) * n / (n - 1)
      np.testing.assert_allclose(stats['mean'], rstats['mean'], rtol=tol)
      np.testing.assert_allclose(stats['var'], rvar, rtol=tol)
      for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(rgrads)):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(jnp.max(jnp.abs(b))))
      # Evaluation: the running statistics, the same function as flax's.
      np.testing.assert_allclose(ours.apply(v, x, use_running_average=True),
                                 act(ref.apply(v, x, use_running_average=True)), rtol=tol,
                                 atol=tol)


def test_batch_norm_sums_are_compensated():
  """The statistics' sums (one reduction for both, each carried with its rounding error): in
  float32 over 200,000 values of mean 1,000 they agree with float64 sums to 1e-7, where the
  uncompensated reduction of both operands, as XLA:CPU emits it, was up to 2e-5 off (and that
  form's BatchNorm gradients 3% from float64's in GoogLeNet, against 0.14% for flax's)."""
  rng = np.random.RandomState(0)
  a = (rng.randn(50, 40, 100, 3) + 1000).astype(np.float32)
  b = rng.randn(50, 40, 100, 3).astype(np.float32)
  sa, sb = jax.jit(batch_norm._sums)(jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(sa, a.astype(np.float64).sum((0, 1, 2)), rtol=1e-7)
  np.testing.assert_allclose(sb, b.astype(np.float64).sum((0, 1, 2)), rtol=0,
                             atol=1e-7 * float(np.abs(b).astype(np.float64).sum()))
