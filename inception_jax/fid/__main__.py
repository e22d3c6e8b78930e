"""FID between two folders of images or .npz statistics files, with pytorch-fid's flags.

    python -m inception_jax.fid real/ fake/                     # FID (TF1 resize: the original)
    python -m inception_jax.fid cifar10_train.npz fake/ --kid --isc
    python -m inception_jax.fid --save_stats real/ real_stats.npz
    python -m inception_jax.fid real/ fake/ --mode clean        # clean-fid's numbers

Images of any size: each is decoded and resized to 299x299 on the host by --num_workers
threads, so one compiled program serves the whole folder. Flags use underscores; pytorch-fid's
dashed spellings (--batch-size, --num-workers, --save-stats) are accepted too.

Weights: --weights takes pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torch-fidelity's
weights-inception-2015-12-05-6726825d.pth, or a converted-weights folder; without it the file is
looked for in $TORCH_HOME/hub/checkpoints (where pytorch-fid keeps it) and this project's cache,
then downloaded (offline, the error says which file goes where). Weights that are not the FID
network's (an ImageNet Inception-v3, say) are refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m inception_jax.fid', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('paths', nargs=2, metavar='PATH',
                      help='folders of images or .npz statistics (mu, sigma)')
  parser.add_argument('--mode', default='tf1', choices=('tf1', 'pytorch_fid', 'clean'),
                      help='resize (and normalisation) of the reference to reproduce '
                           '(default: %(default)s)')
  parser.add_argument('--batch_size', '--batch-size', type=int, default=50,
                      help='images per device call, a multiple of the device count '
                           '(default: %(default)s)')
  parser.add_argument('--num_workers', '--num-workers', type=int, default=None,
                      help='threads that decode and resize images (default: min(8, CPUs); 0: '
                           'the main thread)')
  parser.add_argument('--device', choices=('cpu', 'gpu', 'tpu'), default=None,
                      help="JAX backend to run on (default: JAX's choice, an accelerator if any)")
  parser.add_argument('--dims', type=int, default=2048, choices=(2048, 768, 192, 64),
                      help="pytorch-fid's --dims: which features FID compares (default: "
                           '%(default)s)')
  parser.add_argument('--kid', action='store_true', help='also the KID (both paths folders)')
  parser.add_argument('--kid_subset_size', '--kid-subset-size', type=int, default=1000,
                      help="KID's subset size, as torch-fidelity's (default: %(default)s)")
  parser.add_argument('--isc', action='store_true', help='also the Inception Score of each folder')
  parser.add_argument('--save_stats', '--save-stats', action='store_true',
                      help='write the statistics of the first path (a folder) to the second '
                           '(a new .npz file)')
  parser.add_argument('--force', action='store_true',
                      help='with --save_stats: overwrite an existing statistics file')
  parser.add_argument('--weights',
                      help="the FID network: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, "
                           "torch-fidelity's weights-inception-2015-12-05-6726825d.pth or a "
                           'converted-weights folder (default: the torch hub cache, then this '
                           "project's cache, then a download)")
  parser.add_argument('--compilation_cache', default=default_compilation_cache(),
                      help="JAX's persistent compilation cache: a second run reads the compiled "
                           "network back instead of compiling it; '' turns it off (default: "
                           '%(default)s)')
  parser.add_argument('--cpu_convolutions', default='auto', choices=('auto', 'xla', 'ynnpack'),
                      help="XLA:CPU's convolutions (inception_jax.machine.set_cpu_convolutions; "
                           "auto: XLA's emitter, the faster at 299x299)")
  parser.add_argument('--no_progress', action='store_true',
                      help='no progress bar or images/s summary')
  return parser


def default_compilation_cache() -> str:
  """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/inception_jax/jax_cache``
  (``~/.cache/...``): the cache the training entry points share."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'inception_jax', 'jax_cache')


def _setup_jax(args) -> None:
  """Before any JAX backend starts: the convolution library, the compilation cache, the
  backend (``--device``). Called in a process whose JAX already runs (``main`` from Python),
  the process' settings stay as they are."""
  import jax
  from jax._src import xla_bridge
  from inception_jax import machine
  from inception_jax.errors import UserError
  if xla_bridge.backends_are_initialized():
    running = jax.default_backend()
    if args.device and {'cuda': 'gpu', 'rocm': 'gpu'}.get(running, running) != args.device:
      raise UserError(f'--device {args.device}: JAX already runs on {running} in this process')
    return
  machine.set_cpu_convolutions(args.cpu_convolutions, 299, training=False)
  if args.compilation_cache:
    directory = os.path.abspath(os.path.expanduser(args.compilation_cache))
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as err:
      raise UserError(f'--compilation_cache {args.compilation_cache}: {err}') from None
    jax.config.update('jax_compilation_cache_dir', directory)
    if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  if args.device is not None:
    jax.config.update('jax_platforms', args.device)  # JAX's own names ('gpu': CUDA or ROCm)
    try:
      jax.devices()
    except RuntimeError as err:
      raise UserError(f'--device {args.device}: no {args.device.upper()} backend available to '
                      f'JAX ({str(err).splitlines()[0]})') from None


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s: %(message)s')
  from inception_jax.errors import UserError
  try:
    return _run(args)
  except UserError as err:  # one line, no traceback; any other exception is a bug
    print(f'FATAL: {err}', file=sys.stderr)
    return 1


def _run(args) -> int:
  from inception_jax import fid
  from inception_jax.errors import UserError
  from inception_jax.fid import weights as weights_lib
  feature = 'pool3' if args.dims == 2048 else str(args.dims)
  is_stats = [p.endswith('.npz') for p in args.paths]
  if args.batch_size <= 0:
    raise UserError(f'--batch_size={args.batch_size} must be positive')
  if args.num_workers is not None and args.num_workers < 0:
    raise UserError(f'--num_workers={args.num_workers} must be 0 or more')
  if args.force and not args.save_stats:
    raise UserError('--force only applies to --save_stats')
  if args.save_stats:
    if is_stats[0]:
      raise UserError(f'--save_stats: {args.paths[0]} must be a folder of images')
    out = args.paths[1] if args.paths[1].endswith('.npz') else args.paths[1] + '.npz'
    if os.path.exists(out) and not args.force:
      raise UserError(f'--save_stats: {out} exists; pass --force to overwrite it')
  if args.kid and any(is_stats):
    raise UserError('--kid needs two folders of images (statistics files hold no features)')
  for i, (p, stats) in enumerate(zip(args.paths, is_stats)):
    if args.save_stats and i == 1:
      break
    if stats and not os.path.isfile(p):
      raise UserError(f'{p}: no such statistics file')
    if not stats:
      fid.image_files(p)  # an empty or missing folder fails before the network loads
    else:
      fid.load_stats(p)  # and so does a statistics file of the wrong shape
  _setup_jax(args)
  extractor = None
  folders = [p for i, (p, stats) in enumerate(zip(args.paths, is_stats))
             if not stats and not (args.save_stats and i == 1)]
  if folders:
    import jax
    devices = jax.device_count()
    if args.batch_size % devices:
      raise UserError(f'--batch_size={args.batch_size} must be a multiple of the device count '
                      f'({devices})')
    # Folders smaller than a batch: one smaller batch shape rather than padding rows.
    largest = max(len(fid.image_files(p)) for p in folders)
    batch_size = min(args.batch_size, -(-largest // devices) * devices)
    module, variables = weights_lib.load(args.weights)
    features = [feature] + (['logits_unbiased'] if args.isc else [])
    extractor = fid.Extractor(module, variables, mode=args.mode, batch_size=batch_size,
                              features=features)

  results = []
  for i, (path, stats) in enumerate(zip(args.paths, is_stats)):
    if args.save_stats and i == 1:
      break
    if stats:
      results.append((fid.load_stats(path), None))
      continue
    keep = ([feature] if args.kid else []) + (['logits_unbiased'] if args.isc else [])
    result = fid.extract_folder(extractor, path, keep=keep, stats=(feature,),
                                progress=not args.no_progress, num_workers=args.num_workers)
    if result.skipped:
      print(f'{path}: skipped {len(result.skipped)} unreadable image(s): '
            + ', '.join(os.path.basename(f) for f, _ in result.skipped), file=sys.stderr)
    if not args.no_progress:
      print(f'{path}: {result.count} images in {result.seconds:.1f} s '
            f'({result.images_per_second:.1f} images/s)', file=sys.stderr)
    s = result.stats[feature]
    results.append(((s.mu, s.sigma), result))
    if args.isc:
      mean, std = fid.inception_score(result.kept['logits_unbiased'])
      print(f'IS {path}: {mean:.6f} ± {std:.6f}')

  if args.save_stats:
    (mu, sigma), result = results[0]
    out = fid.save_stats(args.paths[1], mu, sigma, count=result.count)
    print(f'wrote statistics of {result.count} images to {out}')
    return 0
  (mu1, sigma1), r1 = results[0]
  (mu2, sigma2), r2 = results[1]
  if mu1.shape != mu2.shape:
    raise UserError(f'{args.paths[0]} and {args.paths[1]} have statistics of {mu1.shape[0]} and '
                    f'{mu2.shape[0]} dims')
  try:
    value = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  except ValueError as err:  # a statistics file whose sigma is not a covariance
    raise UserError(f'{args.paths[0]}, {args.paths[1]}: {err}') from None
  print(f'FID: {value:.6f}')
  if args.kid:
    a, b = r1.kept[feature], r2.kept[feature]
    size = min(args.kid_subset_size, len(a), len(b))
    mean, std = fid.kernel_inception_distance(a, b, subset_size=size)
    print(f'KID: {mean:.6f} ± {std:.6f} (subsets of {size})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
