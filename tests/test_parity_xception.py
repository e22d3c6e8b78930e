"""Xception against timm legacy_xception ('torch' conventions) and Keras Xception ('tf').

299 is the native size; at 150 three of the four stride-2 max pools see an even input (72, 36,
18), where TF's SAME pads only bottom/right and timm pads one pixel on every side.
"""

import jax
import numpy as np
import pytest

from inception_jax.convert import ConversionError, from_keras, from_torch
from reference_utils import (assert_parity, images, randomize_keras, randomize_torch, require,
                             torch_forward)

SIZES = (299, 150)


def _check(module, variables, reference, sizes=SIZES):
  """Parity at every size; one jit per size compiles faster here than eager op-by-op apply."""
  forward = jax.jit(lambda v, x: module.apply(v, x, train=False))
  for size in sizes:
    x = images(2, size, seed=size)
    assert_parity(forward(variables, x), reference(size, x))


@pytest.fixture(scope='module')
def timm_xception():
  timm = require('timm')
  model = timm.create_model('legacy_xception', pretrained=False)
  return randomize_torch(model, images(2, 150))  # BN statistics calibrated on a cheap pass


def test_timm(timm_xception):
  module, variables = from_torch('xception', timm_xception.state_dict(), source='timm')
  assert module.conventions.bn_epsilon == 1e-5
  _check(module, variables, lambda size, x: torch_forward(timm_xception, x))


def test_timm_without_classifier_loads_the_body_for_pooled_features(timm_xception):
  full = from_torch('xception', timm_xception.state_dict(), source='timm')[1]
  state = {k: v for k, v in timm_xception.state_dict().items() if not k.startswith('fc.')}
  module, variables = from_torch('xception', state, source='timm')
  assert module.num_classes == 0
  want = jax.tree.map(np.asarray, {**full, 'params': {
      k: v for k, v in full['params'].items() if k != 'Logits'}})
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, variables), want)


def test_timm_incomplete_state_dict_names_what_is_wrong(timm_xception):
  state = dict(timm_xception.state_dict())
  del state['block5.rep.5.running_var']
  state['block5.rep.1.pointwise.weight'] = state['block5.rep.1.pointwise.weight'][:100]
  state['extra.weight'] = state['conv1.weight']
  with pytest.raises(ConversionError) as err:
    from_torch('xception', state, source='timm')
  for needle in ('block5.rep.5.running_var', 'block6/sepconv1/pointwise/conv/kernel',
                 'extra.weight'):
    assert needle in str(err.value)


def test_keras():
  keras = require('keras')

  def build(size):
    return keras.applications.Xception(weights=None, include_top=True, classes=1000,
                                       input_shape=(size, size, 3),
                                       classifier_activation=None)  # compare logits

  refs = {150: randomize_keras(build(150), images(2, 150))}
  module, variables = from_keras('xception', refs[150])
  assert module.conventions.bn_epsilon == 1e-3 and module.conventions.padding == 'tf'

  def reference(size, x):
    if size not in refs:  # Keras fixes the input size of a model with its top
      refs[size] = build(size)
      refs[size].set_weights(refs[150].get_weights())
    return np.asarray(refs[size](x, training=False))

  _check(module, variables, reference)
