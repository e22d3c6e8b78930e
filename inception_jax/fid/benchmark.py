"""Feature-extraction throughput of the FID network: ours (jitted, TF1 resize inside) against
pytorch-fid's ``InceptionV3`` (F.interpolate resize inside), same images, same batch.

    python -m inception_jax.fid.benchmark --batch 32 --batches 4 --size 64

Random weights (the published ones change nothing about the cost); pytorch-fid's download is
replaced by its own randomly initialised network. uint8 images of ``--size`` go in, 2048-d
pool3 features come out. Prints one markdown table row per implementation.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np


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


def _time(fn, x, batches: int) -> float:
  fn(x)  # warm-up (compilation for ours)
  start = time.perf_counter()
  for _ in range(batches):
    out = fn(x)
    if isinstance(out, dict):
      jax.block_until_ready(out)
  return batches * x.shape[0] / (time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--batches', type=int, default=4)
  parser.add_argument('--size', type=int, default=64, help='side of the uint8 input images')
  parser.add_argument('--mode', default='tf1')
  parser.add_argument('--skip-torch', action='store_true')
  args = parser.parse_args(argv)
  x = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8)
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  device = jax.devices()[0].device_kind
  rate = _time(_ours(args.batch, args.mode), x, args.batches)
  print(f'| inception_jax.fid ({args.mode}), {device} x{jax.device_count()} | {args.batch} | '
        f'{rate:.1f} | {load:.1f} |')
  if not args.skip_torch:
    import torch
    rate = _time(_pytorch_fid(), x, args.batches)
    print(f'| pytorch-fid 0.3.0, torch {torch.__version__}, {torch.get_num_threads()} threads | '
          f'{args.batch} | {rate:.1f} | {os.getloadavg()[0]:.1f} |')


if __name__ == '__main__':
  main()
