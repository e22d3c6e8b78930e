"""A relaunch continues the run it resumes: its config compared with the run's, field by field.

Every launch's config is kept in the workdir: ``config.json`` is the first launch's and is never
overwritten; a launch whose config differs from the latest recorded one adds ``config.N.json``
(N = 1, 2, ...). When the workdir holds checkpoints, each field that differs from the latest
recorded config is judged by what it changes:

* the compiled program or the meaning of the saved state (:data:`REFUSED`: the model and its
  options, the compute dtype, the optimizer, the batch size, the data): refused, one line naming
  each field and both values; use another workdir.
* what happens next only (:data:`ACCEPTED`: the length, the evaluation and checkpoint cadence,
  logging, what is kept): accepted, and listed in one line of the log.
* anything else (the seed, the rates and their schedule, the loss, the EMA, fields this module
  does not know): it silently breaks the promise that a resumed run is the uninterrupted one bit
  for bit, so it is refused unless ``config.allow_config_change`` is set, and then listed.

``allow_config_change`` itself is never counted as a change.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from flax import traverse_util

from inception_jax import errors

log = logging.getLogger('inception_jax.train')

CONFIG = 'config.json'
ALLOW = 'allow_config_change'

# Prefixes of dotted field names (a field is matched by the longest prefix that names it).
REFUSED = ('model', 'dtype', 'batch_size', 'optimizer.name', 'data')
ACCEPTED = ('num_epochs', 'total_steps', 'eval_every_epochs', 'checkpoint_every_steps',
            'log_every_steps', 'keep_checkpoints', 'keep_best_checkpoints', 'tensorboard',
            'eval_batch_size', 'nonfinite', 'restart_if_unrestorable', 'init_from',
            # where the data is read from, not what it is
            'data.data_dir', 'data.manual_dir', 'data.download')


class ConfigChangeError(errors.UserError):
  """A relaunch whose config would not continue the run in its workdir."""


def _matches(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + '.')


def kind(name: str) -> str:
  """``'refused'``, ``'accepted'`` or ``'allowed'`` (refused unless allow_config_change): what
  a change of the dotted field ``name`` on resume is."""
  best, found = -1, 'allowed'
  for group, prefixes in (('refused', REFUSED), ('accepted', ACCEPTED)):
    for prefix in prefixes:
      if _matches(name, prefix) and len(prefix) > best:
        best, found = len(prefix), group
  return found


def changes(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """``{field: (saved value, new value)}`` of the fields that differ (absent: ``None``), but
  :data:`ALLOW`."""
  a, b = (traverse_util.flatten_dict(c, sep='.') for c in (saved, new))
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if k != ALLOW and a.get(k) != b.get(k)}


def _history(workdir: str) -> list[str]:
  """The recorded configs, first to latest."""
  numbered = sorted((int(m.group(1)), name) for name in os.listdir(workdir)
                    if (m := re.fullmatch(r'config\.(\d+)\.json', name)))
  first = [CONFIG] if os.path.exists(os.path.join(workdir, CONFIG)) else []
  return first + [name for _, name in numbered]


def _listing(fields: dict[str, tuple[Any, Any]]) -> str:
  return ', '.join(f'config.{k}={new!r} (the run\'s: {old!r})' for k, (old, new) in fields.items())


def saved_config(workdir: str) -> dict:
  """The latest config recorded in ``workdir`` (:class:`errors.UserError` when there is none)."""
  history = _history(workdir) if os.path.isdir(workdir) else []
  if not history:
    raise errors.UserError(f'{workdir} holds no {CONFIG} (not a training workdir)')
  with open(os.path.join(workdir, history[-1])) as f:
    return json.load(f)


def record_launch(config, workdir: str, *, resuming: bool, write: bool = True) -> None:
  """Checks ``config`` against the latest config recorded in ``workdir`` when ``resuming``
  (it holds checkpoints): :class:`ConfigChangeError` for a refused change, nothing written;
  otherwise the accepted (and allowed) changes are logged in one line and, with ``write`` (on
  process 0), the config recorded (module docstring)."""
  new = json.loads(config.to_json_best_effort())
  history = _history(workdir) if os.path.isdir(workdir) else []
  saved = None
  if history:
    try:
      with open(os.path.join(workdir, history[-1])) as f:
        saved = json.load(f)
    except (OSError, ValueError) as err:
      log.warning('could not read %s (%s); not comparing this launch\'s config with it',
                  os.path.join(workdir, history[-1]), err)
  diff = changes(saved, new) if isinstance(saved, dict) else {}
  if resuming and diff:
    by_kind: dict[str, dict] = {'refused': {}, 'accepted': {}, 'allowed': {}}
    for name, values in diff.items():
      by_kind[kind(name)][name] = values
    where = os.path.join(workdir, history[-1])
    if by_kind['refused']:
      raise ConfigChangeError(
          f'{_listing(by_kind["refused"])}: a change of the program or of the meaning of the '
          f'checkpoints in {workdir} (its config: {where}); use another --workdir')
    if by_kind['allowed'] and not config.get(ALLOW, False):
      raise ConfigChangeError(
          f'{_listing(by_kind["allowed"])}: the resumed run would not be the one it continues '
          f'(its config: {where}); set --config.{ALLOW}=True to continue with the change, or '
          f'use another --workdir')
    log.warning('continuing the run in %s with its config changed: %s', workdir, _listing(
        {**by_kind['accepted'], **by_kind['allowed']}))
  if not write or (history and not diff):
    return
  os.makedirs(workdir, exist_ok=True)
  name = CONFIG if not history else f'config.{len(history)}.json'
  tmp = os.path.join(workdir, name + '.tmp')
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, os.path.join(workdir, name))


__all__ = ['ACCEPTED', 'ALLOW', 'CONFIG', 'ConfigChangeError', 'REFUSED', 'changes', 'kind',
           'record_launch',
           'saved_config']
