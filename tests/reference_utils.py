"""Helpers for parity tests against the PyTorch and Keras reference implementations.

Reference models are built with random weights and then given non-trivial BatchNorm state: the
running statistics are first set from a real forward pass (so that deep networks keep sane
activations in eval mode) and then perturbed at random, and BN scales and shifts are drawn at
random, so that a converter that drops or swaps any BN tensor is caught.
"""

import numpy as np

# max |ours - reference| <= PARITY_RTOL * max |reference|  (issue: Pretrained weights)
PARITY_RTOL = 1e-4


def images(batch, size, seed=0):
  """NHWC float32 images in [-1, 1]."""
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def assert_parity(ours, ref, rtol=PARITY_RTOL):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  assert np.all(np.isfinite(ref)), 'reference output is not finite'
  scale = np.max(np.abs(ref))
  assert scale > 0
  err = np.max(np.abs(ours - ref))
  assert err <= rtol * scale, f'max |ours - ref| = {err:.3g} > {rtol} x max |ref| = {scale:.3g}'
  return err / scale


def randomize_torch(model, x_nhwc, seed=0):
  """Calibrate then perturb every BatchNorm of a torch ``model``; leaves it in eval mode."""
  import torch
  gen = torch.Generator().manual_seed(seed)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
  saved = [m.momentum for m in bns]
  for m in bns:
    m.momentum = 1.0  # running statistics := this batch's statistics
  model.train()
  with torch.no_grad():
    model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    for m, mom in zip(bns, saved):
      m.momentum = mom
      n = m.num_features
      u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)
      m.running_mean.add_(0.1 * torch.randn(n, generator=gen) * m.running_var.sqrt())
      m.running_var.mul_(u(0.7, 1.4))
      if m.affine:
        m.weight.copy_(u(0.6, 1.4))
        m.bias.copy_(0.2 * torch.randn(n, generator=gen))
  model.eval()
  return model


def torch_forward(model, x_nhwc):
  import torch
  with torch.no_grad():
    out = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
  return out.numpy()


def randomize_keras(model, x_nhwc, seed=0):
  """Calibrate then perturb every BatchNormalization layer of a Keras ``model``."""
  import keras
  rng = np.random.default_rng(seed)
  bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
  saved = [l.momentum for l in bns]
  for l in bns:
    l.momentum = 0.0  # moving statistics := this batch's statistics
  model(x_nhwc, training=True)
  for l, mom in zip(bns, saved):
    l.momentum = mom
    weights = l.get_weights()
    mean, var = weights[-2], weights[-1]
    n = mean.shape[0]
    mean = mean + 0.1 * rng.normal(size=n) * np.sqrt(var)
    var = var * rng.uniform(0.7, 1.4, n)
    rest = []
    if l.scale:
      rest.append(rng.uniform(0.6, 1.4, n))
    if l.center:
      rest.append(0.2 * rng.normal(size=n))
    l.set_weights([w.astype(np.float32) for w in (*rest, mean, var)])
  return model


def require(module: str):
  """Import a reference package; skipped locally when absent, a failure in CI (CI=true)."""
  import importlib
  import os
  import pytest
  if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'):
    return importlib.import_module(module)
  return pytest.importorskip(
      module, reason=f'{module} not installed (see README: pip install --no-deps ...)')
