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
from inception_jax.models import inception_v1 as v1, inception_v2 as v2, layers

# pretrainedmodels' pretrained_settings['bninception']['imagenet'].
INPUT_SPACE = {'channels': 'BGR', 'range': (0, 255), 'mean': (104.0, 117.0, 128.0),
               'std': (1.0, 1.0, 1.0), 'input_size': 224}

# Caffe's names, in the order of inception_v1.STEM's convs and of inception_v2.ROWS.
_STEM = ('conv1_7x7_s2', 'conv2_3x3_reduce', 'conv2_3x3')
_BLOCKS = ('3a', '3b', '3c', '4a', '4b', '4c', '4d', '4e', '5a', '5b')


def _columns(row: v2.Row) -> list[str]:
  """Caffe's column names of ``row``, in the order of its layers.conv_scopes; the stride-2 rows
  have no 1x1 column and no pool projection."""
  return ((['1x1'] if row.conv_1x1 else []) +
          ['3x3_reduce', '3x3', 'double_3x3_reduce', 'double_3x3_1', 'double_3x3_2'] +
          (['pool_proj'] if row.proj else []))


@torch_converter('inception_v2', sources=('pretrainedmodels',), heads=(('Logits',),))
def bninception(reader: TorchReader, source: str) -> dict:
  """``pretrainedmodels.bninception(...).state_dict()`` -> inception_v2 (conventions 'torch').

  Implies ``num_classes`` (0 without ``last_linear``) and ``conv_bias`` (whether the
  convolutions carry the Caffe biases).
  """
  conv_bias = reader.has('conv1_7x7_s2.bias')
  stem = [op.name for op in v1.STEM if isinstance(op, layers.Conv)]
  names = dict(zip(_STEM, stem, strict=True))
  for block, row in zip(_BLOCKS, v2.ROWS, strict=True):
    scopes = layers.conv_scopes(v2.inception_module(row))
    names.update({f'inception_{block}_{c}': f'{row.name}/{scope}'
                  for c, scope in zip(_columns(row), scopes, strict=True)})
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
