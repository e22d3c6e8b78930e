"""inception_v1 (variant 'bn', PyTorch conventions) against torchvision's googlenet.

Sizes: 224 (native) and 177, an odd size at which torchvision's ceil-mode pools round up at
MaxPool_3a, MaxPool_4a and MaxPool_5a, and the 11x11 Mixed_4b/4e maps make the windows of the
adaptive 4x4 aux pool overlap.
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.convert import from_torch
from inception_jax.models import inception_v1 as v1
from reference_utils import assert_parity, images, randomize_torch, require, torch_forward

torch = require('torch')
torchvision = require('torchvision')

SIZES = (224, 177)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Pair:
  """A randomised torchvision googlenet, its conversion and our jitted eval forward."""

  def __init__(self, aux_logits):
    torch.manual_seed(0)
    self.ref = torchvision.models.googlenet(weights=None, aux_logits=aux_logits,
                                            transform_input=False, init_weights=True)
    randomize_torch(self.ref, images(2, 224, seed=1))
    self.module, self.variables = from_torch('googlenet', self.ref.state_dict(),
                                             source='torchvision')
    self.predict = jax.jit(lambda v, x: self.module.apply(v, x, train=False))


@functools.lru_cache(maxsize=None)
def _pair(aux_logits):
  return Pair(aux_logits)


@pytest.fixture(scope='module', params=[False, True], ids=['no_aux', 'aux'])
def pair(request):
  return _pair(request.param)


def test_conversion_implies_the_options(pair):
  aux = pair.ref.aux_logits
  m = pair.module
  assert (m.variant, m.num_classes, m.aux_logits) == ('bn', 1000, aux)
  assert (m.conventions.pool_ceil, m.conventions.aux_pool) == (True, 'adaptive')
  assert {'AuxLogits_4b', 'AuxLogits_4e'} <= set(pair.variables['params']) if aux else \
      not any(k.startswith('AuxLogits') for k in pair.variables['params'])


@pytest.mark.parametrize('size', SIZES)
def test_eval_logits(pair, size):
  x = images(2, size)
  err = assert_parity(pair.predict(pair.variables, x), torch_forward(pair.ref, x))
  print(f'aux={pair.ref.aux_logits} size={size}: max rel err {err:.2e}')


def test_transform_input_is_our_plain_input():
  """torchvision's transform_input=True on ImageNet-normalised images == ours on [-1, 1]."""
  pair = _pair(False)
  x = images(2, 224, seed=2)
  mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
  normalised = ((x + 1) / 2 - mean) / std
  pair.ref.transform_input = True
  try:
    want = torch_forward(pair.ref, normalised)
  finally:
    pair.ref.transform_input = False
  assert_parity(pair.predict(pair.variables, x), want)


def test_train_mode_aux_heads():
  """Train mode, dropout off on both sides, BN on batch statistics: torchvision returns
  (logits, aux2, aux1), we return the logits and sow (aux_4b, aux_4e), aux_4b = its aux1."""
  size = 177
  pair = _pair(True)
  ref = copy.deepcopy(pair.ref).train()  # train mode updates its running statistics
  for m in ref.modules():
    if isinstance(m, torch.nn.Dropout):
      m.p = 0.0
  x = images(2, size, seed=3)
  with torch.no_grad():
    want = ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  module = pair.module.clone(dropout_rate=0.0, aux_dropout_rate=0.0)
  logits, state = jax.jit(lambda v, x: module.apply(
      v, x, train=True, mutable=['batch_stats', 'intermediates']))(pair.variables, x)
  aux_4b, aux_4e = state['intermediates']['aux_logits']
  for name, got, w in (('logits', logits, want.logits), ('aux_4b', aux_4b, want.aux_logits1),
                       ('aux_4e', aux_4e, want.aux_logits2)):
    err = assert_parity(got, w.numpy())
    print(f'train size={size} {name}: max rel err {err:.2e}')
  # The heads are told apart: swapping them would not pass.
  assert np.max(np.abs(np.asarray(aux_4b) - want.aux_logits2.numpy())) > \
      1e-2 * np.max(np.abs(want.aux_logits2.numpy()))


def test_local_response_norm_matches_torch():
  """The paper variant's LRN is Caffe's, which torch.nn.LocalResponseNorm implements."""
  x = np.random.default_rng(0).normal(0, 100, (2, 5, 6, 64)).astype(np.float32)
  lrn = torch.nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)
  with torch.no_grad():
    want = lrn(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(v1.local_response_norm(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)
