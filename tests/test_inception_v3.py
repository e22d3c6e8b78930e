"""Facts of inception_v3 (Szegedy et al. 2015): counts, end point shapes, heads, minimum size.

Everything here is shape-level (jax.eval_shape), so nothing is computed.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from inception_jax import models
from inception_jax.models import inception_v3

# (create() options, trainable parameters) measured on torchvision/timm (PyTorch conventions:
# BN with scale) and Keras (BN without scale), instantiated with random weights.
PARAM_COUNTS = [
    (dict(conventions='torch', aux_logits=False), 23_834_568),
    (dict(conventions='torch', aux_logits=True), 27_161_264),
    (dict(conventions='tf', aux_logits=False), 23_817_352),
    # No classifier means no aux head either: Keras' count less its 2048x1000 classifier.
    (dict(conventions='tf', aux_logits=True, num_classes=0), 23_817_352 - 2048 * 1000 - 1000),
]

# TF-slim end points at 299x299 (slim's inception_v3_base comments; paper Table 1 for the grids).
ENDPOINT_SHAPES = {
    'Conv2d_1a_3x3': (149, 149, 32),
    'Conv2d_2a_3x3': (147, 147, 32),
    'Conv2d_2b_3x3': (147, 147, 64),
    'MaxPool_3a_3x3': (73, 73, 64),
    'Conv2d_3b_1x1': (73, 73, 80),
    'Conv2d_4a_3x3': (71, 71, 192),
    'MaxPool_5a_3x3': (35, 35, 192),
    'Mixed_5b': (35, 35, 256),
    'Mixed_5c': (35, 35, 288),
    'Mixed_5d': (35, 35, 288),
    'Mixed_6a': (17, 17, 768),
    'Mixed_6b': (17, 17, 768),
    'Mixed_6c': (17, 17, 768),
    'Mixed_6d': (17, 17, 768),
    'Mixed_6e': (17, 17, 768),
    'AuxLogits': (1000,),
    'Mixed_7a': (8, 8, 1280),
    'Mixed_7b': (8, 8, 2048),
    'Mixed_7c': (8, 8, 2048),
    'PreLogits': (2048,),
}

MIN_SIZE = 75  # Keras' documented minimum; Mixed_7a's stride-2 3x3 needs the 3x3 map it leaves

DEFAULTS = dict(dropout_rate=0.2, aux_logits=True, num_classes=1000)  # slim's keep_prob 0.8

RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}


def _images(size, batch=2):
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


@functools.lru_cache(maxsize=None)
def _variables(module, size=299):
  return jax.eval_shape(functools.partial(module.init, train=False), RNGS, _images(size))


def _output_shapes(module, size, train, variables=None):
  """(output shape, aux logits' shapes); in train mode the aux logits are asked for."""
  variables = variables or _variables(module)
  apply = functools.partial(module.apply, train=train, rngs=RNGS,
                            mutable=['batch_stats', 'intermediates'] if train else False)
  out = jax.eval_shape(apply, variables, _images(size))
  out, aux = (out[0], out[1]['intermediates'].get('aux_logits', ())) if train else (out, ())
  return out.shape, tuple(a.shape for a in aux)


def test_registry_entry():
  entry = models.info('inception_v3')
  assert (entry.input_size, entry.default_conventions, entry.min_size) == (299, 'tf', MIN_SIZE)
  assert 'Rethinking the Inception Architecture' in entry.paper
  module = models.create('inception_v3')
  assert {k: getattr(module, k) for k in DEFAULTS} == DEFAULTS
  assert module.conventions == models.resolve('inception_v3', 'tf')


@pytest.mark.parametrize('options,count', PARAM_COUNTS)
def test_param_count(options, count):
  assert models.param_count('inception_v3', **options) == count


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_endpoint_shapes(conventions):
  module = models.create('inception_v3', conventions=conventions)
  points = jax.eval_shape(
      functools.partial(models.endpoints, module, train=True, rngs=RNGS), _variables(module),
      _images(299))
  shapes = {name: points[name].shape[1:] for name in ENDPOINT_SHAPES}
  assert shapes == ENDPOINT_SHAPES
  assert set(points) == {*ENDPOINT_SHAPES, 'Logits'}


# (create() options, train, (output shape, aux logits' shapes) for a batch of 2)
HEADS = [
    (dict(), False, ((2, 1000), ())),
    (dict(), True, ((2, 1000), ((2, 1000),))),
    (dict(aux_logits=False), True, ((2, 1000), ())),
    (dict(num_classes=10), True, ((2, 10), ((2, 10),))),
    (dict(num_classes=0), False, ((2, 2048), ())),
    (dict(num_classes=0), True, ((2, 2048), ())),
]


@pytest.mark.parametrize('options,train,shapes', HEADS)
def test_head_outputs(options, train, shapes):
  module = models.create('inception_v3', **options)
  assert _output_shapes(module, 299, train) == shapes


@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_parameter_shapes_do_not_depend_on_input_size(conventions):
  # TF-slim shrinks the aux head's 5x5 kernel for small inputs; here the kernel stays 5x5.
  module = models.create('inception_v3', conventions=conventions)
  small, native = (jax.tree.map(lambda a: a.shape, _variables(module, size))
                   for size in (MIN_SIZE, 299))
  assert small == native
  assert native['params']['AuxLogits']['Conv2d_2a_5x5']['conv']['kernel'] == (5, 5, 128, 768)


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_min_size(conventions, train):
  module = models.create('inception_v3', conventions=conventions)
  variables = _variables(module)
  want = ((2, 1000), ((2, 1000),) if train else ())
  assert _output_shapes(module, MIN_SIZE, train, variables) == want
  with pytest.raises(ValueError, match=f'at least {MIN_SIZE}x{MIN_SIZE}'):
    _output_shapes(module, MIN_SIZE - 1, train, variables)


def test_min_size_is_tight():
  # With the input check lifted, one pixel less leaves Mixed_6a a 2x2 map that Mixed_7a's 3x3
  # pool cannot cover.
  class Unchecked(inception_v3.InceptionV3):
    min_size = 1

  module = Unchecked()
  with pytest.raises(ValueError, match='does not fit'):
    _output_shapes(module, MIN_SIZE - 1, False, _variables(module))
