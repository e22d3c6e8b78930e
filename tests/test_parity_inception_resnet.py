"""Parity of the converted Inception-ResNets with their references (issue: Pretrained weights).

facenet-pytorch ``InceptionResnetV1`` -> inception_resnet_v1 (pooled features, the normalised
embedding, the logits); timm ``inception_resnet_v2`` and ``keras.applications.InceptionResNetV2``
-> inception_resnet_v2. Each reference gets random weights and non-trivial BatchNorm state, and is
compared at the native 299 and at one other size.
"""

import numpy as np
import pytest

from inception_jax import convert
from inception_jax.convert.core import KerasReader
from reference_utils import (assert_parity, images, randomize_keras, randomize_torch, require,
                             torch_forward)

NATIVE = 299
FACE = 160  # facenet-pytorch's face crops
SMALL = 107  # odd, and small enough to keep the test cheap


def _ours(converted, x):
  module, variables = converted
  return np.asarray(module.apply(variables, x, train=False))


# ------------------------------------------------------------------------- facenet-pytorch

@pytest.fixture(scope='module')
def facenet():
  torch = require('torch')
  facenet_v1 = require('facenet_pytorch.models.inception_resnet_v1')
  torch.manual_seed(0)
  model = facenet_v1.InceptionResnetV1(pretrained=None, classify=True, num_classes=10)
  return randomize_torch(model, images(2, SMALL, seed=1))


def _facenet_forward(model, x, *, classify):
  saved, model.classify = model.classify, classify
  try:
    return torch_forward(model, x)
  finally:
    model.classify = saved


def _facenet_pooled(model, x):
  """facenet's layers up to avgpool_1a, flattened: the 1792-d features."""
  import torch
  with torch.no_grad():
    y = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    for name, layer in model.named_children():
      y = layer(y)
      if name == 'avgpool_1a':
        return y.flatten(1).numpy()
  raise AssertionError('facenet has no avgpool_1a')


@pytest.fixture(scope='module')
def facenet_features(facenet):
  """The body alone: the user drops the embedding and logits tensors from the state dict."""
  body = {k: v for k, v in facenet.state_dict().items()
          if not k.startswith(('last_linear.', 'last_bn.', 'logits.'))}
  converted = convert.from_torch('inception_resnet_v1', body, source='facenet')
  assert (converted[0].num_classes, converted[0].embedding_dim) == (0, 0)
  return converted


@pytest.fixture(scope='module')
def facenet_embedding(facenet):
  """What InceptionResnetV1(classify=False) saves: no ``logits``."""
  state = {k: v for k, v in facenet.state_dict().items() if not k.startswith('logits.')}
  converted = convert.from_torch('inception_resnet_v1', state, source='facenet')
  assert (converted[0].num_classes, converted[0].embedding_dim) == (0, 512)
  return converted


@pytest.mark.parametrize('size', [NATIVE, FACE])
def test_facenet_pooled_features(facenet, facenet_features, size):
  x = images(2, size)
  assert_parity(_ours(facenet_features, x), _facenet_pooled(facenet, x))


@pytest.mark.parametrize('size', [NATIVE, FACE])
def test_facenet_normalised_embedding(facenet, facenet_embedding, size):
  x = images(2, size)
  assert_parity(_ours(facenet_embedding, x), _facenet_forward(facenet, x, classify=False))


def test_facenet_logits(facenet):
  converted = convert.from_torch('inception_resnet_v1', facenet.state_dict(), source='facenet')
  assert (converted[0].num_classes, converted[0].embedding_dim) == (10, 512)
  x = images(2, FACE)
  assert_parity(_ours(converted, x), _facenet_forward(facenet, x, classify=True))


# ------------------------------------------------------------------------------------ timm

@pytest.fixture(scope='module')
def timm_pair():
  torch = require('torch')
  timm = require('timm')
  torch.manual_seed(0)
  model = timm.create_model('inception_resnet_v2', pretrained=False)
  randomize_torch(model, images(2, SMALL, seed=1))  # calibration only: any size will do
  converted = convert.from_torch('inception_resnet_v2', model.state_dict(), source='timm')
  assert converted[0].num_classes == 1000
  return model, converted


@pytest.mark.parametrize('size', [NATIVE, SMALL])
def test_timm_inception_resnet_v2(timm_pair, size):
  model, converted = timm_pair
  x = images(2, size)
  assert_parity(_ours(converted, x), torch_forward(model, x))


# ----------------------------------------------------------------------------------- Keras

@pytest.fixture(scope='module')
def keras_model():
  keras = require('keras')
  keras.utils.set_random_seed(0)
  model = keras.applications.InceptionResNetV2(
      weights=None, include_top=True, classes=1000, input_shape=(NATIVE, NATIVE, 3),
      classifier_activation=None)
  return randomize_keras(model, images(2, NATIVE, seed=1))


def test_keras_inception_resnet_v2_native(keras_model):
  converted = convert.from_keras('inception_resnet_v2', keras_model)
  assert converted[0].num_classes == 1000
  x = images(2, NATIVE)
  assert_parity(_ours(converted, x), np.asarray(keras_model(x, training=False)))


def test_keras_inception_resnet_v2_notop_other_size(keras_model):
  """With include_top=True Keras fixes the input size; its notop model takes any size."""
  keras = require('keras')
  notop = keras.applications.InceptionResNetV2(weights=None, include_top=False, pooling='avg',
                                               input_shape=(None, None, 3))
  notop.set_weights(keras_model.get_weights()[:-2])  # all but the classifier's kernel, bias
  converted = convert.from_keras('inception_resnet_v2', notop)
  assert converted[0].num_classes == 0
  x = images(2, SMALL)
  assert_parity(_ours(converted, x), np.asarray(notop(x, training=False)))


def test_keras_unnamed_layers_are_taken_in_counter_order():
  """Keras lists layers in graph order; its name counters give the construction order."""
  reader = KerasReader([(name, 'Conv2D', [np.zeros(1)])
                        for name in ('conv2d_10', 'block35_1_conv', 'conv2d_2', 'conv2d',
                                     'conv2d_1')])
  assert reader.auto_named('Conv2D', 'conv2d') == ['conv2d', 'conv2d_1', 'conv2d_2',
                                                   'conv2d_10']
