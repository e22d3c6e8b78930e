"""Evaluation of a saved run or of converted weights, outside the training loop.

>>> setup_state = restore_state(config, '/tmp/v1_quick')     # the run's program and its state
>>> evaluate(config, '/tmp/v1_quick')                          # held-out metrics of its latest
>>> evaluate(config, weights='/tmp/inception_v3_weights')      # of converted weights

``python -m experiments.evaluate`` is the command line of :func:`evaluate`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

from inception_jax import checkpoint, data, errors, mesh as mesh_lib, train, train_state

log = logging.getLogger('inception_jax.evaluate')


def restore_state(config, workdir: str, step: int | str | None = None
                  ) -> tuple[train.Program, train_state.TrainState]:
  """The training state saved in ``workdir`` by a run of ``config``, with that run's program.

  ``step``: a step number, ``'best'`` (the best by eval top-1) or, by default, the latest.
  The state comes back on the devices of the mesh, replicated, as the train step leaves it; its
  ``params`` with ``batch_stats``, or ``ema_params`` with ``ema_batch_stats``, go to
  ``program.model.apply``. A workdir that is not there or holds no such step raises
  ``checkpoint.NoCheckpointError`` (listing the steps it holds), checkpoints of another model
  ``errors.ConfigError``; a checkpoint that cannot be read ``checkpoint.CorruptCheckpointError``,
  ``CheckpointIncompatibleError`` or, after retries, ``CheckpointUnavailableError`` (each naming
  the step, path and cause). Nothing is written.
  """
  program = train.build(config)
  ckpt = checkpoint.Checkpointer.existing(workdir)
  try:
    at = ckpt.step(step)
    ckpt.check_compatible(program.abstract, model=config.model.name,
                          saved_model=train._saved_model(workdir))
    return program, ckpt.restore(at, program.abstract)
  finally:
    ckpt.close()


def renormalize(preprocess: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """Our pipelines give [-1, 1] RGB; converted weights may expect another normalisation
  (``preprocess``: their metadata's ``mean``, ``std``, ``scale``, ``bgr``)."""
  mean = jnp.asarray(preprocess['mean'], jnp.float32)
  std = jnp.asarray(preprocess['std'], jnp.float32)
  scale, bgr = float(preprocess.get('scale', 1.0)), bool(preprocess.get('bgr', False))

  def fn(x):
    x = (x + 1.0) / 2.0 * scale
    if bgr:
      x = x[..., ::-1]
    return (x - mean) / std
  return fn


def evaluate(config, workdir: str | None = None, *, weights: str | None = None,
             step: int | str | None = None) -> dict[str, float]:
  """Top-1/top-5 and loss on ``config.data.eval_split``.

  Either of a training ``workdir``'s checkpoint (``step``: a number, ``'best'``, or the latest
  by default; also ``ema_*`` of its EMA pair when the run kept one) or of converted ``weights``
  (a ``python -m inception_jax.convert`` directory: one set of weights, no ``ema_*``).
  """
  if (workdir is None) == (weights is None):
    raise ValueError('give a workdir or weights, not both')
  if weights is not None:
    from inception_jax import pretrained
    model, variables, meta = pretrained.load(weights)
    program = train.build(config, model=model, info=_checked_info(config, model, weights))
    norm = renormalize(meta['preprocess'])
    apply_fn = lambda v, x, **kw: model.apply(v, norm(x), **kw)  # noqa: E731
    state = jax.device_put(
        train_state.TrainState.from_weights(variables['params'],
                                            variables.get('batch_stats', {})),
        mesh_lib.replicated(program.mesh))
    step_fn = program.eval_step_of(apply_fn)
    where, at = weights, 0
  else:
    program, state = restore_state(config, workdir, step)
    step_fn = program.eval_step
    at = int(jax.device_get(state.step))
    where = f'{os.path.join(workdir, "checkpoints")} step {at}'
  result = train.eval_loop(program, step_fn)(state, ema=weights is None and bool(config.ema_decay))
  log.info('%s on %s/%s (%d images): %s', where, config.data.name, config.data.eval_split,
           program.num_eval,
           train.eval_line(at, program.steps_per_epoch, result).split(': ', 1)[1])
  return {**result, 'step': int(at)}


def _checked_info(config, model, weights: str) -> data.DatasetInfo:
  train.validate(config)
  info = data.info(config.data)
  if model.num_classes != info.num_classes:
    raise errors.UserError(f'--weights={weights} classifies {model.num_classes} classes, '
                           f'{config.data.name} has {info.num_classes}: convert it with '
                           f'--num_classes={info.num_classes}, or evaluate on its own dataset')
  return info

