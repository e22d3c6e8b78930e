"""Facts of BN-Inception (Ioffe & Szegedy 2015, arXiv:1502.03167, Appendix Figure 5).

Shapes are traced with jax.eval_shape (no compilation); parity with the Caffe release's PyTorch
port (pretrainedmodels' bninception) lives in tests/test_parity_inception_v2.py.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from inception_jax import models
from inception_jax.models import inception_v2

NAME = 'inception_v2'
RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}

# End points at 224x224 (batch 1), TF-slim's names with Figure 5's rows beside them. Widths are
# the sums of the figure's per-branch filter columns, as in the Caffe release and TF-slim:
# 4c = 160+160+160+128 and 4d = 96+192+192+128 = 608, 4e = 192+256+608 (passed through) = 1056.
ENDPOINTS_224 = {
    'Conv2d_1a_7x7': (112, 112, 64),
    'MaxPool_2a_3x3': (56, 56, 64),
    'Conv2d_2b_1x1': (56, 56, 64),
    'Conv2d_2c_3x3': (56, 56, 192),
    'MaxPool_3a_3x3': (28, 28, 192),
    'Mixed_3b': (28, 28, 256),   # 3a
    'Mixed_3c': (28, 28, 320),   # 3b
    'Mixed_4a': (14, 14, 576),   # 3c, stride 2
    'Mixed_4b': (14, 14, 576),   # 4a
    'Mixed_4c': (14, 14, 576),   # 4b
    'Mixed_4d': (14, 14, 608),   # 4c
    'Mixed_4e': (14, 14, 608),   # 4d
    'Mixed_5a': (7, 7, 1056),    # 4e, stride 2
    'Mixed_5b': (7, 7, 1024),    # 5a
    'Mixed_5c': (7, 7, 1024),    # 5b
    'PreLogits': (1024,),
}

# Trainable parameters: (options, count). pretrainedmodels' bninception measured with random
# weights. Its 69 convolutions have 10,016 output channels: that many
# conv biases (conv_bias=False) and, under 'tf' conventions, that many BN scales fewer.
# num_classes=0 drops the 1024 x 1000 + 1000 classifier.
PARAM_COUNTS = [
    (dict(), 11_295_240),
    (dict(conv_bias=False), 11_295_240 - 10_016),
    (dict(conventions='tf'), 11_295_240 - 10_016),
    (dict(conventions='tf', conv_bias=False), 11_295_240 - 2 * 10_016),
    (dict(num_classes=0), 11_295_240 - 1_025_000),
    (dict(num_classes=10), 11_295_240 - 1_025_000 + 10_250),
]

# Kernels (kh, kw, in, out) of Figure 5's columns where the table is easy to misread: the
# stride-2 modules (no 1x1 column, the reduce feeds a strided 3x3) and the last of the double
# 3x3 branch; the inputs check that 3c and 4e concatenate their pooled input unprojected.
KERNELS = {
    'Conv2d_1a_7x7': (7, 7, 3, 64),
    'Conv2d_2c_3x3': (3, 3, 64, 192),
    'Mixed_3b/Branch_3/Conv2d_0b_1x1': (1, 1, 192, 32),
    'Mixed_4a/Branch_0/Conv2d_0a_1x1': (1, 1, 320, 128),
    'Mixed_4a/Branch_0/Conv2d_1a_3x3': (3, 3, 128, 160),
    'Mixed_4a/Branch_1/Conv2d_1a_3x3': (3, 3, 96, 96),
    'Mixed_4b/Branch_0/Conv2d_0a_1x1': (1, 1, 576, 224),
    'Mixed_5a/Branch_0/Conv2d_1a_3x3': (3, 3, 128, 192),
    'Mixed_5a/Branch_1/Conv2d_0b_3x3': (3, 3, 192, 256),
    'Mixed_5a/Branch_1/Conv2d_1a_3x3': (3, 3, 256, 256),
    'Mixed_5b/Branch_0/Conv2d_0a_1x1': (1, 1, 1056, 352),
    'Mixed_5c/Branch_2/Conv2d_0a_1x1': (1, 1, 1024, 192),
    'Mixed_5c/Branch_2/Conv2d_0c_3x3': (3, 3, 224, 224),
}

# Input sizes under the default ('torch') conventions. Caffe's unpadded ceil-mode pools and padded
# stride-2 convs agree only on the even maps entering Mixed_4a and Mixed_5a, which sizes
# 32k-1 .. 32k+6 give. 'tf' conventions run at every size.
# (31, 224 and 227 run in the tests below and in the parity tests.)
RUNS = [38, 63, 192, 256]
# (size, the first module that sees an odd map: 3x3, 25x25, 15x15, 37x37).
REFUSED = [(48, 'Mixed_5a'), (200, 'Mixed_4a'), (240, 'Mixed_5a'), (299, 'Mixed_4a')]


def _trace(size, *, train=False, batch=1, **options):
  """(variables, output, end points) of one forward pass, as shapes only."""
  module = models.create(NAME, **options)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def run(x):
    variables = module.init(RNGS, x)
    points = models.endpoints(module, variables, x, train=train, rngs=RNGS)
    return variables, points.pop('Logits'), points

  return jax.eval_shape(run, x)


@functools.lru_cache(maxsize=None)
def _traced_224(conventions):
  return _trace(224, conventions=conventions)


def test_registry_entry():
  info = models.info('bn_inception')
  assert (info.name, info.input_size, info.default_conventions) == (NAME, 224, 'torch')
  assert models.info('bninception').name == NAME
  assert 'Ioffe' in info.paper


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_endpoints_at_224(conventions):
  _, logits, points = _traced_224(conventions)
  assert {k: v.shape[1:] for k, v in points.items()} == ENDPOINTS_224
  assert logits.shape == (1, 1000)


def test_figure5_rows_add_up_to_the_endpoints():
  """Each row's 1x1 + 3x3 + double 3x3 + (proj, or the input passed through) = its width."""
  width = ENDPOINTS_224['MaxPool_3a_3x3'][-1]
  for row in inception_v2.ROWS:
    width = row.conv_1x1 + row.conv_3x3 + row.conv_d3x3 + (row.proj or width)
    assert ENDPOINTS_224[row.name][-1] == width, row.name


@pytest.mark.parametrize('options,count', PARAM_COUNTS, ids=[str(o) for o, _ in PARAM_COUNTS])
def test_param_count(options, count):
  assert models.param_count(NAME, **options) == count


@pytest.mark.parametrize('path,shape', KERNELS.items(), ids=list(KERNELS))
def test_kernel_shapes(path, shape):
  variables, _, _ = _traced_224('torch')
  node = variables['params']
  for key in path.split('/'):
    node = node[key]
  assert node['conv']['kernel'].shape == shape
  assert node['conv']['bias'].shape == shape[-1:]  # the Caffe release's conv biases


def test_pools_follow_figure5():
  """avg + proj everywhere but 5b (Mixed_5c: max + proj); 3c and 4e: max, passed through."""
  pools = {r.name: (r.pool, r.proj > 0, r.stride) for r in inception_v2.ROWS}
  assert pools['Mixed_5b'] == ('avg', True, 1) and pools['Mixed_5c'] == ('max', True, 1)
  assert pools['Mixed_4a'] == pools['Mixed_5a'] == ('max', False, 2)
  assert all(p == ('avg', True, 1) for n, p in pools.items()
             if n not in ('Mixed_4a', 'Mixed_5a', 'Mixed_5c'))


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
@pytest.mark.parametrize('train', [False, True])
def test_min_size_runs(conventions, train):
  size = inception_v2.InceptionV2.min_size
  _, logits, points = _trace(size, train=train, batch=2, conventions=conventions)
  assert points['Mixed_5c'].shape == (2, 1, 1, 1024)
  # No auxiliary head: the logits alone in train mode too.
  assert isinstance(logits, jax.ShapeDtypeStruct) and logits.shape == (2, 1000)


@pytest.mark.parametrize('shape', [(30, 30), (31, 30), (30, 31)])
def test_below_min_size_raises(shape):
  module = models.create(NAME)
  x = jax.ShapeDtypeStruct((1, *shape, 3), jnp.float32)
  with pytest.raises(ValueError, match='at least 31x31'):
    jax.eval_shape(module.init, RNGS, x)


def test_min_size_is_tight(monkeypatch):
  # Without the input check, 30 reaches Mixed_4a with an odd 3x3 map under 'torch'.
  monkeypatch.setattr(inception_v2.layers, 'check_input', lambda *args: None)
  with pytest.raises(ValueError, match='Mixed_4a: its stride-2 branches'):
    _trace(inception_v2.InceptionV2.min_size - 1)


@pytest.mark.parametrize('size', RUNS)
def test_sizes_that_run_under_caffe_conventions(size):
  module = models.create(NAME, num_classes=0)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  features, _ = jax.eval_shape(module.init_with_output, RNGS, x)
  assert features.shape == (1, 1024)


@pytest.mark.parametrize('size,block', REFUSED)
def test_sizes_refused_under_caffe_conventions(size, block):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  with pytest.raises(ValueError, match=f'{block}: its stride-2 branches give different sizes'):
    jax.eval_shape(models.create(NAME).init, RNGS, x)
  # TF's SAME padding makes every stride-2 op give ceil(n / 2).
  assert jax.eval_shape(models.create(NAME, conventions='tf').init, RNGS, x)['params']


def test_features_without_classifier():
  variables, features, points = _trace(224, batch=2, num_classes=0)
  assert features.shape == (2, 1024) and points['PreLogits'].shape == (2, 1024)
  assert 'Logits' not in variables['params']


def test_no_aux_head_option():
  # Figure 5 lists no auxiliary classifier and the Caffe release has none.
  with pytest.raises(TypeError, match='aux_logits'):
    models.create(NAME, aux_logits=True)


def test_dropout_default_is_the_papers():
  # Section 4.2.1, "Remove Dropout"; the option stays for fine-tuning.
  assert models.create(NAME).dropout_rate == 0.0
  assert models.create(NAME, dropout_rate=0.4).dropout_rate == 0.4


def test_caffe_conventions():
  # The ('inception_v2', 'torch') row: ceil-mode pools and PyTorch's BN epsilon, on top of
  # PyTorch's symmetric padding and padded-zero-counting average pools (parity-tested).
  c = models.create(NAME).conventions
  assert (c.name, c.pool_ceil, c.bn_epsilon, c.padding, c.avg_pool_include_pad, c.bn_scale) == \
      ('torch', True, 1e-5, 'symmetric', True, True)
