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
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import models
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
            'weights-inception-2015-12-05-6726825d.pth'),
}


def cache_dir() -> str:
  return os.environ.get('INCEPTION_JAX_CACHE',
                        os.path.join(os.path.expanduser('~'), '.cache', 'inception_jax'))


def fetch(key: str, directory: str | None = None) -> str:
  """Local path of the published weights ``key`` (see ``KNOWN``), downloading them if needed."""
  if key not in KNOWN:
    raise ValueError(f'unknown weights {key!r}; known: {", ".join(sorted(KNOWN))}')
  url = KNOWN[key]['url']
  directory = directory or cache_dir()
  path = os.path.join(directory, key.replace('/', '__') + os.path.splitext(url)[1])
  if os.path.exists(path):
    return path
  os.makedirs(directory, exist_ok=True)
  try:
    with urllib.request.urlopen(url, timeout=60) as response, \
        tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
      shutil.copyfileobj(response, tmp)
    os.replace(tmp.name, path)
  except (urllib.error.URLError, OSError, TimeoutError) as err:
    raise RuntimeError(
        f'could not download {key} from {url} ({err}). Offline: fetch that file on a machine '
        f'with network access and put it at {path} (or set INCEPTION_JAX_CACHE to the folder '
        f'holding it), or pass the file itself to inception_jax.convert.from_torch(...).') from err
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


def save(directory: str, name: str, module, variables, *, preprocess: dict | None = None,
         source: str | None = None) -> str:
  """Write ``variables`` of ``module`` (registry ``name``) as an orbax checkpoint + model.json.

  Refuses to overwrite an existing directory, so a good checkpoint is never replaced by accident.
  """
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise FileExistsError(f'{directory} exists; choose a new directory for converted weights')
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  meta = {'format': FORMAT_VERSION, 'model': models.info(name).name, 'options': describe(module),
          'preprocess': preprocess or dict(INCEPTION), 'source': source}
  tmp = directory + '.partial'
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(tmp, 'variables'), jax.device_get(variables))
  with open(os.path.join(tmp, 'model.json'), 'w') as f:
    json.dump(meta, f, indent=2)
  os.replace(tmp, directory)
  return directory


def load_meta(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, 'model.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{directory} is not a converted-weights directory (no model.json); '
                            'create one with `python -m inception_jax.convert`')
  with open(path) as f:
    meta = json.load(f)
  if meta.get('format') != FORMAT_VERSION:
    raise ValueError(f'{path}: unsupported format {meta.get("format")!r}')
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
