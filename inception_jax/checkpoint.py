"""Checkpoints of the training state under ``WORKDIR/checkpoints/``: the everyday path.

:class:`Checkpointer` wraps an orbax ``CheckpointManager`` of one item: :meth:`~Checkpointer.save`
(asynchronous; refuses a non-finite state), :meth:`~Checkpointer.restore_latest` (what a run
resumes from), :meth:`~Checkpointer.best_step`, :meth:`~Checkpointer.close` (waits for the
writes). Kept: the last ``keep`` checkpoints and the ``keep_best`` best by eval top-1 (checkpoints
saved with eval metrics; the others are kept only while among the last ``keep``). Writes are
atomic: orbax writes into a temporary directory and renames it when complete, so a process killed
mid-write leaves the previous checkpoints as they were; each checkpoint carries a manifest of its
files (sizes, CRC-32) committed by the same rename.

What a failed read means and what is done about it (verify, retry, fall back, set aside, the
agreement of several processes) is :mod:`inception_jax.checkpoint_recovery`. A failed write
(a full disk) stops the run with :class:`CheckpointWriteError`; the checkpoints before it stay.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath  # orbax's path type (a dependency of orbax)
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers as policies

from inception_jax import checkpoint_recovery as recovery, errors
from inception_jax.checkpoint_recovery import (  # noqa: F401 (the errors callers catch)
    UNREADABLE_DIR, CheckpointError, CheckpointIncompatibleError, CheckpointUnavailableError,
    CorruptCheckpointError, NoUsableCheckpointError, is_corrupt)

log = logging.getLogger('inception_jax.checkpoint')

BEST_METRIC = 'top1'
ITEM = 'default'  # the CheckpointManager's directory of the one item it saves


class CheckpointWriteError(CheckpointError):
  """Writing a checkpoint failed (e.g. a full disk); the ones before it are kept."""


class NoCheckpointError(CheckpointError, errors.UserError):
  """A workdir that does not exist or holds no checkpoint, or a step it does not hold."""


def _best_metric(metrics: dict[str, float]) -> float:
  return metrics[BEST_METRIC]


class NoEvalNoWarning(logging.Filter):
  """orbax's warnings about what is so by design: a checkpoint between evals has no metrics, a
  workdir opened to evaluate is read-only. The entry points' logging setup installs it on absl's
  logger (``experiments.cli.setup_logging``)."""

  EXPECTED = ('did not provide metrics', 'read_only=True, setting save_interval_steps',
              'Given directory is read only')

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(text in message for text in self.EXPECTED)


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


class _Manager(ocp.CheckpointManager):
  """orbax's manager, except that a step whose metrics file does not parse counts as one saved
  without metrics instead of failing every read of the directory (orbax reads each step's
  metrics when it lists them): that checkpoint is corrupt, and its verification says so before
  a restore."""

  def _get_metrics(self, step: int):
    try:
      return super()._get_metrics(step)
    except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError is a ValueError
      log.warning('the metrics of the checkpoint of step %d do not parse; counted as none', step)
      return None


class Checkpointer:
  """The checkpoints of ``WORKDIR/checkpoints``. ``read_only``: for evaluation (nothing is
  created; :meth:`existing` also refuses a workdir without checkpoints)."""

  def __init__(self, workdir: str, *, keep: int = 3, keep_best: int = 1,
               read_only: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    self._writing: int | None = None  # the step of the write in flight
    keepers = [policies.LatestN(n=keep)]
    if keep_best:
      keepers.append(policies.BestN(get_metric_fn=_best_metric, n=keep_best,
                                    keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keepers), create=not read_only,
        read_only=read_only,
        # With a best_fn, orbax also writes each checkpoint's metrics, so that a resumed run
        # still knows which checkpoint is the best.
        best_fn=_best_metric, best_mode='max',
        async_options=ocp.AsyncOptions(post_finalization_callback=recovery.manifest_writer(
            self.directory, lambda: self._writing)))
    self._manager = _Manager(self.directory, options=options)
    # Reads go to the item's handler, per process: the manager's restore ends in a barrier of
    # all processes, which one that failed would never reach; the processes agree afterwards.
    self._handler = ocp.StandardCheckpointHandler()

  @classmethod
  def existing(cls, workdir: str) -> Checkpointer:
    """The checkpoints of a training workdir, to read: :class:`NoCheckpointError` (one line)
    when ``workdir`` or its checkpoints are not there; nothing is created."""
    if not os.path.isdir(workdir):
      raise NoCheckpointError(f'--workdir {workdir} does not exist')
    ckpt = cls(workdir, read_only=True) if os.path.isdir(
        os.path.join(workdir, 'checkpoints')) else None
    if ckpt is None or not ckpt.all_steps():
      raise NoCheckpointError(f'{os.path.abspath(workdir)} holds no checkpoint (no step under '
                              f'{os.path.join(os.path.abspath(workdir), "checkpoints")})')
    return ckpt

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The step of the best checkpoint by eval top-1, if any was saved with eval metrics."""
    return self._manager.best_step()

  def step(self, which: int | str | None) -> int:
    """The step that ``which`` names: a number, ``'best'`` or ``None`` (the latest);
    :class:`NoCheckpointError` listing the steps there are when there is no such checkpoint."""
    steps = self.all_steps()
    at = self.best_step() if which == 'best' else self.latest_step() if which is None else which
    if at is not None and int(at) in steps:
      return int(at)
    best = self.best_step()
    raise NoCheckpointError(
        f'no checkpoint of step {which} in {self.directory}; it holds steps '
        f'{", ".join(map(str, steps)) or "none"} (latest: {self.latest_step()}, best: '
        f'{best if best is not None else "none, no checkpoint was saved with eval metrics"})')

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def reload(self) -> None:
    """Re-reads the list of checkpoints from disk."""
    self._manager.reload()

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
        f'writing the checkpoint of step {step} to {self.path(step)} failed: '
        f'{recovery.cause(err)}; the checkpoints before it are kept as they were (latest: '
        f'{"step " + str(max(kept)) if kept else "none"}, in {self.directory})')

  # ---------------------------------------------------------------------------- reading

  def restore(self, step: int, target: Any) -> Any:
    """The state saved at ``step``, laid out (shapes, dtypes, shardings) like ``target``, its
    files verified first. Raises :class:`CorruptCheckpointError` or
    :class:`CheckpointIncompatibleError` at once, :class:`CheckpointUnavailableError` after the
    retries."""
    self._wait()
    where = f'checkpoint of step {step} at {self.path(step)}'

    def restore():
      template = flax.serialization.to_state_dict(target)
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
      return self._handler.restore(epath.Path(os.path.join(self.path(step), ITEM)),
                                   args=ocp.args.StandardRestore(abstract))

    restored = recovery.retrying(self.directory,
                                 lambda: recovery.read(self.path(step), where, restore))
    return flax.serialization.from_state_dict(target, restored)

  def restore_latest(self, target: Any, *, start_over: bool = False) -> tuple[int | None, Any]:
    """``(step, state)`` of the newest readable checkpoint; ``(None, None)`` when there is none.

    A corrupt one is reported and the one before it tried; once one is restored, the corrupt
    newer ones are moved to ``WORKDIR/checkpoints_unreadable/STEP-TIME``. Any other failure
    stops the run with nothing moved. When every checkpoint is corrupt:
    :class:`NoUsableCheckpointError`, nothing moved, or with ``start_over`` all of them moved
    aside and ``(None, None)`` (:mod:`inception_jax.checkpoint_recovery`).
    """
    self._wait()
    self._manager.reload()
    return recovery.restore_latest(self, target, start_over=start_over)

  def check_compatible(self, target: Any, *, model: str, saved_model: str | None) -> None:
    """Refuses checkpoints of another model (other parameter names or shapes than ``target``'s):
    one line naming ``config.model.name`` and what the checkpoints hold. Judged on the newest
    checkpoint whose metadata reads (a corrupt one is left to :meth:`restore_latest`)."""
    saved = None
    for step in sorted(self.all_steps(), reverse=True):
      item = os.path.join(self.path(step), ITEM)
      where = f'metadata of the checkpoint of step {step} at {self.path(step)}'

      def read():
        recovery.verify(self.path(step), where,
                        only=(os.path.join(ITEM, '_METADATA'), '_CHECKPOINT_METADATA'))
        try:
          meta = self._handler.metadata(epath.Path(item))
          meta = getattr(meta, 'tree', meta)
          return _shapes(dict(meta['params']))
        except Exception as err:  # orbax raises many kinds: the storage, or the metadata
          raise recovery.classify(err, where) from err

      try:
        saved = recovery.retrying(self.directory, read)
        break
      except CorruptCheckpointError:  # restore_latest reports it and falls back
        continue
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


__all__ = ['BEST_METRIC', 'CheckpointError', 'CheckpointIncompatibleError',
           'CheckpointUnavailableError', 'CheckpointWriteError', 'Checkpointer',
           'CorruptCheckpointError', 'NoCheckpointError', 'NoEvalNoWarning',
           'NoUsableCheckpointError', 'UNREADABLE_DIR', 'is_corrupt']
