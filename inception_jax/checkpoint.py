"""Checkpoints of the training state under ``WORKDIR/checkpoints/`` (orbax ``CheckpointManager``).

Kept: the last ``keep`` checkpoints and the ``keep_best`` best by eval top-1 (checkpoints saved
with eval metrics; the others are kept only while among the last ``keep``). Writes are
asynchronous and atomic (orbax writes into a temporary directory and renames it when complete),
so a process killed mid-write leaves the previous checkpoints as they were; :meth:`Checkpointer.close`
waits for the writes.

Nothing good is ever lost. A failed read is classified by what it says about the checkpoint
(orbax, big_vision and TF's Estimator stop on any restore failure; we also fall back, but only
past a checkpoint known to be bad):

* corrupt (:class:`CorruptCheckpointError`): its files are missing, truncated or do not decode.
  :meth:`Checkpointer.restore_latest` reports it and falls back to the one before; once a good
  one is found, the corrupt newer ones are moved aside, whole, to
  ``WORKDIR/checkpoints_unreadable/`` (never deleted). When every checkpoint is corrupt it
  stops (:class:`NoUsableCheckpointError`) and moves nothing, unless told to start over.
* unavailable (:class:`CheckpointUnavailableError`): any other failure (an ``OSError`` other than
  file-not-found, a timeout, out of memory, an unexpected exception) is no evidence about the
  checkpoint: the read is retried with backoff, then the run stops, every checkpoint left in place.
* With several processes, process 0's list of checkpoints is the one tried, and all processes
  move to the next one, or resume, together; a process that reads a checkpoint differently from
  the others stops them all.
* :meth:`Checkpointer.save` refuses a state with a non-finite value, and a write that fails (a
  full disk) stops the run with :class:`CheckpointWriteError`; the checkpoints before it stay.
* :meth:`Checkpointer.check_compatible` refuses to resume from checkpoints of another model.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath  # orbax's path type (a dependency of orbax)
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers as policies

from inception_jax import errors

log = logging.getLogger('inception_jax.checkpoint')

BEST_METRIC = 'top1'
UNREADABLE_DIR = 'checkpoints_unreadable'
ITEM = 'default'  # the CheckpointManager's directory of the one item it saves
# A read that fails for want of storage is tried again after 2, 4, 8 s (a network filesystem's
# or bucket's hiccup), then the run stops.
RESTORE_RETRIES = 3
RESTORE_BACKOFF_S = 2.0


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used or written; the message names its step and path."""


class CorruptCheckpointError(CheckpointError):
  """The checkpoint's data is there and wrong: files missing, truncated, or not decodable."""


class CheckpointUnavailableError(CheckpointError):
  """Reading failed for a reason that says nothing about the checkpoint (storage, memory, a bug);
  retried, then the run stops with every checkpoint where it was."""


class NoUsableCheckpointError(CheckpointError):
  """Checkpoints exist and every one is corrupt: the run stops rather than start over."""


class CheckpointWriteError(CheckpointError):
  """Writing a checkpoint failed (e.g. a full disk); the ones before it are kept."""


def _best_metric(metrics: dict[str, float]) -> float:
  return metrics[BEST_METRIC]


class _NoEvalNoWarning(logging.Filter):
  """Checkpoints between evals have no metrics by design; orbax warns about each one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'did not provide metrics' not in record.getMessage()


logging.getLogger('absl').addFilter(_NoEvalNoWarning())


def _all_finite(tree) -> bool:
  """Whether every floating array in ``tree`` is finite, checked on the host, one distinct shard
  at a time (what this process holds). A jitted reduction over the state's hundreds of arrays
  would do the same work, but XLA takes minutes to compile it for the larger models."""
  for x in jax.tree.leaves(tree):
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      continue
    if isinstance(x, jax.Array):
      seen = set()
      for shard in x.addressable_shards:
        index = str(shard.index)
        if index not in seen:
          seen.add(index)
          if not np.isfinite(np.asarray(shard.data)).all():
            return False
    elif not np.isfinite(np.asarray(x)).all():
      return False
  return True


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = traverse_util.flatten_dict(tree, sep='/') if isinstance(tree, dict) else {}
  return {k: tuple(getattr(v, 'shape', ())) for k, v in flat.items()}


# ------------------------------------------------------------------ what a failed read means

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
  """Whether ``err``, raised reading a checkpoint, shows its data missing or wrong (rather than
  storage, memory or code failing to read it)."""
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


def _first_line(err: BaseException) -> str:
  text = str(err).strip()
  return text.splitlines()[0][:400] if text else ''


def _cause(err: BaseException) -> str:
  """The first error's type and line, past orbax's bare ``Exception`` wrappers (they say less
  than their cause)."""
  inner = next((e for e in _causes(err) if type(e) is not Exception), err)
  text = f'{type(inner).__name__}: {_first_line(inner)}'
  os_error = _OS_ERROR.search(str(inner))  # tensorstore's paths can push it past the first line
  reason = os_error and os.strerror(int(os_error.group(1)))
  return f'{text} [{reason}]' if reason and reason not in text else text


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


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 3, keep_best: int = 1):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    keepers = [policies.LatestN(n=keep)]
    if keep_best:
      keepers.append(policies.BestN(get_metric_fn=_best_metric, n=keep_best,
                                    keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keepers), create=True,
        # With a best_fn, orbax also writes each checkpoint's metrics, so that a resumed run
        # still knows which checkpoint is the best.
        best_fn=_best_metric, best_mode='max')
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    # Reads go to the item's handler, per process: the manager's restore ends in a barrier of
    # all processes, which one that failed would never reach; the processes agree afterwards.
    self._handler = ocp.StandardCheckpointHandler()
    self._writing: int | None = None  # the step of the write in flight

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The step of the best checkpoint by eval top-1, if any was saved with eval metrics."""
    return self._manager.best_step()

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  # ---------------------------------------------------------------------------- writing

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Writes ``state`` as ``step`` (asynchronously); refuses a non-finite state. Raises
    :class:`CheckpointWriteError` when this or the previous write failed."""
    if step in self._manager.all_steps():
      return
    if not _all_finite(state):
      raise FloatingPointError(
          f'step {step}: the training state holds NaN or Inf; not writing it to '
          f'{self.path(step)} (the checkpoints there are kept as they are; latest good one: '
          f'step {self.latest_step()})')
    self._wait()  # a failure of the previous write is reported as that step's
    self._writing = step
    try:
      self._manager.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                         metrics=metrics, force=True)
    except Exception as err:  # whatever the writer raised: the run stops, naming it
      raise self._write_error(err) from err

  def _wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as err:  # an error of the background write, surfaced here
      raise self._write_error(err) from err
    self._writing = None

  def _write_error(self, err: BaseException) -> CheckpointWriteError:
    step, self._writing = self._writing, None
    self._manager.reload()
    kept = [s for s in self._manager.all_steps() if s != step]
    return CheckpointWriteError(
        f'writing the checkpoint of step {step} to {self.path(step)} failed: {_cause(err)}; the '
        f'checkpoints before it are kept as they were (latest: '
        f'{"step " + str(max(kept)) if kept else "none"}, in {self.directory})')

  # ---------------------------------------------------------------------------- reading

  def _read(self, step: int, target: Any) -> Any:
    """One attempt: :class:`CorruptCheckpointError` or :class:`CheckpointUnavailableError`."""
    where = f'checkpoint of step {step} at {self.path(step)}'
    item = os.path.join(self.path(step), ITEM)
    try:
      os.stat(item)
      template = flax.serialization.to_state_dict(target)
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
      restored = self._handler.restore(epath.Path(item), args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax wraps tensorstore's errors in a bare Exception: classify
      kind = CorruptCheckpointError if is_corrupt(err) else CheckpointUnavailableError
      what = 'is unreadable' if kind is CorruptCheckpointError else 'could not be read'
      raise kind(f'{where} {what}: {_cause(err)}') from err
    return flax.serialization.from_state_dict(target, restored)

  def _retrying(self, step: int, attempt: Callable[[], Any]) -> Any:
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
              f'{self.directory}; relaunch when the storage reads again)') from err.__cause__
        delay = RESTORE_BACKOFF_S * 2 ** retry
        log.warning('%s; trying again in %.1fs', err, delay)
        time.sleep(delay)

  def restore(self, step: int, target: Any) -> Any:
    """The state saved at ``step``, laid out (shapes, dtypes, shardings) like ``target``.
    Raises :class:`CorruptCheckpointError` at once, :class:`CheckpointUnavailableError` after
    the retries."""
    self._wait()
    return self._retrying(step, lambda: self._read(step, target))

  def restore_latest(self, target: Any, *, start_over: bool = False) -> tuple[int | None, Any]:
    """``(step, state)`` of the newest readable checkpoint; ``(None, None)`` when there is none.

    Tried newest first, from process 0's list, all processes together. A corrupt one is
    reported and the one before it tried; once one is restored, the corrupt newer ones are moved
    to ``WORKDIR/checkpoints_unreadable/STEP-TIME`` (kept, so that this run can write its own
    checkpoints of those steps). Any other failure, or processes that read one checkpoint
    differently, stops every process with nothing moved. When every checkpoint is corrupt:
    :class:`NoUsableCheckpointError`, nothing moved, or with ``start_over`` all of them moved
    aside and ``(None, None)``.
    """
    self._wait()
    self._manager.reload()
    steps = _broadcast_steps(sorted(self._manager.all_steps(), reverse=True))
    corrupt: list[tuple[int, CheckpointError]] = []
    for step in steps:
      state, failure = None, None
      try:
        state = self.restore(step, target)
      except (CorruptCheckpointError, CheckpointUnavailableError) as err:  # after the retries
        failure = err
      codes = _gather(_OK if failure is None else
                      _CORRUPT if isinstance(failure, CorruptCheckpointError) else _UNAVAILABLE)
      if isinstance(failure, CheckpointUnavailableError):
        raise failure
      if _UNAVAILABLE in codes or len(set(codes)) > 1:
        raise CheckpointUnavailableError(self._disagreement(step, codes, failure))
      if failure is None:
        if corrupt:
          self._set_aside([s for s, _ in corrupt])
        return step, state
      log.error('%s; falling back to the checkpoint before it', failure)
      corrupt.append((step, failure))
    if not corrupt:
      return None, None
    if start_over:
      log.warning('every checkpoint in %s is unreadable; starting over from step 0 as '
                  'configured (restart_if_unrestorable)', self.directory)
      self._set_aside([s for s, _ in corrupt])
      return None, None
    tried = '; '.join(f'step {s}: {_first_line(err)}' for s, err in corrupt)
    raise NoUsableCheckpointError(
        f'no checkpoint in {self.directory} can be restored, tried newest first: {tried}. '
        f'Nothing was moved or deleted. To start over from step 0 (the checkpoints then go to '
        f'{os.path.join(self.workdir, UNREADABLE_DIR)}), set '
        f'--config.restart_if_unrestorable=true')

  def _disagreement(self, step: int, codes: list[int], failure: CheckpointError | None) -> str:
    names = {_OK: 'read it', _CORRUPT: 'found it corrupt', _UNAVAILABLE: 'could not read it'}
    said = ', '.join(f'process {i} {names[c]}' for i, c in enumerate(codes))
    mine = f' (here: {failure})' if failure is not None else ''
    return (f'the processes do not agree on the checkpoint of step {step} at {self.path(step)}: '
            f'{said}{mine}; stopping all of them rather than resuming from different states. '
            f'Every checkpoint is left where it was, in {self.directory}')

  def _set_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      stamp = time.strftime('%Y%m%d-%H%M%S')
      for step in steps:
        aside = os.path.join(self.workdir, UNREADABLE_DIR, f'{step}-{stamp}')
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(self.path(step), aside)
        log.error('moved the unreadable checkpoint of step %d to %s', step, aside)
    _sync('inception_jax_set_aside')
    self._manager.reload()

  def check_compatible(self, target: Any, *, model: str, saved_model: str | None) -> None:
    """Refuses checkpoints of another model (other parameter names or shapes than ``target``'s):
    one line naming ``config.model.name`` and what the checkpoints hold."""
    step = self.latest_step()
    if step is None:
      return

    def read():
      try:
        meta = ocp.StandardCheckpointer().metadata(os.path.join(self.path(step), ITEM))
        meta = getattr(meta, 'item_metadata', meta)
        meta = getattr(meta, 'tree', meta)
        return _shapes(dict(meta['params']))
      except Exception as err:  # orbax raises many kinds: classified as in _read
        kind = CorruptCheckpointError if is_corrupt(err) else CheckpointUnavailableError
        raise kind(f'metadata of the checkpoint of step {step} at {self.path(step)}: '
                   f'{_cause(err)}') from err

    try:
      saved = self._retrying(step, read)
    except CorruptCheckpointError:  # restore_latest reports it and falls back
      return
    want = _shapes(flax.serialization.to_state_dict(target)['params'])
    if saved and saved != want:
      holds = f'{saved_model} ' if saved_model and saved_model != model else ''
      missing = sorted(set(want) - set(saved))[:1] or sorted(
          k for k in want if k in saved and saved[k] != want[k])[:1]
      detail = (f'e.g. {missing[0]}: {saved.get(missing[0], "absent")} there, '
                f'{want[missing[0]]} here' if missing else f'{len(saved)} arrays there, '
                f'{len(want)} here')
      raise errors.ConfigError(
          'model.name', f'config.model.name={model!r}, but {self.directory} holds {holds}'
                        f'checkpoints of another model or head ({detail}); use another --workdir')

  def close(self) -> None:
    """Waits for the writes in flight (raising :class:`CheckpointWriteError` if one failed)."""
    try:
      self._wait()
    finally:
      self._manager.close()


__all__ = ['BEST_METRIC', 'CheckpointError', 'CheckpointUnavailableError', 'CheckpointWriteError',
           'Checkpointer', 'CorruptCheckpointError', 'NoUsableCheckpointError', 'UNREADABLE_DIR',
           'is_corrupt']
