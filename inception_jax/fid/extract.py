"""Feature extraction with the FID network: jitted, sharded over the data mesh, padded batches.

One compiled program per input size runs resize + normalisation + network on a fixed batch,
sharded along the ``'data'`` axis of :func:`inception_jax.mesh.make_mesh` (the training loop's
mesh); the last, partial batch is padded and its padding rows are dropped, so every image counts
exactly once. Folders are read in file order; images of several sizes are batched by size.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import mesh as mesh_lib
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


class FolderError(ValueError):
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
    variables = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
    self.variables = jax.device_put(variables, mesh_lib.replicated(self.mesh))
    self._run = jax.jit(self._forward, in_shardings=(mesh_lib.replicated(self.mesh),
                                                     mesh_lib.batch_sharded(self.mesh)),
                        out_shardings=mesh_lib.replicated(self.mesh))

  @property
  def dims(self) -> dict[str, int]:
    return {f: DIMS[f] for f in self.features}

  def _forward(self, variables, images):
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
    """Features of ``images`` (n, H, W, 3), 0-255, any n: fixed-size padded batches."""
    images = np.asarray(images)
    check_images(images)
    if self.mode == 'clean':
      images = resize_lib.resize(images, 'clean')
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
  """What a pass over images gave: streamed statistics per feature, kept features, skips."""
  stats: dict[str, RunningStats]
  kept: dict[str, np.ndarray]
  count: int
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


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
            progress: bool = False) -> Result:
  """Stream ``batches`` (arrays of images) through ``extractor``: float64 statistics of the
  ``stats`` features, and the ``keep`` features (KID and IS need them) in order."""
  running = {f: RunningStats(DIMS[f]) for f in stats}
  kept: dict[str, list[np.ndarray]] = {f: [] for f in keep}
  bar, count = _progress(total, desc, progress), 0
  for batch in batches:
    out = extractor(batch)
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
                          for f, v in kept.items()}, count)


def extract_folder(extractor: Extractor, path: str | os.PathLike, *, keep: Sequence[str] = (),
                   stats: Sequence[str] = ('pool3',), progress: bool = False) -> Result:
  """:func:`extract` over a folder. Unreadable images are skipped, named in a warning and listed
  in ``Result.skipped``; a folder without readable images is a :class:`FolderError`."""
  files = image_files(path)
  skipped: list[tuple[str, str]] = []
  order: list[int] = []

  def batches() -> Iterator[np.ndarray]:
    pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}
    for i, file in enumerate(files):
      try:
        image = read_image(file)
      except Exception as err:  # PIL raises many types on broken files; each is a skip
        skipped.append((file, f'{type(err).__name__}: {err}'))
        log.warning('skipping unreadable image %s (%s)', file, err)
        continue
      group = pending.setdefault(image.shape, [])
      group.append((i, image))
      if len(group) == extractor.batch_size:
        del pending[image.shape]
        order.extend(j for j, _ in group)
        yield np.stack([a for _, a in group])
    for group in pending.values():
      order.extend(j for j, _ in group)
      yield np.stack([a for _, a in group])

  result = extract(extractor, batches(), keep=keep, stats=stats, total=len(files),
                   desc=os.path.basename(os.path.normpath(os.fspath(path))), progress=progress)
  result.skipped = skipped
  if skipped:
    log.warning('%s: skipped %d of %d images as unreadable', path, len(skipped), len(files))
  if not result.count:
    raise FolderError(f'{path}: none of its {len(files)} image files could be read')
  if keep:  # back to file order (images of several sizes were batched by size)
    rank = np.argsort(np.asarray(order), kind='stable')
    result.kept = {f: v[rank] for f, v in result.kept.items()}
  return result


__all__ = ['DIMS', 'Extractor', 'FEATURES', 'FolderError', 'IMAGE_EXTENSIONS', 'Result',
           'check_images', 'extract', 'extract_folder', 'image_files', 'read_image']
