"""Image folders and TFDS names behind ``inception_jax.data``: shards, eval coverage on 1-3
hosts, resume, corrupt files, errors that name the problem."""

import io
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from inception_jax import data
from inception_jax.data import tfds as tfds_data

SIZE = 32
CLASSES = ('ant', 'bee', 'cat')
TRAIN_PER_CLASS = (4, 5, 3)   # 12 training images
VAL_PER_CLASS = (3, 4, 4)     # 11 validation images


def _colour(i: int) -> tuple[int, int, int]:
  """The flat colour of example ``i``: preprocessing keeps a flat image flat, so the colour
  identifies the example in any batch."""
  return 20 + 11 * (i % 20), 20 + 11 * (i // 20), 128


def _identify(images: np.ndarray) -> np.ndarray:
  pixels = (images.reshape(len(images), -1, 3).mean(1) + 1) * 127.5  # back to 0..255
  return (np.round((pixels[:, 0] - 20) / 11) + 20 * np.round((pixels[:, 1] - 20) / 11)).astype(
      int)


def _jpeg(colour, h=30, w=40) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(buf, format='JPEG', quality=95)
  return buf.getvalue()


def _write_split(root, split, per_class, first_id):
  ids = {}
  i = first_id
  for c, n in zip(CLASSES, per_class):
    os.makedirs(os.path.join(root, split, c), exist_ok=True)
    for k in range(n):
      path = os.path.join(root, split, c, f'{k:03d}.jpg')
      with open(path, 'wb') as f:
        f.write(_jpeg(_colour(i), h=28 + k, w=40 - k))
      ids[path] = i
      i += 1
  return ids


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('folder'))
  train = _write_split(root, 'train', TRAIN_PER_CLASS, 0)
  val = _write_split(root, 'val', VAL_PER_CLASS, len(train))
  return root, train, val


def _config(name, **kw):
  # No colour distortion (the default is TF-slim's 'fast'): _identify reads each example's
  # identity back from its pixel values.
  c = ml_collections.ConfigDict({'name': name, 'image_size': SIZE, 'train_split': 'train',
                                 'eval_split': 'validation', 'color_distortion': 'none'})
  c.update(kw)
  return c


def _take(cfg, n, split='train', **kw):
  it = data.batches(cfg, split, train=True, **kw)
  return [next(it) for _ in range(n)]


def test_image_folder_splits_and_classes(folder):
  root, train, val = folder
  info = data.info(_config('imagefolder:' + root))
  assert info.num_classes == 3
  assert info.num_examples == {'train': len(train), 'validation': len(val)}
  batch = next(data.batches(_config('imagefolder:' + root), 'validation', batch_size=11,
                            train=False))
  assert batch['image'].shape == (11, SIZE, SIZE, 3) and batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  np.testing.assert_array_equal(batch['label'], np.repeat([0, 1, 2], VAL_PER_CLASS))
  np.testing.assert_array_equal(_identify(batch['image']), sorted(val.values()))


def test_fixed_held_out_split_without_val(tmp_path):
  _write_split(str(tmp_path), 'train', (10, 10, 10), 0)
  cfg = _config(f'imagefolder:{tmp_path}', holdout_fraction=0.2)
  assert data.info(cfg).num_examples == {'train': 24, 'validation': 6}
  held = next(data.batches(cfg, 'validation', batch_size=6, train=False))
  again = next(data.batches(cfg, 'validation', batch_size=6, train=False))
  np.testing.assert_array_equal(held['image'], again['image'])
  np.testing.assert_array_equal(held['label'], [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_eval_sees_every_example_once(folder, process_count):
  root, _, val = folder
  cfg = _config('imagefolder:' + root)
  seen, counts = [], []
  for p in range(process_count):
    batches = list(data.batches(cfg, 'validation', batch_size=2, train=False, process_index=p,
                                process_count=process_count))
    counts.append(len(batches))
    for b in batches:
      assert b['image'].shape == (2, SIZE, SIZE, 3)
      seen.extend(_identify(b['image'])[b['mask'] > 0])
  assert len(set(counts)) == 1  # the same number of batches on every host
  assert sorted(seen) == sorted(val.values())


def test_train_shards_are_disjoint_rows_of_the_global_batch(folder):
  cfg = _config('imagefolder:' + folder[0])
  whole = _take(cfg, 3, batch_size=6, seed=1)
  for p in range(3):
    part = _take(cfg, 3, batch_size=2, seed=1, process_index=p, process_count=3)
    for w, b in zip(whole, part):
      # the same examples with the same crops and flips: augmentation follows the global row
      np.testing.assert_allclose(b['image'], w['image'][2 * p:2 * p + 2], atol=1e-6)
      np.testing.assert_array_equal(b['label'], w['label'][2 * p:2 * p + 2])
  ids = [_identify(b['image']) for b in _take(cfg, 2, batch_size=6, seed=1)]
  assert sorted(np.concatenate(ids)) == list(range(12))  # one epoch: each example once


def test_resumed_iterator_yields_the_same_batches(folder):
  cfg = _config('imagefolder:' + folder[0])
  straight = _take(cfg, 6, batch_size=4, seed=7)
  resumed = _take(cfg, 3, batch_size=4, seed=7, start_step=3)
  for a, b in zip(straight[3:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  other_seed = _take(cfg, 1, batch_size=4, seed=8)[0]
  assert not np.array_equal(other_seed['image'], straight[0]['image'])


def test_corrupt_and_unreadable_files_are_skipped_and_counted(tmp_path, caplog):
  ids = _write_split(str(tmp_path), 'train', (3, 3, 3), 0)
  val = _write_split(str(tmp_path), 'val', (2, 2, 2), 9)
  good = _jpeg((200, 10, 10))
  bad = {os.path.join(tmp_path, 'train', 'ant', 'corrupt.jpg'): b'\xff\xd8\xff\xe0' + b'x' * 64,
         os.path.join(tmp_path, 'train', 'bee', 'truncated.jpg'): good[:len(good) // 3],
         os.path.join(tmp_path, 'val', 'cat', 'corrupt.jpg'): b'not an image at all'}
  for path, content in bad.items():
    with open(path, 'wb') as f:
      f.write(content)
  unreadable = os.path.join(tmp_path, 'train', 'cat', 'unreadable.jpg')
  os.symlink(os.path.join(tmp_path, 'nowhere.jpg'), unreadable)
  cfg = _config(f'imagefolder:{tmp_path}')
  assert data.info(cfg).num_examples == {'train': 12, 'validation': 7}  # listed, not decoded

  it = data.batches(cfg, 'train', batch_size=4, train=True, seed=0)
  batches = [next(it) for _ in range(6)]  # two epochs, no crash
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 2 * len(ids)
  assert sorted(set(it.skipped)) == sorted([*list(bad)[:2], unreadable])
  assert len(it.skipped) == 6  # three files, twice
  assert 'corrupt.jpg' in caplog.text
  ids_seen = np.concatenate([_identify(b['image'])[b['mask'] > 0] for b in batches[:3]])
  assert sorted(ids_seen) == sorted(ids.values())  # the good ones, once per epoch

  it = data.batches(cfg, 'validation', batch_size=4, train=False)
  evals = list(it)
  assert sum(b['mask'].sum() for b in evals) == len(val)
  assert it.skipped == [list(bad)[2]]


def test_a_folder_of_garbage_is_an_error_not_a_silent_skip(tmp_path):
  for c in CLASSES:
    os.makedirs(tmp_path / 'train' / c)
    for k in range(7):
      with open(tmp_path / 'train' / c / f'{k}.jpg', 'wb') as f:
        f.write(b'garbage')
  it = data.batches(_config(f'imagefolder:{tmp_path}', holdout_fraction=0.0), 'train',
                    batch_size=8, train=True)
  with pytest.raises(RuntimeError, match='16 of the 16 examples read so far .* failed'):
    next(it), next(it)


@pytest.mark.parametrize('field,spec', [
    ('pp_train', 'decode|resize(20)|value_range(-1, 1)'),
    ('pp_eval', 'decode|value_range(-1, 1)'),  # no resize: images of any size
])
def test_a_pipeline_of_the_wrong_shape_fails_when_built(folder, field, spec):
  cfg = _config('imagefolder:' + folder[0], **{field: spec})
  with pytest.raises(ValueError, match='gives images of shape .* not \\[32, 32, 3\\]'):
    data.batches(cfg, 'train', batch_size=2, train=field == 'pp_train')


@pytest.mark.parametrize('name,split,message', [
    ('imagefolder:/no/such/folder', 'train', 'no such folder'),
    ('imagefolder:', 'train', "named 'imagefolder:PATH'"),
    ('EMPTY', 'train', 'no images in'),
    ('FOLDER', 'test', "has splits \\['train', 'validation'\\], not 'test'"),
])
def test_folder_errors_name_the_problem(folder, tmp_path, name, split, message):
  os.makedirs(tmp_path / 'train' / 'ant')
  name = {'EMPTY': f'imagefolder:{tmp_path}', 'FOLDER': 'imagefolder:' + folder[0]}.get(name, name)
  with pytest.raises(ValueError, match=message):
    data.info(_config(name))
    data.batches(_config(name), split, batch_size=2, train=False)


def test_val_classes_must_be_training_classes(tmp_path):
  _write_split(str(tmp_path), 'train', (1, 1, 1), 0)
  os.makedirs(tmp_path / 'val' / 'dog')
  with open(tmp_path / 'val' / 'dog' / 'a.jpg', 'wb') as f:
    f.write(_jpeg((1, 2, 3)))
  with pytest.raises(ValueError, match=r"classes \['dog'\] of .* are not classes of"):
    data.info(_config(f'imagefolder:{tmp_path}'))


# ------------------------------------------------------------------------------- TFDS names

MOCK_EXAMPLES = 10


def _mock_config(name='cifar10'):
  return _config(name, eval_split='test', download=True)


def test_tfds_name_with_mock_data():
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    for name in ('cifar10', 'tfds:cifar10'):
      info = data.info(_mock_config(name))
      assert info.num_classes == 10
      assert info.num_examples == {'train': MOCK_EXAMPLES, 'test': MOCK_EXAMPLES}
    b = _take(_mock_config(), 2, batch_size=4, seed=0)
    assert b[0]['image'].shape == (4, SIZE, SIZE, 3) and b[0]['label'].dtype == np.int32
    assert b[0]['mask'].tolist() == [1.0] * 4
    resumed = _take(_mock_config(), 1, batch_size=4, seed=0, start_step=1)[0]
    np.testing.assert_array_equal(resumed['image'], b[1]['image'])


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_tfds_eval_sees_every_example_once(process_count):
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    cfg = _mock_config()
    single = next(data.batches(cfg, 'test', batch_size=MOCK_EXAMPLES, train=False))
    expected = sorted(x.tobytes() for x in single['image'])
    seen = []
    for p in range(process_count):
      for b in data.batches(cfg, 'test', batch_size=3, train=False, process_index=p,
                            process_count=process_count):
        seen.extend(x.tobytes() for x in b['image'][b['mask'] > 0])
    assert sorted(seen) == expected


def test_tfds_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match='config.data.name: unknown dataset'):
    data.info(_config('no_such_dataset_here', data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match='download=True'):  # a TFDS dataset not prepared here
    data.info(_config('mnist', data_dir=str(tmp_path)))


class _FakeBuilder:
  name = 'fake'

  def __init__(self, features):
    self.info = type('Info', (), {'features': tfds.features.FeaturesDict(features)})()


@pytest.mark.parametrize('features,message', [
    ({'image': tfds.features.Tensor(shape=(28, 28), dtype=np.uint8),
      'label': tfds.features.ClassLabel(num_classes=2)}, r'rank 2 \(shape \(28, 28\)\)'),
    ({'video': tfds.features.Video(shape=(None, 8, 8, 3)),
      'label': tfds.features.ClassLabel(num_classes=2)}, '"image" and "label" features'),
    ({'image': tfds.features.Image(shape=(8, 8, 3)),
      'label': tfds.features.Tensor(shape=(), dtype=np.float32)}, 'not a ClassLabel'),
])
def test_tfds_features_are_checked(features, message):
  with pytest.raises(ValueError, match=message):
    tfds_data._check_features(_FakeBuilder(features), _config('fake'))
