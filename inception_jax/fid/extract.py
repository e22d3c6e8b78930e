"""Feature extraction with the FID network: jitted, sharded over the data mesh, padded batches.

One compiled program per input batch shape runs resize + normalisation + network, sharded along
the ``'data'`` axis of :func:`inception_jax.mesh.make_mesh` (the training loop's mesh); the last,
partial batch is padded and its padding rows are dropped, so every image counts exactly once.
Folders are read in file order by a pool of threads that decode each image and resize it to
299x299 on the host (:func:`inception_jax.fid.resize.resize_image`, the mode's exact arithmetic),
so a folder of images of every size runs one compiled program, and decoding overlaps the network.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import sys
import time
from typing import Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import mesh as mesh_lib
from inception_jax.errors import UserError
from inception_jax.fid import resize as resize_lib
from inception_jax.fid.stats import RunningStats

log = logging.getLogger('inception_jax.fid')

# Feature name -> what it is (see inception_jax.models.inception_v3_fid).
FEATURES = {
    'pool3': "2048-d 'pool_3' (PreLogits): FID's and KID's features",
    '64': 'pytorch-fid --dims 64: global average of MaxPool_3a_3x3',
    '192': 'pytorch-fid --dims 192: global average of MaxPool_5a_3x3',
    '768': 'pytorch-fid --dims 768: global average of Mixed_6e',
    'spatial': "sFID: Mixed_6d's first 7 channels (the graph's mixed_6/conv), 17x17x7 flattened",
    'logits': '1008 logits',
    'logits_unbiased': "logits without the classifier bias: the Inception Score's input",
}
_POOLED = {'64': 'MaxPool_3a_3x3', '192': 'MaxPool_5a_3x3', '768': 'Mixed_6e'}
DIMS = {'pool3': 2048, '64': 64, '192': 192, '768': 768, 'spatial': 17 * 17 * 7,
        'logits': 1008, 'logits_unbiased': 1008}

# pytorch-fid's IMAGE_EXTENSIONS (fid_score.py).
IMAGE_EXTENSIONS = ('bmp', 'jpg', 'jpeg', 'pgm', 'png', 'ppm', 'tif', 'tiff', 'webp')


class FolderError(UserError, ValueError):
  """A folder that holds no usable image; the message names it."""


def check_images(images: np.ndarray) -> None:
  """NHWC RGB with 0-255 values; generator outputs in [-1, 1] are the classic mistake."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'images must be NHWC RGB, got shape {images.shape}')
  if images.dtype == np.uint8 or not images.size:
    return
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f'images must be uint8 or float with 0-255 values, got {images.dtype}')
  lo, hi = float(images.min()), float(images.max())
  if lo < 0 or hi > 255 or not np.isfinite([lo, hi]).all():
    raise ValueError(f'images must hold 0-255 values, got the range [{lo:.3g}, {hi:.3g}] '
                     f'(map [-1, 1] outputs with (x + 1) * 127.5)')


class Extractor:
  """The FID network as a function of 0-255 images: ``extractor(images) -> {name: (n, d)}``.

  Args:
    module, variables: from ``convert.from_torch('inception_v3_fid', ...)`` (1008 classes for the
      logits features; ``num_classes=0`` gives the others).
    mode: resize mode (:mod:`inception_jax.fid.resize`).
    batch_size: images per compiled call; a multiple of the mesh's device count.
    mesh: defaults to :func:`inception_jax.mesh.make_mesh` over every device.
    features: names of :data:`FEATURES` to compute.

  ``traces`` counts the traces of the network (each is a compilation): one per input batch shape,
  so images resized to 299x299 beforehand (:meth:`resized`) compile once whatever their sizes.
  """

  def __init__(self, module, variables, *, mode: str = 'tf1', batch_size: int = 50, mesh=None,
               features: Sequence[str] = ('pool3',)):
    self.mode = resize_lib.check_mode(mode)
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features:
      raise ValueError(f'unknown features {unknown}; known: {sorted(FEATURES)}')
    if any(f.startswith('logits') for f in features) and not module.num_classes:
      raise ValueError(f'features {list(features)} need the classifier: convert with '
                       f'num_classes=None (1008), not 0')
    self.module, self.features = module, tuple(features)
    self.mesh = mesh_lib.make_mesh() if mesh is None else mesh
    mesh_lib.check_divisible(batch_size, 'batch_size', self.mesh)
    self.batch_size = batch_size
    self.traces = 0
    variables = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
    self.variables = jax.device_put(variables, mesh_lib.replicated(self.mesh))
    self._run = jax.jit(self._forward, in_shardings=(mesh_lib.replicated(self.mesh),
                                                     mesh_lib.batch_sharded(self.mesh)),
                        out_shardings=mesh_lib.replicated(self.mesh))

  @property
  def dims(self) -> dict[str, int]:
    return {f: DIMS[f] for f in self.features}

  def _forward(self, variables, images):
    self.traces += 1  # Python runs only while jax.jit traces
    x = images if self.mode == 'clean' else resize_lib.resize(images, self.mode)
    x = resize_lib.normalize(x.astype(jnp.float32), self.mode)
    out, state = self.module.apply(variables, x, train=False, mutable=['intermediates'])
    points = state['intermediates']['endpoints']
    result = {}
    for name in self.features:
      if name == 'pool3':
        result[name] = points['PreLogits']
      elif name in _POOLED:
        result[name] = jnp.mean(points[_POOLED[name]], axis=(1, 2))
      elif name == 'spatial':
        result[name] = points['Mixed_6d'][..., :7].reshape(x.shape[0], -1)
      elif name == 'logits':
        result[name] = out
      else:  # the original IS code multiplies pool_3 by the classifier's weights only
        result[name] = points['PreLogits'] @ variables['params']['Logits']['kernel']
    return {k: v.astype(jnp.float32) for k, v in result.items()}

  def __call__(self, images) -> dict[str, np.ndarray]:
    """Features of ``images`` (n, H, W, 3), 0-255, any n: fixed-size padded batches; the bilinear
    modes resize on the device (one program per H, W), ``'clean'`` with PIL on the host."""
    images = np.asarray(images)
    check_images(images)
    if self.mode == 'clean':
      images = resize_lib.resize(images, 'clean')
    return self._batched(images)

  def resized(self, images) -> dict[str, np.ndarray]:
    """Features of images already resized to 299x299 by
    :func:`~inception_jax.fid.resize.resize_image` in this extractor's mode: float32
    (n, 299, 299, 3), 0-255 (the float values a resize gives). One program for every source size."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (resize_lib.SIZE, resize_lib.SIZE, 3):
      raise ValueError(f'resized images must be (n, {resize_lib.SIZE}, {resize_lib.SIZE}, 3), '
                       f'got {images.shape}')
    return self._batched(images)

  def _batched(self, images: np.ndarray) -> dict[str, np.ndarray]:
    n, outs = images.shape[0], []
    for start in range(0, n, self.batch_size):
      chunk = images[start:start + self.batch_size]
      m = chunk.shape[0]
      if m < self.batch_size:  # padding rows, dropped below
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - m, *chunk.shape[1:]),
                                                chunk.dtype)])
      out = self._run(self.variables, jax.device_put(chunk, mesh_lib.batch_sharded(self.mesh)))
      outs.append({k: np.asarray(v)[:m] for k, v in out.items()})
    if not outs:
      return {f: np.zeros((0, d), np.float32) for f, d in self.dims.items()}
    return {k: np.concatenate([o[k] for o in outs]) for k in self.features}


# ------------------------------------------------------------------------------- folders

def image_files(path: str | os.PathLike) -> list[str]:
  """The images of a folder (not recursive), sorted, by pytorch-fid's extensions."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FolderError(f'{path}: not a folder of images or a .npz statistics file')
  files = sorted(os.path.join(path, f) for f in os.listdir(path)
                 if f.rsplit('.', 1)[-1].lower() in IMAGE_EXTENSIONS
                 and os.path.isfile(os.path.join(path, f)))
  if not files:
    raise FolderError(f'{path}: no images (looked for {", ".join(IMAGE_EXTENSIONS)})')
  return files


def read_image(file: str) -> np.ndarray:
  """uint8 HWC RGB (greyscale, palette and alpha images converted as PIL's ``convert('RGB')``)."""
  from PIL import Image
  with Image.open(file) as image:
    return np.asarray(image.convert('RGB'))


@dataclasses.dataclass
class Result:
  """What a pass over images gave: streamed statistics per feature, kept features, skips, and the
  wall time of the pass."""
  stats: dict[str, RunningStats]
  kept: dict[str, np.ndarray]
  count: int
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def images_per_second(self) -> float:
    return self.count / self.seconds if self.seconds else 0.0


def _progress(total: int | None, desc: str, enabled: bool):
  if not enabled:
    return None
  try:
    from tqdm import tqdm
  except ImportError:
    return None
  return tqdm(total=total, desc=desc, unit='img', file=sys.stderr)


def extract(extractor: Extractor, batches: Iterable[np.ndarray], *, keep: Sequence[str] = (),
            stats: Sequence[str] = ('pool3',), total: int | None = None, desc: str = 'images',
            progress: bool = False,
            run: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None) -> Result:
  """Stream ``batches`` (arrays of images) through ``extractor`` (or ``run``, e.g.
  ``extractor.resized``): float64 statistics of the ``stats`` features, and the ``keep``
  features (KID and IS need them) in order. The progress bar shows images/s."""
  running = {f: RunningStats(DIMS[f]) for f in stats}
  kept: dict[str, list[np.ndarray]] = {f: [] for f in keep}
  bar, count = _progress(total, desc, progress), 0
  run = extractor if run is None else run
  start = time.perf_counter()
  for batch in batches:
    out = run(batch)
    for f, s in running.items():
      s.update(out[f])
    for f in kept:
      kept[f].append(out[f])
    count += len(batch)
    if bar is not None:
      bar.update(len(batch))
  if bar is not None:
    bar.close()
  return Result(running, {f: np.concatenate(v) if v else np.zeros((0, DIMS[f]), np.float32)
                          for f, v in kept.items()}, count, seconds=time.perf_counter() - start)


def default_workers() -> int:
  """Decoding threads when none are asked for: pytorch-fid's ``min(8, CPUs)``."""
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:
    cpus = os.cpu_count() or 1
  return min(8, cpus)


def _prepared(files: Sequence[str], mode: str, batch_size: int, workers: int,
              skipped: list[tuple[str, str]]) -> Iterator[np.ndarray]:
  """Batches of ``files`` decoded and resized to 299x299 (float32) in file order by ``workers``
  threads (0: in this thread), at most two batches ahead of the consumer."""

  def load(file: str):
    try:
      image = read_image(file)
    except Exception as err:  # PIL raises many types on broken files; each is a skip
      return None, f'{type(err).__name__}: {err}'
    return resize_lib.resize_image(image, mode), None  # a failure here is a bug: raised

  pool = concurrent.futures.ThreadPoolExecutor(workers) if workers else None
  submit = pool.submit if pool else (lambda fn, file: _Done(fn(file)))
  ahead = max(2 * batch_size, 2 * workers)
  queue: collections.deque = collections.deque()
  files_left = iter(files)
  try:
    for file in files_left:
      queue.append((file, submit(load, file)))
      if len(queue) >= ahead:
        break
    batch: list[np.ndarray] = []
    while queue:
      file, future = queue.popleft()
      following = next(files_left, None)
      if following is not None:
        queue.append((following, submit(load, following)))
      image, error = future.result()
      if error is not None:
        skipped.append((file, error))
        log.warning('skipping unreadable image %s (%s)', file, error)
        continue
      batch.append(image)
      if len(batch) == batch_size:
        yield np.stack(batch)
        batch = []
    if batch:
      yield np.stack(batch)
  finally:
    if pool is not None:
      for _, future in queue:
        future.cancel()
      pool.shutdown(wait=True)


class _Done:
  """A finished computation with a future's ``result``/``cancel`` (``workers=0``)."""

  def __init__(self, value):
    self.value = value

  def result(self):
    return self.value

  def cancel(self):
    return False


def extract_folder(extractor: Extractor, path: str | os.PathLike, *, keep: Sequence[str] = (),
                   stats: Sequence[str] = ('pool3',), progress: bool = False,
                   num_workers: int | None = None) -> Result:
  """:func:`extract` over a folder, in file order: ``num_workers`` threads (default
  :func:`default_workers`; 0 decodes in this thread) decode each image and resize it on the host
  in the extractor's mode, so images of every size share one compiled program. Unreadable images
  are skipped, named in a warning and listed in ``Result.skipped``; a folder without readable
  images is a :class:`FolderError`."""
  files = image_files(path)
  workers = default_workers() if num_workers is None else num_workers
  if workers < 0:
    raise UserError(f'num_workers must be 0 or more, got {workers}')
  skipped: list[tuple[str, str]] = []
  batches = _prepared(files, extractor.mode, extractor.batch_size, workers, skipped)
  result = extract(extractor, batches, keep=keep, stats=stats, total=len(files),
                   desc=os.path.basename(os.path.normpath(os.fspath(path))), progress=progress,
                   run=extractor.resized)
  result.skipped = skipped
  if skipped:
    log.warning('%s: skipped %d of %d images as unreadable', path, len(skipped), len(files))
  if not result.count:
    raise FolderError(f'{path}: none of its {len(files)} image files could be read')
  return result


__all__ = ['DIMS', 'Extractor', 'FEATURES', 'FolderError', 'IMAGE_EXTENSIONS', 'Result',
           'check_images', 'default_workers', 'extract', 'extract_folder', 'image_files',
           'read_image']
