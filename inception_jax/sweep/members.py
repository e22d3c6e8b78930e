"""Several seeds of one sweep point trained as one program (``--vmap_seeds=K``).

The K runs differ only in their seeds, so they share the program; here the program is mapped
over a leading member axis with ``jax.vmap``: parameters, optimizer state, BatchNorm statistics
(each member normalises over its own batch), EMA and rng per member, and by default each
member's own data order (``shared_batches=True``: every member sees member 0's batches). Each
member writes what a standalone run writes in its own directory (``metrics.jsonl``,
``checkpoints/``, ``results.json``), so that the report, a relaunch and ``experiments.evaluate``
treat it as that run. The members' results equal the standalone runs' within float32 rounding:
XLA batches the members' convolutions, which sums in another order
(``tests/test_sweep.py`` states the tolerance).

On accelerators that a small model leaves idle, K members can cost about as much as one; on a
CPU they cost more than K runs (the members' convolutions become grouped ones, which XLA:CPU runs
slower than dense ones; BENCHMARKS.md, "Sweeps"), so the runner uses this only when asked.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from inception_jax import checkpoint, data, errors, metrics as metrics_lib, mesh as mesh_lib
from inception_jax import optim, resume, train

log = logging.getLogger('inception_jax.sweep')


def _stack(trees: Sequence[Any]):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, k: int):
  return jax.tree.map(lambda x: x[k], tree)


@functools.lru_cache(maxsize=4)
def _mapped_step(program_step, switch, apply_fn, mesh):
  """The train step of one member, mapped over the leading axis of the state and the batch;
  the numbers are shared."""
  del program_step  # the key: one mapped step per program
  step = functools.partial(train._train_step, apply_fn=apply_fn, switch=switch)
  state_sharding = mesh_lib.replicated(mesh)
  return jax.jit(jax.vmap(step, in_axes=(0, None, 0)),
                 in_shardings=(state_sharding, state_sharding,
                               NamedSharding(mesh, P(None, 'data'))),
                 out_shardings=(state_sharding, state_sharding), donate_argnums=(0,))


def train_members(configs: Sequence[Any], workdirs: Sequence[str], *,
                  shared_batches: bool = False) -> list[dict[str, Any]]:
  """Train the runs ``configs`` (one program, differing in seeds) together, each in its
  ``workdirs``; returns their results (what each ``results.json`` holds)."""
  start_time = time.time()
  programs = [train.build(c) for c in configs]
  program = programs[0]
  for other in programs[1:]:
    same = (other.train_step is program.train_step and other.total_steps == program.total_steps
            and jax.tree.all(jax.tree.map(lambda a, b: bool(np.all(a == b)),
                                          jax.device_get(other.hparams),
                                          jax.device_get(program.hparams))))
    if not same:
      raise errors.UserError('--vmap_seeds trains the seeds of one point together: these runs '
                             'differ in more than their seeds')
  config = program.config
  k = len(configs)
  ckpts = [checkpoint.Checkpointer(w, keep=c.keep_checkpoints, keep_best=c.keep_best_checkpoints)
           for c, w in zip(configs, workdirs)]
  states, firsts = [], []
  for c, w, ckpt in zip(configs, workdirs, ckpts):
    ckpt.check_compatible(program.abstract, model=c.model.name, saved_model=None)
    resume.record_launch(c, w, resuming=bool(ckpt.all_steps()), write=jax.process_index() == 0)
    state, first = train._initial_state(dataclasses.replace(program, config=c), ckpt)
    states.append(jax.device_get(state))
    firsts.append(first)
  if len(set(firsts)) > 1:
    raise errors.UserError(f'the members were checkpointed at different steps {firsts}: relaunch '
                           'without --vmap_seeds to finish them one by one')
  first_step = firsts[0]
  mesh = program.mesh
  state = jax.device_put(_stack(states), mesh_lib.replicated(mesh))
  step_fn = _mapped_step(program.train_step, optim.switches(config.optimizer),
                         program.model.apply, mesh)
  data_seeds = [train.seeds(c)[1] for c in configs]
  if shared_batches:
    data_seeds = [data_seeds[0]] * k
  streams = [data.batches(config.data, config.data.train_split,
                          batch_size=mesh_lib.local_batch_size(config.batch_size), train=True,
                          process_index=jax.process_index(), process_count=jax.process_count(),
                          seed=s, start_step=first_step) for s in data_seeds]
  writers = [metrics_lib.MetricWriter(w, tensorboard=c.tensorboard)
             for c, w in zip(configs, workdirs)]
  evaluate = train.eval_loop(program)
  batch_sharding = NamedSharding(mesh, P(None, 'data'))
  ema = bool(config.ema_decay)
  window: list[tuple[int, Any]] = []
  eval_metrics: list[dict[str, float] | None] = [None] * k
  compiled, train_seconds, last_time = None, 0.0, time.time()
  try:
    for step in range(first_step + 1, program.total_steps + 1):
      host = [next(s) for s in streams]
      batch = jax.device_put({key: np.stack([b[key] for b in host]) for key in host[0]},
                             batch_sharding)
      if compiled is None:
        t0 = time.time()
        compiled = step_fn.lower(state, program.hparams, batch).compile()
        log.info('%d members: train step compiled in %.1fs', k, time.time() - t0)
        last_time = time.time()
      state, step_metrics = compiled(state, program.hparams, batch)
      window.append((step, step_metrics))
      last = step == program.total_steps
      if step % config.log_every_steps == 0 or last or step in program.eval_steps:
        fetched = jax.device_get([m for _, m in window])
        now = time.time()
        train_seconds += now - last_time
        if step % config.log_every_steps == 0 or last:
          for i in range(k):
            means = {key: float(np.mean([m[key][i] for m in fetched])) for key in fetched[0]}
            means['epoch'] = optim.epoch(step, program.steps_per_epoch)
            writers[i].write(step, 'train', means)
          losses = [float(np.mean([m['loss'][i] for m in fetched])) for i in range(k)]
          log.info('%d members: step %d/%d | loss %s', k, step, program.total_steps,
                   ' '.join(f'{x:.4f}' for x in losses))
        bad = [i for i in range(k) if any(m['nonfinite'][i] > 0 for m in fetched)]
        if bad and config.nonfinite == 'stop':
          raise FloatingPointError(f'members {bad}: a non-finite loss or gradient by step {step}; '
                                   'rerun them without --vmap_seeds to see where')
        window.clear()
        if step in program.eval_steps or step % config.checkpoint_every_steps == 0:
          for i in range(k):
            member = jax.device_put(_member(state, i), mesh_lib.replicated(mesh))
            metrics = None
            if step in program.eval_steps:
              metrics = evaluate(member, ema=ema)
              eval_metrics[i] = metrics
              writers[i].write(step, 'eval', metrics)
              log.info('member %d: %s', i, train.eval_line(step, program.steps_per_epoch,
                                                            metrics))
            ckpts[i].save(step, member, None if metrics is None else
                          {checkpoint.BEST_METRIC: train._best_metric(config, metrics)})
        last_time = time.time()
  finally:
    for ckpt in ckpts:
      ckpt.close()
    for writer in writers:
      writer.close()

  out = []
  for i, (c, w) in enumerate(zip(configs, workdirs)):
    member = _member(state, i)
    if eval_metrics[i] is None:  # resumed finished members: evaluate what they ended with
      eval_metrics[i] = evaluate(jax.device_put(member, mesh_lib.replicated(mesh)), ema=ema)
    results = {
        'model': c.model.name, 'dataset': c.data.name, 'eval_split': c.data.eval_split,
        'eval': eval_metrics[i], 'steps': program.total_steps,
        'epochs': optim.epoch(program.total_steps, program.steps_per_epoch),
        'resumed_from_step': first_step, 'train_time_s': train_seconds / k,
        'wall_time_s': (time.time() - start_time) / k, 'load_average_1min': None,
        'skipped_train_examples': 0,
        'skipped_updates': int(jax.device_get(member.skipped_updates)),
        'devices': mesh.size, 'processes': jax.process_count(), 'vmap_members': k,
        'shared_batches': shared_batches,
    }
    train._write_results(w, results, resumed_finished=False)
    out.append(results)
  return out

