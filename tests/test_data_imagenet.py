"""The ImageNet path as a new user takes it: TFDS's real ``imagenet2012`` builder prepares a tiny
manual download laid out as image-net.org ships it, and the paper config trains a step on it."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from experiments.configs import v1
from inception_jax import data, train

SYNSETS = ('n01440764', 'n01443537')  # ImageNet classes 0 and 1
TRAIN_PER_SYNSET = 2
VAL_IMAGES = 3


def _jpeg(rng, h, w) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format='JPEG')
  return buf.getvalue()


def _add(tar, name, content):
  info = tarfile.TarInfo(name)
  info.size = len(content)
  tar.addfile(info, io.BytesIO(content))


def make_manual_download(directory: str) -> None:
  """``ILSVRC2012_img_train.tar`` (a tar of one tar per synset, of ``<synset>_<n>.JPEG``) and
  ``ILSVRC2012_img_val.tar`` (``ILSVRC2012_val_<8 digits>.JPEG``), as image-net.org ships them;
  TFDS labels the validation images from its own list, by file name."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  with tarfile.open(os.path.join(directory, 'ILSVRC2012_img_train.tar'), 'w') as outer:
    for synset in SYNSETS:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as tar:
        for k in range(TRAIN_PER_SYNSET):
          _add(tar, f'{synset}_{k + 1}.JPEG', _jpeg(rng, 60 + 7 * k, 80))
      _add(outer, f'{synset}.tar', inner.getvalue())
  with tarfile.open(os.path.join(directory, 'ILSVRC2012_img_val.tar'), 'w') as tar:
    for k in range(VAL_IMAGES):
      _add(tar, f'ILSVRC2012_val_{k + 1:08d}.JPEG', _jpeg(rng, 70, 90 - 5 * k))


def _config(tmp_path, **overrides):
  """The paper config, as ``--config=v1.py`` with these flags on the command line would give."""
  c = v1.get_config()
  c.update_from_flattened_dict({
      'data.data_dir': str(tmp_path / 'tensorflow_datasets'),
      'data.manual_dir': str(tmp_path / 'manual'),
      'data.image_size': 65, 'dtype': 'float32', 'batch_size': 2, 'eval_batch_size': 2,
      'total_steps': 1, 'log_every_steps': 1, 'eval_every_epochs': 0.0, 'tensorboard': False,
      **overrides})
  return c


def test_missing_manual_download_says_which_files_go_where(tmp_path):
  c = _config(tmp_path)
  with pytest.raises(ValueError) as err:
    train.validate(c)
  message = str(err.value)
  assert message.startswith("config.data.name='imagenet2012' needs a manual download")
  for name in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'):
    assert f'{tmp_path / "manual" / name}  (' in message
  assert 'MISSING' in message and ':quick' in message


def test_tiny_manual_download_trains_a_step(tmp_path):
  make_manual_download(str(tmp_path / 'manual'))
  c = _config(tmp_path)
  info = data.info(c.data)  # prepares it: array_record files under data_dir
  assert info.num_classes == 1000
  assert info.num_examples == {'train': len(SYNSETS) * TRAIN_PER_SYNSET,
                               'validation': VAL_IMAGES}
  assert any(f.endswith('.array_record-00000-of-00001') for _, _, files in
             os.walk(tmp_path / 'tensorflow_datasets') for f in files)
  batch = next(data.batches(c.data, 'train', batch_size=4, train=True, seed=0))
  assert sorted(batch['label'].tolist()) == [0, 0, 1, 1]

  results = train.train_and_evaluate(c, str(tmp_path / 'workdir'))
  assert results['steps'] == 1 and results['dataset'] == 'imagenet2012'
  assert results['eval_split'] == 'validation'
  with open(tmp_path / 'workdir' / 'results.json') as f:
    assert json.load(f)['eval']['top1'] >= 0.0

  with pytest.raises(ValueError, match="config.data.eval_split='test'"):
    train.validate(_config(tmp_path, **{'data.eval_split': 'test'}))
  with pytest.raises(ValueError, match=r"has splits \['train', 'validation'\], not 'test'"):
    data.batches(c.data, 'test', batch_size=2, train=False)
