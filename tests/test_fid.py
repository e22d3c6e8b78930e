"""inception_jax.fid without the network: resize modes, streamed statistics and their files, and
FID / KID / IS, each against the reference implementation it claims to equal (pytorch-fid,
torch-fidelity, clean-fid), plus the command line's one-line errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from inception_jax import fid
from reference_utils import require

# Odd input sizes: up- and down-sampling, non-square, already 299.
RESIZE_SIZES = ((37, 53), (300, 411), (299, 299))


def _uint8(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _nchw(x):
  import torch
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()


# ------------------------------------------------------------------------------- resize

@pytest.mark.parametrize('size', RESIZE_SIZES)
def test_resize_tf1_is_torch_fidelity_bit_for_bit(size):
  require('torch_fidelity')
  from torch_fidelity.interpolate_compat_tensorflow import (
      interpolate_bilinear_2d_like_tensorflow1x)
  x = _uint8((2, *size, 3))
  ref = interpolate_bilinear_2d_like_tensorflow1x(_nchw(x), size=(299, 299), align_corners=False)
  ours = np.asarray(fid.resize(x, 'tf1'))
  assert ours.shape == (2, 299, 299, 3) and ours.dtype == np.float32
  np.testing.assert_array_equal(ours, ref.numpy().transpose(0, 2, 3, 1))
  host = np.stack([fid.resize_image(image, 'tf1') for image in x])  # one image at a time
  assert host.dtype == np.float32
  np.testing.assert_array_equal(host, ours)


@pytest.mark.parametrize('size', RESIZE_SIZES)
def test_resize_pytorch_fid_is_f_interpolate(size):
  torch = require('torch')
  x = _uint8((2, *size, 3), seed=1)
  # pytorch-fid: ToTensor (x / 255), F.interpolate(bilinear, align_corners=False), 2x - 1.
  ref = torch.nn.functional.interpolate(_nchw(x) / 255, size=(299, 299), mode='bilinear',
                                        align_corners=False)
  ref = (2 * ref - 1).numpy().transpose(0, 2, 3, 1)
  ours = np.asarray(fid.normalize(fid.resize(x, 'pytorch_fid'), 'pytorch_fid'))
  np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
  host = np.stack([fid.resize_image(image, 'pytorch_fid') for image in x])
  np.testing.assert_allclose(fid.normalize(host, 'pytorch_fid'), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize('size', RESIZE_SIZES)
def test_resize_clean_is_clean_fid_pil_bicubic(size):
  require('cleanfid')
  from cleanfid.resize import build_resizer
  x = _uint8((2, *size, 3), seed=2)
  ref = np.stack([build_resizer('clean')(image) for image in x])
  np.testing.assert_array_equal(fid.resize(x, 'clean'), ref)
  np.testing.assert_array_equal(np.stack([fid.resize_image(image, 'clean') for image in x]), ref)


def test_resize_float_input_and_jit_equal_uint8():
  x = _uint8((1, 40, 61, 3), seed=3)
  eager = np.asarray(fid.resize(x, 'tf1'))
  jitted = np.asarray(jax.jit(lambda a: fid.resize(a, 'tf1'))(x.astype(np.float32)))
  np.testing.assert_array_equal(eager, jitted)


def test_resize_rejects_bad_input():
  with pytest.raises(ValueError, match='resize mode must be one of'):
    fid.resize(_uint8((1, 8, 8, 3)), 'bicubic')
  with pytest.raises(ValueError, match='NHWC with 3 channels'):
    fid.resize(_uint8((1, 3, 8, 8)), 'tf1')
  with pytest.raises(ValueError, match='HWC with 3 channels'):
    fid.resize_image(_uint8((1, 8, 8, 3)), 'tf1')


# --------------------------------------------------------------------------- statistics

def test_running_stats_equal_np_cov_over_uneven_batches():
  rng = np.random.default_rng(0)
  # An offset far larger than the spread: naive float32 sums of squares lose it all.
  x = (1e4 + rng.normal(size=(203, 16))).astype(np.float32)
  stats = fid.RunningStats(chunk=60)  # flushes inside the stream and at the end
  for lo, hi in ((0, 1), (1, 50), (50, 50), (50, 120), (120, 203)):
    stats.update(x[lo:hi])
  assert stats.count == 203
  x64 = x.astype(np.float64)
  np.testing.assert_allclose(stats.mu, x64.mean(0), rtol=1e-14)
  np.testing.assert_allclose(stats.sigma, np.cov(x64, rowvar=False), rtol=1e-10, atol=1e-12)


def test_running_stats_errors():
  stats = fid.RunningStats(4)
  with pytest.raises(fid.StatsError, match='at least 2 feature rows, have 1'):
    stats.update(np.zeros((1, 4))).sigma
  with pytest.raises(fid.StatsError, match='features have 5 dims, the statistics 4'):
    stats.update(np.zeros((2, 5)))


def test_stats_file_round_trip_with_pytorch_fid(tmp_path):
  require('pytorch_fid')
  from pytorch_fid.fid_score import compute_statistics_of_path
  rng = np.random.default_rng(0)
  a = rng.normal(size=(50, 8))
  mu, sigma = a.mean(0), np.cov(a, rowvar=False)
  ours = fid.save_stats(tmp_path / 'ours', mu, sigma, count=50)
  assert ours.endswith('ours.npz')
  # pytorch-fid reads our file (its .npz branch needs no model) ...
  m, s = compute_statistics_of_path(ours, None, 50, 2048, 'cpu')
  np.testing.assert_array_equal(m, mu)
  np.testing.assert_array_equal(s, sigma)
  # ... and we read a file written as pytorch-fid's save_fid_stats and clean-fid write theirs.
  theirs = tmp_path / 'theirs.npz'
  np.savez_compressed(theirs, mu=m.astype(np.float32), sigma=s)
  m2, s2 = fid.load_stats(theirs)
  assert m2.dtype == np.float64
  np.testing.assert_array_equal(s2, sigma)


@pytest.mark.parametrize('arrays, message', [
    (dict(mu=np.zeros(3), sigma=np.zeros((2, 2))), r'mu must be \(d,\) and sigma \(d, d\)'),
    (dict(mean=np.zeros(3)), 'needs arrays "mu" and "sigma"'),
    (dict(mu=np.full(2, np.nan), sigma=np.eye(2)), 'non-finite'),
])
def test_bad_stats_files_are_named(tmp_path, arrays, message):
  path = tmp_path / 'bad.npz'
  np.savez(path, **arrays)
  with pytest.raises(fid.StatsError, match=message):
    fid.load_stats(path)


# ------------------------------------------------------------------------------ metrics

def _gaussian_stats(n, d, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * scale + rng.normal(size=d)
  return x.mean(0), np.cov(x, rowvar=False)


def test_frechet_distance_equals_pytorch_fid_when_well_conditioned():
  require('pytorch_fid')
  from pytorch_fid.fid_score import calculate_frechet_distance
  for d in (2, 64):
    mu1, s1 = _gaussian_stats(4 * d + 10, d, 0)
    mu2, s2 = _gaussian_stats(4 * d + 10, d, 1, scale=1.3)
    ref = calculate_frechet_distance(mu1, s1, mu2, s2)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)
    # The reference side's square root computed once (fid.Evaluator): the same arithmetic.
    assert fid.frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=fid.sqrt_psd(s1)) == ours
  assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9 * np.trace(s1))


def test_frechet_distance_with_fewer_samples_than_dims():
  """Rank-deficient covariances (n < d): tr (S1 S2)^1/2 equals the nuclear norm of A B^T for
  S1 = A^T A, S2 = B^T B, an independent float64 reference (singular values of an n x n).
  Measured: ours 1e-15 relative; scipy's sqrtm of S1 S2 (pytorch-fid) 1e-7 with imaginary parts."""
  rng = np.random.default_rng(0)
  n, d = 40, 256
  x, y = rng.normal(size=(n, d)), 0.5 * rng.normal(size=(n, d)) + 0.1
  a = (x - x.mean(0)) / np.sqrt(n - 1)
  b = (y - y.mean(0)) / np.sqrt(n - 1)
  s1, s2 = a.T @ a, b.T @ b
  expected = np.linalg.svd(a @ b.T, compute_uv=False).sum()
  assert fid.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-12)
  diff = x.mean(0) - y.mean(0)
  ref_fid = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * expected
  assert fid.frechet_distance(x.mean(0), s1, y.mean(0), s2) == pytest.approx(ref_fid, rel=1e-9)


def test_frechet_distance_near_singular_and_ill_conditioned():
  """Commuting covariances with eigenvalues over 16 decades, half of them (numerically) zero:
  tr (S1 S2)^1/2 = sum sqrt(a_i b_i) exactly. Eigenvalues of S1^1/2 S2 S1^1/2 at its rounding
  level count as zero, which bounds the error (measured 3.5e-7 on the trace, 1.5e-8 on FID)."""
  rng = np.random.default_rng(1)
  d = 128
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = np.concatenate([np.logspace(0, -16, d // 2), np.zeros(d // 2)])
  b = rng.permutation(np.logspace(1, -6, d))
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  expected = np.sqrt(a * b).sum()
  ours = fid.trace_sqrt_product(s1, s2)
  assert ours == pytest.approx(expected, rel=1e-6), (ours, expected)
  value = fid.frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
  assert np.isfinite(value) and isinstance(value, float)
  assert value == pytest.approx(a.sum() + b.sum() - 2 * expected, rel=1e-7)


def test_frechet_distance_rejects_what_is_not_a_covariance():
  with pytest.raises(ValueError, match='sigma1 is not positive semi-definite'):
    fid.frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match=r'sigma1 and sigma2 must be \(3, 3\)'):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
  with pytest.raises(ValueError, match='mu2 has non-finite values'):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.array([0, np.inf]), np.eye(2))


def test_kid_equals_torch_fidelity():
  require('torch_fidelity')
  import torch
  from torch_fidelity.metric_kid import kid_features_to_metric
  rng = np.random.default_rng(0)
  f1 = rng.normal(size=(120, 32)).astype(np.float32)
  f2 = (rng.normal(size=(90, 32)) * 1.2 + 0.2).astype(np.float32)
  ref = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=7,
                               kid_subset_size=50, verbose=False, rng_seed=2020)
  mean, std = fid.kernel_inception_distance(f1, f2, subsets=7, subset_size=50, seed=2020)
  # torch-fidelity sums the kernels in float32, here in float64.
  assert mean == pytest.approx(ref['kernel_inception_distance_mean'], rel=1e-4)
  assert std == pytest.approx(ref['kernel_inception_distance_std'], rel=1e-3)
  other, _ = fid.kernel_inception_distance(f1, f2, subsets=7, subset_size=50, seed=1)
  assert other != mean  # the seed picks the subsets
  with pytest.raises(ValueError, match='subset_size=100 needs at least that many'):
    fid.kernel_inception_distance(f1, f2, subset_size=100)


def test_inception_score_equals_torch_fidelity():
  require('torch_fidelity')
  import torch
  from torch_fidelity.metric_isc import isc_features_to_metric
  logits = np.random.default_rng(0).normal(size=(103, 1008)).astype(np.float32) * 3
  for shuffle in (True, False):
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=shuffle,
                                 rng_seed=2020)
    mean, std = fid.inception_score(logits, splits=10, shuffle=shuffle, seed=2020)
    assert mean == pytest.approx(ref['inception_score_mean'], rel=1e-9)
    assert std == pytest.approx(ref['inception_score_std'], rel=1e-6)


# -------------------------------------------------------------------- folders and the CLI

def test_folder_listing_and_unreadable_images(tmp_path):
  from PIL import Image
  Image.fromarray(_uint8((9, 11, 3))).save(tmp_path / 'b.png')
  Image.fromarray(_uint8((9, 11), seed=1), mode='L').save(tmp_path / 'a.jpg')
  (tmp_path / 'c.png').write_bytes(b'not an image')
  (tmp_path / 'notes.txt').write_text('ignored')
  files = fid.image_files(tmp_path)
  assert [os.path.basename(f) for f in files] == ['a.jpg', 'b.png', 'c.png']
  assert fid.read_image(files[0]).shape == (9, 11, 3)  # greyscale -> RGB


def test_check_images_catches_minus_one_to_one_outputs():
  from inception_jax.fid.extract import check_images
  with pytest.raises(ValueError, match=r'0-255 values, got the range \[-1, 1\]'):
    check_images(np.linspace(-1, 1, 12 * 3).reshape(1, 2, 6, 3).astype(np.float32))


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
       os.environ.get('PYTHONPATH', '')]))
  return subprocess.run([sys.executable, '-m', 'inception_jax.fid', *args], env=env,
                        capture_output=True, text=True, timeout=120)


def test_cli_one_line_errors(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  bad = tmp_path / 'bad.npz'
  np.savez(bad, mu=np.zeros(3), sigma=np.zeros((2, 2)))
  for args, message in (((str(empty), str(bad)), f'FATAL: {empty}: no images'),
                        ((str(bad), str(empty)), f'FATAL: {bad}: mu must be (d,)')):
    out = _cli(*args)
    assert out.returncode == 1
    assert out.stderr.strip().startswith(message) and out.stderr.count('\n') == 1, out.stderr


def test_cli_fid_of_two_statistics_files(tmp_path):
  require('pytorch_fid')
  from pytorch_fid.fid_score import calculate_frechet_distance
  mu1, s1 = _gaussian_stats(40, 8, 0)
  mu2, s2 = _gaussian_stats(40, 8, 1)
  fid.save_stats(tmp_path / 'a.npz', mu1, s1)
  fid.save_stats(tmp_path / 'b.npz', mu2, s2)
  out = _cli(str(tmp_path / 'a.npz'), str(tmp_path / 'b.npz'))
  assert out.returncode == 0, out.stderr
  value = float(out.stdout.split('FID:')[1])
  assert value == pytest.approx(calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-6)


def _one_image_folder(tmp_path):
  from PIL import Image
  folder = tmp_path / 'images'
  folder.mkdir()
  Image.fromarray(_uint8((8, 8, 3))).save(folder / 'a.png')
  return folder


def _fatal_line(capsys):
  err = capsys.readouterr().err
  assert err.startswith('FATAL: ') and err.count('\n') == 1, err
  return err


def test_cli_offline_says_which_weights_file_goes_where(tmp_path, monkeypatch, capsys):
  """Nothing in the torch hub cache nor the project's cache, no network: one line with the URL,
  where pytorch-fid keeps the file, and the flag that passes it."""
  import urllib.error
  from inception_jax.convert import known
  from inception_jax.fid.__main__ import main

  def offline(*args, **kwargs):
    raise urllib.error.URLError('no network')
  monkeypatch.setattr(known.urllib.request, 'urlopen', offline)
  monkeypatch.setenv('INCEPTION_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
  folder = _one_image_folder(tmp_path)
  assert main([str(folder), str(folder), '--no_progress']) == 1
  err = _fatal_line(capsys)
  assert 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/' \
         'pt_inception-2015-12-05-6726825d.pth' in err
  hub = tmp_path / 'torch' / 'hub' / 'checkpoints'
  assert f'put it at {hub / "pt_inception-2015-12-05-6726825d.pth"}' in err
  assert 'or pass the file with --weights FILE' in err


def test_cli_looks_in_the_torch_hub_cache_and_checks_the_published_hash(tmp_path, monkeypatch,
                                                                        capsys):
  """A file under a published name in $TORCH_HOME/hub/checkpoints (pytorch-fid's or
  torch-fidelity's) is found without --weights, and refused when its SHA-256 does not start with
  the hash the name carries (a truncated download)."""
  from inception_jax.fid.__main__ import main
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
  monkeypatch.setenv('INCEPTION_JAX_CACHE', str(tmp_path / 'cache'))
  hub = tmp_path / 'torch' / 'hub' / 'checkpoints'
  hub.mkdir(parents=True)
  folder = _one_image_folder(tmp_path)
  for name in ('weights-inception-2015-12-05-6726825d.pth',
               'pt_inception-2015-12-05-6726825d.pth'):  # the second is looked for first
    (hub / name).write_bytes(b'truncated download')
    assert main([str(folder), str(folder), '--no_progress']) == 1
    err = _fatal_line(capsys)
    assert err.startswith(f'FATAL: {hub / name}: SHA-256 ')
    assert 'does not start with 6726825d' in err


@pytest.mark.parametrize('library', ['timm', 'torchvision'])
def test_cli_refuses_an_imagenet_inception_v3(tmp_path, capsys, library):
  """An ImageNet Inception-v3 has the FID network's layer names and converts; it is refused, as
  safetensors and as a torch state dict, in one line naming the file and the FID graph."""
  torch = require('torch')
  from inception_jax.fid.__main__ import main
  if library == 'timm':
    timm = require('timm')
    state = timm.create_model('inception_v3', pretrained=False).state_dict()
    found = '1000 classes (fc.weight (1000, 2048)), an ImageNet Inception-v3;'
  else:
    torchvision = require('torchvision')
    state = torchvision.models.inception_v3(weights=None, init_weights=False).state_dict()
    found = '1000 classes (fc.weight (1000, 2048)), an ImageNet Inception-v3 with its auxiliary'
  from safetensors.torch import save_file
  files = [tmp_path / f'{library}_v3.safetensors', tmp_path / f'{library}_v3.pth']
  save_file({k: v.contiguous() for k, v in state.items()}, files[0])
  torch.save(state, files[1])
  folder = _one_image_folder(tmp_path)
  for file in files:
    assert main([str(folder), str(folder), '--weights', str(file), '--no_progress']) == 1
    err = _fatal_line(capsys)
    assert err.startswith(f'FATAL: {file} is not the FID network: it has {found}'), err
    assert 'expected the FID network (TF inception-2015-12-05: 1008 classes' in err


def test_weights_verify_names_missing_and_unexpected_tensors():
  from inception_jax.fid import weights
  state = {k: np.zeros((1008, 2048) if k == 'fc.weight' else (1,), np.float32)
           for k in weights.expected_keys()}
  weights.verify(state, 'ok.pth')  # the FID network's tensors: accepted (shapes: the conversion)
  del state['Mixed_7c.branch_pool.conv.weight']
  state['Mixed_7c.branch_pool.extra'] = np.zeros(1)
  with pytest.raises(weights.WeightsError, match=r'^x.pth is not the FID network: it lacks '
                     r'Mixed_7c.branch_pool.conv.weight and has unexpected '
                     r'Mixed_7c.branch_pool.extra; expected the FID network'):
    weights.verify(state, 'x.pth')


def test_cli_save_stats_refuses_to_overwrite_without_force(tmp_path, capsys):
  from inception_jax.fid.__main__ import main
  folder = _one_image_folder(tmp_path)
  out = tmp_path / 'stats.npz'
  out.write_bytes(b'precious')
  for flag in ('--save_stats', '--save-stats'):
    assert main([flag, str(folder), str(out), '--no_progress']) == 1
    assert _fatal_line(capsys) == (f'FATAL: --save_stats: {out} exists; pass --force to '
                                   f'overwrite it\n')
  assert out.read_bytes() == b'precious'
  # --force goes past the refusal (and stops at the missing weights, before writing anything).
  missing = tmp_path / 'none.pth'
  assert main(['--save_stats', '--force', str(folder), str(out), '--weights', str(missing)]) == 1
  assert _fatal_line(capsys).startswith(f'FATAL: --weights {missing}: no such file')
  assert out.read_bytes() == b'precious'


def test_cli_flags_pytorch_fid_spellings_and_help():
  """Underscores, with pytorch-fid's dashed spellings as aliases; every option has help."""
  from inception_jax.fid.__main__ import _parser
  parser = _parser()
  args = parser.parse_args(['a', 'b', '--batch-size', '8', '--num-workers', '3', '--save-stats',
                            '--device', 'cpu', '--dims', '64', '--kid-subset-size', '10'])
  assert (args.batch_size, args.num_workers, args.save_stats, args.device, args.dims,
          args.kid_subset_size) == (8, 3, True, 'cpu', 64, 10)
  args = parser.parse_args(['a', 'b', '--batch_size', '4', '--num_workers', '0', '--save_stats'])
  assert (args.batch_size, args.num_workers, args.save_stats) == (4, 0, True)
  for action in parser._actions:
    assert action.help, action.option_strings
    long = [o for o in action.option_strings if o.startswith('--')]
    assert not long or '-' not in long[0][2:], long  # the first spelling uses underscores


def test_evaluator_streams_batches_into_fid_kid_and_is():
  """The in-training evaluator on a stand-in network (the FID network's end point and classifier
  names, a fraction of its cost; the 64-d features keep the host's eigen-decompositions small):
  its metrics are those of the directly computed features."""
  import flax.linen as nn
  from inception_jax.models import layers

  class Tiny(nn.Module):
    num_classes: int = 1008

    @nn.compact
    def __call__(self, x, train=False):
      stem = layers.endpoint(self, 'MaxPool_3a_3x3', nn.Conv(64, (1, 1))(x[:, ::37, ::37, :]))
      features = layers.endpoint(self, 'PreLogits', nn.Dense(2048)(stem.mean(axis=(1, 2))))
      return nn.Dense(self.num_classes, name='Logits')(features)

  module = Tiny()
  variables = module.init(jax.random.key(0), np.zeros((1, 299, 299, 3), np.float32))
  reference, generated = _uint8((90, 20, 20, 3), seed=5), _uint8((70, 33, 17, 3), seed=6) // 2
  extractor = fid.Extractor(module, variables, batch_size=32)
  evaluator = fid.Evaluator(extractor, reference, kid=True, isc=True, kid_subset_size=50,
                            kid_subsets=3, splits=2, feature='64')
  metrics = evaluator(iter([generated[:40], generated[40:]]))

  @jax.jit
  def direct(x):
    _, state = module.apply(variables, fid.normalize(fid.resize(x)), mutable=['intermediates'])
    points = state['intermediates']['endpoints']
    return (points['MaxPool_3a_3x3'].mean(axis=(1, 2)),
            points['PreLogits'] @ variables['params']['Logits']['kernel'])

  ref64 = np.asarray(direct(reference)[0], np.float64)
  gen64, gen_logits = (np.asarray(a, np.float64) for a in direct(generated))
  expected = fid.frechet_distance(gen64.mean(0), np.cov(gen64, rowvar=False),
                                  ref64.mean(0), np.cov(ref64, rowvar=False))
  assert metrics['fid'] == pytest.approx(expected, rel=1e-4)
  kid = fid.kernel_inception_distance(gen64, ref64, subsets=3, subset_size=50)
  assert (metrics['kid'], metrics['kid_std']) == pytest.approx(kid, rel=1e-3)
  isc = fid.inception_score(gen_logits, splits=2)
  assert (metrics['is'], metrics['is_std']) == pytest.approx(isc, rel=1e-4)
  with pytest.raises(ValueError, match='KID needs reference images'):
    fid.Evaluator(extractor, (np.zeros(2048), np.eye(2048)), kid=True)


def test_importing_fid_imports_neither_tensorflow_nor_torch():
  code = ('import sys; import inception_jax.fid, inception_jax.fid.__main__; '
          'bad = [m for m in ("tensorflow", "torch", "keras") if m in sys.modules]; '
          'assert not bad, bad')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]))
  subprocess.run([sys.executable, '-c', code], check=True, env=env)
