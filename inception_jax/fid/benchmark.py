"""Throughput of FID statistics: ours against pytorch-fid and clean-fid, side by side in one run.

    python -m inception_jax.fid.benchmark --folders --images 500      # real folders, whole tools
    python -m inception_jax.fid.benchmark --batch 16 --batches 3      # the network alone
    python -m inception_jax.fid.benchmark --evaluator 1000 --size 64  # fid.Evaluator per call

``--folders`` makes two folders of ``--images`` JPEGs (one of mixed sizes, each side drawn from
64-500 px; one of a single size, ``--size_one``) and times, each as its own process from launch
to the written ``.npz`` (start-up, weights, compilation and decoding included: what a user
waits for), one after another:

* ``python -m inception_jax.fid --save_stats`` (this project's command line), with the
  compilation cache off: every run compiles the network (a second run with the cache on reads
  it back instead);
* ``python -m pytorch_fid --save-stats``: pytorch-fid batches images with torch's default
  collate, which cannot stack images of several sizes, so a mixed folder needs
  ``--batch-size 1``; the one-size folder runs at ``--batch``;
* clean-fid's ``get_folder_features`` (its loader and PIL-bicubic resize, ``mode='clean'``) and
  ``np.cov``, as its ``compute_fid`` does; its network is a torchscript file that cannot be
  fetched offline, so pytorch-fid's eager port of the same graph stands in for it.

Every tool gets the same random weights in the FID network's layout (the published ones change
nothing about the cost): pytorch-fid finds them where torch.hub caches its download (a temporary
``TORCH_HOME``). Each row records the 1-minute load average before it; the header the CPU model
and its vector extensions (:mod:`inception_jax.machine`).

``--evaluator N`` times :class:`inception_jax.fid.Evaluator` on N generated images of
``--size`` (compiled once beforehand, as in a training loop), and the Fréchet distance alone, and
extrapolates linearly to ``--evaluator_target`` images.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from inception_jax import entry, machine


def _random_fid_state():
  """pytorch-fid's ``fid_inception_v3()`` with random weights: the FID network's layout."""
  import torch
  from pytorch_fid import inception
  torch.manual_seed(0)
  state = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                  init_weights=False).state_dict()
  original = inception.load_state_dict_from_url
  inception.load_state_dict_from_url = lambda *a, **k: state
  try:
    net = inception.fid_inception_v3()
  finally:
    inception.load_state_dict_from_url = original
  return net.state_dict()


def _ours(batch: int, mode: str):
  import jax
  from inception_jax import fid, models
  module = models.create('inception_v3_fid')
  variables = jax.jit(lambda: module.init(jax.random.key(0),
                                          np.zeros((1, 299, 299, 3), np.float32)))()
  return fid.Extractor(module, variables, mode=mode, batch_size=batch)


def _pytorch_fid_network():
  import torch
  from pytorch_fid import inception
  state = _random_fid_state()
  original = inception.load_state_dict_from_url
  inception.load_state_dict_from_url = lambda *a, **k: state
  try:
    net = inception.InceptionV3([3]).eval()
  finally:
    inception.load_state_dict_from_url = original

  def run(x):
    with torch.no_grad():
      return net(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)[0]
  return run


# ------------------------------------------------------------------------ the network alone

def _measure(runs: dict, x: np.ndarray, batches: int) -> dict[str, tuple[float, float]]:
  """Images/s and images per CPU-second of each runner, their timed batches interleaved so that
  both see the same load on a shared machine."""
  import jax
  for fn in runs.values():
    jax.block_until_ready(fn(x))  # warm-up (compilation for ours)
  wall, cpu = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
  for _ in range(batches):
    for name, fn in runs.items():
      w, c = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(x))
      wall[name] += time.perf_counter() - w
      cpu[name] += time.process_time() - c
  n = batches * x.shape[0]
  return {name: (n / wall[name], n / cpu[name]) for name in runs}


def network(args) -> None:
  import jax
  x = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8)
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  runs = {f'inception_jax.fid ({args.mode} resize, jit), {device}': _ours(args.batch, args.mode)}
  if not args.skip_torch:
    import torch
    runs[f'pytorch-fid 0.3.0 (torch {torch.__version__}, {torch.get_num_threads()} threads)'] = \
        _pytorch_fid_network()
  load = machine.load_average()
  results = _measure(runs, x, args.batches)
  load = f'{load:.1f}-{machine.load_average():.1f}'
  print('| implementation | batch | input | images/s | images per CPU-s | load avg 1 min |')
  print('|---|---|---|---|---|---|')
  for name, (rate, per_cpu) in results.items():
    print(f'| {name} | {args.batch} | {args.size}x{args.size} uint8 | {rate:.2f} | {per_cpu:.2f} '
          f'| {load} |')


# ---------------------------------------------------------------------------- real folders

def make_folder(directory: str, num_images: int, *, mixed: bool, size: int = 256,
                lo: int = 64, hi: int = 500, seed: int = 0) -> dict:
  """``num_images`` smooth random JPEGs (quality 90): each side drawn from ``lo``-``hi`` px when
  ``mixed``, else ``size`` x ``size``. Returns how many distinct sizes and the mean pixels."""
  from PIL import Image
  from inception_jax.data.benchmark import _texture
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  shapes = []
  for i in range(num_images):
    h, w = (int(v) for v in rng.integers(lo, hi + 1, 2)) if mixed else (size, size)
    buf = io.BytesIO()
    Image.fromarray(_texture(rng, h, w)).save(buf, format='JPEG', quality=90)
    with open(os.path.join(directory, f'{i:05d}.jpg'), 'wb') as f:
      f.write(buf.getvalue())
    shapes.append((h, w))
  return {'sizes': len(set(shapes)), 'mean_pixels': float(np.mean([h * w for h, w in shapes]))}


_CLEAN_FID = '''
import sys, numpy as np, torch
from cleanfid import fid as clean_fid
from pytorch_fid import inception
folder, weights, out, workers, batch = sys.argv[1:6]
state = torch.load(weights, weights_only=True)
inception.load_state_dict_from_url = lambda *a, **k: state
net = inception.InceptionV3([3], resize_input=False, normalize_input=False).eval()
def model(x):  # clean-fid's graph computes (x - 128) / 128 of its 0-255 input
  return net((x - 128) / 128)[0][:, :, 0, 0]
feats = clean_fid.get_folder_features(folder, model, num_workers=int(workers),
                                      batch_size=int(batch), device=torch.device('cpu'),
                                      mode='clean', verbose=False)
np.savez_compressed(out, mu=np.mean(feats, axis=0), sigma=np.cov(feats, rowvar=False))
'''


def _timed(command: list[str], env: dict, out: str) -> tuple[float, float]:
  """Wall seconds of ``command`` (which must write ``out``) and the load average before it."""
  if os.path.exists(out):
    os.remove(out)
  load = machine.load_average()
  start = time.perf_counter()
  proc = subprocess.run(command, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if proc.returncode or not os.path.exists(out):
    raise RuntimeError(f'{" ".join(command)} failed:\n{proc.stderr[-3000:]}')
  return seconds, load


def folders(args) -> None:
  import torch
  from inception_jax.fid import weights as weights_lib
  workers = args.num_workers if args.num_workers is not None else min(8, os.cpu_count() or 1)
  root = tempfile.mkdtemp(prefix='fid_bench_')
  try:
    mixed, one = os.path.join(root, 'mixed'), os.path.join(root, 'one_size')
    about = {'mixed': make_folder(mixed, args.images, mixed=True),
             'one_size': make_folder(one, args.images, mixed=False, size=args.size_one)}
    torch_home = os.path.join(root, 'torch')
    hub = os.path.join(torch_home, 'hub', 'checkpoints')
    os.makedirs(hub)
    state = _random_fid_state()
    random_weights = os.path.join(root, 'fid_random.pth')  # not a published name: no hash check
    torch.save(state, random_weights)
    shutil.copy(random_weights, os.path.join(hub, weights_lib.DEFAULT_FILE))
    env = dict(os.environ, TORCH_HOME=torch_home)
    out = os.path.join(root, 'stats.npz')
    py = sys.executable

    def ours(folder, batch):
      return [py, '-m', 'inception_jax.fid', '--save_stats', folder, out, '--weights',
              random_weights, '--batch_size', str(batch), '--num_workers', str(workers),
              '--mode', args.mode, '--no_progress', '--force', '--compilation_cache', '']

    def pytorch_fid(folder, batch):
      return [py, '-m', 'pytorch_fid', '--save-stats', folder, out, '--device', 'cpu',
              '--batch-size', str(batch), '--num-workers', str(workers)]

    def clean_fid(folder, batch):
      return [py, '-c', _CLEAN_FID, folder, random_weights, out, str(workers), str(batch)]

    b = args.batch_folder
    rows = [('inception_jax.fid --save_stats', 'mixed', b, ours(mixed, b)),
            ('inception_jax.fid --save_stats', 'one_size', b, ours(one, b)),
            ('python -m pytorch_fid --save-stats', 'mixed', 1, pytorch_fid(mixed, 1)),
            ('python -m pytorch_fid --save-stats', 'one_size', b, pytorch_fid(one, b)),
            ('clean-fid get_folder_features (clean)', 'mixed', b, clean_fid(mixed, b)),
            ('clean-fid get_folder_features (clean)', 'one_size', b, clean_fid(one, b))]
    if args.skip_torch:
      rows = rows[:2]
    cpu = machine.describe()
    print(f'FID statistics of {args.images} JPEGs; {machine.cpu_label(cpu)} '
          f'(usable {cpu["usable_cores"]}); {workers} decoding workers; '
          f'torch {torch.__version__} ({torch.get_num_threads()} threads)')
    print(f'mixed: {about["mixed"]["sizes"]} distinct sizes, sides 64-500 px, mean '
          f'{about["mixed"]["mean_pixels"]:.0f} px; one_size: {args.size_one}x{args.size_one}\n')
    print('| tool | folder | batch | seconds | images/s | load avg 1 min before |')
    print('|---|---|---|---|---|---|')
    for name, folder, batch, command in rows:
      seconds, load = _timed(command, env, out)
      print(f'| {name} | {folder} | {batch} | {seconds:.1f} | {args.images / seconds:.2f} '
            f'| {load:.2f} |', flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------ fid.Evaluator

def evaluator(args) -> None:
  import jax
  from inception_jax import fid
  extractor = _ours(args.batch, args.mode)
  rng = np.random.default_rng(0)
  reference = rng.normal(size=(4096, 2048))
  mu, sigma = reference.mean(0), np.cov(reference, rowvar=False)
  evaluate = fid.Evaluator(extractor, (mu, sigma))
  images = rng.integers(0, 256, (args.evaluator, args.size, args.size, 3), np.uint8)
  evaluate(images[:args.batch])  # compiles the one program for this image shape (and S^1/2)
  load = machine.load_average()
  start = time.perf_counter()
  evaluate(images)
  seconds = time.perf_counter() - start
  start = time.perf_counter()
  fid.frechet_distance(mu, sigma, mu + 0.1, sigma, sqrt_sigma1=evaluate._sqrt_sigma)
  distance = time.perf_counter() - start
  per_image = (seconds - distance) / args.evaluator
  target = args.evaluator_target
  print(f'fid.Evaluator on {machine.cpu_label(machine.describe())}, '
        f'{jax.devices()[0].device_kind} x{jax.device_count()}, batch {args.batch}, '
        f'{args.size}x{args.size} uint8, {args.mode} resize; load avg 1 min before {load:.2f}')
  print(f'{args.evaluator} images: {seconds:.1f} s ({args.evaluator / seconds:.2f} images/s), '
        f'of which the Fréchet distance {distance:.2f} s; {target} images: '
        f'{per_image * target + distance:.0f} s (extrapolated)')


def main(argv=None) -> None:
  parser = entry.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--folders', action='store_true',
                      help='time the three tools on folders of JPEGs (see above)')
  parser.add_argument('--evaluator', type=int, default=0,
                      help='time fid.Evaluator on this many generated images')
  parser.add_argument('--evaluator_target', type=int, default=10000,
                      help='images per evaluation to extrapolate --evaluator to')
  parser.add_argument('--images', type=int, default=500, help='--folders: images per folder')
  parser.add_argument('--size_one', type=int, default=256,
                      help="--folders: side of the one-size folder's images")
  parser.add_argument('--batch_folder', type=int, default=50,
                      help='--folders: batch size of every tool (pytorch-fid: 1 on mixed sizes)')
  parser.add_argument('--num_workers', type=int, default=None,
                      help='--folders: decoding workers of every tool (default: min(8, CPUs))')
  parser.add_argument('--batch', type=int, default=32, help='images per network call')
  parser.add_argument('--batches', type=int, default=4, help='timed batches (network alone)')
  parser.add_argument('--size', type=int, default=64, help='side of the uint8 input images')
  parser.add_argument('--mode', default='tf1', choices=('tf1', 'pytorch_fid', 'clean'),
                      help='our resize mode')
  parser.add_argument('--skip_torch', '--skip-torch', action='store_true',
                      help='time ours alone')
  machine.add_idle_flags(parser)
  args = parser.parse_args(argv)
  entry.quiet(args.verbose)
  machine.require_idle(parser, args)
  if args.folders:
    folders(args)
  elif args.evaluator:
    evaluator(args)
  else:
    network(args)


if __name__ == '__main__':
  sys.exit(entry.run(main))
