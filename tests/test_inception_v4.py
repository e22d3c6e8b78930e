"""Facts of Inception-v4 (Szegedy et al. 2016, arXiv:1602.07261) that the model must reproduce.

Shapes are traced with jax.eval_shape (no compilation); parity with timm's port lives in
tests/test_parity_inception_v4.py.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from inception_jax import models
from inception_jax.models import inception_v4

NAME = 'inception_v4'
RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}

# End points at 299x299 (batch 1): Figure 3 (stem) and Figure 9 (overall), TF-slim's names, in
# the order TF-slim's inception_v4_base adds them.
ENDPOINTS_299 = {
    'Conv2d_1a_3x3': (149, 149, 32),
    'Conv2d_2a_3x3': (147, 147, 32),
    'Conv2d_2b_3x3': (147, 147, 64),
    'Mixed_3a': (73, 73, 160),
    'Mixed_4a': (71, 71, 192),
    'Mixed_5a': (35, 35, 384),
    **{f'Mixed_5{c}': (35, 35, 384) for c in 'bcde'},
    'Mixed_6a': (17, 17, 1024),
    **{f'Mixed_6{c}': (17, 17, 1024) for c in 'bcdefgh'},
    'Mixed_7a': (8, 8, 1536),
    **{f'Mixed_7{c}': (8, 8, 1536) for c in 'bcd'},
    'PreLogits': (1536,),
}

# With scan=True (the default) each run of identical blocks records only its last block's end
# point.
SCANNED_ENDPOINTS = [k for k in ENDPOINTS_299 if k not in (
    'Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e', 'Mixed_6f',
    'Mixed_6g', 'Mixed_7b', 'Mixed_7c')]

# Trainable parameters: (options, count). timm 1.0.31's inception_v4, measured with random
# weights; TF-slim's conv+BN has no gamma, i.e. timm's 31,584 BN weights fewer;
# num_classes=0 drops the 1536 x 1000 + 1000 classifier.
PARAM_COUNTS = [
    (dict(conventions='torch'), 42_679_816),
    (dict(conventions='tf'), 42_679_816 - 31_584),
    (dict(conventions='torch', num_classes=0), 42_679_816 - 1_537_000),
    (dict(conventions='torch', num_classes=10), 42_679_816 - 1_537_000 + 15_370),
]

# Kernels (kh, kw, in, out) that pin down the released network where the paper's figures draw it
# otherwise (order of the factorised convolutions) and Reduction-A's k, l, m, n (Table 1).
KERNELS = {
    'Mixed_4a/Branch_1/Conv2d_0b_1x7': (1, 7, 64, 64),
    'Mixed_4a/Branch_1/Conv2d_0c_7x1': (7, 1, 64, 64),
    'Mixed_5a/Branch_0/Conv2d_1a_3x3': (3, 3, 192, 192),
    'Mixed_6a/Branch_0/Conv2d_1a_3x3': (3, 3, 384, 384),  # n
    'Mixed_6a/Branch_1/Conv2d_0a_1x1': (1, 1, 384, 192),  # k
    'Mixed_6a/Branch_1/Conv2d_0b_3x3': (3, 3, 192, 224),  # l
    'Mixed_6a/Branch_1/Conv2d_1a_3x3': (3, 3, 224, 256),  # m
    'Mixed_6h/Branch_1/Conv2d_0b_1x7': (1, 7, 192, 224),
    'Mixed_6h/Branch_2/Conv2d_0b_7x1': (7, 1, 192, 192),
    'Mixed_6h/Branch_2/Conv2d_0e_1x7': (1, 7, 224, 256),
    'Mixed_7a/Branch_1/Conv2d_0c_7x1': (7, 1, 256, 320),
    'Mixed_7d/Branch_2/Conv2d_0b_3x1': (3, 1, 384, 448),
    'Mixed_7d/Branch_2/Conv2d_0c_1x3': (1, 3, 448, 512),
    'Mixed_7d/Branch_2/Conv2d_0e_3x1': (3, 1, 512, 256),
}


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
def _traced_299(conventions, scan=False):
  return _trace(299, conventions=conventions, scan=scan)


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_endpoints_at_299(conventions):
  _, logits, points = _traced_299(conventions)
  assert {k: v.shape[1:] for k, v in points.items()} == ENDPOINTS_299
  assert list(points) == list(ENDPOINTS_299)
  assert logits.shape == (1, 1000)


def test_scanned_runs_record_their_last_blocks_end_point():
  variables, _, points = _traced_299('tf', scan=True)
  assert list(points) == SCANNED_ENDPOINTS
  assert {k: v.shape[1:] for k, v in points.items()} == \
      {k: ENDPOINTS_299[k] for k in SCANNED_ENDPOINTS}
  # One stacked module per run: 4 Inception-A, 7 Inception-B, 3 Inception-C (Figure 9).
  params = variables['params']
  for run, n in (('Mixed_5b_to_5e', 4), ('Mixed_6b_to_6h', 7), ('Mixed_7b_to_7d', 3)):
    assert {leaf.shape[0] for leaf in jax.tree.leaves(params[run])} == {n}


@pytest.mark.parametrize('options,count', PARAM_COUNTS, ids=[str(o) for o, _ in PARAM_COUNTS])
def test_param_count(options, count):
  assert models.param_count(NAME, **options) == count


@pytest.mark.parametrize('path,shape', KERNELS.items(), ids=list(KERNELS))
def test_kernel_shapes(path, shape):
  variables, _, _ = _traced_299('torch')
  node = variables['params']
  for key in path.split('/'):
    node = node[key]
  assert node['conv']['kernel'].shape == shape


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
@pytest.mark.parametrize('train', [False, True])
def test_min_size_runs(conventions, train):
  size = inception_v4.InceptionV4.min_size
  _, logits, points = _trace(size, train=train, batch=2, conventions=conventions)
  assert points['Mixed_7d'].shape == (2, 1, 1, 1536)
  # No auxiliary head: the logits alone in train mode too.
  assert isinstance(logits, jax.ShapeDtypeStruct) and logits.shape == (2, 1000)


@pytest.mark.parametrize('shape', [(74, 74), (75, 74), (74, 75)])
def test_below_min_size_raises(shape):
  module = models.create(NAME)
  x = jax.ShapeDtypeStruct((1, *shape, 3), jnp.float32)
  with pytest.raises(ValueError, match='at least 75x75'):
    jax.eval_shape(module.init, RNGS, x)


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_min_size_is_tight(monkeypatch, conventions):
  # Without the input check, one pixel less leaves a 2x2 map for Mixed_7a's VALID 3x3/2 pool.
  monkeypatch.setattr(inception_v4.layers, 'check_input', lambda *args: None)
  with pytest.raises(ValueError, match='window 3 does not fit an input of size 2'):
    _trace(inception_v4.InceptionV4.min_size - 1, conventions=conventions)


def test_features_without_classifier():
  variables, features, points = _trace(299, batch=2, num_classes=0)
  assert features.shape == (2, 1536) and points['PreLogits'].shape == (2, 1536)
  assert 'Logits' not in variables['params']


def test_no_aux_head_option():
  # TF-slim's optional aux head is not part of this model (nor of timm's); in train mode the
  # model returns the logits alone (test_min_size_runs).
  with pytest.raises(TypeError, match='aux_logits'):
    models.create(NAME, aux_logits=True)


def test_average_pools_exclude_padding():
  # TF's SAME average pooling, and timm's AvgPool2d(count_include_pad=False) (parity-tested).
  for conventions in ('tf', 'torch'):
    assert not models.create(NAME, conventions=conventions).conventions.avg_pool_include_pad


def test_dropout_default_is_the_papers():
  # Figure 9: "Dropout (keep 0.8)"; TF-slim dropout_keep_prob=0.8.
  assert models.create(NAME).dropout_rate == pytest.approx(0.2)
