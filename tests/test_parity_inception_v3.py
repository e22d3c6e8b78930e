"""inception_v3 against torchvision, timm and Keras: converted weights give the same logits.

Each reference is built with random weights and randomised BatchNorm state, converted, and
compared in eval mode at the native 299 and at 224. One jitted forward serves every pair with
the same module (torchvision without aux head and timm compile once per size).
"""

import functools

import jax
import numpy as np
import pytest

from inception_jax.convert import from_keras, from_torch
from inception_jax.models import inception_v3
from reference_utils import (assert_parity, images, randomize_keras, randomize_torch, require,
                             torch_forward)

SIZES = (299, 224)  # native; and one below 299, where torchvision's aux head cannot even run


def _torchvision(aux_logits):
  tv = require('torchvision')
  return tv.models.inception_v3(weights=None, aux_logits=aux_logits, transform_input=False,
                                init_weights=True)


def _timm():
  timm = require('timm')
  return timm.create_model('inception_v3', pretrained=False)


# pair -> (source, reference builder, create() options the state dict must imply)
TORCH_PAIRS = {
    'torchvision': ('torchvision', lambda: _torchvision(True), dict(aux_logits=True)),
    'torchvision-noaux': ('torchvision', lambda: _torchvision(False), dict(aux_logits=False)),
    'timm': ('timm', _timm, dict(aux_logits=False)),
}


@functools.partial(jax.jit, static_argnums=0)
def _eval(module, variables, x):
  return module.apply(variables, x, train=False)


def _convert_torch(name):
  source, build, implied = TORCH_PAIRS[name]
  require('torch').manual_seed(0)
  ref = randomize_torch(build(), images(2, 299))
  module, variables = from_torch('inception_v3', ref.state_dict(), source=source)
  assert (module.num_classes, module.aux_logits, module.conventions.name) == \
      (1000, implied['aux_logits'], 'torch')
  return ref, module, variables


def _convert_keras():
  keras = require('keras')
  # include_top=True needs a static input shape: one model per size, sharing one set of weights.
  build = lambda size: keras.applications.InceptionV3(
      weights=None, include_top=True, classes=1000, input_shape=(size, size, 3),
      classifier_activation=None)
  refs = {299: randomize_keras(build(299), images(2, 299))}
  module, variables = from_keras('inception_v3', refs[299])
  assert (module.num_classes, module.aux_logits, module.conventions.name) == (1000, False, 'tf')
  for size in SIZES[1:]:
    refs[size] = build(size)
    refs[size].set_weights(refs[299].get_weights())
  return lambda x: np.asarray(refs[x.shape[1]](x, training=False)), module, variables


@pytest.fixture(scope='module')
def torchvision_aux():
  return _convert_torch('torchvision')


@pytest.fixture(scope='module', params=[*TORCH_PAIRS, 'keras'])
def pair(request):
  """(reference forward on NHWC arrays, converted module, its variables)."""
  if request.param == 'keras':
    return _convert_keras()
  if request.param == 'torchvision':
    ref, module, variables = request.getfixturevalue('torchvision_aux')
  else:
    ref, module, variables = _convert_torch(request.param)
  return functools.partial(torch_forward, ref), module, variables


@pytest.mark.parametrize('size', SIZES)
def test_logits_match_reference(pair, size):
  reference, module, variables = pair
  x = images(2, size, seed=1)
  assert_parity(_eval(module, variables, x), reference(x))


def test_aux_head_matches_torchvision(torchvision_aux):
  # Eval logits never touch the aux head; compare it alone on a 17x17x768 map (Mixed_6e).
  torch = require('torch')
  ref, module, variables = torchvision_aux
  feature = np.abs(np.random.default_rng(2).normal(size=(2, 17, 17, 768))).astype(np.float32)
  with torch.no_grad():
    want = ref.AuxLogits(torch.from_numpy(feature.transpose(0, 3, 1, 2))).numpy()
  head = inception_v3.AuxHead(1000, module.conventions)
  got = head.apply({k: variables[k]['AuxLogits'] for k in ('params', 'batch_stats')}, feature,
                   train=False)
  assert_parity(got, want)


def test_feature_extractor_from_aux_checkpoint(torchvision_aux):
  # num_classes=0 drops both heads, the aux convs included (heads=('Logits',), ('AuxLogits',)).
  ref, _, _ = torchvision_aux
  module, variables = from_torch('inception_v3', ref.state_dict(), source='torchvision',
                                 num_classes=0)
  assert module.num_classes == 0
  assert not {'Logits', 'AuxLogits'} & set(variables['params'])


def test_keras_feature_extractor_at_min_size():
  # Keras' notop model, pooled: no Dense layer means num_classes=0; 75 is Keras' minimum too.
  keras = require('keras')
  size = inception_v3.InceptionV3.min_size
  ref = keras.applications.InceptionV3(weights=None, include_top=False, pooling='avg',
                                       input_shape=(size, size, 3))
  randomize_keras(ref, images(2, size))
  module, variables = from_keras('inception_v3', ref)
  assert (module.num_classes, module.aux_logits) == (0, False)
  x = images(2, size, seed=1)
  assert_parity(_eval(module, variables, x), np.asarray(ref(x, training=False)))
