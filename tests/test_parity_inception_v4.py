"""Inception-v4 against timm's inception_v4 ('torch' conventions).

Every strided op of Inception-v4 is VALID and every SAME op has stride 1 and an odd kernel, so TF
and PyTorch pad alike at any size; what the 'torch' row must get right is timm's average pooling
(count_include_pad=False) and BatchNorm with a scale. 299 is the native size, where every strided
op sees an odd input (299, 147, 71, 35, 17); at 224 three of them see an even one (224, 52, 12).
"""

import jax
import numpy as np
import pytest

from inception_jax import models
from inception_jax.convert import ConversionError, from_torch
from reference_utils import assert_parity, images, randomize_torch, require, torch_forward

SIZES = (299, 224)


@pytest.fixture(scope='module')
def timm_v4():
  timm = require('timm')
  require('torch').manual_seed(0)
  model = timm.create_model('inception_v4', pretrained=False)
  return randomize_torch(model, images(2, 299))


def test_timm(timm_v4):
  module, variables = from_torch('inception_v4', timm_v4.state_dict(), source='timm')
  assert module.num_classes == 1000 and not module.conventions.avg_pool_include_pad
  # One jit per size compiles faster here than eager op-by-op apply.
  forward = jax.jit(lambda v, x: module.apply(v, x, train=False))
  for size in SIZES:
    x = images(2, size, seed=size)
    assert_parity(forward(variables, x), torch_forward(timm_v4, x))


def test_timm_without_classifier_loads_the_body(timm_v4):
  full = from_torch('inception_v4', timm_v4.state_dict(), source='timm')[1]
  state = {k: v for k, v in timm_v4.state_dict().items() if not k.startswith('last_linear.')}
  module, variables = from_torch('inception_v4', state, source='timm')
  assert module.num_classes == 0
  want = {**full, 'params': {k: v for k, v in full['params'].items() if k != 'Logits'}}
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, variables),
               jax.tree.map(np.asarray, want))


def test_timm_mismatched_state_dict_names_every_problem(timm_v4):
  state = dict(timm_v4.state_dict())
  del state['features.19.branch2_3b.bn.running_var']
  state['features.11.branch2.2.conv.weight'] = state['features.11.branch2.1.conv.weight']
  state['features.22.conv.weight'] = state['features.0.conv.weight']
  with pytest.raises(ConversionError) as err:
    from_torch('inception_v4', state, source='timm')
  for needle in ('features.19.branch2_3b.bn.running_var', 'features.22.conv.weight',
                 'Mixed_6b/Branch_2/Conv2d_0c_1x7/conv/kernel'):
    assert needle in str(err.value)


def test_scanned_and_unrolled_layouts_of_converted_weights(timm_v4):
  """The converter's scanned default is the unrolled conversion stacked (models.pyloop_to_scan),
  with the same outputs; scan_to_pyloop takes it back, bitwise."""
  scanned, stacked = from_torch('inception_v4', timm_v4.state_dict(), source='timm')
  unrolled, variables = from_torch('inception_v4', timm_v4.state_dict(), source='timm',
                                   scan=False)
  assert scanned.scan and not unrolled.scan
  assert 'Mixed_6h' in variables['params'] and 'Mixed_6h' not in stacked['params']
  jax.tree.map(np.testing.assert_array_equal, models.pyloop_to_scan('inception_v4', variables),
               stacked)
  jax.tree.map(np.testing.assert_array_equal, models.scan_to_pyloop('inception_v4', stacked),
               variables)
  x = images(2, 75)
  want = np.asarray(unrolled.apply(variables, x))
  np.testing.assert_allclose(scanned.apply(stacked, x), want, rtol=1e-5,
                             atol=1e-5 * abs(want).max())
