"""Preprocessing ops, registered by name and composed from a string (big_vision's ``pp``).

    fn = preprocess.parse('inception_crop(area_min=0.08)|resize(224)|flip_lr|value_range(-1, 1)')
    out = fn({'image': jpeg_bytes, 'label': 3, 'rng': [seed, position]})

An op is a factory registered with :func:`register`: ``op(*args, **kwargs)`` returns a function of
a feature dict to a feature dict, written with TensorFlow ops only, so that the same function runs
eagerly and inside ``tf.data.Dataset.map`` and gives the same result in both. Features:

* ``'image'``: encoded bytes (JPEG, PNG, GIF, BMP), then ``uint8 [h, w, 3]`` once decoded, then
  ``float32`` on the 0..255 scale after a resize, until ``value_range``/``normalize`` map it to the
  model's input range.
* ``'rng'``: ``int [2]``, the seed of the random ops. Each random op folds in a constant of its own
  and uses TensorFlow's stateless random ops, so the result is a function of the seed alone (the
  pipelines set it from ``(seed, step, example position)``), never of iteration history.
* ``'bbox'`` (optional): ``float32 [n, 4]`` object boxes, ``(ymin, xmin, ymax, xmax)`` in [0, 1],
  the boxes ``inception_crop`` must overlap.

The ops reproduce TF-slim's ``inception_preprocessing`` (``preprocess_for_train`` /
``preprocess_for_eval``), with the crop done by ``tf.image.decode_and_crop_jpeg`` so that only the
crop of a JPEG is decoded (Cloud TPU's reference pipelines do the same); :func:`train_spec` and
:func:`eval_spec` build the pipelines from the ``config.data`` fields.
"""

from __future__ import annotations

import ast
import functools
import math
import zlib
from typing import Any, Callable, Sequence

import tensorflow as tf

from inception_jax import errors, normalization
from inception_jax.data import defaults
from inception_jax.registry import Registry

Features = dict[str, Any]
Op = Callable[[Features], Features]

_OPS: Registry[Callable[..., Op]] = Registry('preprocessing op')


def register(name: str):
  """Decorator: registers an op factory under ``name``."""
  def wrap(factory):
    return _OPS.add(name, factory)
  return wrap


def names() -> list[str]:
  return sorted(_OPS.names())


def get(name: str, *args, **kwargs) -> Op:
  factory = _OPS.lookup(name, lambda: ValueError(
      f'unknown preprocessing op {name!r}; known: {", ".join(names())}'))
  return factory(*args, **kwargs)


def _parse_one(text: str) -> Op:
  """``'name'`` or ``'name(literal, ..., key=literal)'`` -> the op."""
  try:
    node = ast.parse(text.strip(), mode='eval').body
  except SyntaxError:
    raise ValueError(f'cannot parse preprocessing op {text!r}') from None
  if isinstance(node, ast.Name):
    return get(node.id)
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
    raise ValueError(f'cannot parse preprocessing op {text!r}: expected name(args)')
  try:
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
  except ValueError:
    raise ValueError(f'preprocessing op {text!r}: arguments must be literals') from None
  return get(node.func.id, *args, **kwargs)


def parse(spec: str | Sequence[str | Op]) -> Op:
  """A pipeline from ``'op|op(args)|...'`` or a list of such strings and op functions."""
  parts = spec.split('|') if isinstance(spec, str) else list(spec)
  ops = [_parse_one(p) if isinstance(p, str) else p for p in parts if not (
      isinstance(p, str) and not p.strip())]

  def pipeline(features: Features) -> Features:
    features = dict(features)
    for op in ops:
      features = op(features)
    return features
  return pipeline


# ------------------------------------------------------------------------------------ helpers

def _fold_in(seed: tf.Tensor, name: str) -> tf.Tensor:
  """``seed`` with a constant of ``name`` folded in."""
  return tf.random.experimental.stateless_fold_in(seed, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _op_seed(features: Features, name: str) -> tf.Tensor:
  """The seed of op ``name``: the example's seed with a constant of the op folded in."""
  if 'rng' not in features:
    raise ValueError(f'preprocessing op {name!r} is random and needs an "rng" feature')
  return _fold_in(tf.cast(tf.convert_to_tensor(features['rng']), tf.int64), name)


def _is_encoded(image) -> bool:
  return tf.convert_to_tensor(image).dtype == tf.string


def _decode(data: tf.Tensor) -> tf.Tensor:
  """Any supported format -> ``uint8 [h, w, 3]`` (grey and RGBA images become RGB)."""
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _decode_window(data: tf.Tensor, window_fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
  """Decodes only the window ``window_fn(shape) = [y, x, h, w]`` of encoded ``data``: a JPEG with
  ``decode_and_crop_jpeg`` (the rest of it is never decoded), other formats whole, then sliced."""
  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(data))
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)

  def other():
    image = _decode(data)
    y, x, h, w = tf.unstack(window_fn(tf.shape(image)))
    return image[y:y + h, x:x + w]

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def _window_op(features: Features, window_fn) -> Features:
  """Crops ``features['image']`` (encoded or decoded) to ``window_fn(shape)``."""
  image = features['image']
  if _is_encoded(image):
    image = _decode_window(tf.convert_to_tensor(image), window_fn)
  else:
    image = tf.convert_to_tensor(image)
    y, x, h, w = tf.unstack(window_fn(tf.shape(image)))
    image = image[y:y + h, x:x + w]
  return {**features, 'image': image}


def _decoded(features: Features) -> tf.Tensor:
  image = tf.convert_to_tensor(features['image'])
  return _decode(image) if image.dtype == tf.string else image


_METHODS = {
    'bilinear': tf.image.ResizeMethod.BILINEAR,
    'nearest': tf.image.ResizeMethod.NEAREST_NEIGHBOR,
    'bicubic': tf.image.ResizeMethod.BICUBIC,
    'area': tf.image.ResizeMethod.AREA,
    'lanczos3': tf.image.ResizeMethod.LANCZOS3,
    'lanczos5': tf.image.ResizeMethod.LANCZOS5,
    'gaussian': tf.image.ResizeMethod.GAUSSIAN,
    'mitchellcubic': tf.image.ResizeMethod.MITCHELLCUBIC,
}
# TF-slim resized with TF1's resize_images (align_corners=False, no half-pixel centres): 'tf1_*'.
_TF1 = {'tf1_bilinear': tf.raw_ops.ResizeBilinear, 'tf1_bicubic': tf.raw_ops.ResizeBicubic,
        'tf1_nearest': tf.raw_ops.ResizeNearestNeighbor, 'tf1_area': tf.raw_ops.ResizeArea}
METHODS = tuple(_METHODS) + tuple(_TF1)
# TF-slim's random resize (fast_mode=False) picks one of these, ResizeMethod's first four.
RANDOM_METHODS = ('bilinear', 'nearest', 'bicubic', 'area')


def _size2(size) -> tuple[int, int]:
  return (int(size), int(size)) if isinstance(size, (int, float)) else tuple(map(int, size))


def _resize(image: tf.Tensor, size: tuple[int, int], method: str, antialias: bool) -> tf.Tensor:
  """``float32 [h, w, 3]`` on the input's value scale."""
  # The resize kernels read uint8 directly: no float copy of the (larger) input.
  if method in _TF1:
    out = _TF1[method](images=image[None], size=size, align_corners=False)[0]
  elif method in _METHODS:
    out = tf.image.resize(image, size, method=_METHODS[method], antialias=antialias)
  else:
    raise ValueError(f'unknown interpolation {method!r}; choose one of {", ".join(METHODS)}')
  return tf.cast(out, tf.float32)


# ------------------------------------------------------------------------------------ the ops

@register('decode')
def decode() -> Op:
  """Encoded image -> ``uint8 [h, w, 3]`` (a decoded image passes through)."""
  return lambda features: {**features, 'image': _decoded(features)}


@register('inception_crop')
def inception_crop(area_min: float = 0.05, area_max: float = 1.0, aspect_min: float = 3 / 4,
                   aspect_max: float = 4 / 3, min_object_covered: float = 0.1,
                   max_attempts: int = 100, use_bbox: bool = True) -> Op:
  """TF-slim's ``distorted_bounding_box_crop``: a random crop of ``area_min``..``area_max`` of
  the image area and aspect ratio (width / height) ``aspect_min``..``aspect_max``, covering at
  least ``min_object_covered`` of one of the ``'bbox'`` boxes (the whole image when the example has
  none, so that with no boxes the crop covers at least that fraction of the image, as in slim);
  the whole image when ``max_attempts`` draws all fail. On encoded input only the crop is decoded.
  """
  def op(features):
    seed = _op_seed(features, 'inception_crop')
    if use_bbox and 'bbox' in features:
      boxes = tf.reshape(tf.cast(features['bbox'], tf.float32), [1, -1, 4])
    else:
      boxes = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def window(shape):
      begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
          shape, bounding_boxes=boxes, seed=seed, min_object_covered=min_object_covered,
          aspect_ratio_range=(aspect_min, aspect_max), area_range=(area_min, area_max),
          max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
      return tf.stack([begin[0], begin[1], size[0], size[1]])
    return _window_op(features, window)
  return op


@register('central_crop')
def central_crop(fraction: float = 0.875) -> Op:
  """``tf.image.central_crop``: the central ``fraction`` of each side (TF-slim's eval crop,
  before the resize, which then changes the aspect ratio); on a JPEG only the crop is decoded."""
  def window(shape):
    h, w = shape[0], shape[1]
    y = tf.cast((tf.cast(h, tf.float64) * (1.0 - fraction)) / 2, tf.int32)
    x = tf.cast((tf.cast(w, tf.float64) * (1.0 - fraction)) / 2, tf.int32)
    return tf.stack([y, x, tf.cast(h, tf.int32) - 2 * y, tf.cast(w, tf.int32) - 2 * x])
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'central_crop: fraction {fraction} not in (0, 1]')
  return lambda features: _window_op(features, window)


@register('resize')
def resize(size, method: str = 'bilinear', antialias: bool = False) -> Op:
  """To ``size`` (an int for a square, or ``(height, width)``), aspect ratio not kept (TF-slim)."""
  size = _size2(size)
  _resize(tf.zeros([2, 2, 3]), (1, 1), method, antialias)  # rejects an unknown method now
  return lambda f: {**f, 'image': _resize(_decoded(f), size, method, antialias)}


@register('random_resize')
def random_resize(size, antialias: bool = False) -> Op:
  """TF-slim's training resize with ``fast_mode=False``: one of bilinear, nearest, bicubic and
  area, drawn uniformly per example."""
  size = _size2(size)

  def op(features):
    image = _decoded(features)
    pick = tf.random.stateless_uniform([], _op_seed(features, 'random_resize'), 0,
                                       len(RANDOM_METHODS), dtype=tf.int32)
    branches = [functools.partial(_resize, image, size, m, antialias) for m in RANDOM_METHODS]
    out = tf.switch_case(pick, branches)
    out.set_shape([*size, 3])
    return {**features, 'image': out}
  return op


def _shorter_side_size(h, w, size: int):
  """torchvision's ``Resize(int)``: the shorter side to ``size``, the longer side truncated."""
  h, w = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
  short, long_ = tf.minimum(h, w), tf.maximum(h, w)
  new_long = tf.cast(tf.math.floor(size * long_ / short), tf.int32)
  new_h = tf.where(h <= w, size, new_long)
  new_w = tf.where(h <= w, new_long, size)
  return tf.stack([new_h, new_w])


@register('resize_shorter')
def resize_shorter(size: int, method: str = 'bilinear', antialias: bool = False) -> Op:
  """The shorter side to ``size``, aspect ratio kept (timm's and torchvision's eval resize)."""
  _resize(tf.zeros([2, 2, 3]), (1, 1), method, antialias)

  def op(features):
    image = _decoded(features)
    shape = tf.shape(image)
    return {**features, 'image': _resize(image, _shorter_side_size(shape[0], shape[1], size),
                                         method, antialias)}
  return op


@register('center_crop')
def center_crop(size) -> Op:
  """The central ``size`` window (torchvision's ``CenterCrop``: offsets rounded)."""
  ch, cw = _size2(size)

  def window(shape):
    y = tf.cast(tf.round(tf.cast(shape[0] - ch, tf.float64) / 2), tf.int32)
    x = tf.cast(tf.round(tf.cast(shape[1] - cw, tf.float64) / 2), tf.int32)
    return tf.stack([y, x, ch, cw])

  def op(features):
    out = _window_op(features, window)['image']
    out.set_shape([ch, cw, 3])
    return {**features, 'image': out}
  return op


@register('flip_lr')
def flip_lr() -> Op:
  """Random horizontal flip, probability 1/2."""
  def op(features):
    return {**features, 'image': tf.image.stateless_random_flip_left_right(
        _decoded(features), _op_seed(features, 'flip_lr'))}
  return op


# On the 0..255 scale: saturation, hue and contrast do not depend on it, brightness's +-32/255 of
# TF-slim's [0, 1] pixels is +-32 here (no rescaling passes over the image). The range each
# factor is drawn from, as TF's stateless_random_<name> draws it (uniform, float32).
_RANGES = {'brightness': (-32.0, 32.0), 'saturation': (0.5, 1.5), 'hue': (-0.2, 0.2),
           'contrast': (0.5, 1.5)}
# TF-slim's distort_color: the four orderings of fast_mode=False; fast_mode uses the first two
# ops of ordering 0.
_ORDERINGS = (('brightness', 'saturation', 'hue', 'contrast'),
              ('saturation', 'brightness', 'contrast', 'hue'),
              ('contrast', 'hue', 'brightness', 'saturation'),
              ('hue', 'saturation', 'contrast', 'brightness'))
_FAST = _ORDERINGS[0][:2]


def _draw(name: str, seed: tf.Tensor) -> tf.Tensor:
  """The factor ``tf.image.stateless_random_<name>`` draws from ``seed`` folded with ``name``."""
  return tf.random.stateless_uniform([], _fold_in(seed, name), *_RANGES[name])


def _saturate(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """``tf.image.adjust_saturation`` without its round trip through HSV. For a fixed hue and value
  v (the largest channel), each channel is ``c = v - v * s0 * w_c`` with w_c in [0, 1] set by the
  hue alone (0 for the largest channel, 1 for the smallest) and s0 = (max - min) / max the
  saturation; scaled to s = min(factor * s0, 1) (TF's kernel caps it at 1), each channel becomes
  ``max - (max - c) * s / s0 = max - (max - c) * min(factor, max / (max - min))``. A pixel with
  max <= 0 has saturation 0 in TF's kernel and comes out grey at its max (factor 0 here). Equal to
  TF's kernel to 2e-4 on the 0..255 scale (tests/test_data_preprocess.py), in a few elementwise
  steps that XLA fuses into one pass."""
  r, g, b = tf.unstack(image, axis=-1)
  top = tf.maximum(tf.maximum(r, g), b)[..., None]
  spread = top - tf.minimum(tf.minimum(r, g), b)[..., None]
  t = tf.where(top > 0, tf.minimum(factor, top / tf.maximum(spread, 1e-30)), 0.0)
  return top - (top - image) * t


def _adjust(name: str, image: tf.Tensor, factor: tf.Tensor, fused: bool) -> tf.Tensor:
  if name == 'brightness':
    return image + factor
  if name == 'saturation':  # TF's kernel is the faster one unfused
    return _saturate(image, factor) if fused else tf.image.adjust_saturation(image, factor)
  if name == 'hue':
    return tf.image.adjust_hue(image, factor)
  return tf.image.adjust_contrast(image, factor)


def _distort(image, brightness, saturation, hue=None, contrast=None, order=None, fused=False):
  """The ops of one ordering (``order`` None: fast mode's two), then clipped to 0..255."""
  factors = {'brightness': brightness, 'saturation': saturation, 'hue': hue,
             'contrast': contrast}

  def apply(names, x=image):
    for name in names:
      x = _adjust(name, x, factors[name], fused)
    return x
  if order is None:
    image = apply(_FAST)
  else:
    image = tf.switch_case(order, [functools.partial(apply, o) for o in _ORDERINGS])
  return tf.clip_by_value(image, 0.0, 255.0)


# Fast mode compiled by XLA: one fused pass over the image instead of one TF kernel per
# elementwise step (TF's own saturation kernel alone cost about 1 ms per 299x299 image on one
# core; BENCHMARKS.md, "Input pipeline"). XLA compiles once per image shape, so it is used only
# where the shape is static (after a resize to a fixed size, as in every pipeline of a config).
# Full mode stays on TF's kernels: XLA's lowering of adjust_hue differs from TF's kernel on
# pixels outside 0..255, which brightness and contrast produce before the clip.
_fast_xla = tf.function(functools.partial(_distort, fused=True), jit_compile=True,
                        autograph=False)


@register('color_distort')
def color_distort(mode: str = 'full') -> Op:
  """TF-slim's ``distort_color`` (which works on [0, 1] pixels; here the same on 0..255),
  clipped to the pixel range after: ``'fast'`` (slim's default ``fast_mode=True``: brightness
  +-32/255 then saturation 0.5-1.5) or ``'full'`` (brightness, saturation, hue +-0.2 and contrast
  0.5-1.5, in one of four orders drawn per example). The factors are the ones TF's
  ``stateless_random_*`` ops draw from the same seeds."""
  if mode not in ('fast', 'full'):
    raise ValueError(f"color_distort: mode {mode!r}; choose 'fast' or 'full'")

  def op(features):
    seed = _op_seed(features, 'color_distort')
    image = tf.cast(_decoded(features), tf.float32)
    names = _FAST if mode == 'fast' else _ORDERINGS[0]
    factors = {name: _draw(name, seed) for name in names}
    if mode == 'full':
      factors['order'] = tf.random.stateless_uniform([], seed, 0, len(_ORDERINGS),
                                                     dtype=tf.int32)
    fused = mode == 'fast' and image.shape.is_fully_defined()
    distort = _fast_xla if fused else _distort
    return {**features, 'image': distort(image, **factors)}
  return op


@register('value_range')
def value_range(vmin: float = -1.0, vmax: float = 1.0, in_min: float = 0.0,
                in_max: float = 255.0) -> Op:
  """Linear map of ``[in_min, in_max]`` to ``[vmin, vmax]`` as float32 (Inception's [-1, 1])."""
  scale = (vmax - vmin) / (in_max - in_min)
  return lambda f: {**f, 'image': tf.cast(_decoded(f), tf.float32) * scale + (
      vmin - in_min * scale)}


@register('normalize')
def normalize(mean: Sequence[float], std: Sequence[float], scale: float = 1.0,
              bgr: bool = False) -> Op:
  """The input convention of converted weights (``inception_jax.pretrained``): pixels to
  ``[0, scale]``, optionally reordered to BGR, then ``(x - mean) / std``."""
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)

  def op(features):
    x = tf.cast(_decoded(features), tf.float32) * (scale / 255.0)
    if bgr:
      x = x[..., ::-1]
    return {**features, 'image': (x - mean) / std}
  return op


@register('keep')
def keep(*keys: str) -> Op:
  return lambda f: {k: f[k] for k in keys}


# ----------------------------------------------------------------------- pipelines of a config

def _normalization(name: str) -> str:
  if name == 'inception':
    return 'value_range(-1, 1)'
  if name not in normalization.CONFIG_NAMES:
    raise errors.ConfigError(
        'data.normalization', f'config.data.normalization={name!r}; choose one of '
                              f'{", ".join(normalization.CONFIG_NAMES)}')
  p = normalization.NORMALIZATIONS[name]
  return (f'normalize({tuple(p["mean"])}, {tuple(p["std"])}, scale={p["scale"]}, '
          f'bgr={p["bgr"]})')


def _get(config, field):
  default = defaults.PREPROCESS[field]
  value = config.get(field, default) if hasattr(config, 'get') else getattr(config, field, default)
  return default if value is None else value


def train_spec(config) -> str:
  """The training pipeline of ``config.data`` (``pp_train`` when set, else built from the
  fields): TF-slim's ``preprocess_for_train``."""
  if _get(config, 'pp_train'):
    return config.pp_train
  size = int(config.image_size)
  ops = [f'inception_crop(area_min={_get(config, "crop_area_min")}, '
         f'area_max={_get(config, "crop_area_max")}, '
         f'aspect_min={_get(config, "crop_aspect_min")}, '
         f'aspect_max={_get(config, "crop_aspect_max")}, '
         f'min_object_covered={_get(config, "crop_min_object_covered")}, '
         f'max_attempts={_get(config, "crop_max_attempts")}, '
         f'use_bbox={bool(_get(config, "use_bboxes"))})']
  if _get(config, 'random_interpolation'):
    ops.append(f'random_resize({size})')
  else:
    ops.append(f'resize({size}, {_get(config, "train_interpolation")!r})')
  if _get(config, 'flip'):
    ops.append('flip_lr')
  colour = _get(config, 'color_distortion')
  if colour not in ('none', 'fast', 'full'):
    raise errors.ConfigError('data.color_distortion',
                             f"config.data.color_distortion={colour!r}; choose 'none', 'fast' "
                             "or 'full'")
  if colour != 'none':
    ops.append(f'color_distort({colour!r})')
  ops.append(_normalization(_get(config, 'normalization')))
  return '|'.join(ops)


EVAL_RESIZES = ('crop_then_resize', 'resize_then_crop')


def eval_spec(config) -> str:
  """The eval pipeline of ``config.data`` (``pp_eval`` when set, else from the fields).

  ``eval_resize='crop_then_resize'`` (TF-slim): the central ``eval_crop_fraction`` of each side,
  resized to ``image_size``. ``'resize_then_crop'`` (timm, torchvision): the shorter side resized
  to ``eval_resize_size`` (default ``floor(image_size / eval_crop_fraction)``, timm's rule), then
  the central ``image_size`` square.
  """
  if _get(config, 'pp_eval'):
    return config.pp_eval
  size = int(config.image_size)
  fraction = float(_get(config, 'eval_crop_fraction'))
  method = _get(config, 'eval_interpolation')
  antialias = bool(_get(config, 'eval_antialias'))
  mode = _get(config, 'eval_resize')
  if mode == 'crop_then_resize':
    ops = [f'central_crop({fraction})', f'resize({size}, {method!r}, antialias={antialias})']
  elif mode == 'resize_then_crop':
    shorter = int(_get(config, 'eval_resize_size')) or int(math.floor(size / fraction))
    if shorter < size:
      raise errors.ConfigError('data.eval_resize_size',
                               f'config.data.eval_resize_size={shorter} is below '
                               f'config.data.image_size={size}: the centre crop would not fit')
    ops = ['decode', f'resize_shorter({shorter}, {method!r}, antialias={antialias})',
           f'center_crop({size})']
  else:
    raise errors.ConfigError('data.eval_resize', f'config.data.eval_resize={mode!r}; choose one '
                                                 f'of {", ".join(EVAL_RESIZES)}')
  ops.append(_normalization(_get(config, 'normalization')))
  return '|'.join(ops)
