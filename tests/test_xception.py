"""Xception facts: Figure 5 of Chollet 2017, and the counts of timm legacy_xception and Keras."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from inception_jax import models
from inception_jax.models.conventions import resolve
from inception_jax.models.xception import Xception

RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}

# End points at 299x299 (Figure 5: entry flow to 19x19x728, middle flow keeps it, exit flow to
# 10x10x2048); names are Keras' blocks.
ENDPOINTS_299 = {
    'block1_conv1': (149, 149, 32),
    'block1_conv2': (147, 147, 64),
    'block2': (74, 74, 128),
    'block3': (37, 37, 256),
    'block4': (19, 19, 728),  # end of the entry flow
    **{f'block{i}': (19, 19, 728) for i in range(5, 12)},
    'block12': (19, 19, 728),  # end of the middle flow
    'block13': (10, 10, 1024),
    'block14': (10, 10, 2048),  # end of the exit flow's convolutions
    'PreLogits': (2048,),
    'Logits': (1000,),
}

# Trainable parameters (timm 1.0.31 legacy_xception and Keras 3.15 Xception, measured).
PARAM_COUNTS = [
    (dict(conventions='tf'), 22_855_952),
    (dict(conventions='torch'), 22_855_952),
    (dict(num_classes=0), 22_855_952 - (2048 * 1000 + 1000)),
    (dict(num_classes=10), 22_855_952 - 2048 * 990 - 990),
]

# Where the references' numerics differ (issue "Pretrained weights"; tests/test_parity_xception.py).
CONVENTIONS = [
    ('tf', dict(padding='tf', bn_epsilon=1e-3, bn_scale=True)),  # Keras: BN keeps gamma
    ('torch', dict(padding='symmetric', bn_epsilon=1e-5, bn_scale=True)),  # PyTorch's default eps
]

# Variable shapes of the Figure 5 building blocks: a separable conv is a depthwise 3x3 (one filter
# per channel), a pointwise 1x1 and one BN, without biases; strided blocks have a 1x1 conv+BN
# shortcut, the middle flow an identity.
SHAPES = {
    'block1_conv1/conv/kernel': (3, 3, 3, 32),
    'block2/sepconv1/depthwise/conv/kernel': (3, 3, 1, 64),
    'block2/sepconv1/pointwise/conv/kernel': (1, 1, 64, 128),
    'block2/sepconv1/bn/scale': (128,),
    'block2/residual/conv/kernel': (1, 1, 64, 128),
    'block4/residual/conv/kernel': (1, 1, 256, 728),
    'block8/sepconv3/pointwise/conv/kernel': (1, 1, 728, 728),
    'block13/sepconv1/pointwise/conv/kernel': (1, 1, 728, 728),
    'block13/sepconv2/pointwise/conv/kernel': (1, 1, 728, 1024),
    'block13/residual/conv/kernel': (1, 1, 728, 1024),
    'block14_sepconv1/depthwise/conv/kernel': (3, 3, 1, 1024),
    'block14_sepconv2/pointwise/conv/kernel': (1, 1, 1536, 2048),
    'Logits/kernel': (2048, 1000),
}
SHORTCUT_CONVS = {'block2', 'block3', 'block4', 'block13'}


@functools.lru_cache(maxsize=None)
def _params(**options):
  return models.variable_shapes('xception', scan=False, **options)['params']


@pytest.mark.parametrize('scan', [False, True])
@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_endpoint_shapes_at_299(conventions, scan):
  """Unrolled, every block's end point; scanned, the middle flow records only block12's."""
  module = models.create('xception', conventions=conventions, scan=scan)
  x = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
  variables = models.variable_shapes('xception', conventions=conventions, scan=scan)
  points = jax.eval_shape(lambda v, im: models.endpoints(module, v, im), variables, x)
  want = {k: v for k, v in ENDPOINTS_299.items()
          if not scan or k not in {f'block{i}' for i in range(5, 12)}}
  assert {k: v.shape[1:] for k, v in points.items()} == want


def test_scanned_and_unrolled_layouts():
  """The middle flow's eight blocks (Figure 5) stacked: same outputs from the same variables,
  and the round trip between the layouts is the identity."""
  unrolled = models.create('xception', num_classes=5, scan=False)
  scanned = models.create('xception', num_classes=5)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  variables = unrolled.init(RNGS, x)
  stacked = models.pyloop_to_scan('xception', variables)
  assert {leaf.shape[0] for leaf in jax.tree.leaves(stacked['params']['block5_to_12'])} == {8}
  assert 'block5' not in stacked['params'] and 'block12' not in stacked['batch_stats']
  want = np.asarray(unrolled.apply(variables, x))
  np.testing.assert_allclose(scanned.apply(stacked, x), want, rtol=1e-5,
                             atol=1e-5 * abs(want).max())
  jax.tree.map(np.testing.assert_array_equal, models.scan_to_pyloop('xception', stacked),
               variables)


@pytest.mark.parametrize('options,count', PARAM_COUNTS, ids=[str(o) for o, _ in PARAM_COUNTS])
def test_param_count(options, count):
  assert models.param_count('xception', **options) == count


@pytest.mark.parametrize('origin,fields', CONVENTIONS)
def test_conventions_of_the_references(origin, fields):
  conv = models.create('xception', conventions=origin).conventions
  assert conv == resolve('xception', origin)
  assert {k: getattr(conv, k) for k in fields} == fields


@pytest.mark.parametrize('path,shape', SHAPES.items())
def test_separable_blocks_and_shortcuts(path, shape):
  node = _params()
  for key in path.split('/'):
    node = node[key]
  assert node.shape == shape


def test_shortcut_convs_only_where_the_shape_changes():
  params = _params()
  assert {name for name, tree in params.items() if 'residual' in tree} == SHORTCUT_CONVS
  # Biases only in BN and the classifier; nothing between depthwise and pointwise.
  biases = [p for p in traverse_util.flatten_dict(params) if p[-1] == 'bias']
  assert biases and all(p[-2] == 'bn' or p[0] == 'Logits' for p in biases)
  assert set(params['block7']['sepconv2']) == {'depthwise', 'pointwise', 'bn'}


def test_no_aux_tower_train_returns_logits_alone():
  # Section 4.3: no auxiliary tower; so no aux_logits option, and train mode returns logits.
  with pytest.raises(TypeError, match='aux_logits'):
    models.create('xception', aux_logits=True)
  module = models.create('xception', num_classes=7)
  x = jax.ShapeDtypeStruct((2, 96, 96, 3), jnp.float32)
  variables = jax.eval_shape(functools.partial(module.init, train=False), RNGS, x)
  out, _ = jax.eval_shape(
      lambda v, im: module.apply(v, im, train=True, mutable=['batch_stats'],
                                 rngs={'dropout': RNGS['dropout']}), variables, x)
  assert out.shape == (2, 7)


def test_num_classes_zero_returns_pooled_features():
  params = _params(num_classes=0)
  assert 'Logits' not in params
  module = models.create('xception', num_classes=0)
  x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
  variables = models.variable_shapes('xception', num_classes=0)
  out = jax.eval_shape(lambda v, im: module.apply(v, im, train=False), variables, x)
  assert out.shape == (1, 2048)


def test_dropout_default_is_the_papers():
  # Section 4.3: dropout 0.5 before the logistic regression layer for ImageNet.
  assert Xception.dropout_rate == 0.5


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_min_size(conventions, train):
  n = Xception.min_size
  assert n == 7  # 7 -> 3 -> 1 through the two VALID stem convs; every later op is padded
  module = models.create('xception', conventions=conventions, num_classes=3)
  x = jax.ShapeDtypeStruct((2, n, n, 3), jnp.float32)
  variables = models.variable_shapes('xception', image_size=n, conventions=conventions,
                                    num_classes=3)
  points = jax.eval_shape(
      lambda v, im: models.endpoints(module, v, im, train=train, rngs={'dropout': RNGS['dropout']}),
      variables, x)
  assert points['Logits'].shape == (2, 3)
  assert all(min(p.shape) >= 1 for p in points.values())  # no empty feature maps on the way
  for small in ((2, n - 1, n - 1, 3), (2, n, n - 1, 3)):
    with pytest.raises(ValueError, match=f'at least {n}x{n}'):
      jax.eval_shape(lambda v, im: module.apply(v, im, train=train, mutable=['batch_stats'],
                                                rngs={'dropout': RNGS['dropout']}),
                     variables, jax.ShapeDtypeStruct(small, jnp.float32))


def test_remat_gives_the_same_gradients():
  """remat=True recomputes the blocks' activations in the backward pass, scanned or unrolled;
  the gradients are those of the plain model. In float64: at this smallest input the exit flow's
  BatchNorms see 2x2 and 1x1 maps of two images, which amplify float32 rounding (the sums over
  the depthwise taps round differently as XLA fuses them differently in each program) to 1% of
  some gradients; in float64 the programs agree to 1e-8."""
  with jax.enable_x64(True):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3))
    variables = jax.jit(models.create('xception', num_classes=5).init)(RNGS, x.astype(np.float32))
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)

    def grads(scan, remat):
      module = models.create('xception', num_classes=5, scan=scan, remat=remat,
                             dtype=jnp.float64)

      def loss(params):
        v = {**variables, 'params': params}
        v = v if scan else models.scan_to_pyloop('xception', v)
        out, _ = module.apply(v, x, train=True, mutable=['batch_stats'],
                              rngs={'dropout': RNGS['dropout']})
        return out.mean()

      return jax.jit(jax.grad(loss))(variables['params'])

    want = grads(True, False)
    scale = max(float(abs(g).max()) for g in jax.tree.leaves(want))
    for scan in (True, False):
      got = grads(scan, True)
      assert {g.dtype for g in jax.tree.leaves(got)} == {jnp.dtype(jnp.float64)}
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * scale),
                   got, want)
