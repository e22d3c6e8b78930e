"""Resizing to the FID network's 299x299 input, as each published FID implementation does it.

The scores of Heusel et al. 2017 ("GANs Trained by a Two Time-Scale Update Rule") come from TF's
``inception-2015-12-05`` graph, whose first op is TF1's ``ResizeBilinear`` (``align_corners=False``,
no half-pixel centres). Ports that resize otherwise report other numbers (Parmar et al. 2022, "On
Aliased Resizing and Surprising Subtleties in GAN Evaluation"), so the resize is a choice of
reference, named by ``mode``:

* ``'tf1'``: TF1 ``resize_bilinear`` (``resize_bilinear_op.cc``; reproduced by torch-fidelity's
  ``interpolate_compat_tensorflow.py``): source coordinate ``dst * (in / out)`` in float32.
* ``'pytorch_fid'``: pytorch-fid's ``F.interpolate(mode='bilinear', align_corners=False)``:
  half-pixel centres, source coordinates clamped at 0.
* ``'clean'``: clean-fid's PIL bicubic resize of each channel of the uint8 image as float32
  (``cleanfid/resize.py``, ``make_resizer('PIL', False, 'bicubic', ...)``), clipped to 0-255.

:func:`resize` takes a batch of one size: the bilinear modes are jnp functions (jitted with the
network), ``'clean'`` runs PIL on the host. :func:`resize_image` resizes one image of any size on
the host (numpy, every mode) with the same arithmetic, so that folders of many sizes feed the
network 299x299 batches: one compiled program whatever the sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MODES = ('tf1', 'pytorch_fid', 'clean')
SIZE = 299


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f'resize mode must be one of {MODES}, got {mode!r}')
  return mode


def _check_images(images) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'images must be NHWC with 3 channels, got shape {tuple(images.shape)}')


def _tf1_coords(n_in: int, n_out: int):
  """TF1 ``CalculateResizeScale`` without align_corners and ``compute_interpolation_weights``:
  the source coordinate and the scale are float32, the low index the truncated coordinate."""
  scale = np.float32(n_in / n_out)
  src = np.arange(n_out, dtype=np.float32) * scale
  lo = src.astype(np.int64)
  hi = np.minimum(lo + 1, n_in - 1)
  return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)


def _half_pixel_coords(n_in: int, n_out: int):
  """PyTorch ``area_pixel_compute_source_index`` for linear modes without align_corners: a
  float32 scale, ``scale * (dst + 0.5) - 0.5`` rounded once (the compiled kernel fuses it; a
  float32 product then difference is off by one ulp at some rows), clamped at 0."""
  scale = np.float32(n_in / n_out).astype(np.float64)
  src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0).astype(np.float32)
  lo = src.astype(np.int64)
  hi = np.where(lo < n_in - 1, lo + 1, lo)
  return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)


def _bilinear(x: jax.Array, size: int, coords, lerp: bool) -> jax.Array:
  (ylo, yhi, dy), (xlo, xhi, dx) = (coords(x.shape[1], size), coords(x.shape[2], size))
  dx = jnp.asarray(dx)[None, None, :, None]
  dy = jnp.asarray(dy)[None, :, None, None]
  top, bottom = x[:, ylo], x[:, yhi]
  if lerp:  # TF1: top + (bottom - top) * dy of left + (right - left) * dx
    t = top[:, :, xlo] + (top[:, :, xhi] - top[:, :, xlo]) * dx
    b = bottom[:, :, xlo] + (bottom[:, :, xhi] - bottom[:, :, xlo]) * dx
    return t + (b - t) * dy
  # PyTorch's upsample_bilinear2d: convex weights (1 - l) and l.
  t = (1 - dx) * top[:, :, xlo] + dx * top[:, :, xhi]
  b = (1 - dx) * bottom[:, :, xlo] + dx * bottom[:, :, xhi]
  return (1 - dy) * t + dy * b


def _pil_bicubic(images: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image
  out = np.empty((images.shape[0], size, size, 3), np.float32)
  for i, image in enumerate(images):
    for c in range(3):
      channel = Image.fromarray(np.asarray(image[:, :, c], np.float32), mode='F')
      out[i, :, :, c] = np.asarray(channel.resize((size, size), resample=Image.BICUBIC))
  return np.clip(out, 0, 255)


def _bilinear_np(image: np.ndarray, size: int, coords, lerp: bool) -> np.ndarray:
  """:func:`_bilinear` of one HWC image (0-255) in numpy, bit for bit: float32 element-wise
  operations round the same in numpy and XLA, and interpolating the columns of every input row
  first and then the rows gives each output the same operands (a row's column blend does not
  depend on which output row reads it). Rows are viewed as (H, W * 3) so that every gather is
  a 2-D one, and the arithmetic is in place: a few times less CPU than the NHWC expression."""
  h, w, c = image.shape
  (ylo, yhi, dy), (xlo, xhi, dx) = coords(h, size), coords(w, size)
  flat = image.reshape(h, w * c)
  channels = np.arange(c)
  left = flat[:, (xlo[:, None] * c + channels).ravel()].astype(np.float32)
  right = flat[:, (xhi[:, None] * c + channels).ravel()].astype(np.float32)
  dx, dy = np.repeat(dx, c)[None, :], dy[:, None]
  if lerp:  # TF1: left + (right - left) * dx, then top + (bottom - top) * dy
    right -= left
    right *= dx
    right += left
    top, bottom = np.take(right, ylo, axis=0), np.take(right, yhi, axis=0)
    bottom -= top
    bottom *= dy
    bottom += top
  else:  # PyTorch: (1 - dx) * left + dx * right, then (1 - dy) * top + dy * bottom
    left *= 1 - dx
    right *= dx
    right += left
    top, bottom = np.take(right, ylo, axis=0), np.take(right, yhi, axis=0)
    top *= 1 - dy
    bottom *= dy
    bottom += top
  return bottom.reshape(size, size, c)


def resize_image(image: np.ndarray, mode: str = 'tf1', size: int = SIZE) -> np.ndarray:
  """One HWC image (0-255, uint8 or float) of any size -> float32 ``size`` x ``size`` x 3 on the
  host, equal to :func:`resize` of that image alone (bit for bit; tested against the references
  themselves). Thread-safe; numpy and PIL release the GIL for the bulk of the work."""
  check_mode(mode)
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'an image must be HWC with 3 channels, got shape {image.shape}')
  if mode == 'clean':
    return _pil_bicubic(image[None], size)[0]
  if image.shape[:2] == (size, size):
    return image.astype(np.float32)
  if mode == 'tf1':
    return _bilinear_np(image, size, _tf1_coords, lerp=True)
  return _bilinear_np(image, size, _half_pixel_coords, lerp=False)


def resize(images, mode: str = 'tf1', size: int = SIZE):
  """NHWC images with 0-255 values (uint8 or float) -> float32 NHWC ``size`` x ``size``, values
  still 0-255 (see the module docstring for the modes)."""
  check_mode(mode)
  _check_images(images)
  if mode == 'clean':
    return _pil_bicubic(np.asarray(images), size)
  x = jnp.asarray(images).astype(jnp.float32)
  if x.shape[1:3] == (size, size):
    return x
  if mode == 'tf1':
    return _bilinear(x, size, _tf1_coords, lerp=True)
  return _bilinear(x, size, _half_pixel_coords, lerp=False)


def normalize(images, mode: str = 'tf1'):
  """0-255 values -> the FID network's input. The TF graph computes ``(x - 128) / 128``
  (its ``Sub``/``Mul`` ops, as torch-fidelity and clean-fid's torchscript model); pytorch-fid
  feeds ``ToTensor``'s ``x / 255`` and maps it with ``2 x - 1``."""
  check_mode(mode)
  if mode == 'pytorch_fid':
    return 2 * (images / 255) - 1
  return (images - 128) / 128


__all__ = ['MODES', 'SIZE', 'normalize', 'resize', 'resize_image']
