"""The conversion machinery: error reporting, head handling, file formats, save/load, predict.

Uses torchvision's GoogLeNet (the smallest reference) wherever the architecture does not matter;
per-architecture parity lives in tests/test_parity_<family>.py.
"""

import functools
import json
import logging
import os
import re
import urllib.error

import jax
import numpy as np
import pytest

from inception_jax import convert, pretrained
from inception_jax.convert import known
from reference_utils import assert_parity, images, randomize_torch, require, torch_forward

torch = require('torch')
torchvision = require('torchvision')

SIZE = 96  # small but above GoogLeNet's minimum: the facts tested here do not depend on size


def _googlenet(num_classes=1000, aux_logits=False, seed=0):
  torch.manual_seed(seed)
  model = torchvision.models.googlenet(weights=None, aux_logits=aux_logits, transform_input=False,
                                       init_weights=True, num_classes=num_classes)
  return randomize_torch(model, images(2, SIZE, seed=seed), seed=seed)


@pytest.fixture(scope='module')
def reference():
  return _googlenet()


def _apply(module, variables, x):
  return np.asarray(jax.jit(functools.partial(module.apply, train=False))(variables, x))


def test_state_dict_of_another_architecture_says_what_it_looks_like():
  """Not a list of every key: how many match, and the conversion that would take them."""
  torch.manual_seed(0)
  other = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
  state = other.state_dict()
  total = sum(1 for k in state if not k.endswith('num_batches_tracked'))
  with pytest.raises(convert.ConversionError) as err:
    convert.from_torch('inception_v1', state, source='torchvision')
  msg = str(err.value)
  assert re.fullmatch(rf'cannot convert a torchvision state dict to inception_v1: [0-2] of {total} '
                      rf'keys match; it looks like inception_v3 \({total} of {total} keys match a '
                      r'torchvision inception_v3\): --model inception_v3 --source torchvision',
                      msg), msg


def test_missing_unexpected_and_misshaped_tensors_reported_together(reference):
  state = dict(reference.state_dict())
  del state['inception4c.branch2.1.bn.running_var']
  state['extra.weight'] = torch.zeros(3)
  state['inception3a.branch1.conv.weight'] = torch.zeros(64, 192, 3, 3)
  with pytest.raises(convert.ConversionError) as err:
    convert.from_torch('inception_v1', state, source='torchvision')
  msg = str(err.value)
  assert 'inception4c.branch2.1.bn.running_var' in msg
  assert 'extra.weight' in msg
  assert 'source shape (3, 3, 192, 64)' in msg and '(1, 1, 192, 64)' in msg


def test_converting_again_traces_the_model_once_and_loads_the_new_weights(reference, monkeypatch):
  """A run's several state dicts (weights, their moving average, optimizer slots) convert with
  one trace of the model: the declared shapes are kept per model, the values never are."""
  traced = []
  eval_shape = jax.eval_shape
  monkeypatch.setattr(jax, 'eval_shape', lambda *a, **k: traced.append(1) or eval_shape(*a, **k))
  convert.from_torch('inception_v1', reference.state_dict(), source='torchvision')  # may trace
  before = len(traced)
  other = _googlenet(seed=1).state_dict()
  _, variables = convert.from_torch('inception_v1', other, source='torchvision')
  assert len(traced) == before
  np.testing.assert_array_equal(variables['params']['Logits']['kernel'],
                                other['fc.weight'].numpy().T)
  _, again = convert.from_torch('inception_v1', reference.state_dict(), source='torchvision')
  np.testing.assert_array_equal(again['params']['Logits']['kernel'],
                                reference.state_dict()['fc.weight'].numpy().T)
  with jax.enable_x64(True):  # another mode, traced for itself
    convert.from_torch('inception_v1', other, source='torchvision')
  assert len(traced) > before


def test_unknown_source_and_model():
  with pytest.raises(ValueError, match='source must be one of'):
    convert.from_torch('inception_v1', {}, source='caffe')
  with pytest.raises(ValueError, match='no timm converter for inception_v1'):
    convert.from_torch('inception_v1', {}, source='timm')


def test_new_head_for_fine_tuning_reinitialises_only_the_classifier(reference, caplog):
  module, variables = convert.from_torch('inception_v1', reference.state_dict(),
                                         source='torchvision')
  with caplog.at_level(logging.WARNING, logger='inception_jax.convert'):
    tuned, tv = convert.from_torch('inception_v1', reference.state_dict(), source='torchvision',
                                   num_classes=10)
  assert 're-initialised for 10 classes (checkpoint has 1000)' in caplog.text
  assert tv['params']['Logits']['kernel'].shape == (1024, 10)
  body = lambda v: {k: x for k, x in v['params'].items() if k != 'Logits'}
  jax.tree.map(np.testing.assert_array_equal, body(tv), body(variables))
  x = images(2, SIZE)
  feats, fv = convert.from_torch('inception_v1', reference.state_dict(), source='torchvision',
                                 num_classes=0)
  assert _apply(feats, fv, x).shape == (2, 1024)
  assert _apply(tuned, tv, x).shape == (2, 10)


def test_1001_class_checkpoint_drops_background():
  ref = _googlenet(num_classes=1001, seed=1)
  x = images(2, SIZE, seed=1)
  want = torch_forward(ref, x)[:, 1:]
  module, variables = convert.from_torch('inception_v1', ref.state_dict(), source='torchvision',
                                         drop_background=True)
  assert module.num_classes == 1000
  assert_parity(_apply(module, variables, x), want)
  with pytest.raises(ValueError, match='needs a 1001-class checkpoint'):
    convert.from_torch('inception_v1', _googlenet().state_dict(), source='torchvision',
                       drop_background=True)


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_weight_files_load_without_pickle(reference, tmp_path, fmt):
  path = str(tmp_path / f'w.{fmt}')
  if fmt == 'pth':
    torch.save(reference.state_dict(), path)
  else:
    from safetensors.numpy import save_file
    save_file({k: v.numpy() for k, v in reference.state_dict().items()}, path)
  module, variables = convert.from_torch('inception_v1', path, source='torchvision')
  x = images(2, SIZE)
  assert_parity(_apply(module, variables, x), torch_forward(reference, x))


def test_pickled_code_is_refused(tmp_path):
  path = str(tmp_path / 'evil.pth')
  torch.save({'model': _Evil()}, path)
  with pytest.raises(convert.WeightsFileError,
                     match=r'holds a pickled \S*system .*Save its weights instead'):
    convert.load_state_dict(path)


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_save_load_roundtrip_and_no_overwrite(reference, tmp_path):
  module, variables = convert.from_torch('inception_v1', reference.state_dict(),
                                         source='torchvision')
  out = pretrained.save(str(tmp_path / 'v1'), 'inception_v1', module, variables,
                        source='torchvision')
  loaded, lv, meta = pretrained.load(out)
  assert meta['model'] == 'inception_v1' and meta['source'] == 'torchvision'
  assert loaded.conventions == module.conventions and loaded.num_classes == 1000
  jax.tree.map(np.testing.assert_array_equal, lv, variables)
  with pytest.raises(FileExistsError):
    pretrained.save(out, 'inception_v1', module, variables)


def test_fetch_offline_says_which_file_goes_where(tmp_path, monkeypatch):
  def offline(*a, **k):
    raise urllib.error.URLError('no network')
  monkeypatch.setattr(known.urllib.request, 'urlopen', offline)
  with pytest.raises(RuntimeError) as err:
    known.fetch('timm/inception_v3.tf_in1k', str(tmp_path))
  msg = str(err.value)
  assert 'huggingface.co/timm/inception_v3.tf_in1k' in msg
  assert str(tmp_path / 'timm__inception_v3.tf_in1k.safetensors') in msg
  # A file put there by hand is used without any download.
  (tmp_path / 'timm__inception_v3.tf_in1k.safetensors').write_bytes(b'x')
  assert known.fetch('timm/inception_v3.tf_in1k', str(tmp_path)).endswith('.safetensors')


def test_cached_files_are_checked_against_the_published_sha256(tmp_path, monkeypatch):
  def offline(*a, **k):
    raise urllib.error.URLError('no network')
  monkeypatch.setattr(known.urllib.request, 'urlopen', offline)
  # torch.hub names carry the hash's first digits (googlenet-1378be20.pth).
  assert known.published_sha256('torchvision/googlenet') == '1378be20'
  placed = tmp_path / 'torchvision__googlenet.pth'
  placed.write_bytes(b'some other file')
  with pytest.raises(known.ChecksumError, match=r'torchvision__googlenet.pth: SHA-256 '
                                                     r'[0-9a-f]{16}\.\.\. is not the published '
                                                     r'1378be20\.\.\. of torchvision/googlenet'):
    known.fetch('torchvision/googlenet', str(tmp_path))
  assert placed.exists()  # the user's file is theirs to delete
  monkeypatch.setitem(known.KNOWN['torchvision/googlenet'], 'sha256',
                      known.sha256(str(placed)))
  assert known.fetch('torchvision/googlenet', str(tmp_path)) == str(placed)


def test_predict_class_names():
  from inception_jax import predict
  assert predict.class_names({'classes': ['ant', 'bee']}, 2) == ['ant', 'bee']
  assert predict.class_names({}, 1000) == pretrained.imagenet_classes()
  assert predict.class_names({}, 3) == ['0', '1', '2']
  assert predict.class_names({'classes': ['ant']}, 3) == ['0', '1', '2']  # not this model's


def test_convert_and_predict_cli_on_a_real_photo(reference, tmp_path, capsys):
  """A new user's path: state dict file -> converted directory -> top-5 for a photo."""
  skimage_data = require('skimage.data')
  from PIL import Image
  from inception_jax import predict
  from inception_jax.convert.__main__ import main as convert_main
  weights = str(tmp_path / 'googlenet.pth')
  torch.save(reference.state_dict(), weights)
  out = str(tmp_path / 'converted')
  assert convert_main(['--model', 'googlenet', '--source', 'torchvision', '--weights', weights,
                       '--out', out]) == 0
  photo = str(tmp_path / 'chelsea.png')
  Image.fromarray(skimage_data.chelsea()).save(photo)
  bad = str(tmp_path / 'broken.jpg')
  open(bad, 'wb').write(b'not a jpeg')
  capsys.readouterr()
  # The unreadable file is reported after the others are printed, and the exit status says so.
  assert predict.main(['--model', 'inception_v1', '--weights', out, photo, bad]) == 1
  printed = capsys.readouterr()
  rows = re.findall(r'^\s*(\d)\. (.*?)\s+([\d.]+)%\s+\(class (\d+)\)$', printed.out, re.M)
  assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
  classes = pretrained.imagenet_classes()
  assert all(name == classes[int(i)] for _, name, _, i in rows)
  probs = [float(p) for _, _, p, _ in rows]
  assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
  assert 'broken.jpg: cannot read image' in printed.err
  # --json: the same top classes, machine-readable; the same batch shape (no new compilation).
  assert predict.main(['--weights', out, '--json', '--top', '3', photo, photo]) == 0
  got = json.loads(capsys.readouterr().out)
  assert got['model'] == 'inception_v1' and got['unreadable'] == []
  assert [c['class'] for c in got['images'][0]['top']] == [int(r[3]) for r in rows[:3]]
  assert got['images'][0]['top'] == got['images'][1]['top']
  assert got['images'][0]['top'][0]['name'] == rows[0][1]
