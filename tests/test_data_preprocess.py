"""The preprocessing ops: eager == tf.data, TF-slim's crop ranges, the eval protocols."""

import io
import zlib

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from inception_jax.data import preprocess


def _photo(h=75, w=100, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  base = np.stack([x * 2.5, y * 3.0, (x + y) * 1.5], -1) % 255
  return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def _encoded(fmt: str, image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=fmt)
  return buf.getvalue()


IMAGE = _photo()
JPEG = _encoded('JPEG', IMAGE)
PNG = _encoded('PNG', IMAGE)

# Every registered op, with an input ('jpeg', 'png' or 'pixels'); a pipeline per row.
OPS = [
    ('decode', 'jpeg'),
    ('decode', 'png'),
    ('inception_crop', 'jpeg'),
    ('inception_crop(area_min=0.08, min_object_covered=0.0)', 'png'),
    ('inception_crop', 'pixels'),
    ('central_crop(0.875)', 'jpeg'),
    ('central_crop(0.8975)', 'pixels'),
    ('resize(32)', 'jpeg'),
    ("resize((20, 30), 'bicubic', antialias=True)", 'pixels'),
    ("resize(32, 'tf1_bilinear')", 'pixels'),
    ('random_resize(24)', 'pixels'),
    ("resize_shorter(40, 'bicubic', antialias=True)", 'png'),
    ('center_crop(31)', 'pixels'),
    ('center_crop(31)', 'jpeg'),
    ('flip_lr', 'pixels'),
    ("color_distort('fast')", 'pixels'),
    ("color_distort('full')", 'pixels'),
    ('value_range(-1, 1)', 'pixels'),
    ('normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))', 'pixels'),
    ("keep('image', 'label')", 'pixels'),
    ('inception_crop|resize(29)|flip_lr|color_distort("full")|value_range(-1, 1)', 'jpeg'),
]
INPUTS = {'jpeg': JPEG, 'png': PNG, 'pixels': IMAGE}


def test_every_op_is_in_the_table():
  tested = {spec.split('(')[0].split('|')[0] for spec, _ in OPS}
  assert tested == set(preprocess.names())


@pytest.mark.parametrize('spec,source', OPS)
def test_op_gives_the_same_result_eagerly_and_in_tf_data(spec, source):
  pp = preprocess.parse(spec)
  results = {}
  for seed in range(3):
    features = {'image': INPUTS[source], 'label': 7, 'rng': np.array([5, seed], np.int64)}
    eager = np.asarray(pp(features)['image'])
    ds = tf.data.Dataset.from_tensors(features).map(lambda f: pp(f)['image'])
    graph = next(iter(ds)).numpy()
    if eager.dtype == np.uint8:
      np.testing.assert_array_equal(eager, graph)
    else:  # graph rewrites (fused multiply-adds) may move the last bit of a float
      np.testing.assert_allclose(eager, graph, rtol=1e-6, atol=1e-6)
    results[seed] = eager
  random = any(k in spec for k in ('inception_crop', 'random_resize', 'flip_lr', 'color_distort'))
  if random and 'flip_lr' != spec:  # different example seeds, different results
    assert any(results[0].shape != r.shape or not np.array_equal(results[0], r)
               for r in results.values())


def test_crop_of_a_jpeg_decodes_only_the_window():
  op = preprocess.get('inception_crop')
  for seed in range(10):
    rng = np.array([0, seed])
    from_jpeg = op({'image': JPEG, 'rng': rng})['image'].numpy().astype(np.int32)
    from_pixels = op({'image': tf.io.decode_jpeg(JPEG), 'rng': rng})['image'].numpy()
    assert from_jpeg.shape == from_pixels.shape  # the same window
    # decode_and_crop_jpeg upsamples chroma at the window's edges slightly differently
    assert np.abs(from_jpeg - from_pixels).mean() < 1.0


def _crops(n=300, shape=(375, 500), **kw):
  op = preprocess.get('inception_crop', **kw)
  image = tf.zeros([*shape, 3], tf.uint8)
  return np.array([op({'image': image, 'rng': [1, i]})['image'].shape[:2] for i in range(n)])


# (inception_crop arguments, the area range its crops must fall in)
CROP_RANGES = [
    (dict(area_min=0.08, min_object_covered=0.0), (0.08, 1.0)),   # GoogLeNet
    (dict(area_min=0.05, min_object_covered=0.0), (0.05, 1.0)),   # v3 and later
    (dict(area_min=0.05), (0.1, 1.0)),  # slim: no boxes -> cover 10% of the whole image
    (dict(area_min=0.3, area_max=0.6, min_object_covered=0.0), (0.3, 0.6)),
]


@pytest.mark.parametrize('kw,area', CROP_RANGES)
def test_crops_respect_area_and_aspect_ranges(kw, area):
  hw = _crops(**kw)
  areas = hw[:, 0] * hw[:, 1] / (375 * 500)
  aspect = hw[:, 1] / hw[:, 0]
  full = areas == 1.0  # the fallback after 100 failed attempts
  assert full.mean() < 0.5
  a, r = areas[~full], aspect[~full]
  assert a.min() >= area[0] * 0.97 and a.max() <= area[1] * 1.03, (a.min(), a.max())
  assert r.min() >= 0.75 * 0.97 and r.max() <= 4 / 3 * 1.03, (r.min(), r.max())
  assert a.max() - a.min() > 0.5 * (area[1] - area[0])  # spread over the range


def test_crop_falls_back_to_the_whole_image():
  hw = _crops(n=20, shape=(100, 100), area_min=0.9, aspect_min=3.0, aspect_max=4.0,
              min_object_covered=0.0)
  assert (hw == 100).all()


def test_crop_covers_the_dataset_box():
  op = preprocess.get('inception_crop', min_object_covered=0.5, area_min=0.05)
  box = np.array([[0.0, 0.0, 0.3, 0.3]], np.float32)  # top-left corner object
  # The window's position: crop an image whose pixel values are their coordinates.
  coords = tf.cast(tf.stack(tf.meshgrid(tf.range(200), tf.range(200), indexing='ij') +
                            [tf.zeros([200, 200], tf.int32)], -1), tf.uint8)
  for seed in range(50):
    out = op({'image': coords, 'rng': [2, seed], 'bbox': box})['image'].numpy().astype(int)
    y0, x0 = out[0, 0, :2]
    y1, x1 = out[-1, -1, :2] + 1
    overlap = max(0, min(y1, 60) - y0) * max(0, min(x1, 60) - x0)
    assert overlap >= 0.5 * 60 * 60 * 0.97


def test_central_crop_is_tf_central_crop():
  for shape in [(75, 100), (375, 500), (333, 257)]:
    image = tf.constant(_photo(*shape))
    for fraction in (0.875, 0.8975, 0.5):
      ours = preprocess.get('central_crop', fraction)({'image': image})['image']
      np.testing.assert_array_equal(ours, tf.image.central_crop(image, fraction))


def test_resize_shorter_and_center_crop_as_torchvision():
  out = preprocess.parse('resize_shorter(342)|center_crop(299)')({'image': _photo(375, 500)})
  assert out['image'].shape == (299, 299, 3)
  mid = preprocess.get('resize_shorter', 342)({'image': _photo(375, 500)})['image']
  assert mid.shape == (342, 456, 3)  # int(342 * 500 / 375) = 456, as torchvision's Resize


def _slim_colour(image, rng, names):
  """TF-slim's distort_color with TF's own ops on [0, 1] pixels, drawn from our op's seeds."""
  seed = preprocess._op_seed({'rng': rng}, 'color_distort')

  def draw(name):
    return tf.random.experimental.stateless_fold_in(seed, zlib.crc32(name.encode()) & 0x7FFFFFFF)
  ops = {'brightness': lambda x: tf.image.stateless_random_brightness(x, 32 / 255,
                                                                      draw('brightness')),
         'saturation': lambda x: tf.image.stateless_random_saturation(x, 0.5, 1.5,
                                                                      draw('saturation')),
         'hue': lambda x: tf.image.stateless_random_hue(x, 0.2, draw('hue')),
         'contrast': lambda x: tf.image.stateless_random_contrast(x, 0.5, 1.5, draw('contrast'))}
  x = image / 255
  for name in names:
    x = ops[name](x)
  return tf.clip_by_value(x, 0, 1) * 255


def test_colour_distortion_is_slims_on_0_to_255():
  """TF-slim's fast mode on [0, 1] pixels with the same draws gives the same image / 255."""
  image = tf.image.resize(IMAGE, (40, 50))  # float 0..255, as after the training resize
  for i in range(4):
    ours = preprocess.get('color_distort', 'fast')({'image': image, 'rng': [0, i]})['image']
    slim = _slim_colour(image, [0, i], ('brightness', 'saturation'))
    np.testing.assert_allclose(ours, slim, atol=1e-3)


def test_full_colour_distortion_is_slims_in_each_of_its_four_orders():
  image = tf.image.resize(IMAGE, (40, 50))
  orders = set()
  for i in range(12):
    seed = preprocess._op_seed({'rng': [1, i]}, 'color_distort')
    order = int(tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32))
    orders.add(order)
    ours = preprocess.get('color_distort', 'full')({'image': image, 'rng': [1, i]})['image']
    slim = _slim_colour(image, [1, i], preprocess._ORDERINGS[order])
    np.testing.assert_allclose(ours, slim, atol=2e-3)
  assert orders == {0, 1, 2, 3}


def test_saturation_without_hsv_is_tfs_kernel():
  """Pixels of every kind: grey, black, negative and above 255 (brightness comes before the
  clip), hue in every sector; factors from 0 (grey) past the cap at saturation 1."""
  rng = np.random.default_rng(0)
  pixels = np.concatenate([rng.uniform(-40, 300, (2000, 3)), rng.uniform(0, 255, (200, 1)) *
                           np.ones((1, 3)), [[0, 0, 0], [-5, -3, -9], [-5, 4, 2], [300, 280, 0]]])
  pixels = tf.constant(pixels[None], tf.float32)
  for factor in (0.0, 0.5, 0.97, 1.5, 4.0):
    np.testing.assert_allclose(preprocess._saturate(pixels, factor),
                               tf.image.adjust_saturation(pixels, factor), atol=2e-4, rtol=1e-5)


def test_fast_colour_distortion_compiled_for_static_shapes_equals_the_dynamic_path(
    monkeypatch):
  """A static shape (after a resize) runs the XLA-compiled function, an unknown one TF's kernels:
  the same draws and the same pixels to rounding."""
  calls = []
  compiled = preprocess._fast_xla
  monkeypatch.setattr(preprocess, '_fast_xla',
                      lambda *a, **k: calls.append(1) or compiled(*a, **k))
  image = tf.image.resize(IMAGE, (40, 50))
  op = preprocess.get('color_distort', 'fast')
  dynamic = tf.function(lambda x, rng: op({'image': x, 'rng': rng})['image'],
                        input_signature=[tf.TensorSpec([None, None, 3], tf.float32),
                                         tf.TensorSpec([2], tf.int64)])
  for i in range(4):
    rng = np.array([2, i], np.int64)
    static = op({'image': image, 'rng': rng})['image']
    assert len(calls) == i + 1  # the static shape went to the compiled function ...
    np.testing.assert_allclose(static, dynamic(image, rng), atol=1e-3)
    assert len(calls) == i + 1  # ... the unknown one did not


def test_colour_distortion_stays_in_range():
  for mode in ('fast', 'full'):
    out = preprocess.get('color_distort', mode)({'image': IMAGE, 'rng': [0, 1]})['image']
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0


def _data(**kw):
  c = ml_collections.ConfigDict({'image_size': 299})
  c.update(kw)
  return c


# config.data fields -> the pipelines they build
SPECS = [
    # the defaults (inception_jax/data/defaults.py): TF-slim's, colour distortion in fast mode
    (dict(), 'train',
     'inception_crop(area_min=0.05, area_max=1.0, aspect_min=0.75, aspect_max=1.3333333333333333, '
     "min_object_covered=0.1, max_attempts=100, use_bbox=True)|resize(299, 'bilinear')|flip_lr|"
     "color_distort('fast')|value_range(-1, 1)"),
    (dict(crop_area_min=0.08, random_interpolation=True, color_distortion='full', flip=False),
     'train',
     'inception_crop(area_min=0.08, area_max=1.0, aspect_min=0.75, aspect_max=1.3333333333333333, '
     "min_object_covered=0.1, max_attempts=100, use_bbox=True)|random_resize(299)|"
     "color_distort('full')|value_range(-1, 1)"),
    # TF-slim
    (dict(), 'eval', "central_crop(0.875)|resize(299, 'bilinear', antialias=False)|"
                     'value_range(-1, 1)'),
    # timm inception_v3 / inception_resnet_v2
    (dict(eval_resize='resize_then_crop', eval_interpolation='bicubic', eval_antialias=True),
     'eval', "decode|resize_shorter(341, 'bicubic', antialias=True)|center_crop(299)|"
             'value_range(-1, 1)'),
    (dict(eval_resize='resize_then_crop', eval_crop_fraction=0.8975, eval_interpolation='bicubic',
          eval_antialias=True), 'eval',
     "decode|resize_shorter(333, 'bicubic', antialias=True)|center_crop(299)|value_range(-1, 1)"),
    # torchvision inception_v3
    (dict(eval_resize='resize_then_crop', eval_resize_size=342, eval_antialias=True,
          normalization='imagenet'), 'eval',
     "decode|resize_shorter(342, 'bilinear', antialias=True)|center_crop(299)|"
     'normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), scale=1.0, bgr=False)'),
    (dict(pp_eval='decode|resize(299)|value_range(0, 1)'), 'eval',
     'decode|resize(299)|value_range(0, 1)'),
]


@pytest.mark.parametrize('fields,which,expected', SPECS)
def test_config_fields_build_the_pipelines(fields, which, expected):
  config = _data(**fields)
  spec = preprocess.train_spec(config) if which == 'train' else preprocess.eval_spec(config)
  assert spec == expected
  out = preprocess.parse(spec)({'image': JPEG, 'label': 0, 'rng': [0, 0]})['image']
  assert out.shape == (299, 299, 3) and out.dtype == tf.float32


def test_normalizations():
  pixels = {'image': IMAGE}
  inception = preprocess.parse(preprocess._normalization('inception'))(pixels)['image']
  np.testing.assert_allclose(inception, IMAGE / 127.5 - 1, atol=1e-6)
  imagenet = preprocess.parse(preprocess._normalization('imagenet'))(pixels)['image']
  np.testing.assert_allclose(imagenet, (IMAGE / 255 - [0.485, 0.456, 0.406]) /
                             [0.229, 0.224, 0.225], atol=1e-5)
  caffe = preprocess.parse(preprocess._normalization('caffe_bgr'))(pixels)['image']
  np.testing.assert_allclose(caffe, IMAGE[..., ::-1] - np.array([104.0, 117.0, 128.0]),
                             atol=1e-4)


@pytest.mark.parametrize('fields,message', [
    (dict(color_distortion='strong'), 'config.data.color_distortion'),
    (dict(normalization='zero_one'), 'config.data.normalization'),
    (dict(eval_resize='squash'), 'config.data.eval_resize'),
    (dict(eval_interpolation='cubic'), 'unknown interpolation'),
    (dict(pp_eval='decode|blur(3)'), "unknown preprocessing op 'blur'"),
    (dict(pp_eval='decode|resize(299'), 'cannot parse'),
])
def test_bad_fields_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    config = _data(**fields)
    preprocess.parse(preprocess.train_spec(config))
    preprocess.parse(preprocess.eval_spec(config))
