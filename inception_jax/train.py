"""The training loop, :func:`train_and_evaluate`, and :func:`evaluate`; notebooks import these.

>>> from experiments.configs import v1
>>> results = train_and_evaluate(v1.get_config('quick'), '/tmp/v1_quick')

Data parallel over all devices of all processes (:mod:`inception_jax.mesh`): ``jax.jit``-compiled
steps, the batch sharded along ``'data'``, the state replicated and donated. Writes into
``workdir``: ``config.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` and, at the
end, ``results.json``. Relaunching with the same workdir resumes from the latest checkpoint, and
the resumed run sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from inception_jax import checkpoint, data, errors, machine, mesh as mesh_lib
from inception_jax import metrics as metrics_lib, models, optim, steps, train_state
from inception_jax.data import prefetch

log = logging.getLogger('inception_jax.train')

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


# --------------------------------------------------------------------------------- setup

@dataclasses.dataclass
class Setup:
  """Everything derived from a config, computed in one place before anything is compiled."""
  config: Any
  model: Any  # flax module
  num_classes: int
  num_train: int
  num_eval: int
  steps_per_epoch: Any  # fractions.Fraction, exact (optim.steps_per_epoch); 1.0 in evaluate
  total_steps: int
  eval_steps: frozenset[int]  # after these steps (every eval_every_epochs, and the last)
  peak_lr: float
  mesh: Any


def validate(config, mesh=None) -> None:
  """Refuse a config that cannot run, with one line naming the field, before compiling."""
  mesh = mesh_lib.make_mesh() if mesh is None else mesh
  try:
    entry = models.info(config.model.name)
  except ValueError as err:
    raise errors.ConfigError('model.name', str(err)) from None
  if config.dtype not in DTYPES:
    raise errors.ConfigError(
        'dtype', f'config.dtype={config.dtype!r}; choose one of {sorted(DTYPES)}')
  if config.optimizer.name not in optim.OPTIMIZERS:
    raise errors.ConfigError('optimizer.name', f'unknown optimizer {config.optimizer.name!r}; '
                                               f'known: {", ".join(optim.OPTIMIZERS)}')
  if config.nonfinite not in ('stop', 'skip'):
    raise errors.ConfigError(
        'nonfinite', f"config.nonfinite={config.nonfinite!r}; choose 'stop' (end the run at a "
                     "non-finite loss or gradient) or 'skip' (skip that update and count it)")
  mesh_lib.check_divisible(config.batch_size, 'config.batch_size', mesh)
  mesh_lib.check_divisible(config.eval_batch_size, 'config.eval_batch_size', mesh)
  size = config.data.image_size
  if size < entry.min_size:
    raise errors.ConfigError(
        'data.image_size', f'config.data.image_size={size} is below the minimum input size of '
                           f'{entry.name} ({entry.min_size})')
  info = data.info(config.data)  # ConfigError for an unknown or missing dataset
  for field in ('train_split', 'eval_split'):
    if config.data[field] not in info.num_examples:
      raise errors.ConfigError(f'data.{field}', f'config.data.{field}={config.data[field]!r}; '
                               f'{config.data.name} has splits {sorted(info.num_examples)}')


def build_model(config, num_classes: int):
  """The module of ``config.model`` (with ``config.init_from``: the architecture and conventions
  of the converted weights, with this config's options on top)."""
  options = {k: v for k, v in config.model.options.items() if v is not None}
  options['dtype'] = DTYPES[config.dtype]
  if config.init_from:
    from inception_jax import pretrained
    meta = pretrained.load_meta(config.init_from)
    if meta['model'] != models.info(config.model.name).name:
      raise errors.ConfigError(
          'init_from', f'config.init_from holds {meta["model"]} weights, config.model.name is '
                       f'{config.model.name!r}')
    return pretrained.build(meta, num_classes=num_classes, **options)
  return models.create(config.model.name, num_classes=num_classes, **options)


def setup(config) -> Setup:
  mesh = mesh_lib.make_mesh()
  validate(config, mesh)
  info = data.info(config.data)
  num_train = info.num_examples[config.data.train_split]
  steps_per_epoch = optim.steps_per_epoch(num_train, config.batch_size)
  total = config.total_steps or optim.epochs_to_steps(config.num_epochs, steps_per_epoch)
  return Setup(config=config, model=build_model(config, info.num_classes),
               num_classes=info.num_classes, num_train=num_train,
               num_eval=info.num_examples[config.data.eval_split],
               steps_per_epoch=steps_per_epoch, total_steps=total,
               eval_steps=_eval_steps(config.eval_every_epochs, steps_per_epoch, total),
               peak_lr=optim.learning_rate(config), mesh=mesh)


def _eval_steps(every_epochs: float, steps_per_epoch, total: int) -> frozenset[int]:
  """The steps that end each ``every_epochs`` epochs (rounded), and the last step."""
  return optim.eval_steps(every_epochs, steps_per_epoch, total)


def init_fn(model, image_size: int) -> Callable[[jax.Array], dict]:
  """``rng -> variables`` of ``model`` at ``image_size`` (eval mode, one image)."""
  def init(rng):
    # The initialisers draw from an RngBitGenerator key: XLA compiles a hundred of them in half
    # the time it needs for threefry, and the replicated init computes the same values on
    # every device.
    key = jax.random.wrap_key_data(jnp.tile(rng, 2), impl='rbg')
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return model.init({'params': key, 'dropout': key}, x, train=False)
  return init


def restore_state(config, workdir: str, step: int | str | None = None
                  ) -> tuple[Setup, train_state.TrainState]:
  """The training state saved in ``workdir`` by a run of ``config``, with that run's setup.

  ``step``: a step number, ``'best'`` (the best by eval top-1) or, by default, the latest.
  The state comes back on the devices of the mesh, replicated, as the train step leaves it; its
  ``params`` with ``batch_stats``, or ``ema_params`` with ``ema_batch_stats``, go to
  ``setup.model.apply``. A checkpoint that cannot be read raises
  ``checkpoint.CorruptCheckpointError`` or, after retries, ``checkpoint.CheckpointUnavailableError``
  (each naming the step, path and cause).
  """
  s = setup(config)
  abstract = build(config, s).abstract
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    at = ckpt.best_step() if step == 'best' else (ckpt.latest_step() if step is None else step)
    if at is None:
      raise FileNotFoundError(f'no checkpoint under {ckpt.directory}')
    return s, ckpt.restore(int(at), abstract)
  finally:
    ckpt.close()


def _load_pretrained(path: str, state, tx, sharding):
  """Converted weights into ``state`` wherever path and shape match; the rest (a new head) keeps
  its fresh initialisation."""
  from inception_jax import pretrained
  _, loaded, _ = pretrained.load(path)
  loaded = traverse_util.flatten_dict(jax.device_get(loaded))
  fresh = traverse_util.flatten_dict({'params': state.params, 'batch_stats': state.batch_stats})
  merged, kept_fresh = {}, []
  for key, value in fresh.items():
    if key in loaded and tuple(loaded[key].shape) == tuple(value.shape):
      merged[key] = jnp.asarray(loaded[key], value.dtype)
    else:
      merged[key] = value
      kept_fresh.append('/'.join(key))
  if kept_fresh:
    log.info('init_from %s: %d arrays newly initialised (not in the weights or another shape): %s',
             path, len(kept_fresh), ', '.join(kept_fresh))
  merged = traverse_util.unflatten_dict(merged)
  restart = jax.jit(functools.partial(train_state.with_weights, tx=tx), out_shardings=sharding)
  return restart(state, merged['params'], merged.get('batch_stats', {}))


# --------------------------------------------------------------------------------- eval

def _make_eval(s: Setup, step) -> Callable[..., dict[str, float]]:
  """``run(state, ema=True)``: metrics, by the jitted eval ``step``, of the raw weights and, under
  ``ema_*``, of the EMA pair (averaged weights with their averaged BatchNorm statistics);
  ``ema=False``: the raw ones only (a recipe without EMA, converted weights)."""
  config = s.config

  def run(state, ema: bool = True) -> dict[str, float]:
    weights = {'': (state.params, state.batch_stats)}
    if ema:
      weights['ema_'] = (state.ema_params, state.ema_batch_stats)
    sums = None
    host = data.batches(config.data, config.data.eval_split,
                        batch_size=mesh_lib.local_batch_size(config.eval_batch_size), train=False,
                        process_index=jax.process_index(), process_count=jax.process_count())
    for batch in prefetch.to_device(host, s.mesh):
      out = {prefix + k: v for prefix, (params, stats) in weights.items()
             for k, v in step(params, stats, batch).items()}
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    _report_skipped(host, 'eval')
    count = float(sums.pop('count'))
    sums.pop('ema_count', None)
    if int(round(count)) != s.num_eval:
      raise RuntimeError(f'eval saw {count} examples, the split has {s.num_eval}')
    return {k: float(v) / count for k, v in sums.items()}

  return run


def _report_skipped(host_batches, what: str) -> int:
  """Examples the pipeline dropped as unreadable (counted by it, each named in a warning)."""
  skipped = len(getattr(host_batches, 'skipped', ()))
  if skipped:
    log.warning('%s: %d unreadable or corrupt examples skipped on process %d so far',
                what, skipped, jax.process_index())
  return skipped


def _eval_line(step: int, s: Setup, m: dict[str, float]) -> str:
  line = (f'eval @ step {step} (epoch {optim.epoch(step, s.steps_per_epoch):.1f}): '
          f'top-1 {m["top1"]:.2%} top-5 {m["top5"]:.2%} loss {m["loss"]:.4f}')
  if 'ema_top1' in m:
    line += (f' | EMA top-1 {m["ema_top1"]:.2%} top-5 {m["ema_top5"]:.2%} '
             f'loss {m["ema_loss"]:.4f}')
  return line


def _best_metric(config, m: dict[str, float]) -> float:
  """The top-1 that ranks checkpoints: of the EMA weights when the recipe averages them."""
  return m['ema_top1'] if config.ema_decay else m['top1']


# --------------------------------------------------------------------------------- train

def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, sec = divmod(rem, 60)
  return f'{h}h{m:02d}m{sec:02d}s' if h else f'{m}m{sec:02d}s'


def jit_eval_step(s: Setup, apply_fn, state_sharding):
  """The eval step, jitted over ``s.mesh``: ``(params, batch_stats, batch) -> sums``."""
  return _jit_eval_step(apply_fn, s.mesh, state_sharding)


def _jit_eval_step(apply_fn, mesh, state_sharding):
  return jax.jit(functools.partial(steps.eval_step, apply_fn=apply_fn),
                 in_shardings=(state_sharding.params, state_sharding.batch_stats,
                               mesh_lib.batch_sharded(mesh)),
                 out_shardings=mesh_lib.replicated(mesh))


def jit_train_step(s: Setup, tx, schedule, state_sharding):
  """The loop's train step, jitted over ``s.mesh``: the batch sharded along ``'data'``, the state
  replicated and donated."""
  loss = s.config.loss
  return _jit_train_step(s.model.apply, s.mesh, tx, schedule, state_sharding,
                         loss.label_smoothing, loss.aux_weight, optim.ema_step_decay(s.config))


def _jit_train_step(apply_fn, mesh, tx, schedule, state_sharding, label_smoothing, aux_weight,
                    ema_decay):
  return jax.jit(
      functools.partial(steps.train_step, apply_fn=apply_fn, tx=tx, schedule=schedule,
                        label_smoothing=label_smoothing, aux_weight=aux_weight,
                        ema_decay=ema_decay),
      in_shardings=(state_sharding, mesh_lib.batch_sharded(mesh)),
      out_shardings=(state_sharding, mesh_lib.replicated(mesh)), donate_argnums=(0,))


@dataclasses.dataclass(frozen=True)
class Program:
  """The programs of a run of ``config`` and the shardings they agree on: what
  :func:`train_and_evaluate` runs, what the benchmarks time and what notebooks can call."""
  setup: Setup
  tx: Any  # optax.GradientTransformation
  schedule: Callable[[jax.Array], jax.Array]
  create: Callable[[jax.Array], train_state.TrainState]  # rng -> state (not jitted)
  abstract: train_state.TrainState  # jax.ShapeDtypeStruct leaves, with their shardings
  state_sharding: Any
  train_step: Any  # jitted (state, batch) -> (state, metrics); donates the state
  init_step: Any  # jitted rng -> state, straight into state_sharding
  model_eval_step: Any  # jitted (params, batch_stats, batch) -> sums, of the model's apply

  def init(self, rng: jax.Array) -> train_state.TrainState:
    """A fresh state, initialised straight into its sharding."""
    return self.init_step(rng)

  def eval_step(self, apply_fn: Callable | None = None):
    """The jitted eval step of evaluation (``apply_fn`` defaults to the model's)."""
    if apply_fn is None:
      return self.model_eval_step
    return jit_eval_step(self.setup, apply_fn, self.state_sharding)


def build(config, s: Setup | None = None, *, reuse: bool = True) -> Program:
  """The training program of ``config`` (``s``: its :func:`setup`, computed when not given).
  Nothing is compiled until a step is first called or lowered.

  Within a process, configs that define the same programs (the same model, input size,
  optimizer, loss, EMA decay per step and mesh; the run's length, data order and workdir may
  differ) get the same jitted functions, so that a second run, a resumed run or
  :func:`restore_state` neither traces nor loads its steps again. ``reuse=False``: fresh
  ones (what a benchmark of compile time needs)."""
  s = setup(config) if s is None else s
  key = (s.model, config.data.image_size, ml_collections.FrozenConfigDict(config.optimizer),
         s.peak_lr, s.steps_per_epoch, float(config.loss.label_smoothing),
         float(config.loss.aux_weight), optim.ema_step_decay(config), s.mesh,
         bool(jax.config.jax_enable_x64))
  try:
    hash(key)
  except TypeError:  # a model option that cannot be hashed: nothing to share it under
    reuse = False
  parts = _programs(*key) if reuse else _programs.__wrapped__(*key)
  return Program(setup=s, **parts)


@functools.lru_cache(maxsize=8)
def _programs(model, image_size: int, optimizer, peak_lr: float, steps_per_epoch: float,
              label_smoothing: float, aux_weight: float, ema_decay: float, mesh,
              x64: bool) -> dict[str, Any]:
  """The parts of a :class:`Program`, from these arguments only (``x64``: under which the
  shapes were traced), so that equal arguments may share them."""
  del x64
  tx, schedule = optim.make(optimizer, peak_lr, steps_per_epoch)
  create = functools.partial(train_state.create, init_fn(model, image_size), tx)
  sharding = mesh_lib.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          jax.eval_shape(create, jax.random.PRNGKey(0)))
  state_sharding = jax.tree.map(lambda x: x.sharding, abstract)
  return dict(
      tx=tx, schedule=schedule, create=create, abstract=abstract, state_sharding=state_sharding,
      train_step=_jit_train_step(model.apply, mesh, tx, schedule, state_sharding, label_smoothing,
                                 aux_weight, ema_decay),
      init_step=jax.jit(create, out_shardings=state_sharding),
      model_eval_step=_jit_eval_step(model.apply, mesh, state_sharding))


class _Preemption:
  """SIGTERM, a preemption notice: the loop writes a checkpoint after the current step and
  returns. With several processes, JAX's own preemption service (started by
  ``jax.distributed.initialize``) catches the signal and makes every process stop at the same
  step (``multihost_utils.reached_preemption_sync_point``)."""

  def __init__(self):
    self.received: str | None = None
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    log.warning('%s received: writing a checkpoint after this step, then exiting',
                self.received)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def reached(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.received is not None
    from jax.experimental import multihost_utils
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # no preemption service (jax.distributed started without it)
      return False


def _check_finite(records: list[tuple[int, dict[str, float]]], config, ckpt) -> None:
  """Stops the run at the first step whose loss or gradient was not finite (its update was not
  applied), unless ``config.nonfinite == 'skip'``, where each is logged (the train state counts
  them: ``skipped_updates``)."""
  bad = [(step, m) for step, m in records if m.get('nonfinite', 0.0) > 0]
  if config.nonfinite == 'skip':
    for step, m in bad:
      log.warning('step %d: non-finite loss (%g) or gradient norm (%g); update skipped '
                  '(config.nonfinite=skip)', step, m['loss'], m['grad_norm'])
  elif bad:
    step, m = bad[0]
    raise FloatingPointError(
        f'step {step}: non-finite loss ({m["loss"]:g}) or gradient norm ({m["grad_norm"]:g}); '
        f'stopped without applying it or writing a checkpoint after it (latest checkpoint: '
        f'step {ckpt.latest_step()} in {ckpt.directory}). Lower the learning rate, or set '
        f'--config.nonfinite=skip to skip such updates')


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Train ``config`` in ``workdir`` (resuming from its latest checkpoint), evaluate, and return
  what ``workdir/results.json`` holds (after a preemption: ``{'preempted_at_step': N, ...}``,
  and no ``results.json``)."""
  return run(config, workdir)[0]


def run(config, workdir: str) -> tuple[dict[str, Any], train_state.TrainState]:
  """:func:`train_and_evaluate`, also returning the final training state (this process' view)."""
  start_time = time.time()
  s = setup(config)
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  program = build(config, s)
  tx, abstract, state_sharding = program.tx, program.abstract, program.state_sharding
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints,
                                 keep_best=config.keep_best_checkpoints)
  ckpt.check_compatible(abstract, model=config.model.name, saved_model=_saved_model(workdir))
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  latest, state = ckpt.restore_latest(abstract, start_over=config.restart_if_unrestorable)
  if latest is not None:
    log.info('resumed from %s at step %d', ckpt.path(latest), latest)
  else:
    state = program.init(jax.random.PRNGKey(config.seed))
    if config.init_from:
      state = _load_pretrained(config.init_from, state, tx, state_sharding)
  first_step = latest or 0

  n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  log.info('%s: %s parameters, %d classes at %dx%d | %d devices, %d processes | global batch %d, '
           '%.1f steps/epoch, %d steps (%.1f epochs) | %s lr %.4g (= %g x %d / %d)',
           config.model.name, f'{n_params:,}', s.num_classes, config.data.image_size,
           config.data.image_size, s.mesh.size, jax.process_count(), config.batch_size,
           s.steps_per_epoch, s.total_steps, optim.epoch(s.total_steps, s.steps_per_epoch),
           config.optimizer.name, s.peak_lr, config.optimizer.lr, config.batch_size,
           config.optimizer.lr_batch)

  train_step = program.train_step
  run_eval = _make_eval(s, program.eval_step())
  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.tensorboard)
  host_batches = data.batches(config.data, config.data.train_split,
                              batch_size=mesh_lib.local_batch_size(config.batch_size), train=True,
                              process_index=jax.process_index(),
                              process_count=jax.process_count(), seed=config.seed,
                              start_step=first_step)
  batches = prefetch.to_device(host_batches, s.mesh)  # input overlaps compute

  eval_metrics: dict[str, float] | None = None
  pending: list[tuple[int, dict[str, jax.Array]]] = []  # on device, not yet looked at
  window: list[tuple[int, dict[str, float]]] = []  # fetched, not yet logged
  last_log_time, last_log_step = time.time(), first_step
  train_seconds = 0.0
  loads: list[float] = []  # 1-minute load average at each log line: a shared machine's share
  compiled = None
  preempted_at = None
  try:
    with _Preemption() as preemption:
      for step in range(first_step + 1, s.total_steps + 1):
        batch = next(batches)
        if compiled is None:
          t0 = time.time()
          compiled = train_step.lower(state, batch).compile()
          log.info('train step compiled in %.1fs', time.time() - t0)
          last_log_time = time.time()
        state, step_metrics = compiled(state, batch)
        pending.append((step, step_metrics))

        last = step == s.total_steps
        log_now = step % config.log_every_steps == 0 or last
        save_now = step in s.eval_steps or step % config.checkpoint_every_steps == 0
        stop_now = preemption.reached(step)
        if log_now or save_now or stop_now:
          # The host looks at the metrics only here: no sync per step beyond logging's.
          fetched = jax.device_get([m for _, m in pending])
          fetched = [(st, {k: float(v) for k, v in m.items()})
                     for (st, _), m in zip(pending, fetched)]
          pending.clear()
          _check_finite(fetched, config, ckpt)
          window.extend(fetched)
        if log_now:
          means = {k: float(np.mean([m[k] for _, m in window])) for k in window[0][1]}
          now = time.time()
          dt = (now - last_log_time) / (step - last_log_step)
          train_seconds += now - last_log_time
          loads.append(machine.load_average())
          means.update(step_time=dt, images_per_s=config.batch_size / dt,
                       epoch=optim.epoch(step, s.steps_per_epoch))
          writer.write(step, 'train', means)
          log.info('step %d/%d (%.0f%%, epoch %.1f) | loss %.4f top-1 %.1f%% | lr %.4g grad-norm '
                   '%.3g | %.0f img/s %.3fs/step | ETA %s', step, s.total_steps,
                   100 * step / s.total_steps, means['epoch'], means['loss'],
                   100 * means['top1'], means['lr'], means['grad_norm'], means['images_per_s'], dt,
                   _duration(dt * (s.total_steps - step)))
          window.clear()
          last_log_time, last_log_step = now, step

        if step in s.eval_steps:
          jax.block_until_ready(state)  # what is still training is train time, the rest eval time
          eval_start = time.time()
          eval_metrics = run_eval(state, ema=bool(config.ema_decay))
          writer.write(step, 'eval', eval_metrics)
          log.info(_eval_line(step, s, eval_metrics))
          ckpt.save(step, state, {checkpoint.BEST_METRIC: _best_metric(config, eval_metrics)})
          last_log_time += time.time() - eval_start
        elif save_now or (stop_now and not last):
          ckpt.save(step, state)
        if stop_now and not last:
          preempted_at = step
          break
  except BaseException:
    # Let the checkpoints already begun finish writing; the error goes on as it was.
    try:
      ckpt.close()
    except checkpoint.CheckpointWriteError as err:  # reported; the first error is the one raised
      log.error('%s', err)
    writer.close()
    raise

  if preempted_at is not None:
    ckpt.close()
    writer.close()
    log.warning('preempted (%s): checkpoint of step %d written to %s; relaunch the same command '
                'to continue', preemption.received or 'preemption notice', preempted_at,
                ckpt.path(preempted_at))
    return {'preempted_at_step': preempted_at, 'steps': s.total_steps,
            'resumed_from_step': first_step}, state

  if eval_metrics is None:  # resumed a finished run: evaluate what it ended with
    eval_metrics = run_eval(state, ema=bool(config.ema_decay))
    log.info(_eval_line(s.total_steps, s, eval_metrics))
    ckpt.save(s.total_steps, state, {checkpoint.BEST_METRIC: _best_metric(config, eval_metrics)})
  ckpt.close()
  writer.close()
  results = {
      'model': config.model.name,
      'dataset': config.data.name,
      'eval_split': config.data.eval_split,
      'eval': eval_metrics,
      'steps': s.total_steps,
      'epochs': optim.epoch(s.total_steps, s.steps_per_epoch),
      'resumed_from_step': first_step,
      'train_time_s': train_seconds,
      'wall_time_s': time.time() - start_time,
      'load_average_1min': [min(loads), max(loads)] if loads else None,
      'skipped_train_examples': _report_skipped(host_batches, 'train'),
      'skipped_updates': int(jax.device_get(state.skipped_updates)),
      'devices': s.mesh.size,
      'processes': jax.process_count(),
  }
  path = os.path.join(workdir, 'results.json')
  # A relaunch of a finished run only re-evaluates; it keeps the run's record (and wall time).
  if is_main and not (first_step == s.total_steps and os.path.exists(path)):
    with open(path, 'w') as f:
      json.dump(results, f, indent=2)
  log.info('held-out %s after %d steps, %s wall; results in %s',
           _eval_line(s.total_steps, s, eval_metrics).split(': ', 1)[1], s.total_steps,
           _duration(results['wall_time_s']), path)
  return results, state


def _saved_model(workdir: str) -> str | None:
  """The model name in ``workdir/config.json`` (of the run that wrote its checkpoints)."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)['model']['name']
  except (OSError, ValueError, KeyError, TypeError):
    return None


# ------------------------------------------------------------------------- evaluate only

def _renormalize(preprocess: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """Our pipelines give [-1, 1] RGB; converted weights may expect another normalisation."""
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
  mesh = mesh_lib.make_mesh()
  validate(config, mesh)
  info = data.info(config.data)
  sharding = mesh_lib.replicated(mesh)
  if weights is not None:
    from inception_jax import pretrained
    model, variables, meta = pretrained.load(weights)
    if model.num_classes != info.num_classes:
      raise ValueError(f'{weights} classifies {model.num_classes} classes, '
                       f'{config.data.name} has {info.num_classes}')
    norm = _renormalize(meta['preprocess'])
    apply_fn = lambda v, x, **kw: model.apply(v, norm(x), **kw)  # noqa: E731
    params, stats = variables['params'], variables.get('batch_stats', {})
    state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                   batch_stats=stats, opt_state=(), ema_params=params,
                                   ema_batch_stats=stats, rng=jax.random.PRNGKey(0),
                                   skipped_updates=jnp.zeros((), jnp.int32))
    state = jax.device_put(state, sharding)
    s = Setup(config=config, model=model, num_classes=info.num_classes,
              num_train=info.num_examples[config.data.train_split],
              num_eval=info.num_examples[config.data.eval_split], steps_per_epoch=1.0,
              total_steps=0, eval_steps=frozenset(), peak_lr=0.0, mesh=mesh)
    where, at = weights, 0
  else:
    s, state = restore_state(config, workdir, step)
    at = int(jax.device_get(state.step))
    where = f'{os.path.join(workdir, "checkpoints")} step {at}'
  step_fn = (jit_eval_step(s, apply_fn, jax.tree.map(lambda _: sharding, state))
             if weights is not None else build(config, s).eval_step())
  result = _make_eval(s, step_fn)(state, ema=weights is None and bool(config.ema_decay))
  log.info('%s on %s/%s (%d images): %s', where, config.data.name, config.data.eval_split,
           s.num_eval, _eval_line(at, s, result).split(': ', 1)[1])
  return {**result, 'step': int(at)}
