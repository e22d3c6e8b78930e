"""Checkpoints of the training state under ``WORKDIR/checkpoints/`` (orbax ``CheckpointManager``).

Kept: the last ``keep`` checkpoints and the ``keep_best`` best by eval top-1 (checkpoints saved
with eval metrics; the others are kept only while among the last ``keep``). Writes are
asynchronous and atomic (orbax writes into a temporary directory and renames it when complete),
so a process killed mid-write leaves the previous checkpoints as they were; :meth:`Checkpointer.close`
waits for the writes.

Nothing good is ever lost:

* :meth:`Checkpointer.restore_latest` tries the checkpoints newest first. One that cannot be read
  (a file truncated or removed) is reported by step and path and moved aside, whole, to
  ``WORKDIR/checkpoints_unreadable/`` (never deleted), and the next newest is used.
* :meth:`Checkpointer.save` refuses a state with a non-finite value: it raises instead of
  writing, so the checkpoints on disk stay the last good ones.
* :meth:`Checkpointer.check_compatible` refuses to resume from checkpoints of another model.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers as policies

from inception_jax import errors

log = logging.getLogger('inception_jax.checkpoint')

BEST_METRIC = 'top1'
UNREADABLE_DIR = 'checkpoints_unreadable'


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used; the message names its step and path."""


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

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The step of the best checkpoint by eval top-1, if any was saved with eval metrics."""
    return self._manager.best_step()

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Writes ``state`` as ``step`` (asynchronously); refuses a non-finite state."""
    if step in self._manager.all_steps():
      return
    if not _all_finite(state):
      raise FloatingPointError(
          f'step {step}: the training state holds NaN or Inf; not writing it to '
          f'{self.path(step)} (the checkpoints there are kept as they are; latest good one: '
          f'step {self.latest_step()})')
    self._manager.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                       metrics=metrics, force=True)

  def restore(self, step: int, target: Any) -> Any:
    """The state saved at ``step``, laid out (shapes, dtypes, shardings) like ``target``."""
    self._manager.wait_until_finished()
    template = flax.serialization.to_state_dict(target)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax and tensorstore raise many kinds
      raise CheckpointError(f'checkpoint of step {step} at {self.path(step)} is unreadable: '
                            f'{type(err).__name__}: {_first_line(err)}') from err
    return flax.serialization.from_state_dict(target, restored)

  def restore_latest(self, target: Any) -> tuple[int | None, Any]:
    """``(step, state)`` of the newest readable checkpoint, ``(None, None)`` when there is none.

    Each unreadable checkpoint met on the way is reported (step, path, error) and moved aside to
    ``WORKDIR/checkpoints_unreadable/STEP-TIME`` (kept for inspection, never deleted), so that
    this run's own checkpoint of that step can be written later.
    """
    self._manager.reload()
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return step, self.restore(step, target)
      except CheckpointError as err:
        log.error('%s; falling back to the checkpoint before it', err)
        self._set_aside(step)
    return None, None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, UNREADABLE_DIR, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(self.path(step), aside)
      log.error('moved the unreadable checkpoint of step %d to %s', step, aside)
    self._manager.reload()

  def check_compatible(self, target: Any, *, model: str, saved_model: str | None) -> None:
    """Refuses checkpoints of another model (other parameter names or shapes than ``target``'s):
    one line naming ``config.model.name`` and what the checkpoints hold."""
    step = self.latest_step()
    if step is None:
      return
    try:
      meta = ocp.StandardCheckpointer().metadata(os.path.join(self.path(step), 'default'))
      meta = getattr(meta, 'item_metadata', meta)
      meta = getattr(meta, 'tree', meta)
      saved = _shapes(dict(meta['params']))
    except Exception:  # unreadable metadata: restore_latest reports and sets it aside
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
    self._manager.wait_until_finished()
    self._manager.close()


def _first_line(err: Exception) -> str:
  text = str(err).strip()
  return text.splitlines()[0][:400] if text else ''


__all__ = ['BEST_METRIC', 'CheckpointError', 'Checkpointer', 'UNREADABLE_DIR']
