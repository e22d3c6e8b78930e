"""Fréchet Inception Distance (Heusel et al. 2017), KID and the Inception Score, equal to the TF
original and to pytorch-fid / torch-fidelity / clean-fid on request.

>>> from inception_jax import convert, fid
>>> module, variables = convert.from_torch(
...     'inception_v3_fid', 'pt_inception-2015-12-05-6726825d.pth', source='pytorch_fid')
>>> extractor = fid.Extractor(module, variables, mode='tf1', batch_size=50)
>>> evaluator = fid.Evaluator(extractor, 'cifar10_train.npz')   # then every N training steps:
>>> evaluator(samples_uint8_nhwc)['fid']

Command line: ``python -m inception_jax.fid PATH_A PATH_B`` (folders or ``.npz`` statistics);
weights are found and verified by :mod:`inception_jax.fid.weights`.
Importing this package imports neither TensorFlow nor PyTorch.
"""

from inception_jax.fid.evaluate import Evaluator
from inception_jax.fid.extract import (DIMS, FEATURES, IMAGE_EXTENSIONS, Extractor, FolderError,
                                       Result, default_workers, extract, extract_folder,
                                       image_files, read_image)
from inception_jax.fid.metrics import (frechet_distance, inception_score,
                                       kernel_inception_distance, sqrt_psd, trace_sqrt_product)
from inception_jax.fid.resize import MODES, SIZE, normalize, resize, resize_image
from inception_jax.fid.stats import RunningStats, StatsError, load_stats, save_stats
from inception_jax.fid.weights import WeightsError

__all__ = ['DIMS', 'Evaluator', 'Extractor', 'FEATURES', 'FolderError', 'IMAGE_EXTENSIONS',
           'MODES', 'Result', 'RunningStats', 'SIZE', 'StatsError', 'WeightsError',
           'default_workers', 'extract', 'extract_folder', 'frechet_distance', 'image_files',
           'inception_score', 'kernel_inception_distance', 'load_stats', 'normalize',
           'read_image', 'resize', 'resize_image', 'save_stats', 'sqrt_psd',
           'trace_sqrt_product']
