r"""Throughput of the input pipelines: images/s of train and eval preprocessing, in total and per
CPU core, on a folder of generated photograph-sized JPEGs.

    python -m inception_jax.data.benchmark                       # 299, TF-slim's pipelines
    python -m inception_jax.data.benchmark --image_size=224 --color_distortion=full --json

The folder (``--dir``, made if empty) holds ``--num_images`` JPEGs of about 500x375 (ImageNet's
typical size), quality 95, cut from the photographs that scikit-image ships (random crops, scales,
flips, colour shifts and grain, about 110 KB each like ImageNet's; smooth random textures when
scikit-image is missing), split over 10 class
folders. The measurements run in a fresh process pinned to ``k`` cores (``os.sched_setaffinity``
before TensorFlow starts, so every thread of the process shares them), one process for the
one-core figure and one for the figure on all cores (``total``), each as images per second of
wall time and per CPU-second the process used (all its threads; on a machine shared with other
work the wall-time figures fall with the load, the CPU-time ones much less). The files are read
from the page cache after the first pass: this measures decoding and preprocessing, not the
disk. Each figure is the median of ``--repeats`` (at least 3) measurements, each of a new
pipeline in that process (TensorFlow's start-up, about 5 s, paid once); the report records the
CPU with its vector extensions and the 1-minute load average before the run, which must be at
most ``--max_load`` (0.5; the tool waits ``--idle_wait`` seconds for it, then refuses, unless
``--allow_load`` marks the report ``loaded``).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from inception_jax import entry, machine
from inception_jax.data import defaults

_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png',
           'hubble_deep_field.jpg', 'retina.jpg', 'immunohistochemistry.png', 'color.png')


def _photos() -> list[np.ndarray]:
  """RGB photographs shipped with scikit-image, if installed (read without importing it)."""
  import importlib.util
  from PIL import Image
  spec = importlib.util.find_spec('skimage')
  if spec is None or not spec.submodule_search_locations:
    return []
  folder = os.path.join(list(spec.submodule_search_locations)[0], 'data')
  out = []
  for name in _PHOTOS:
    path = os.path.join(folder, name)
    if os.path.exists(path):
      out.append(np.asarray(Image.open(path).convert('RGB')))
  return out


def _texture(rng, h, w) -> np.ndarray:
  """A smooth random image (low-frequency noise plus a little grain), photograph-like in JPEG."""
  from PIL import Image
  small = rng.uniform(0, 255, (max(2, h // 24), max(2, w // 24), 3)).astype(np.uint8)
  img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
  img += rng.normal(0, 6, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def make_jpeg_folder(directory: str, num_images: int, seed: int = 0,
                     num_classes: int = 10) -> dict[str, float]:
  """Writes ``num_images`` JPEGs of about 500x375 under ``directory/train/<class>/`` and returns
  their mean size (pixels and kilobytes)."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  photos = _photos()
  sizes, nbytes = [], []
  for i in range(num_images):
    w, h = (500, 375) if rng.random() < 0.7 else (375, 500)
    w, h = int(w * rng.uniform(0.85, 1.15)), int(h * rng.uniform(0.85, 1.15))
    if photos:
      src = photos[i % len(photos)]
      scale = max(h / src.shape[0], w / src.shape[1]) * rng.uniform(0.5, 1.0)
      img = Image.fromarray(src).resize((max(w, int(src.shape[1] * scale)),
                                         max(h, int(src.shape[0] * scale))), Image.BILINEAR)
      x0 = int(rng.integers(0, img.size[0] - w + 1))
      y0 = int(rng.integers(0, img.size[1] - h + 1))
      arr = np.asarray(img.crop((x0, y0, x0 + w, y0 + h)), np.float32)
      # Grain brings the JPEGs to ImageNet's bytes per pixel (~0.6; about 110 KB here).
      arr = arr * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 12.0, arr.shape)
      if rng.random() < 0.5:
        arr = arr[:, ::-1]
      arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
      arr = _texture(rng, h, w)
    folder = os.path.join(directory, 'train', f'class_{i % num_classes:02d}')
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format='JPEG', quality=95)
    with open(os.path.join(folder, f'img_{i:05d}.jpg'), 'wb') as f:
      f.write(buf.getvalue())
    sizes.append(w * h)
    nbytes.append(len(buf.getvalue()))
  return {'mean_pixels': float(np.mean(sizes)), 'mean_kb': float(np.mean(nbytes)) / 1024}


def _config(args, directory: str):
  import ml_collections
  c = ml_collections.ConfigDict()
  c.name = 'imagefolder:' + directory
  c.image_size = args.image_size
  c.train_split = 'train'
  c.eval_split = 'train'
  c.color_distortion = args.color_distortion
  c.random_interpolation = args.random_interpolation
  c.eval_resize = args.eval_resize
  c.eval_interpolation = args.eval_interpolation
  c.holdout_fraction = 0.0
  c.threads = 0
  return c


def _measure(args) -> list[dict]:
  """``--repeats`` measurements in this (pinned) process, each of a new pipeline: images/s over
  ``--batches`` after ``--warmup`` batches."""
  import logging
  logging.getLogger('inception_jax.data').setLevel(logging.ERROR)
  from inception_jax.data import imagefolder, pipeline, preprocess
  config = _config(args, args.dir)
  train = args.worker == 'train'
  spec = preprocess.train_spec(config) if train else preprocess.eval_spec(config)
  folder = imagefolder.source(config, 'train')
  needed = (args.warmup + args.batches) * args.batch_size

  class Repeated(pipeline.Source):
    """The folder's files again and again: one eval pass as long as the measurement."""
    name = folder.name
    num_examples = needed
    read = staticmethod(lambda idx: folder.read(idx % folder.num_examples))
    parse = staticmethod(folder.parse)

  images, cores = args.batches * args.batch_size, len(os.sched_getaffinity(0))
  runs = []
  for _ in range(args.repeats):  # a new pipeline each time, the last one closed
    it = pipeline.Batches(Repeated(), spec, batch_size=args.batch_size, train=train,
                          process_index=0, process_count=1, seed=0, start_step=0,
                          image_shape=(args.image_size, args.image_size, 3))
    for _ in range(args.warmup):
      next(it)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
      next(it)
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    it.close()
    runs.append({'pipeline': args.worker, 'spec': spec, 'cores': cores,
                 'images_per_s': images / dt, 'images_per_cpu_s': images / cpu, 'seconds': dt})
  return runs


def _run_worker(args, kind: str, cores: list[int]) -> list[dict]:
  cmd = [sys.executable, '-m', 'inception_jax.data.benchmark', '--worker', kind,
         '--cores', ','.join(map(str, cores))]
  for key in ('dir', 'image_size', 'batch_size', 'batches', 'warmup', 'color_distortion',
              'eval_resize', 'eval_interpolation', 'repeats'):
    cmd += [f'--{key}', str(getattr(args, key))]
  if args.random_interpolation:
    cmd.append('--random_interpolation')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  if out.returncode:
    raise RuntimeError(f'benchmark worker failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  p = entry.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--dir', default='', help='JPEG folder (generated if empty or missing)')
  p.add_argument('--num_images', type=int, default=512, help='JPEGs generated into --dir')
  p.add_argument('--image_size', type=int, default=299, help='output side of the pipelines')
  p.add_argument('--batch_size', type=int, default=64, help='images per batch')
  p.add_argument('--batches', type=int, default=16, help='timed batches per measurement')
  p.add_argument('--warmup', type=int, default=3, help='untimed batches first')
  p.add_argument('--color_distortion', default=defaults.PREPROCESS['color_distortion'],
                 choices=['none', 'fast', 'full'], help="the configs' default")
  p.add_argument('--random_interpolation', action='store_true',
                 help='train pipeline: a random resize method per image')
  p.add_argument('--eval_resize', default=defaults.PREPROCESS['eval_resize'],
                 help='eval pipeline: how the image is resized')
  p.add_argument('--eval_interpolation', default=defaults.PREPROCESS['eval_interpolation'],
                 help='eval pipeline: resize method')
  p.add_argument('--repeats', type=int, default=3, help='measurements; the median is reported')
  machine.add_idle_flags(p)
  p.add_argument('--pipelines', default='train,eval', help='comma-separated: train, eval')
  p.add_argument('--json', action='store_true', help='print one JSON object')
  p.add_argument('--worker', default='', help=argparse.SUPPRESS)
  p.add_argument('--cores', default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  entry.quiet(args.verbose)
  if args.repeats < 3:
    p.error(f'--repeats must be at least 3, got {args.repeats}')

  if args.worker:  # pin first: TensorFlow's threads then share these cores
    os.sched_setaffinity(0, {int(c) for c in args.cores.split(',')})
    print(json.dumps(_measure(args)))
    return {}

  all_cores = sorted(os.sched_getaffinity(0))
  cleanup = None
  if not args.dir:
    cleanup = tempfile.TemporaryDirectory(prefix='inception_jax_bench_')
    args.dir = cleanup.name
  if not os.path.isdir(os.path.join(args.dir, 'train')):
    stats = make_jpeg_folder(args.dir, args.num_images)
  else:
    from inception_jax.data import imagefolder
    paths = imagefolder.scan(os.path.abspath(args.dir), 0.0)[1]['train'][0]
    stats = {'mean_kb': float(np.mean([os.path.getsize(q) for q in paths])) / 1024}
    from PIL import Image
    stats['mean_pixels'] = float(np.mean([np.prod(Image.open(q).size) for q in paths[:200]]))
  load_before = machine.require_idle(p, args)
  results = {}
  for kind in args.pipelines.split(','):
    ones = _run_worker(args, kind, all_cores[:1])
    fulls = _run_worker(args, kind, all_cores)
    one = {k: statistics.median(r[k] for r in ones) for k in ('images_per_s', 'images_per_cpu_s')}
    full = {k: statistics.median(r[k] for r in fulls)
            for k in ('images_per_s', 'images_per_cpu_s')}
    results[kind] = {'spec': ones[0]['spec'], 'per_core_images_per_s': one['images_per_s'],
                     'per_core_runs': [r['images_per_s'] for r in ones],
                     'images_per_cpu_s': one['images_per_cpu_s'],
                     'total_images_per_s': full['images_per_s'], 'cores': len(all_cores),
                     'total_runs': [r['images_per_s'] for r in fulls],
                     'total_per_core_images_per_s': full['images_per_s'] / len(all_cores),
                     'total_images_per_cpu_s': full['images_per_cpu_s']}
  described = machine.describe()
  report = {
      'date': datetime.date.today().isoformat(),
      'machine': f'{machine.cpu_label(described)} ({len(all_cores)} usable)',
      'vector_extensions': described['vector_extensions'], 'repeats': args.repeats,
      'loaded': load_before > args.max_load,
      'load_average_before_after': [round(load_before, 2), round(machine.load_average(), 2)],
      'images': {'dir': args.dir, 'count': args.num_images, **{k: round(v, 1)
                                                               for k, v in stats.items()}},
      'image_size': args.image_size, 'batch_size': args.batch_size,
      'timed_images': args.batches * args.batch_size, 'results': results,
      'command': 'python -m inception_jax.data.benchmark ' + ' '.join(
          sys.argv[1:] if argv is None else argv),
  }
  if args.json:
    print(json.dumps(report, indent=2))
  else:
    print(f'input pipeline throughput, {report["date"]}, {report["machine"]}, load average '
          f'{report["load_average_before_after"][0]} before / '
          f'{report["load_average_before_after"][1]} after'
          + (' (loaded)' if report['loaded'] else '') + f'; medians of {args.repeats} runs')
    print(f'{args.num_images} JPEGs, mean {stats["mean_pixels"] ** 0.5:.0f}^2 pixels '
          f'({stats["mean_kb"]:.0f} KB), image size {args.image_size}, batch {args.batch_size}, '
          f'{report["timed_images"]} images timed per measurement')
    for kind, r in results.items():
      print(f'{kind}: {r["per_core_images_per_s"]:.0f} images/s on 1 core '
            f'({r["images_per_cpu_s"]:.0f} per CPU-second used); {r["total_images_per_s"]:.0f} '
            f'images/s total on {r["cores"]} cores ({r["total_per_core_images_per_s"]:.0f} per '
            f'core; {r["total_images_per_cpu_s"]:.0f} per CPU-second used)')
      print(f'  {r["spec"]}')
  if cleanup is not None:
    cleanup.cleanup()
  return report


if __name__ == '__main__':
  sys.exit(entry.run(main))
