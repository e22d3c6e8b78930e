"""Feature-extraction throughput of the FID network: ours (jitted, TF1 resize inside) against
pytorch-fid's ``InceptionV3`` (F.interpolate resize inside), same images, same batch.

    python -m inception_jax.fid.benchmark --batch 32 --batches 4 --size 64

Random weights (the published ones change nothing about the cost); pytorch-fid's download is
replaced by its own randomly initialised network. uint8 images of ``--size`` go in, 2048-d
pool3 features come out. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from inception_jax import entry


def _ours(batch: int, mode: str):
  from inception_jax import fid, models
  module = models.create('inception_v3_fid')
  variables = jax.jit(lambda: module.init(jax.random.key(0),
                                          np.zeros((1, 299, 299, 3), np.float32)))()
  return fid.Extractor(module, variables, mode=mode, batch_size=batch)


def _pytorch_fid():
  import torch
  from pytorch_fid import inception
  state = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
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


def _measure(runs: dict, x: np.ndarray, batches: int) -> dict[str, tuple[float, float]]:
  """Images/s and images per CPU-second of each runner, their timed batches interleaved so that
  both see the same load on a shared machine."""
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


def main(argv=None) -> None:
  parser = entry.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=32, help='images per call')
  parser.add_argument('--batches', type=int, default=4, help='timed calls')
  parser.add_argument('--size', type=int, default=64, help='side of the uint8 input images')
  parser.add_argument('--mode', default='tf1', help='resize mode (inception_jax.fid.resize)')
  parser.add_argument('--skip_torch', '--skip-torch', action='store_true',
                      help='time ours only, not the PyTorch references')
  args = parser.parse_args(argv)
  entry.quiet(args.verbose)
  x = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8)
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  runs = {f'inception_jax.fid ({args.mode} resize, jit), {device}': _ours(args.batch, args.mode)}
  if not args.skip_torch:
    import torch
    runs[f'pytorch-fid 0.3.0 (torch {torch.__version__}, {torch.get_num_threads()} threads)'] = \
        _pytorch_fid()
  load = os.getloadavg()[0]
  results = _measure(runs, x, args.batches)
  load = f'{load:.1f}-{os.getloadavg()[0]:.1f}'
  print('| implementation | batch | input | images/s | images per CPU-s | load avg 1 min |')
  print('|---|---|---|---|---|---|')
  for name, (rate, per_cpu) in results.items():
    print(f'| {name} | {args.batch} | {args.size}x{args.size} uint8 | {rate:.2f} | {per_cpu:.2f} '
          f'| {load} |')


if __name__ == '__main__':
  sys.exit(entry.run(main))
