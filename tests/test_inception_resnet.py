"""Facts of Inception-ResNet-v1 and -v2 (Szegedy et al. 2016): shapes, counts, residual scaling.

Generic facts (jit, bf16, FLOPs, shapes of every model) are in tests/test_models.py; parity with
facenet-pytorch, timm and Keras in tests/test_parity_inception_resnet.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from inception_jax import models

RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
NAMES = ('inception_resnet_v1', 'inception_resnet_v2')

# End points at 299x299 (H, W, C). v1: the paper's Figure 14 stem and Figure 15's grid sizes
# with 256 / 896 / 1792 channels (facenet); v2: TF-slim's comments in inception_resnet_v2.py.
ENDPOINTS_299 = {
    'inception_resnet_v1': {
        'Conv2d_1a_3x3': (149, 149, 32), 'Conv2d_2a_3x3': (147, 147, 32),
        'Conv2d_2b_3x3': (147, 147, 64), 'MaxPool_3a_3x3': (73, 73, 64),
        'Conv2d_3b_1x1': (73, 73, 80), 'Conv2d_4a_3x3': (71, 71, 192),
        'Conv2d_4b_3x3': (35, 35, 256), 'Repeat': (35, 35, 256),
        'Mixed_6a': (17, 17, 896), 'Repeat_1': (17, 17, 896),
        'Mixed_7a': (8, 8, 1792), 'Repeat_2': (8, 8, 1792), 'Block8': (8, 8, 1792),
        'PreLogits': (1792,),
    },
    'inception_resnet_v2': {
        'Conv2d_1a_3x3': (149, 149, 32), 'Conv2d_2a_3x3': (147, 147, 32),
        'Conv2d_2b_3x3': (147, 147, 64), 'MaxPool_3a_3x3': (73, 73, 64),
        'Conv2d_3b_1x1': (73, 73, 80), 'Conv2d_4a_3x3': (71, 71, 192),
        'MaxPool_5a_3x3': (35, 35, 192), 'Mixed_5b': (35, 35, 320), 'Repeat': (35, 35, 320),
        'Mixed_6a': (17, 17, 1088), 'Repeat_1': (17, 17, 1088),
        'Mixed_7a': (8, 8, 2080), 'Repeat_2': (8, 8, 2080), 'Block8': (8, 8, 2080),
        'Conv2d_7b_1x1': (8, 8, 1536), 'PreLogits': (1536,),
    },
}

# Trainable parameters (facenet-pytorch 2.6.0 and timm 1.0.31 measured with random weights; Keras
# 3.15 for 'tf'). facenet-pytorch's InceptionResnetV1(classify=True, num_classes=10): 23,487,754.
PARAM_COUNTS = [
    ('inception_resnet_v1', dict(conventions='torch'), 24_357_096),
    ('inception_resnet_v1', dict(conventions='torch', num_classes=0), 22_564_096),
    ('inception_resnet_v1', dict(conventions='torch', num_classes=10, embedding_dim=512),
     23_487_754),
    ('inception_resnet_v2', dict(conventions='torch'), 55_843_464),
    ('inception_resnet_v2', dict(conventions='tf'), 55_813_192),
]

# (end point before, end point after, number of blocks x residual scale) of each stage of
# residual blocks (Section 3.3: 0.17, 0.10, 0.20), for the residual-scaling test below.
REPEATS = {
    'inception_resnet_v1': (('Conv2d_4b_3x3', 'Repeat', 5 * 0.17),
                            ('Mixed_6a', 'Repeat_1', 10 * 0.10),
                            ('Mixed_7a', 'Repeat_2', 5 * 0.20)),
    'inception_resnet_v2': (('Mixed_5b', 'Repeat', 10 * 0.17),
                            ('Mixed_6a', 'Repeat_1', 20 * 0.10),
                            ('Mixed_7a', 'Repeat_2', 9 * 0.20)),
}
MIN_SIZE = 75  # 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1 after Mixed_7a


def _x(size, batch=1):
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


def _shapes(model, size, batch=1):
  return jax.eval_shape(functools.partial(model.init, train=False), RNGS, _x(size, batch))


def _random_variables(model, size, seed=0):
  """Variables with random weights and sane BN statistics, without running init."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name.endswith("['mean']") or name.endswith("['bias']"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if name.endswith("['scale']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, _shapes(model, size))


@pytest.mark.parametrize('name', NAMES)
def test_endpoint_shapes_at_299(name):
  model = models.create(name, num_classes=1000)
  variables = _shapes(model, 299)
  points = jax.eval_shape(lambda v, x: models.endpoints(model, v, x), variables, _x(299))
  want = {k: (1, *v) for k, v in ENDPOINTS_299[name].items()}
  assert {k: tuple(v.shape) for k, v in points.items()} == {**want, 'Logits': (1, 1000)}


@pytest.mark.parametrize('name,options,count', PARAM_COUNTS,
                         ids=[f'{n}-{"-".join(f"{k}={v}" for k, v in o.items())}'
                              for n, o, _ in PARAM_COUNTS])
def test_param_count(name, options, count):
  assert models.param_count(name, **options) == count


@pytest.mark.parametrize('name,blocks', [('inception_resnet_v1', (5, 10, 5)),
                                         ('inception_resnet_v2', (10, 20, 9))])
def test_block_counts_and_biased_up_projections(name, blocks):
  """Figure 15's repeats (plus the last 8x8 block, Block8); up-projections: bias, no BN."""
  unrolled = _shapes(models.create(name, conventions='torch', scan=False), MIN_SIZE)['params']
  scanned = _shapes(models.create(name, conventions='torch'), MIN_SIZE)['params']
  for repeat, kind, n in zip(('Repeat', 'Repeat_1', 'Repeat_2'), ('block35', 'block17', 'block8'),
                             blocks):
    assert sorted(unrolled[repeat]) == sorted(f'{kind}_{i}' for i in range(1, n + 1))
    assert list(scanned[repeat]) == [kind]
    assert {leaf.shape[0] for leaf in jax.tree.leaves(scanned[repeat][kind])} == {n}
  for block in (unrolled['Repeat'][f'block35_{blocks[0]}'], unrolled['Repeat_1']['block17_1'],
                unrolled['Block8'], scanned['Repeat_2']['block8']):
    assert set(block['Conv2d_1x1']) == {'conv'}
    assert set(block['Conv2d_1x1']['conv']) == {'kernel', 'bias'}
    assert set(block['Branch_0']['Conv2d_1x1']) == {'conv', 'bn'}


@pytest.mark.parametrize('name', NAMES)
def test_residuals_are_scaled_and_the_last_block_has_no_relu(name):
  """Section 3.3: with the up-projections reduced to a bias of 1, each block adds its scale.

  Block8's up-projection bias is -5 instead: its output goes negative (no ReLU), scale 1.0.
  """
  model = models.create(name, num_classes=0)
  variables = _random_variables(model, MIN_SIZE)
  params = traverse_util.flatten_dict(variables['params'])
  for path in list(params):
    if path[-3:] == ('Conv2d_1x1', 'conv', 'bias') and not path[-4].startswith('Branch_'):
      params[path] = jnp.full_like(params[path], -5.0 if path[0] == 'Block8' else 1.0)
      params[(*path[:-1], 'kernel')] = jnp.zeros_like(params[(*path[:-1], 'kernel')])
  params = traverse_util.unflatten_dict(params)
  x = np.random.default_rng(0).uniform(-1, 1, (1, MIN_SIZE, MIN_SIZE, 3)).astype(np.float32)
  points = models.endpoints(model, {**variables, 'params': params}, x)
  for before, after, added in REPEATS[name]:
    assert float(points[before].min()) >= 0  # ReLU outputs: the added scales survive the ReLUs
    np.testing.assert_allclose(points[after], points[before] + added, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(points['Block8'], points['Repeat_2'] - 5.0, rtol=1e-5, atol=1e-5)


def _flat_layout(tree):
  """The layout written before the branches were nested: 'Repeat/block35_1' and
  'Branch_1/Conv2d_0a_1x1' were single module names."""
  if not isinstance(tree, dict):
    return tree
  out = {}
  for key, value in tree.items():
    value = _flat_layout(value)
    if key.startswith(('Repeat', 'Branch_')):
      out.update({f'{key}/{k}': v for k, v in value.items()})
    else:
      out[key] = value
  return out


@pytest.mark.parametrize('name', NAMES)
def test_scanned_and_unrolled_layouts(name):
  """The same variables in both layouts give the same outputs; the round trip is the identity;
  checkpoints of the flat layout load into the scanned model."""
  unrolled = models.create(name, num_classes=5, scan=False)
  scanned = models.create(name, num_classes=5)
  variables = _random_variables(unrolled, MIN_SIZE)
  stacked = models.pyloop_to_scan(name, variables)
  assert jax.tree.structure(stacked) == jax.tree.structure(_shapes(scanned, MIN_SIZE))
  x = np.random.default_rng(0).uniform(-1, 1, (2, MIN_SIZE, MIN_SIZE, 3)).astype(np.float32)
  want = np.asarray(unrolled.apply(variables, x))
  np.testing.assert_allclose(scanned.apply(stacked, x), want, rtol=1e-5,
                             atol=1e-5 * abs(want).max())
  jax.tree.map(np.testing.assert_array_equal, models.scan_to_pyloop(name, stacked), variables)
  jax.tree.map(np.testing.assert_array_equal, models.pyloop_to_scan(name, _flat_layout(variables)),
               stacked)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_min_size(name, conventions):
  """75 runs (train and eval; train returns the logits alone: no aux heads); 74 is refused."""
  model = models.create(name, conventions=conventions, num_classes=5)
  assert models.info(name).min_size == MIN_SIZE
  variables = _shapes(model, MIN_SIZE, batch=2)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, _x(MIN_SIZE, 2))
  assert out.shape == (2, 5)
  out, _ = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'], rngs=RNGS),
      variables, _x(MIN_SIZE, 2))
  assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 5)
  with pytest.raises(ValueError, match=f'{name} needs inputs of at least 75x75'):
    jax.eval_shape(lambda v, x: model.apply(v, x), variables, _x(MIN_SIZE - 1))


def test_embedding_outputs():
  """embedding_dim > 0 (facenet): num_classes=0 -> unit-norm embedding; else logits of it."""
  model = models.create('inception_resnet_v1', conventions='torch', num_classes=0,
                        embedding_dim=16)
  variables = _random_variables(model, MIN_SIZE)
  assert set(variables['params']['Bottleneck']) == {'dense', 'bn'}
  assert 'bias' not in variables['params']['Bottleneck']['dense']
  x = np.random.default_rng(0).uniform(-1, 1, (2, MIN_SIZE, MIN_SIZE, 3)).astype(np.float32)
  points = models.endpoints(model, variables, x)
  emb = np.asarray(points['Logits'])
  assert emb.shape == (2, 16) and points['PreLogits'].shape == (2, 1792)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
  bottleneck = np.asarray(points['Bottleneck'])
  np.testing.assert_allclose(emb, bottleneck / np.linalg.norm(bottleneck, axis=-1, keepdims=True),
                             rtol=1e-5, atol=1e-6)

  classify = models.create('inception_resnet_v1', num_classes=7, embedding_dim=16)
  shapes = _shapes(classify, MIN_SIZE)
  assert shapes['params']['Logits']['kernel'].shape == (16, 7)  # reads the embedding
  out = jax.eval_shape(lambda v, x: classify.apply(v, x), shapes, _x(MIN_SIZE, 2))
  assert out.shape == (2, 7)


def test_registry_facts():
  v1, v2 = models.info('inception_resnet_v1'), models.info('inception_resnet_v2')
  assert models.info('inception_resnet') is v2
  assert (v1.input_size, v2.input_size) == (299, 299)
  assert (v1.default_conventions, v2.default_conventions) == ('tf', 'tf')
  # Dropout: Figure 15's keep 0.8 for both (facenet-pytorch trains v1 with 0.6).
  assert models.create('inception_resnet_v1').dropout_rate == 0.2
  assert models.create('inception_resnet_v2').dropout_rate == 0.2
  assert models.create('inception_resnet_v1').embedding_dim == 0
  # timm's Mixed_5b average pool excludes the padding (count_include_pad=False), as TF does.
  assert not models.create('inception_resnet_v2', conventions='torch').conventions \
      .avg_pool_include_pad
