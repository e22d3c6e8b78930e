"""Published weights of the reference implementations, by the name their library gives them.

:data:`KNOWN` is the table (model, source layout, input normalisation, URL, published hash);
:func:`fetch` finds or downloads a file and checks it against the published SHA-256;
:func:`convert` fetches and converts. Online, weights are fetched by name; offline, the error
says which file to put where.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any

from inception_jax import errors, pretrained
from inception_jax.normalization import FID, IMAGENET, INCEPTION

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


class DownloadError(errors.UserError, RuntimeError):
  """Published weights that could not be fetched; the message says where to put the file."""


class ChecksumError(errors.UserError, ValueError):
  """A file of published weights whose SHA-256 is not the published one."""


# torch.hub's file names carry the first hex digits of the file's SHA-256 (``name-<hash>.pth``).
_HUB_HASH = re.compile(r'-([0-9a-f]{8,64})\.[a-z]+$')


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
    raise pretrained.WeightsFormatError(f'unknown weights {key!r}; known: {", ".join(sorted(KNOWN))}')
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


def convert(key: str, *, directory: str | None = None, **kw: Any):
  """Fetch and convert published weights. Returns ``(module, variables, preprocess)``."""
  from inception_jax import convert
  path = fetch(key, directory)  # refuses an unknown key
  entry = KNOWN[key]
  module, variables = convert.from_torch(entry['model'], path, source=entry['source'], **kw)
  return module, variables, dict(entry['preprocess'])
