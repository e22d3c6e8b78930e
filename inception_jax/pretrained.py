"""Converted weights on disk, and the published weights of the reference implementations.

A converted model is a directory: ``model.json`` (the registry name, every option needed to rebuild
the module, its conventions, and the input preprocessing its weights expect) and ``variables/``,
an orbax checkpoint of ``{'params', 'batch_stats'}``. Loading reads JSON and tensorstore arrays:
no pickle, no code execution.

Published weights (``KNOWN``) are fetched by their timm/torchvision names when the machine is
online; offline, the error says which file to put where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import errors, models
from inception_jax.models.conventions import Conventions

FORMAT_VERSION = 1

# Input preprocessing a set of weights expects: pixels scaled to [0, 1] (or [0, 255] with
# scale=255), optionally reordered to BGR, then (x - mean) / std; eval crop fraction and resize.
INCEPTION = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), scale=1.0, bgr=False, crop_pct=0.875,
                 interpolation='bilinear')  # TF-slim / Keras 'tf' mode: [-1, 1]
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1.0, bgr=False,
                crop_pct=0.875, interpolation='bilinear')
CAFFE_BGR = dict(mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), scale=255.0, bgr=True,
                 crop_pct=0.875, interpolation='bilinear')  # pretrainedmodels bninception
FACENET = dict(mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3, scale=1.0, bgr=False, crop_pct=1.0,
               interpolation='bilinear')  # facenet-pytorch fixed_image_standardization
# The FID graph (TF inception-2015-12-05): (x - 128) / 128 of 0-255 values, whole image resized
# (inception_jax.fid.resize does it as each FID reference does).
FID = dict(mean=(128 / 255,) * 3, std=(128 / 255,) * 3, scale=1.0, bgr=False, crop_pct=1.0,
           interpolation='bilinear')
# By the name ``config.data.normalization`` gives them.
NORMALIZATIONS = {'inception': INCEPTION, 'imagenet': IMAGENET, 'caffe_bgr': CAFFE_BGR,
                  'facenet': FACENET, 'fid': FID}

_HF = 'https://huggingface.co/timm/{}/resolve/main/model.safetensors'

# Published ImageNet weights by the name their library gives them. torchvision's GoogLeNet and
# Inception-v3 weights are TF ports used with transform_input=True, i.e. they expect [-1, 1].
KNOWN: dict[str, dict[str, Any]] = {
    'torchvision/googlenet': dict(
        model='inception_v1', source='torchvision', preprocess=INCEPTION,
        url='https://download.pytorch.org/models/googlenet-1378be20.pth'),
    'torchvision/inception_v3': dict(
        model='inception_v3', source='torchvision', preprocess=dict(INCEPTION, crop_pct=299 / 342),
        url='https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth'),
    'timm/inception_v3.tf_in1k': dict(
        model='inception_v3', source='timm', preprocess=dict(INCEPTION, interpolation='bicubic'),
        url=_HF.format('inception_v3.tf_in1k')),
    'timm/inception_v3.tv_in1k': dict(
        model='inception_v3', source='timm', preprocess=dict(IMAGENET, interpolation='bicubic'),
        url=_HF.format('inception_v3.tv_in1k')),
    'timm/inception_v4.tf_in1k': dict(
        model='inception_v4', source='timm', preprocess=dict(INCEPTION, interpolation='bicubic'),
        url=_HF.format('inception_v4.tf_in1k')),
    'timm/inception_resnet_v2.tf_in1k': dict(
        model='inception_resnet_v2', source='timm',
        preprocess=dict(INCEPTION, crop_pct=0.8975, interpolation='bicubic'),
        url=_HF.format('inception_resnet_v2.tf_in1k')),
    'timm/legacy_xception.tf_in1k': dict(
        model='xception', source='timm',
        preprocess=dict(INCEPTION, crop_pct=0.8975, interpolation='bicubic'),
        url=_HF.format('legacy_xception.tf_in1k')),
    # The FID network as pytorch-fid (pytorch_fid/inception.py: FID_WEIGHTS_URL) and
    # torch-fidelity (feature_extractor_inceptionv3.py: URL_INCEPTION_V3) publish it.
    'pytorch_fid/inception-2015-12-05': dict(
        model='inception_v3_fid', source='pytorch_fid', preprocess=FID,
        url='https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
            'pt_inception-2015-12-05-6726825d.pth'),
    'torch_fidelity/inception-2015-12-05': dict(
        model='inception_v3_fid', source='torch_fidelity', preprocess=FID,
        url='https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/'
            'weights-inception-2015-12-05-6726825d.pth',
        sha256='6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2'),
}


class WeightsNotFoundError(errors.UserError, FileNotFoundError):
  """A path that should be a converted-weights directory is not one."""


class WeightsFormatError(errors.UserError, ValueError):
  """A converted-weights directory this version cannot read, or unknown published weights."""


class OutputExistsError(errors.UserError, FileExistsError):
  """:func:`save` refuses to replace an existing directory."""


class DownloadError(errors.UserError, RuntimeError):
  """Published weights that could not be fetched; the message says where to put the file."""


class ChecksumError(errors.UserError, ValueError):
  """A file of published weights whose SHA-256 is not the published one."""


# torch.hub's file names carry the first hex digits of the file's SHA-256 (``name-<hash>.pth``).
_HUB_HASH = re.compile(r'-([0-9a-f]{8,64})\.[a-z]+$')


def published_sha256(key: str) -> str | None:
  """The published SHA-256 of ``KNOWN[key]`` (or a prefix of it), where one is known: the entry's
  ``sha256``, else the hash in a torch.hub file name."""
  entry = KNOWN[key]
  if entry.get('sha256'):
    return entry['sha256']
  match = _HUB_HASH.search(entry['url'])
  return match.group(1) if match else None


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _check_sha256(key: str, path: str, shown: str) -> None:
  """:class:`ChecksumError` when ``path`` (named ``shown``) is not the file published as ``key``."""
  want = published_sha256(key)
  if want is None:
    return
  got = sha256(path)
  if not got.startswith(want):
    raise ChecksumError(
        f'{shown}: SHA-256 {got[:16]}... is not the published {want[:16]}... of {key} '
        f'({KNOWN[key]["url"]}); the file is damaged or another one: delete it and fetch it again')


def cache_dir() -> str:
  return os.environ.get('INCEPTION_JAX_CACHE',
                        os.path.join(os.path.expanduser('~'), '.cache', 'inception_jax'))


def fetch(key: str, directory: str | None = None) -> str:
  """Local path of the published weights ``key`` (see ``KNOWN``), downloading them if needed.

  A file already in ``directory`` (the cache, or put there by hand) and a download are checked
  against the published SHA-256 where one is known (:class:`ChecksumError`).
  """
  if key not in KNOWN:
    raise WeightsFormatError(f'unknown weights {key!r}; known: {", ".join(sorted(KNOWN))}')
  url = KNOWN[key]['url']
  directory = directory or cache_dir()
  path = os.path.join(directory, key.replace('/', '__') + os.path.splitext(url)[1])
  if os.path.exists(path):
    _check_sha256(key, path, path)
    return path
  os.makedirs(directory, exist_ok=True)
  tmp = None
  try:
    with urllib.request.urlopen(url, timeout=60) as response, \
        tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
      shutil.copyfileobj(response, tmp)
    _check_sha256(key, tmp.name, f'the download of {url}')
    os.replace(tmp.name, path)
  except ChecksumError:
    os.remove(tmp.name)
    raise
  except (urllib.error.URLError, OSError, TimeoutError) as err:
    if tmp is not None and os.path.exists(tmp.name):
      os.remove(tmp.name)
    raise DownloadError(
        f'could not download {key} from {url} ({err}). Offline: fetch that file on a machine '
        f'with network access and put it at {path} (or set INCEPTION_JAX_CACHE to the folder '
        f'holding it), or convert the file itself (python -m inception_jax.convert --model '
        f'{KNOWN[key]["model"]} --source {KNOWN[key]["source"]} --weights FILE --out DIR).'
    ) from err
  return path


def convert_known(key: str, *, directory: str | None = None, **kw: Any):
  """Fetch and convert published weights. Returns ``(module, variables, preprocess)``."""
  from inception_jax import convert
  path = fetch(key, directory)  # refuses an unknown key
  entry = KNOWN[key]
  module, variables = convert.from_torch(entry['model'], path, source=entry['source'], **kw)
  return module, variables, dict(entry['preprocess'])


# ------------------------------------------------------------------------------ save / load

def describe(module) -> dict[str, Any]:
  """The create() options that rebuild ``module`` (JSON-serialisable); not the process' CPU
  convolution library (``cpu_convolutions``), which the loading process passes."""
  out = {}
  for field in dataclasses.fields(module):
    if field.name in ('parent', 'name', 'cpu_convolutions'):
      continue
    value = getattr(module, field.name)
    if isinstance(value, Conventions):
      value = dataclasses.asdict(value)
    elif field.name == 'dtype':
      value = jnp.dtype(value).name
    elif not isinstance(value, (int, float, str, bool, type(None))):
      raise TypeError(f'cannot describe option {field.name}={value!r}')
    out[field.name] = value
  return out


def check_new_directory(directory: str) -> str:
  """The absolute ``directory``, or :class:`OutputExistsError` when something is there."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise OutputExistsError(f'{directory} exists; choose a new directory for converted weights '
                            '(nothing there was changed)')
  return directory


def save(directory: str, name: str, module, variables, *, preprocess: dict | None = None,
         source: str | None = None, classes: list[str] | None = None) -> str:
  """Write ``variables`` of ``module`` (registry ``name``) as an orbax checkpoint + model.json.

  ``classes``: the class names in index order, for ``predict`` (default: none recorded;
  ``predict`` then names the classes of a 1000-class model by ImageNet's and others by index).
  Refuses to overwrite an existing directory, so a good checkpoint is never replaced by accident;
  the directory appears whole or not at all.
  """
  import orbax.checkpoint as ocp
  directory = check_new_directory(directory)
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  meta = {'format': FORMAT_VERSION, 'model': models.info(name).name, 'options': describe(module),
          'preprocess': preprocess or dict(INCEPTION), 'source': source}
  if classes is not None:
    if len(classes) != getattr(module, 'num_classes', len(classes)):
      raise ValueError(f'{len(classes)} class names for a model of {module.num_classes} classes')
    meta['classes'] = [str(c) for c in classes]
  tmp = directory + '.partial'
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  try:
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(os.path.join(tmp, 'variables'), jax.device_get(variables))
    with open(os.path.join(tmp, 'model.json'), 'w') as f:
      json.dump(meta, f, indent=2)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  os.replace(tmp, directory)
  return directory


def load_meta(directory: str) -> dict[str, Any]:
  """The ``model.json`` of a converted-weights directory; :class:`WeightsNotFoundError` when
  ``directory`` is not one, :class:`WeightsFormatError` when it is unreadable."""
  path = os.path.join(directory, 'model.json')
  if not os.path.isdir(directory):
    raise WeightsNotFoundError(f'{directory}: no such directory; converted weights are a '
                               'directory made by `python -m inception_jax.convert --out DIR`')
  if not os.path.exists(path):
    raise WeightsNotFoundError(f'{directory} is not a converted-weights directory (no model.json);'
                               ' create one with `python -m inception_jax.convert`')
  try:
    with open(path) as f:
      meta = json.load(f)
  except ValueError as err:
    raise WeightsFormatError(f'{path}: not JSON ({err}); convert the weights again') from None
  if not isinstance(meta, dict) or meta.get('format') != FORMAT_VERSION:
    raise WeightsFormatError(f'{path}: unsupported format '
                             f'{meta.get("format") if isinstance(meta, dict) else meta!r}; '
                             'convert the weights again with this version')
  return meta


def build(meta: dict[str, Any], **overrides: Any):
  """The module described by ``meta`` (``overrides`` replace options, e.g. ``num_classes``)."""
  options = dict(meta['options'])
  options['conventions'] = Conventions(**options['conventions'])  # written by describe()
  options.update(overrides)
  return models.create(meta['model'], **options)


def load(directory: str, **overrides: Any):
  """Load converted weights. Returns ``(module, variables, meta)``."""
  import orbax.checkpoint as ocp
  from flax import traverse_util
  directory = os.path.abspath(directory)
  meta = load_meta(directory)
  size = models.info(meta['model']).input_size

  def shapes_of(module):
    shapes = jax.eval_shape(module.init, {'params': jax.random.PRNGKey(0)},
                            jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    return {k: shapes[k] for k in ('params', 'batch_stats') if k in shapes}

  with ocp.StandardCheckpointer() as ckpt:  # as saved, then what ``overrides`` keep of it
    variables = ckpt.restore(os.path.join(directory, 'variables'), shapes_of(build(meta)))
  module = build(meta, **overrides)
  if overrides:
    want = traverse_util.flatten_dict(shapes_of(module))
    have = traverse_util.flatten_dict(variables)
    lacking = ['/'.join(k) for k, v in want.items()
               if k not in have or tuple(have[k].shape) != tuple(v.shape)]
    if lacking:
      raise ValueError(f'{directory}: the weights have nothing of the right shape for '
                       f'{", ".join(lacking[:4])}{" ..." if len(lacking) > 4 else ""} under '
                       f'{overrides}; to fine-tune for new classes, use '
                       f'config.init_from={directory} (it initialises the new head)')
    variables = traverse_util.unflatten_dict({k: have[k] for k in want})
  return module, variables, meta


def preprocess_image(image: np.ndarray, size: int, preprocess: dict[str, Any]) -> np.ndarray:
  """HWC uint8 RGB image -> [size, size, 3] float32 as the weights expect (resize, crop, scale)."""
  from PIL import Image
  method = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC,
            'nearest': Image.NEAREST}[preprocess.get('interpolation', 'bilinear')]
  img = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  scaled = int(round(size / preprocess.get('crop_pct', 0.875)))
  w, h = img.size
  ratio = scaled / min(w, h)
  img = img.resize((max(size, round(w * ratio)), max(size, round(h * ratio))), method)
  w, h = img.size
  left, top = (w - size) // 2, (h - size) // 2
  img = img.crop((left, top, left + size, top + size))
  x = np.asarray(img, np.float32) / 255.0 * preprocess.get('scale', 1.0)
  if preprocess.get('bgr'):
    x = x[..., ::-1]
  return (x - np.asarray(preprocess['mean'], np.float32)) / np.asarray(preprocess['std'],
                                                                        np.float32)


def imagenet_classes() -> list[str]:
  """The 1000 ImageNet-1k class names in index order (shipped with the package)."""
  path = os.path.join(os.path.dirname(__file__), 'imagenet_classes.txt')
  with open(path) as f:
    names = [line.rstrip('\n') for line in f]
  assert len(names) == 1000, len(names)
  return names
