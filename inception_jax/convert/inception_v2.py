"""BN-Inception from ``pretrainedmodels.bninception`` (the PyTorch port of the Caffe release).

Caffe names its layers ``<block>_<column>`` (``inception_3a_double_3x3_1``) with the BatchNorm
beside the convolution (``..._bn``); we use TF-slim's scopes (``Mixed_3b/Branch_2/Conv2d_0b_3x3``).

The Caffe weights expect **BGR images in 0..255 minus the mean (104, 117, 128)**, with no division
by a standard deviation (:data:`INPUT_SPACE`), not the [-1, 1] RGB input of Google's models::

    x = rgb_uint8[..., ::-1].astype(np.float32) - np.array(INPUT_SPACE['mean'], np.float32)
"""

from __future__ import annotations

from inception_jax.convert import torch_converter
from inception_jax.convert.core import TorchReader

# pretrainedmodels' pretrained_settings['bninception']['imagenet'].
INPUT_SPACE = {'channels': 'BGR', 'range': (0, 255), 'mean': (104.0, 117.0, 128.0),
               'std': (1.0, 1.0, 1.0), 'input_size': 224}

_STEM = {'conv1_7x7_s2': 'Conv2d_1a_7x7', 'conv2_3x3_reduce': 'Conv2d_2b_1x1',
         'conv2_3x3': 'Conv2d_2c_3x3'}

# Caffe block -> TF-slim end point.
_BLOCKS = {'3a': 'Mixed_3b', '3b': 'Mixed_3c', '3c': 'Mixed_4a', '4a': 'Mixed_4b',
           '4b': 'Mixed_4c', '4c': 'Mixed_4d', '4d': 'Mixed_4e', '4e': 'Mixed_5a',
           '5a': 'Mixed_5b', '5b': 'Mixed_5c'}
_STRIDED = ('3c', '4e')

# Caffe column -> TF-slim branch/scope, in the stride-1 blocks ...
_COLUMNS = {'1x1': 'Branch_0/Conv2d_0a_1x1',
            '3x3_reduce': 'Branch_1/Conv2d_0a_1x1', '3x3': 'Branch_1/Conv2d_0b_3x3',
            'double_3x3_reduce': 'Branch_2/Conv2d_0a_1x1',
            'double_3x3_1': 'Branch_2/Conv2d_0b_3x3', 'double_3x3_2': 'Branch_2/Conv2d_0c_3x3',
            'pool_proj': 'Branch_3/Conv2d_0b_1x1'}
# ... and in the stride-2 blocks, which have no 1x1 column and no pool projection.
_STRIDED_COLUMNS = {'3x3_reduce': 'Branch_0/Conv2d_0a_1x1', '3x3': 'Branch_0/Conv2d_1a_3x3',
                    'double_3x3_reduce': 'Branch_1/Conv2d_0a_1x1',
                    'double_3x3_1': 'Branch_1/Conv2d_0b_3x3',
                    'double_3x3_2': 'Branch_1/Conv2d_1a_3x3'}


@torch_converter('inception_v2', sources=('pretrainedmodels',), heads=(('Logits',),))
def bninception(reader: TorchReader, source: str) -> dict:
  """``pretrainedmodels.bninception(...).state_dict()`` -> inception_v2 (conventions 'torch').

  Implies ``num_classes`` (0 without ``last_linear``) and ``conv_bias`` (whether the
  convolutions carry the Caffe biases).
  """
  conv_bias = reader.has('conv1_7x7_s2.bias')
  names = dict(_STEM)
  for block, end_point in _BLOCKS.items():
    columns = _STRIDED_COLUMNS if block in _STRIDED else _COLUMNS
    names.update({f'inception_{block}_{c}': f'{end_point}/{scope}' for c, scope in columns.items()})
  for caffe, scope in names.items():
    path = tuple(scope.split('/'))
    reader.conv_kernel(f'{caffe}.weight', ('params', *path, 'conv', 'kernel'))
    if conv_bias:
      reader.vector(f'{caffe}.bias', ('params', *path, 'conv', 'bias'))
    reader.batch_norm(f'{caffe}_bn', path)
  num_classes = 0
  if reader.has('last_linear.weight'):
    num_classes = int(reader.state['last_linear.weight'].shape[0])
    reader.linear('last_linear', ('Logits',))
  return {'num_classes': num_classes, 'conv_bias': conv_bias}
