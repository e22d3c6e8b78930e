"""The FID network's weights: found where the reference tools keep them, verified, converted.

The published file is the TF ``inception-2015-12-05`` graph in torchvision's ``Inception3`` names,
as pytorch-fid (``pytorch_fid/inception.py``: ``FID_WEIGHTS_URL``) and torch-fidelity
(``feature_extractor_inceptionv3.py``: ``URL_INCEPTION_V3``) publish it; both name it with the
first hex digits of its SHA-256 (torch.hub's convention, which ``check_hash`` verifies).

An ImageNet Inception-v3 (torchvision's, timm's) has the same layer names and, but for the
classifier, the same shapes, and converts without complaint; its FID looks plausible and means
nothing. :func:`verify` tells them apart by what only the FID graph has: 1008 classes
(``fc.weight`` (1008, 2048)), no auxiliary classifier, exactly the FID network's tensors (the
Mixed_7c max-pool branch's ``branch_pool`` among them), and, for a file under a published name,
that name's hash.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from inception_jax.errors import UserError

# Published file name -> (source, URL).
PUBLISHED = {
    'pt_inception-2015-12-05-6726825d.pth': (
        'pytorch_fid', 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                       'pt_inception-2015-12-05-6726825d.pth'),
    'weights-inception-2015-12-05-6726825d.pth': (
        'torch_fidelity', 'https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/'
                          'weights-inception-2015-12-05-6726825d.pth'),
}
DEFAULT_FILE = 'pt_inception-2015-12-05-6726825d.pth'
CLASSES, FEATURES = 1008, 2048
EXPECTED = (f'the FID network (TF inception-2015-12-05: {CLASSES} classes, fc.weight '
            f'({CLASSES}, {FEATURES}), no AuxLogits), e.g. pytorch-fid\'s {DEFAULT_FILE} or '
            f'torch-fidelity\'s weights-inception-2015-12-05-6726825d.pth')


class WeightsError(UserError, ValueError):
  """Weights that are not the FID network's, or none to be found; one line naming the file."""


def torch_hub_checkpoints() -> str:
  """Where ``torch.hub`` (hence pytorch-fid and torch-fidelity) keeps downloaded weights:
  ``$TORCH_HOME/hub/checkpoints``, ``$TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch``
  (``~/.cache/torch``)."""
  home = os.environ.get('TORCH_HOME') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
      'torch')
  return os.path.join(home, 'hub', 'checkpoints')


def candidates() -> list[str]:
  """The files :func:`find` looks for, in order: the torch hub cache's published files, then
  this project's cache (where :func:`inception_jax.convert.known.fetch` saves them)."""
  from inception_jax.convert import known
  hub, cache = torch_hub_checkpoints(), known.cache_dir()
  return ([os.path.join(hub, name) for name in PUBLISHED]
          + [os.path.join(cache, f'{source}__inception-2015-12-05.pth')
             for source, _ in PUBLISHED.values()]
          + [os.path.join(cache, name) for name in PUBLISHED])


def find(flag: str = '--weights') -> str:
  """A local file of the FID network's weights: the first of :func:`candidates` that exists,
  else a download into the project's cache; offline, a :class:`WeightsError` that says which
  file to fetch from where, where to put it, and ``flag`` to pass it instead."""
  for path in candidates():
    if os.path.isfile(path):
      return path
  from inception_jax.convert import known
  try:
    return known.fetch('pytorch_fid/inception-2015-12-05')
  except RuntimeError as err:
    cause = err.__cause__ or err
    raise WeightsError(
        f'the FID network\'s weights are not on this machine and could not be downloaded '
        f'({type(cause).__name__}: {cause}): fetch {PUBLISHED[DEFAULT_FILE][1]} and put it at '
        f'{os.path.join(torch_hub_checkpoints(), DEFAULT_FILE)} (where pytorch-fid keeps it), '
        f'or pass the file with {flag} FILE') from None


def expected_keys() -> set[str]:
  """The FID network's state-dict keys (torchvision's ``Inception3`` names, no aux head)."""
  from inception_jax.convert.inception_v3 import BODY
  keys = {'fc.weight', 'fc.bias'}
  for name, _ in BODY:
    keys.add(f'{name}.conv.weight')
    keys.update(f'{name}.bn.{t}' for t in ('weight', 'bias', 'running_mean', 'running_var'))
  return keys


def _listed(keys, limit: int = 3) -> str:
  keys = sorted(keys)
  more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
  return ', '.join(keys[:limit]) + more


def verify(state: Mapping[str, np.ndarray], given: str) -> None:
  """Refuse a state dict that is not the FID network's, in one line naming ``given`` (the file),
  what it holds and what is expected."""
  keys = {k for k in state if not k.endswith('num_batches_tracked')}
  fc = state.get('fc.weight')
  aux = sorted(k for k in keys if k.startswith('AuxLogits.'))
  if fc is None or tuple(fc.shape) != (CLASSES, FEATURES):
    what = ('no classifier (fc.weight): a feature extractor' if fc is None else
            f'{fc.shape[0]} classes (fc.weight {tuple(fc.shape)})')
    if fc is not None and fc.shape[0] in (1000, 1001):
      what += (', an ImageNet Inception-v3' + (' with its auxiliary classifier AuxLogits'
                                               if aux else ''))
    raise WeightsError(f'{given} is not the FID network: it has {what}; expected {EXPECTED}')
  if aux:
    raise WeightsError(f'{given} is not the FID network: it has an auxiliary classifier '
                       f'({_listed(aux)}); expected {EXPECTED}')
  want = expected_keys()
  if keys != want:
    parts = []
    if want - keys:
      parts.append(f'lacks {_listed(want - keys)}')
    if keys - want:
      parts.append(f'has unexpected {_listed(keys - want)}')
    raise WeightsError(f'{given} is not the FID network: it {" and ".join(parts)}; '
                       f'expected {EXPECTED}')


def verify_file(path: str) -> None:
  """A file under a published name must carry that name's SHA-256 prefix (a partial download or
  another file renamed is refused)."""
  name = os.path.basename(path)
  if name in PUBLISHED:
    from inception_jax.convert.known import sha256
    prefix = name.rsplit('-', 1)[1].split('.')[0]
    digest = sha256(path)
    if not digest.startswith(prefix):
      raise WeightsError(f'{path}: SHA-256 {digest[:16]}... does not start with {prefix}, the hash '
                         f'its published name carries (a partial download or another file '
                         f'renamed); fetch it again from {PUBLISHED[name][1]}')


def load(path: str | None = None, flag: str = '--weights', num_classes: int | None = None):
  """``(module, variables)`` of the FID network from ``path`` (a ``.pth`` of pytorch-fid or
  torch-fidelity, a ``.safetensors``, or a converted-weights folder), or :func:`find`'s file;
  each verified first. ``flag`` is the command-line flag the messages name."""
  from inception_jax import convert, pretrained
  if path is None:
    path = find(flag)
  if not os.path.exists(path):
    raise WeightsError(f'{flag} {path}: no such file or folder; expected {EXPECTED}')
  if os.path.isdir(path):
    try:
      module, variables, meta = pretrained.load(path)
    except (FileNotFoundError, ValueError) as err:
      raise WeightsError(f'{flag} {path}: {err}') from None
    if meta['model'] != 'inception_v3_fid' or module.num_classes not in (0, CLASSES):
      raise WeightsError(f'{path} holds {meta["model"]} with {module.num_classes} classes, not '
                         f'the FID network; expected {EXPECTED}')
    return module, variables
  verify_file(path)
  from inception_jax.convert.core import ConversionError, load_state_dict
  try:
    state = load_state_dict(path)
  except Exception as err:  # torch.load / safetensors raise many types on a foreign file
    raise WeightsError(f'{flag} {path}: not a readable weights file ({type(err).__name__}: '
                       f'{str(err).splitlines()[0] if str(err) else ""}); expected '
                       f'{EXPECTED}') from None
  verify(state, path)
  source = PUBLISHED.get(os.path.basename(path), ('pytorch_fid',))[0]
  try:
    return convert.from_torch('inception_v3_fid', state, source=source, num_classes=num_classes)
  except ConversionError as err:  # shapes that differ from the FID network's
    first = str(err).splitlines()[0][:300]
    raise WeightsError(f'{path} is not the FID network: {first}; expected {EXPECTED}') from None


__all__ = ['DEFAULT_FILE', 'EXPECTED', 'PUBLISHED', 'WeightsError', 'candidates', 'expected_keys',
           'find', 'load', 'torch_hub_checkpoints', 'verify', 'verify_file']
