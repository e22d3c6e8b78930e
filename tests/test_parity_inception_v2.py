"""BN-Inception against pretrainedmodels' bninception, the port of the Caffe release ('torch').

The Caffe network pools in ceil mode without padding while its convolutions pad symmetrically.
224 leaves a partial window at the end of both stem pools (112 -> 56, 56 -> 28); 227 feeds the
stem odd maps (227, 57). Its head is a fixed AvgPool2d(7) before a 1024-input Linear, so the
reference's logits exist only for inputs 223-230; at 256 its body still runs, and our global
pool is compared with the mean of its final map.
"""

import jax
import numpy as np
import pytest

from inception_jax.convert import ConversionError, from_torch
from inception_jax.convert.inception_v2 import INPUT_SPACE
from reference_utils import assert_parity, images, randomize_torch, require, torch_forward

LOGIT_SIZES = (224, 227)
FEATURE_SIZE = 256
# The Caffe net's Mixed_4a (its 3c) sees an odd 25x25 (200) or 15x15 (120) map and cannot
# concatenate its branches; neither can ours under the same conventions.
REFUSED_SIZES = (200, 120)


@pytest.fixture(scope='module')
def bninception():
  pretrainedmodels = require('pretrainedmodels')
  require('torch').manual_seed(0)
  model = pretrainedmodels.bninception(num_classes=1000, pretrained=None)
  return randomize_torch(model, images(2, 224))


@pytest.fixture(scope='module')
def converted(bninception):
  return from_torch('inception_v2', bninception.state_dict(), source='pretrainedmodels')


def test_logits(bninception, converted):
  module, variables = converted
  assert (module.num_classes, module.conv_bias) == (1000, True)
  assert module.conventions.pool_ceil and module.conventions.bn_epsilon == 1e-5
  # Eager apply: one op-by-op warm-up serves every size, unlike one jit compile per size.
  for size in LOGIT_SIZES:
    x = images(2, size, seed=size)
    assert_parity(module.apply(variables, x, train=False), torch_forward(bninception, x))


def test_pooled_features_beyond_the_fixed_head(bninception, converted):
  torch = require('torch')
  module, variables = converted
  x = images(2, FEATURE_SIZE, seed=FEATURE_SIZE)
  with torch.no_grad():
    fmap = bninception.features(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  assert fmap.shape[2:] == (8, 8)
  features = module.clone(num_classes=0).apply(variables, x, train=False)
  assert_parity(features, fmap.mean(dim=(2, 3)).numpy())


@pytest.mark.parametrize('size', REFUSED_SIZES)
def test_sizes_the_caffe_net_refuses(bninception, converted, size):
  require('torch')
  module, variables = converted
  x = images(1, size)
  with pytest.raises(RuntimeError, match='Sizes of tensors must match'):
    torch_forward(bninception, x)
  with pytest.raises(ValueError, match='Mixed_4a: its stride-2 branches'):
    jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)


def test_without_classifier_loads_the_body(bninception, converted):
  state = {k: v for k, v in bninception.state_dict().items() if not k.startswith('last_linear.')}
  module, variables = from_torch('inception_v2', state, source='pretrainedmodels')
  assert module.num_classes == 0
  full = converted[1]
  want = {**full, 'params': {k: v for k, v in full['params'].items() if k != 'Logits'}}
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, variables),
               jax.tree.map(np.asarray, want))


def test_without_conv_biases(bninception):
  # A Caffe-style state dict whose convolutions have no bias implies conv_bias=False.
  state = {k: v for k, v in bninception.state_dict().items()
           if not (k.endswith('.bias') and '_bn.' not in k and k != 'last_linear.bias')}
  assert len(state) == len(bninception.state_dict()) - 69  # 69 convolutions
  module, variables = from_torch('inception_v2', state, source='pretrainedmodels')
  assert not module.conv_bias
  assert 'bias' not in variables['params']['Mixed_5c']['Branch_3']['Conv2d_0b_1x1']['conv']


def test_mismatched_state_dict_names_every_problem(bninception):
  state = dict(bninception.state_dict())
  del state['inception_4c_double_3x3_1_bn.running_var']
  state['inception_3c_3x3.weight'] = state['inception_3b_3x3.weight']  # 96 outputs, not 160
  state['inception_6a_1x1.weight'] = state['inception_5b_1x1.weight']
  with pytest.raises(ConversionError) as err:
    from_torch('inception_v2', state, source='pretrainedmodels')
  for needle in ('inception_4c_double_3x3_1_bn.running_var', 'inception_6a_1x1.weight',
                 'Mixed_4a/Branch_0/Conv2d_1a_3x3/conv/kernel'):
    assert needle in str(err.value)


def test_input_space_is_the_caffe_one():
  # pretrainedmodels' pretrained_settings: BGR, 0..255, mean-subtracted, std 1.
  settings = require('pretrainedmodels').pretrained_settings['bninception']['imagenet']
  assert INPUT_SPACE['channels'] == settings['input_space']
  assert list(INPUT_SPACE['range']) == settings['input_range']
  assert list(INPUT_SPACE['mean']) == settings['mean']
  assert list(INPUT_SPACE['std']) == settings['std']
  assert INPUT_SPACE['input_size'] == settings['input_size'][1]
