"""FID between two folders of images or ``.npz`` statistics files, as pytorch-fid's command line.

    python -m inception_jax.fid real/ fake/                     # FID (TF1 resize: the original)
    python -m inception_jax.fid cifar10_train.npz fake/ --kid --isc
    python -m inception_jax.fid --save-stats real/ real_stats.npz
    python -m inception_jax.fid real/ fake/ --mode clean        # clean-fid's numbers

Weights: ``--weights`` takes pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``, or a converted-weights folder;
without it the pytorch-fid file is fetched (offline, the error says where to put it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _load_network(weights: str | None, source: str):
  from inception_jax import convert, pretrained
  if weights and os.path.isdir(weights):
    module, variables, meta = pretrained.load(weights)
    if meta['model'] != 'inception_v3_fid':
      raise ValueError(f'{weights} holds {meta["model"]}, not the FID network inception_v3_fid')
    return module, variables
  if weights is None:
    weights = pretrained.fetch(f'{source}/inception-2015-12-05')
  return convert.from_torch('inception_v3_fid', weights, source=source)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m inception_jax.fid', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('paths', nargs=2, metavar='PATH',
                      help='folders of images or .npz statistics (mu, sigma)')
  parser.add_argument('--mode', default='tf1', choices=('tf1', 'pytorch_fid', 'clean'),
                      help='resize (and normalisation) of the reference to reproduce')
  parser.add_argument('--batch', type=int, default=50, help='images per device call')
  parser.add_argument('--dims', default='2048', choices=('2048', '768', '192', '64'),
                      help="pytorch-fid's --dims: which features FID compares")
  parser.add_argument('--kid', action='store_true', help='also the KID (both paths folders)')
  parser.add_argument('--kid-subset-size', type=int, default=1000)
  parser.add_argument('--isc', action='store_true', help='also the Inception Score of each folder')
  parser.add_argument('--save-stats', action='store_true',
                      help='write the statistics of the first path (a folder) to the second')
  parser.add_argument('--weights', help='the FID network: .pth file or converted-weights folder')
  parser.add_argument('--source', default='pytorch_fid', choices=('pytorch_fid', 'torch_fidelity'),
                      help='whose .pth --weights is (the keys are the same)')
  parser.add_argument('--no-progress', action='store_true', help='no progress bar')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s: %(message)s')
  try:
    return _run(args)
  except (ValueError, FileNotFoundError, RuntimeError) as err:  # one line, no traceback
    print(f'error: {err}', file=sys.stderr)
    return 2


def _run(args) -> int:
  from inception_jax import fid
  feature = 'pool3' if args.dims == '2048' else args.dims
  is_stats = [p.endswith('.npz') for p in args.paths]
  if args.save_stats and is_stats[0]:
    raise ValueError(f'--save-stats: {args.paths[0]} must be a folder of images')
  if args.kid and any(is_stats):
    raise ValueError('--kid needs two folders of images (statistics files hold no features)')
  for i, (p, stats) in enumerate(zip(args.paths, is_stats)):
    if args.save_stats and i == 1:
      break
    if stats and not os.path.isfile(p):
      raise FileNotFoundError(f'{p}: no such statistics file')
    if not stats:
      fid.image_files(p)  # an empty or missing folder fails before the network loads
    else:
      fid.load_stats(p)  # and so does a statistics file of the wrong shape
  module = variables = extractor = None
  if not all(is_stats) or args.save_stats:
    module, variables = _load_network(args.weights, args.source)
    features = [feature] + (['logits_unbiased'] if args.isc else [])
    extractor = fid.Extractor(module, variables, mode=args.mode, batch_size=args.batch,
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
                                progress=not args.no_progress)
    if result.skipped:
      print(f'{path}: skipped {len(result.skipped)} unreadable image(s): '
            + ', '.join(os.path.basename(f) for f, _ in result.skipped), file=sys.stderr)
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
    raise ValueError(f'the two statistics have {mu1.shape[0]} and {mu2.shape[0]} dims')
  print(f'FID: {fid.frechet_distance(mu1, sigma1, mu2, sigma2):.6f}')
  if args.kid:
    a, b = r1.kept[feature], r2.kept[feature]
    size = min(args.kid_subset_size, len(a), len(b))
    mean, std = fid.kernel_inception_distance(a, b, subset_size=size)
    print(f'KID: {mean:.6f} ± {std:.6f} (subsets of {size})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
