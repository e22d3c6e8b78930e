"""What a checkpoint that cannot be read means, and what the run does about it.

:class:`inception_jax.checkpoint.Checkpointer` is the everyday path; this module is its policy
for the day a read fails. Nothing good is ever lost, and a checkpoint is passed over only when it
is known to be bad (orbax, big_vision and TF's Estimator stop on any restore failure):

* **Integrity is verified, not guessed.** When orbax has written a checkpoint, and before it
  renames the temporary directory into place (``AsyncOptions.post_finalization_callback``),
  :func:`write_manifest` lists every file of it with its size and CRC-32 (``zlib.crc32``: in
  the standard library, so no new dependency, and read at disk speed: README "Reliability"
  gives its cost). The manifest is committed with the checkpoint by the same rename; the two
  files orbax writes after the callback (``_CHECKPOINT_METADATA``, ``commit_success.txt``) are
  listed by name and checked to parse. :func:`verify` reads them back before a restore.
* **corrupt** (:class:`CorruptCheckpointError`): a file missing, of another size or checksum,
  metadata that does not parse, or a manifest that is missing its fields or does not parse. The
  run falls back to the checkpoint before; once one is restored the corrupt newer ones are moved
  aside, whole, to ``WORKDIR/checkpoints_unreadable/STEP-TIME`` (never deleted). When every one
  is corrupt it stops (:class:`NoUsableCheckpointError`, one line naming each step tried and
  why), moving nothing, unless told to start over.
* **unavailable** (:class:`CheckpointUnavailableError`): an ``OSError`` (EIO, a timeout, a stale
  handle) or out of memory while reading says nothing about the checkpoint: the read is retried
  with backoff, then the run stops naming the cause, every checkpoint left in place.
* **incompatible** (:class:`CheckpointIncompatibleError`): any other error raised after the
  files verified is a bug or a mismatch of versions or configs, not the storage; it is reported
  as such at once, every checkpoint left in place.
* A checkpoint without a manifest (written before manifests existed) is checked by its metadata
  parsing as JSON, then its read errors are classified by :func:`is_corrupt`, a table of
  tensorstore's status codes.
* With several processes, process 0's list of checkpoints is the one tried, and all processes
  move to the next one, or resume, together; a process that reads a checkpoint differently from
  the others stops them all.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import re
import shutil
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np

if TYPE_CHECKING:
  from inception_jax.checkpoint import Checkpointer

log = logging.getLogger('inception_jax.checkpoint')

UNREADABLE_DIR = 'checkpoints_unreadable'
MANIFEST = 'inception_jax_manifest.json'
# Written by orbax after the manifest (the step metadata gets its commit time, then the commit
# marker): listed in the manifest by name, checked to parse, not checksummed.
LATE_FILES = ('_CHECKPOINT_METADATA', 'commit_success.txt')
# orbax's atomicity.py: a step is written into "STEP" + this suffix, renamed to "STEP" at commit.
_TMP_SUFFIX = '.orbax-checkpoint-tmp'
_CHUNK = 1 << 22
# A read that fails for want of storage is tried again after 2, 4, 8 s (a network filesystem's
# or bucket's hiccup), then the run stops.
RESTORE_RETRIES = 3
RESTORE_BACKOFF_S = 2.0


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used or written; the message names its step and path."""


class CorruptCheckpointError(CheckpointError):
  """The checkpoint's data is there and wrong: files missing, truncated, or not decodable."""


class CheckpointUnavailableError(CheckpointError):
  """Reading failed for a reason that says nothing about the checkpoint (storage, memory);
  retried, then the run stops with every checkpoint where it was."""


class CheckpointIncompatibleError(CheckpointError):
  """The checkpoint's files verified and restoring them failed: a bug, or a checkpoint of other
  versions or another config. Not retried, nothing moved."""


class NoUsableCheckpointError(CheckpointError):
  """Checkpoints exist and every one is corrupt: the run stops rather than start over."""


# ------------------------------------------------------------------------ the manifest

def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(directory: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(root, name), directory)
                for root, _, names in os.walk(directory) for name in names)


def write_manifest(directory: str) -> None:
  """Writes ``directory/MANIFEST``: the size and CRC-32 of each of its files (but the
  :data:`LATE_FILES`, named only). Atomic: a temporary file renamed into place."""
  files = {}
  for name in _files(directory):
    if name != MANIFEST and name not in LATE_FILES:
      path = os.path.join(directory, name)
      files[name] = {'size': os.path.getsize(path), 'crc32': _crc32(path)}
  manifest = {'format': 1, 'checksum': 'crc32', 'files': files, 'late': list(LATE_FILES)}
  tmp = os.path.join(directory, MANIFEST + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(manifest, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(directory, MANIFEST))


def manifest_writer(directory: str, step: Callable[[], int | None]) -> Callable[[], None]:
  """orbax's ``post_finalization_callback`` for the checkpoint of ``step()`` under
  ``directory``: the manifest goes into the step's temporary directory, renamed into place
  with it (or into the step's directory where the storage commits without a rename)."""
  def callback() -> None:
    at = step()
    if at is None:
      return
    final = os.path.join(directory, str(at))
    candidates = sorted(glob.glob(glob.escape(final) + _TMP_SUFFIX + '*'), key=os.path.getmtime)
    target = candidates[-1] if candidates else final
    if os.path.isdir(target):
      write_manifest(target)
    else:  # the checkpoint then loads as one written before manifests existed
      log.warning('no directory of step %d under %s to write its manifest in', at, directory)
  return callback


def _corrupt(where: str, what: str) -> CorruptCheckpointError:
  return CorruptCheckpointError(f'{where} is corrupt: {what}')


def _parses(path: str) -> bool:
  try:
    with open(path, 'rb') as f:
      json.loads(f.read().decode())
    return True
  except (ValueError, UnicodeDecodeError):
    return False


def verify(directory: str, where: str, only: tuple[str, ...] | None = None) -> bool:
  """Checks the files of the checkpoint in ``directory`` (``only`` these, if given) against its
  manifest: True when they verified, False when it has no manifest (its metadata parsed). Raises
  :class:`CorruptCheckpointError` naming the first file at fault, or
  :class:`CheckpointUnavailableError` when the storage fails to read one (``where``, the step
  and path, starts each message)."""
  try:
    if not os.path.isdir(directory):
      raise _corrupt(where, 'its directory is gone')
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
      for name in ('_CHECKPOINT_METADATA', os.path.join('default', '_METADATA')):
        file = os.path.join(directory, name)
        if name.startswith('default') and not os.path.exists(file):
          raise _corrupt(where, f'{name} is missing')
        if os.path.exists(file) and not _parses(file):
          raise _corrupt(where, f'{name} does not parse (no manifest to check the rest against)')
      return False
    if not _parses(path):
      raise _corrupt(where, f'its manifest {MANIFEST} does not parse')
    with open(path) as f:
      manifest = json.load(f)
    if not isinstance(manifest, dict) or not isinstance(manifest.get('files'), dict):
      raise _corrupt(where, f'its manifest {MANIFEST} lists no files')
    for name, entry in sorted(manifest['files'].items()):
      if only is not None and name not in only:
        continue
      file = os.path.join(directory, name)
      if not os.path.exists(file):
        raise _corrupt(where, f'{name} is missing')
      size = os.path.getsize(file)
      if size != entry.get('size'):
        raise _corrupt(where, f'{name} has {size} bytes, the manifest says {entry.get("size")}')
      if _crc32(file) != entry.get('crc32'):
        raise _corrupt(where, f'{name} does not match its CRC-32 in the manifest')
    for name in manifest.get('late', ()):
      if only is not None and name not in only:
        continue
      file = os.path.join(directory, name)
      if not os.path.exists(file):
        raise _corrupt(where, f'{name} is missing')
      if name.endswith('METADATA') and not _parses(file):
        raise _corrupt(where, f'{name} does not parse')
    return True
  except CheckpointError:
    raise
  except (OSError, MemoryError) as err:  # the storage or the host, not the data
    raise CheckpointUnavailableError(f'{where} could not be read: {cause(err)}') from err


# ------------------------------------------------------------- what a failed read means

# tensorstore reports a read as a ValueError starting with an absl status code, and an OS error
# with its errno (``[os_error_code='5']``). Measured on orbax 0.12 / tensorstore 0.1.86: a data
# file truncated -> OUT_OF_RANGE, overwritten with garbage -> FAILED_PRECONDITION (zstd) or
# DATA_LOSS (the OCDBT manifest), removed -> NOT_FOUND or FAILED_PRECONDITION; orbax wraps the
# data reads in a bare Exception whose cause is that ValueError; a broken ``_METADATA`` is a
# JSONDecodeError or UnicodeDecodeError.
_CORRUPT_CODES = ('DATA_LOSS', 'OUT_OF_RANGE', 'NOT_FOUND', 'FAILED_PRECONDITION')
_STATUS = re.compile(r'([A-Z_]+): ')
_OS_ERROR = re.compile(r"os_error_code='?(\d+)")


def _causes(err: BaseException):
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    yield err
    err = err.__cause__ or err.__context__


def is_corrupt(err: BaseException) -> bool:
  """Whether ``err``, raised reading a checkpoint without a manifest, shows its data missing or
  wrong (rather than storage, memory or code failing to read it)."""
  for e in _causes(err):
    if isinstance(e, FileNotFoundError):
      return True
    if isinstance(e, OSError):  # EIO, a timeout, a stale handle: the storage, not the data
      return False
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
      return True
    if isinstance(e, ValueError) and (status := _STATUS.match(str(e))):
      os_error = _OS_ERROR.search(str(e))
      if os_error:
        return int(os_error.group(1)) == errno.ENOENT
      return status.group(1) in _CORRUPT_CODES
  return False


def _is_storage(err: BaseException) -> bool:
  """Whether ``err`` is the storage or the host failing (an OS error, in Python's terms or in
  tensorstore's ``os_error_code``, or out of memory)."""
  return any(isinstance(e, (OSError, MemoryError)) or (
      isinstance(e, ValueError) and _STATUS.match(str(e)) and _OS_ERROR.search(str(e)))
             for e in _causes(err))


def first_line(err: BaseException) -> str:
  text = str(err).strip()
  return text.splitlines()[0][:400] if text else ''


def cause(err: BaseException) -> str:
  """The first error's type and line, past orbax's bare ``Exception`` wrappers (they say less
  than their cause)."""
  inner = next((e for e in _causes(err) if type(e) is not Exception), err)
  text = f'{type(inner).__name__}: {first_line(inner)}'
  os_error = _OS_ERROR.search(str(inner))  # tensorstore's paths can push it past the first line
  reason = os_error and os.strerror(int(os_error.group(1)))
  return f'{text} [{reason}]' if reason and reason not in text else text


def classify(err: BaseException, where: str, verified: bool = False) -> CheckpointError:
  """The error that ``err``, raised reading the checkpoint that ``where`` names, stands for:
  the storage failing (an OS error, out of memory) is :class:`CheckpointUnavailableError`;
  anything else is, once its files ``verified``, :class:`CheckpointIncompatibleError`, and
  otherwise (no manifest) corrupt or unavailable by :func:`is_corrupt`'s table."""
  if verified or not is_corrupt(err):
    if _is_storage(err):
      return CheckpointUnavailableError(f'{where} could not be read: {cause(err)}')
    if verified:
      return CheckpointIncompatibleError(
          f'{where} verified intact against its manifest, and restoring it failed: {cause(err)}; '
          f'a bug or a checkpoint of other versions or another config, not the storage (every '
          f'checkpoint is left where it was)')
    return CheckpointUnavailableError(f'{where} could not be read: {cause(err)}')
  return CorruptCheckpointError(f'{where} is unreadable: {cause(err)}')


def read(directory: str, where: str, restore: Callable[[], Any]) -> Any:
  """One attempt at the checkpoint in ``directory``: :func:`verify`, then ``restore()``, its
  failure classified by :func:`classify`."""
  verified = verify(directory, where)
  try:
    return restore()
  except Exception as err:  # orbax wraps tensorstore's errors in a bare Exception: classify
    raise classify(err, where, verified) from err


def retrying(directory: str, attempt: Callable[[], Any]) -> Any:
  """``attempt()``, tried again after each :class:`CheckpointUnavailableError` (backoff
  ``RESTORE_BACKOFF_S`` doubling, ``RESTORE_RETRIES`` times); the last one is raised with the
  number of attempts added."""
  for retry in range(RESTORE_RETRIES + 1):
    try:
      return attempt()
    except CheckpointUnavailableError as err:
      if retry == RESTORE_RETRIES:
        raise CheckpointUnavailableError(
            f'{err} (tried {retry + 1} times; every checkpoint is left where it was, in '
            f'{directory}; relaunch when the storage reads again)') from err.__cause__
      delay = RESTORE_BACKOFF_S * 2 ** retry
      log.warning('%s; trying again in %.1fs', err, delay)
      time.sleep(delay)


# ------------------------------------------------------------------ falling back

def _broadcast_steps(steps: list[int]) -> list[int]:
  """Process 0's list of steps, on every process."""
  if jax.process_count() == 1:
    return steps
  from jax.experimental import multihost_utils
  n = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
  if n == 0:
    return []
  mine = np.zeros(n, np.int32)
  mine[:min(n, len(steps))] = steps[:n]
  return [int(x) for x in multihost_utils.broadcast_one_to_all(mine)]


def _gather(code: int) -> list[int]:
  if jax.process_count() == 1:
    return [code]
  from jax.experimental import multihost_utils
  return [int(x) for x in np.asarray(multihost_utils.process_allgather(np.int32(code)))]


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


_OK, _CORRUPT, _UNAVAILABLE = 0, 1, 2


def restore_latest(ckpt: Checkpointer, target: Any, *, start_over: bool = False
                   ) -> tuple[int | None, Any]:
  """:meth:`Checkpointer.restore_latest`: newest first, from process 0's list, all processes
  together; corrupt ones passed over and, once one is restored, set aside."""
  steps = _broadcast_steps(sorted(ckpt.all_steps(), reverse=True))
  corrupt: list[tuple[int, CheckpointError]] = []
  for step in steps:
    state, failure = None, None
    try:
      state = ckpt.restore(step, target)
    except (CorruptCheckpointError, CheckpointUnavailableError,
            CheckpointIncompatibleError) as err:  # after the retries
      failure = err
    codes = _gather(_OK if failure is None else
                    _CORRUPT if isinstance(failure, CorruptCheckpointError) else _UNAVAILABLE)
    if failure is not None and not isinstance(failure, CorruptCheckpointError):
      raise failure
    if _UNAVAILABLE in codes or len(set(codes)) > 1:
      raise CheckpointUnavailableError(_disagreement(ckpt, step, codes, failure))
    if failure is None:
      if corrupt:
        set_aside(ckpt, [s for s, _ in corrupt])
      return step, state
    log.error('%s; falling back to the checkpoint before it', failure)
    corrupt.append((step, failure))
  if not corrupt:
    return None, None
  if start_over:
    log.warning('every checkpoint in %s is unreadable; starting over from step 0 as '
                'configured (restart_if_unrestorable)', ckpt.directory)
    set_aside(ckpt, [s for s, _ in corrupt])
    return None, None
  tried = '; '.join(f'step {s}: {_reason(err)}' for s, err in corrupt)
  raise NoUsableCheckpointError(
      f'no checkpoint in {ckpt.directory} can be restored, tried newest first: {tried}. '
      f'Nothing was moved or deleted. To start over from step 0 (the checkpoints then go to '
      f'{os.path.join(ckpt.workdir, UNREADABLE_DIR)}), set '
      f'--config.restart_if_unrestorable=true')


def _reason(err: BaseException) -> str:
  """What was wrong with a checkpoint, without its path (the message's step names it)."""
  line = first_line(err)
  for marker in (' is corrupt: ', ' is unreadable: '):
    if marker in line:
      return line.split(marker, 1)[1]
  return line


def _disagreement(ckpt: Checkpointer, step: int, codes: list[int],
                  failure: CheckpointError | None) -> str:
  names = {_OK: 'read it', _CORRUPT: 'found it corrupt', _UNAVAILABLE: 'could not read it'}
  said = ', '.join(f'process {i} {names[c]}' for i, c in enumerate(codes))
  mine = f' (here: {failure})' if failure is not None else ''
  return (f'the processes do not agree on the checkpoint of step {step} at {ckpt.path(step)}: '
          f'{said}{mine}; stopping all of them rather than resuming from different states. '
          f'Every checkpoint is left where it was, in {ckpt.directory}')


def set_aside(ckpt: Checkpointer, steps: list[int]) -> None:
  """Moves the checkpoints of ``steps`` whole to ``WORKDIR/checkpoints_unreadable/STEP-TIME``
  (process 0; the others wait for it)."""
  if jax.process_index() == 0:
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for step in steps:
      aside = os.path.join(ckpt.workdir, UNREADABLE_DIR, f'{step}-{stamp}')
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(ckpt.path(step), aside)
      log.error('moved the unreadable checkpoint of step %d to %s', step, aside)
  _sync('inception_jax_set_aside')
  ckpt.reload()


__all__ = ['CheckpointError', 'CheckpointIncompatibleError', 'CheckpointUnavailableError',
           'CorruptCheckpointError', 'LATE_FILES', 'MANIFEST', 'NoUsableCheckpointError',
           'RESTORE_BACKOFF_S', 'RESTORE_RETRIES', 'UNREADABLE_DIR', 'cause', 'classify',
           'is_corrupt', 'manifest_writer', 'read', 'restore_latest', 'retrying', 'set_aside',
           'verify', 'write_manifest']
