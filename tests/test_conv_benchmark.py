"""The per-convolution benchmark (:mod:`benchmarks.convolutions`): it finds every convolution a
train step runs, counted as often as the step runs it, and times the same function on both
sides (forward and each gradient equal between JAX and PyTorch). Figures belong in
BENCHMARKS.md, not here.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import convolutions
from benchmarks.convolutions import ConvShape
from reference_utils import require


@pytest.mark.parametrize('model,count', [
    ('inception_v1', 59),  # 3 stem + 9 modules x 6 + one conv in each of the 2 aux heads
    ('inception_v3', 96),  # 94 (timm's BasicConv2d) + the aux head's 2
])
def test_every_convolution_of_a_train_step_is_found(model, count):
  found = convolutions.step_convolutions(model, batch=1)
  assert sum(n for _, n in found) == count
  first, _ = found[0]
  assert first.input[-1] == 3 and not convolutions.needs_input_gradient(first)
  assert all(convolutions.needs_input_gradient(s) for s, _ in found[1:])


def test_a_scanned_block_counts_once_per_block():
  scanned = dict(convolutions.step_convolutions('inception_resnet_v2', batch=1))
  unrolled = dict(convolutions.step_convolutions('inception_resnet_v2', batch=1, scan=False))
  assert scanned == unrolled
  # stem 5, Mixed_5b 7, 10 x block35 7, Mixed_6a 4, 20 x block17 5, Mixed_7a 7,
  # 10 x block8 5 (the last one unscanned), Conv2d_7b 1; no aux head (as timm's)
  assert sum(scanned.values()) == 244


SHAPES = {
    'image, 3x3 stride 2 valid': ConvShape((2, 17, 17, 3), (3, 3, 3, 8), (2, 2),
                                           ((0, 0), (0, 0)), 1),
    "3x3 stride 2, TF 'SAME' (pad after)": ConvShape((2, 16, 16, 8), (3, 3, 8, 12), (2, 2),
                                                   ((0, 1), (0, 1)), 1),
    '1x7': ConvShape((2, 9, 9, 8), (1, 7, 8, 6), (1, 1), ((0, 0), (3, 3)), 1),
    '1x1': ConvShape((2, 9, 9, 8), (1, 1, 8, 6), (1, 1), ((0, 0), (0, 0)), 1),
    'depthwise 3x3': ConvShape((2, 9, 9, 8), (3, 3, 1, 8), (1, 1), ((1, 1), (1, 1)), 8),
}


@pytest.mark.parametrize('shape', SHAPES.values(), ids=SHAPES.keys())
def test_both_sides_time_the_same_function(shape):
  require('torch')
  import torch
  x, w, g = convolutions.torch_operands(shape)
  nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)
  hwio = lambda t: t.detach().numpy().transpose(2, 3, 1, 0)
  args = nhwc(x), hwio(w), nhwc(g)
  with torch.no_grad():
    torch_out = [f(x, w, g) for f in convolutions.torch_convolution(shape)]
  forward, input_grad, kernel_grad = (np.asarray(f(*args))
                                      for f in convolutions.jax_convolution(shape))
  np.testing.assert_allclose(forward, nhwc(torch_out[0]), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(input_grad, nhwc(torch_out[1][0]), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(kernel_grad, hwio(torch_out[2][1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('argv,message', [
    (['--model', 'resnet50'], 'resnet50'),
    (['--repeats', '2'], 'at least 3'),
])
def test_bad_arguments_fail_with_one_line(argv, message, capsys):
  with pytest.raises(SystemExit):
    convolutions.main(argv + ['--allow_load'])
  assert message in capsys.readouterr().err
