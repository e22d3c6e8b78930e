"""The FID network and pipeline against pytorch-fid, torch-fidelity and clean-fid, offline.

The reference network is pytorch-fid's own ``fid_inception_v3()`` (its FIDInceptionA/C/E_1/E_2
blocks) with random weights and randomised BatchNorm (its download replaced by that state dict);
torch-fidelity's extractor loads the same state dict from a file, as it loads the published one.
uint8 images of odd sizes go through each resize mode: features and logits within
``PARITY_RTOL`` (1e-4) of the reference's largest value.
"""

import contextlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inception_jax import convert, fid
from reference_utils import assert_parity, randomize_torch, require

ALL = ('64', '192', '768', 'pool3', 'logits', 'logits_unbiased')


@pytest.fixture(scope='module')
def state_dict():
  """Random FID weights with randomised BN, built by pytorch-fid's fid_inception_v3()."""
  require('pytorch_fid')
  import torch
  from pytorch_fid import inception
  torch.manual_seed(0)
  base = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  with _pytorch_fid_weights(base.state_dict()):
    net = inception.fid_inception_v3()
  calibration = np.random.default_rng(1).uniform(-1, 1, (4, 299, 299, 3)).astype(np.float32)
  randomize_torch(net, calibration)
  return {k: v.clone() for k, v in net.state_dict().items()}


@contextlib.contextmanager
def _pytorch_fid_weights(state):
  """pytorch-fid's loader returns ``state`` instead of downloading the published file."""
  from pytorch_fid import inception
  original = inception.load_state_dict_from_url
  inception.load_state_dict_from_url = lambda *args, **kwargs: state
  try:
    yield
  finally:
    inception.load_state_dict_from_url = original


def _nchw(x):
  import torch
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _images(n, h, w, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _extractor(state, source, mode, features=ALL, batch_size=2):
  module, variables = convert.from_torch('inception_v3_fid', state, source=source)
  assert module.num_classes == 1008
  return fid.Extractor(module, variables, mode=mode, batch_size=batch_size, features=features)


def test_pytorch_fid_pipeline(state_dict):
  """pytorch-fid's InceptionV3 (resize + 2x - 1 + FID blocks) at every --dims."""
  import torch
  from pytorch_fid.inception import InceptionV3
  with _pytorch_fid_weights(state_dict):
    ref_net = InceptionV3([0, 1, 2, 3], resize_input=True, normalize_input=True).eval()
  x = _images(2, 83, 117, seed=2)
  with torch.no_grad():
    refs = [r.mean(dim=(2, 3)).numpy() for r in ref_net(_nchw(x).float() / 255)]
  ours = _extractor(state_dict, 'pytorch_fid', 'pytorch_fid', ('64', '192', '768', 'pool3'))(x)
  for name, ref in zip(('64', '192', '768', 'pool3'), refs):
    assert ours[name].shape == (2, fid.DIMS[name])
    assert_parity(ours[name], ref)


def test_torch_fidelity_extractor(state_dict, tmp_path):
  """torch-fidelity's FeatureExtractorInceptionV3 (TF1 resize inside) on uint8 input."""
  require('torch_fidelity')
  import torch
  from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
  path = tmp_path / 'weights-inception-2015-12-05.pth'
  torch.save(state_dict, path)
  names = ['64', '192', '768', '2048', 'logits_unbiased', 'logits']
  ref_net = FeatureExtractorInceptionV3('inception-v3-compat', names,
                                        feature_extractor_weights_path=str(path))
  x = _images(2, 150, 97, seed=3)
  with torch.no_grad():
    refs = dict(zip(names, (r.numpy() for r in ref_net(_nchw(x)))))
  ours = _extractor(str(path), 'torch_fidelity', 'tf1')(x)
  for name in ALL:
    assert_parity(ours[name], refs['2048' if name == 'pool3' else name])


def test_clean_fid_pipeline_and_features_without_classifier(state_dict):
  """clean-fid: PIL bicubic resize of uint8, then its torchscript graph's (x - 128) / 128,
  here into pytorch-fid's port of the same graph; sFID's spatial features on the way.
  ``num_classes=0`` returns pool3 itself."""
  require('cleanfid')
  import torch
  from cleanfid.resize import build_resizer
  from pytorch_fid.inception import InceptionV3
  with _pytorch_fid_weights(state_dict):
    ref_net = InceptionV3([3], resize_input=False, normalize_input=False).eval()
  # sFID's spatial features: the graph's mixed_6/conv is Mixed_6d's 1x1 branch (blocks[2][6]).
  spatial = []
  ref_net.blocks[2][6].branch1x1.register_forward_hook(
      lambda module, inputs, output: spatial.append(output[:, :7].permute(0, 2, 3, 1)))
  x = _images(2, 64, 77, seed=4)
  resized = np.stack([build_resizer('clean')(image) for image in x])
  with torch.no_grad():
    ref = ref_net(_nchw((resized - 128) / 128).float())[0][:, :, 0, 0].numpy()
  ours = _extractor(state_dict, 'pytorch_fid', 'clean', ('pool3', 'spatial'))(x)
  assert_parity(ours['pool3'], ref)
  assert ours['spatial'].shape == (2, 17 * 17 * 7)
  assert_parity(ours['spatial'], spatial[0].reshape(2, -1).numpy())
  module, variables = convert.from_torch('inception_v3_fid', state_dict, source='pytorch_fid',
                                         num_classes=0)
  features = module.apply(variables, fid.normalize(fid.resize(x, 'clean')), train=False)
  assert features.shape == (2, 2048)
  assert_parity(features, ref)


def test_cli_equals_pytorch_fid_on_folders(state_dict, tmp_path, capsys):
  """``python -m inception_jax.fid A B --mode pytorch_fid --dims 64`` against pytorch-fid's
  statistics of the same files; an unreadable file in A is skipped, named and counted (pytorch-fid
  would stop on it, so it gets the readable files). 64-d features keep both sides cheap; 90
  images of 32x32 (CIFAR-sized) make the covariances full rank."""
  import torch
  from PIL import Image
  from pytorch_fid import fid_score
  from pytorch_fid.inception import InceptionV3
  folders = []
  for k, seed in enumerate((10, 11)):
    folder = tmp_path / f'set{k}'
    folder.mkdir()
    for i, image in enumerate(_images(90, 32, 32, seed) // (k + 1)):
      Image.fromarray(image).save(folder / f'{i:03d}.png')
    folders.append(folder)
  (folders[0] / 'broken.png').write_bytes(b'\x89PNG truncated')
  weights = tmp_path / 'pt_inception.pth'
  torch.save(state_dict, weights)

  from inception_jax.fid.__main__ import main
  assert main([str(folders[0]), str(folders[1]), '--weights', str(weights), '--mode',
               'pytorch_fid', '--dims', '64', '--batch_size', '32', '--no_progress']) == 0
  out = capsys.readouterr()
  assert 'skipped 1 unreadable image(s): broken.png' in out.err
  ours = float(out.out.split('FID:')[1])

  with _pytorch_fid_weights(state_dict):
    ref_net = InceptionV3([0]).eval()
  stats = []
  for folder in folders:
    files = sorted(str(f) for f in folder.glob('*.png') if f.name != 'broken.png')
    stats.append(fid_score.calculate_activation_statistics(files, ref_net, 32, 64, 'cpu', 0))
  ref = fid_score.calculate_frechet_distance(*stats[0], *stats[1])
  assert ours == pytest.approx(ref, rel=1e-4), (ours, ref)


# 13 distinct sizes: up- and down-sampling, tiny, thin, non-square, already 299, beyond 299.
FOLDER_SIZES = ((33, 33), (40, 61), (64, 64), (97, 150), (120, 45), (150, 97), (200, 300),
                (299, 299), (300, 411), (411, 300), (12, 230), (500, 64), (77, 77))


@pytest.fixture(scope='module')
def mixed_folder(tmp_path_factory):
  """One PNG per size of ``FOLDER_SIZES``, in file order."""
  from PIL import Image
  folder = tmp_path_factory.mktemp('mixed')
  for i, (h, w) in enumerate(FOLDER_SIZES):
    Image.fromarray(_images(1, h, w, seed=20 + i)[0]).save(folder / f'{i:02d}.png')
  return folder


def _folder_features(state_dict, folder, mode):
  extractor = _extractor(state_dict, 'pytorch_fid', mode, ('64',), batch_size=4)
  result = fid.extract_folder(extractor, folder, keep=('64',), stats=('64',), num_workers=2)
  return extractor, result


def _assert_same_statistics(result, features=None, mu=None, sigma=None):
  if features is not None:
    assert_parity(result.kept['64'], features)
    mu, sigma = features.astype(np.float64).mean(0), np.cov(features, rowvar=False)
  assert_parity(result.stats['64'].mu, mu)
  assert_parity(result.stats['64'].sigma, sigma)


def test_folder_of_many_sizes_compiles_once_tf1_equals_torch_fidelity(state_dict, mixed_folder,
                                                                       tmp_path):
  """13 sizes in batches of 4 (the last padded): one trace of the network for the whole folder,
  and torch-fidelity's features and statistics, each image read by its own dataset class and
  fed alone (torch-fidelity batches images of one size only)."""
  require('torch_fidelity')
  import torch
  from torch_fidelity.datasets import ImagesPathDataset
  from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
  extractor, result = _folder_features(state_dict, mixed_folder, 'tf1')
  assert extractor.traces == 1 and extractor._run._cache_size() == 1
  assert result.count == len(FOLDER_SIZES) and not result.skipped
  path = tmp_path / 'weights.pth'
  torch.save(state_dict, path)
  ref_net = FeatureExtractorInceptionV3('inception-v3-compat', ['64'],
                                        feature_extractor_weights_path=str(path))
  dataset = ImagesPathDataset(fid.image_files(mixed_folder))
  with torch.no_grad():
    ref = np.concatenate([ref_net(dataset[i][None])[0].numpy() for i in range(len(dataset))])
  _assert_same_statistics(result, features=ref)


def test_folder_of_many_sizes_compiles_once_pytorch_fid_statistics(state_dict, mixed_folder):
  """pytorch-fid's own statistics of the folder (its loader, batch size 1: it cannot batch
  images of several sizes) against one trace of ours in batches of 4."""
  from pytorch_fid import fid_score
  from pytorch_fid.inception import InceptionV3
  extractor, result = _folder_features(state_dict, mixed_folder, 'pytorch_fid')
  assert extractor.traces == 1
  with _pytorch_fid_weights(state_dict):
    ref_net = InceptionV3([0]).eval()
  mu, sigma = fid_score.calculate_activation_statistics(fid.image_files(mixed_folder), ref_net, 1,
                                                        64, 'cpu', 0)
  _assert_same_statistics(result, mu=mu, sigma=sigma)


def test_folder_of_many_sizes_compiles_once_clean_fid_features(state_dict, mixed_folder):
  """clean-fid's own folder reader and resizer (get_folder_features, mode 'clean') feeding the
  same network's 64-d features (its torchscript graph with (x - 128) / 128 inside, here
  pytorch-fid's port of it), against one trace of ours."""
  require('cleanfid')
  import torch
  from cleanfid import fid as clean_fid
  from pytorch_fid.inception import InceptionV3
  extractor, result = _folder_features(state_dict, mixed_folder, 'clean')
  assert extractor.traces == 1
  with _pytorch_fid_weights(state_dict):
    ref_net = InceptionV3([0], resize_input=False, normalize_input=False).eval()

  def model(batch):  # clean-fid hands over float 0-255 NCHW 299x299 batches
    return ref_net((batch - 128) / 128)[0].mean(dim=(2, 3))
  ref = clean_fid.get_folder_features(str(mixed_folder), model, num_workers=0, batch_size=5,
                                      device=torch.device('cpu'), mode='clean', verbose=False)
  _assert_same_statistics(result, features=ref)


def test_extraction_sharded_and_padded_on_two_devices():
  """On a 2-device mesh, 7 images in batches of 4 (the last padded with a zero image): every
  image counts once, the statistics are those of the unbatched features, one compilation."""
  script = textwrap.dedent('''
      import jax, numpy as np, flax.linen as nn
      from inception_jax import fid
      from inception_jax.models import layers
      assert jax.device_count() == 2
      class Tiny(nn.Module):  # sows PreLogits like the FID network; a dense layer of features
        num_classes: int = 0
        @nn.compact
        def __call__(self, x, train=False):
          return layers.endpoint(self, 'PreLogits',
                                 nn.Dense(2048)(x[:, ::37, ::37, :].reshape(x.shape[0], -1)))
      module = Tiny()
      x = np.random.default_rng(0).integers(0, 256, (7, 31, 45, 3), dtype=np.uint8)
      variables = module.init(jax.random.key(0), np.zeros((1, 299, 299, 3), np.float32))
      extractor = fid.Extractor(module, variables, batch_size=4)
      result = fid.extract(extractor, [x[:5], x[5:]], keep=('pool3',))
      direct = np.asarray(module.apply(variables, fid.normalize(fid.resize(x))))
      assert result.count == 7 and result.kept['pool3'].shape == (7, 2048)
      np.testing.assert_allclose(result.kept['pool3'], direct, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(result.stats['pool3'].mu, direct.astype(np.float64).mean(0),
                                 rtol=1e-5, atol=1e-5)
      assert extractor._run._cache_size() == 1
      print('ok')
  ''')
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'.strip()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]))
  out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-3000:]
