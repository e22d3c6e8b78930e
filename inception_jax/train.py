"""The training loop, :func:`train_and_evaluate`, and :func:`build`, the program of a config;
notebooks import these.

>>> from experiments.configs import v1
>>> results = train_and_evaluate(v1.get_config('quick'), '/tmp/v1_quick')

Data parallel over all devices of all processes (:mod:`inception_jax.mesh`): ``jax.jit``-compiled
steps, the batch sharded along ``'data'``, the state replicated and donated. Writes into
``workdir``: ``config.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` and, at the
end, ``results.json``. Relaunching with the same workdir resumes from the latest checkpoint, and
the resumed run sees the batches an uninterrupted run would have seen.

The run's numbers (learning rate and schedule, optimizer constants, weight decay, clipping,
label smoothing, auxiliary weight, EMA decay: :attr:`Program.hparams`) reach the train step as
data, not as constants of the program: runs that differ only in them, or in their seed or
length, share one compiled step (in a process, and through JAX's persistent cache across
processes). Evaluation of a saved run or of converted weights is :mod:`inception_jax.evaluate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from fractions import Fraction
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from inception_jax import checkpoint, data, errors, machine, mesh as mesh_lib
from inception_jax import metrics as metrics_lib, models, optim, resume, steps, train_state
from inception_jax.data import prefetch

log = logging.getLogger('inception_jax.train')

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


# ------------------------------------------------------------------------------- program

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
  optim.switches(config.optimizer)  # ConfigError for an unknown optimizer
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
  data.check_splits(config.data)  # ConfigError for an unknown, missing or split-less dataset


def build_model(config, num_classes: int):
  """The module of ``config.model`` (with ``config.init_from``: the architecture and conventions
  of the converted weights, with this config's options on top)."""
  options = {k: v for k, v in config.model.options.items() if v is not None}
  options['dtype'] = DTYPES[config.dtype]
  options['cpu_convolutions'] = machine.cpu_convolutions()  # as the entry point set it
  if config.init_from:
    from inception_jax import pretrained
    meta = pretrained.load_meta(config.init_from)
    if meta['model'] != models.info(config.model.name).name:
      raise errors.ConfigError(
          'init_from', f'config.init_from holds {meta["model"]} weights, config.model.name is '
                       f'{config.model.name!r}')
    return pretrained.build(meta, num_classes=num_classes, **options)
  return models.create(config.model.name, num_classes=num_classes, **options)


def duration(config, info: data.DatasetInfo) -> tuple[Fraction, int]:
  """``(steps per epoch, total steps)`` of ``config`` on a dataset of ``info``: the first the
  exact ratio of examples to batch (:func:`optim.steps_per_epoch`)."""
  steps_per_epoch = optim.steps_per_epoch(info.num_examples[config.data.train_split],
                                          config.batch_size)
  return steps_per_epoch, (config.total_steps or
                           optim.epochs_to_steps(config.num_epochs, steps_per_epoch))


def seeds(config) -> tuple[int, int]:
  """``(init_seed, data_seed)``: the initial draw's and the data order's (and augmentation's)
  seeds, each ``config.seed`` unless set on its own."""
  init = config.get('init_seed')
  order = config.get('data_seed')
  return (config.seed if init is None else init), (config.seed if order is None else order)


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


def hparams(config, steps_per_epoch: Fraction) -> dict[str, float | int]:
  """The run's numbers that the train step takes as data: the optimizer's
  (:func:`optim.scalars`), ``label_smoothing``, ``aux_weight``, and the EMA's decay per step
  (:func:`optim.ema_step_decay`) with ``ema_floor``, ``1 - decay`` computed here in double
  precision and rounded once to the run's float type (:func:`optim.ema_weight`)."""
  decay = optim.ema_step_decay(config)
  return dict(optim.scalars(config.optimizer, optim.learning_rate(config), steps_per_epoch),
              label_smoothing=float(config.loss.label_smoothing),
              aux_weight=float(config.loss.aux_weight), ema_decay=decay, ema_floor=1.0 - decay)


@dataclasses.dataclass(frozen=True)
class Program:
  """A run of ``config`` as it will execute, from :func:`build`: the values derived from the
  config, the model, and the jitted steps over ``mesh`` with the shardings they agree on. What
  :func:`train_and_evaluate` runs, what the benchmarks time and what notebooks call."""
  config: Any
  model: Any  # flax module
  mesh: Any
  num_classes: int
  num_train: int
  num_eval: int
  steps_per_epoch: Fraction  # exact (optim.steps_per_epoch)
  total_steps: int
  eval_steps: frozenset[int]  # evaluate (and checkpoint) after these steps
  peak_lr: float
  hparams: dict[str, Any]  # the step's numbers, on the devices (:func:`hparams`)
  abstract: train_state.TrainState  # jax.ShapeDtypeStruct leaves, with their shardings
  state_sharding: Any
  tx: Any  # optax.GradientTransformation of the config's numbers (for init and fine-tuning)
  init_step: Any  # jitted rng -> state, straight into state_sharding
  train_step: Any  # jitted (state, hparams, batch) -> (state, metrics); donates the state
  eval_step: Any  # jitted (params, batch_stats, batch) -> sums
  _compiled: dict = dataclasses.field(repr=False, compare=False)  # shared by equal programs

  def init(self, rng: jax.Array) -> train_state.TrainState:
    """A fresh state, initialised straight into its sharding."""
    return self.init_step(rng)

  def schedule(self, step) -> jax.Array:
    """The learning rate of ``step`` (0-based)."""
    return optim.lr_schedule(self.hparams)(step)

  def compiled_train_step(self, state, batch) -> tuple[Callable, float | None]:
    """The train step compiled for ``state`` and ``batch``'s shapes and shardings, and the
    seconds compiling took (None: compiled earlier in this process, by this program or one that
    differs from it only in :attr:`hparams`, seed or length)."""
    leaves, tree = jax.tree.flatten((state, batch))
    key = (tree, tuple((x.shape, x.dtype, getattr(x, 'sharding', None)) for x in leaves))
    if key in self._compiled:
      return self._compiled[key], None
    t0 = time.time()
    compiled = self.train_step.lower(state, self.hparams, batch).compile()
    self._compiled[key] = compiled
    return compiled, time.time() - t0

  def eval_step_of(self, apply_fn: Callable) -> Any:
    """The jitted eval step of another ``apply_fn`` (converted weights with their input
    normalisation) over this program's mesh and shardings."""
    return _jit_eval_step(apply_fn, self.mesh, self.state_sharding)


def build(config, *, info: data.DatasetInfo | None = None, model=None,
          reuse: bool = True) -> Program:
  """The program of ``config``: its derived values and jitted steps; a config that cannot run
  raises ``errors.ConfigError`` first. Nothing is compiled until a step is first called or
  lowered. ``info`` and ``model`` replace the dataset's info and the config's module (tests).

  Within a process, configs of the same programs (same model, input size, optimizer switches,
  dtype and mesh; any numbers, length, seed, data order or workdir) share the jitted functions
  and compiled steps. ``reuse=False``: fresh ones (what a benchmark of compile time needs)."""
  mesh = mesh_lib.make_mesh()
  if info is None:
    validate(config, mesh)
    info = data.info(config.data)
  num_train = info.num_examples[config.data.train_split]
  steps_per_epoch, total = duration(config, info)
  model = build_model(config, info.num_classes) if model is None else model
  key = (model, config.data.image_size, optim.switches(config.optimizer), mesh,
         bool(jax.config.jax_enable_x64))
  try:
    hash(key)
  except TypeError:  # a model option that cannot be hashed: nothing to share it under
    reuse = False
  numbers = hparams(config, steps_per_epoch)
  parts = (_programs if reuse else _programs.__wrapped__)(*key)
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  on_device = jax.device_put(
      {k: np.asarray(v, np.int32 if isinstance(v, int) else dtype) for k, v in numbers.items()},
      mesh_lib.replicated(mesh))
  tx, _ = optim.transform(optim.switches(config.optimizer), numbers)
  return Program(
      config=config, model=model, mesh=mesh, num_classes=info.num_classes, num_train=num_train,
      num_eval=info.num_examples[config.data.eval_split], steps_per_epoch=steps_per_epoch,
      total_steps=total, eval_steps=optim.eval_steps(config.eval_every_epochs, steps_per_epoch, total),
      peak_lr=numbers['peak_lr'], hparams=on_device, tx=tx, **parts)


@functools.lru_cache(maxsize=8)
def _programs(model, image_size: int, switch: tuple, mesh, x64: bool) -> dict[str, Any]:
  """The jitted parts of a :class:`Program`, from these arguments only (``x64``: under which
  the shapes were traced), so that equal arguments share them."""
  del x64
  # The optimizer state's structure depends on the switches only; any numbers will do here.
  tx = optim.transform(switch, _INIT_NUMBERS)[0]
  create = functools.partial(train_state.create, init_fn(model, image_size), tx)
  sharding = mesh_lib.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          jax.eval_shape(create, jax.random.PRNGKey(0)))
  state_sharding = jax.tree.map(lambda x: x.sharding, abstract)
  step = jax.jit(functools.partial(_train_step, apply_fn=model.apply, switch=switch),
                 in_shardings=(state_sharding, sharding, mesh_lib.batch_sharded(mesh)),
                 out_shardings=(state_sharding, sharding), donate_argnums=(0,))
  return dict(abstract=abstract, state_sharding=state_sharding, train_step=step,
              init_step=jax.jit(create, out_shardings=state_sharding),
              eval_step=_jit_eval_step(model.apply, mesh, state_sharding), _compiled={})


_INIT_NUMBERS = dict(peak_lr=0.0, warmup_steps=0, decay_steps=1, decay_rate=1.0, min_lr=0.0,
                     momentum=0.9, rms_decay=0.9, epsilon=1.0, weight_decay=0.0, clip_norm=1.0)


def _train_step(state, numbers, batch, *, apply_fn, switch):
  """:func:`steps.train_step` with the optimizer and loss built from ``numbers`` (traced)."""
  tx, schedule = optim.transform(switch, numbers)
  return steps.train_step(state, batch, apply_fn=apply_fn, tx=tx, schedule=schedule,
                          label_smoothing=numbers['label_smoothing'],
                          aux_weight=numbers['aux_weight'], ema_floor=numbers['ema_floor'])


def _jit_eval_step(apply_fn, mesh, state_sharding):
  return jax.jit(functools.partial(steps.eval_step, apply_fn=apply_fn),
                 in_shardings=(state_sharding.params, state_sharding.batch_stats,
                               mesh_lib.batch_sharded(mesh)),
                 out_shardings=mesh_lib.replicated(mesh))


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

def eval_loop(program: Program, step_fn=None) -> Callable[..., dict[str, float]]:
  """``run(state, ema=True)``: the held-out metrics, by the jitted eval step (``step_fn``, or
  the program's), of the raw weights and, under ``ema_*``, of the EMA pair (averaged weights
  with their averaged BatchNorm statistics); ``ema=False``: the raw ones only."""
  config = program.config
  step_fn = program.eval_step if step_fn is None else step_fn

  def run(state, ema: bool = True) -> dict[str, float]:
    weights = {'': (state.params, state.batch_stats)}
    if ema:
      weights['ema_'] = (state.ema_params, state.ema_batch_stats)
    sums = None
    host = data.batches(config.data, config.data.eval_split,
                        batch_size=mesh_lib.local_batch_size(config.eval_batch_size), train=False,
                        process_index=jax.process_index(), process_count=jax.process_count())
    for batch in prefetch.to_device(host, program.mesh):
      out = {prefix + k: v for prefix, (params, stats) in weights.items()
             for k, v in step_fn(params, stats, batch).items()}
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    _report_skipped(host, 'eval')
    count = float(sums.pop('count'))
    sums.pop('ema_count', None)
    if int(round(count)) != program.num_eval:
      raise RuntimeError(f'eval saw {count} examples, the split has {program.num_eval}')
    return {k: float(v) / count for k, v in sums.items()}

  return run


def _report_skipped(host_batches, what: str) -> int:
  """Examples the pipeline dropped as unreadable (counted by it, each named in a warning)."""
  skipped = len(getattr(host_batches, 'skipped', ()))
  if skipped:
    log.warning('%s: %d unreadable or corrupt examples skipped on process %d so far',
                what, skipped, jax.process_index())
  return skipped


def eval_line(step: int, steps_per_epoch: Fraction, m: dict[str, float]) -> str:
  """One log line of held-out metrics ``m`` after ``step``."""
  line = (f'eval @ step {step} (epoch {optim.epoch(step, steps_per_epoch):.1f}): '
          f'top-1 {m["top1"]:.2%} '
          f'top-5 {m["top5"]:.2%} loss {m["loss"]:.4f}')
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


class _Meter:
  """The loop's bookkeeping of training metrics: the steps' metrics stay on the device until a
  log line, a checkpoint or a stop needs them (no sync per step), are averaged per log line and
  written; the time between log lines, less evaluation, is training time."""

  def __init__(self, program: Program, writer, first_step: int):
    self.program, self.writer = program, writer
    self.pending: list[tuple[int, dict[str, jax.Array]]] = []  # on device
    self.window: list[tuple[int, dict[str, float]]] = []  # fetched, not yet logged
    self.last_time, self.last_step = time.time(), first_step
    self.train_seconds = 0.0
    self.loads: list[float] = []  # 1-minute load average at each log line

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self.pending.append((step, metrics))

  def fetch(self) -> list[tuple[int, dict[str, float]]]:
    """The pending steps' metrics, now on the host (and kept for the next log line)."""
    values = jax.device_get([m for _, m in self.pending])
    fetched = [(step, {k: float(v) for k, v in m.items()})
               for (step, _), m in zip(self.pending, values)]
    self.pending.clear()
    self.window.extend(fetched)
    return fetched

  def restart_clock(self) -> None:
    """Time starts now (after compiling)."""
    self.last_time = time.time()

  @contextlib.contextmanager
  def paused(self):
    """What runs inside (evaluation) is not training time."""
    start = time.time()
    try:
      yield
    finally:
      self.last_time += time.time() - start

  def log(self, step: int) -> None:
    """Write and log the means of the steps since the last line."""
    p = self.program
    means = {k: float(np.mean([m[k] for _, m in self.window])) for k in self.window[0][1]}
    now = time.time()
    dt = (now - self.last_time) / (step - self.last_step)
    self.train_seconds += now - self.last_time
    self.loads.append(machine.load_average())
    means.update(step_time=dt, images_per_s=p.config.batch_size / dt,
                 epoch=optim.epoch(step, p.steps_per_epoch))
    self.writer.write(step, 'train', means)
    log.info('step %d/%d (%.0f%%, epoch %.1f) | loss %.4f top-1 %.1f%% | lr %.4g grad-norm '
             '%.3g | %.0f img/s %.3fs/step | ETA %s', step, p.total_steps,
             100 * step / p.total_steps, means['epoch'], means['loss'], 100 * means['top1'],
             means['lr'], means['grad_norm'], means['images_per_s'], dt,
             _duration(dt * (p.total_steps - step)))
    self.window.clear()
    self.last_time, self.last_step = now, step


class _Preemption:
  """SIGTERM, a preemption notice, or SIGINT (Ctrl-C): the loop writes a checkpoint after the
  current step and returns; a second SIGINT raises ``KeyboardInterrupt`` at once. With several
  processes, JAX's own preemption service (started by ``jax.distributed.initialize``) catches
  SIGTERM and makes every process stop at the same step
  (``multihost_utils.reached_preemption_sync_point``); SIGINT keeps Python's default there."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: str | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.received is not None:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.received = signal.Signals(signum).name
    log.warning('%s received: writing a checkpoint after this step, then exiting%s',
                self.received, ' (Ctrl-C again to stop at once, without it)'
                if signum == signal.SIGINT else '')

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

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
  program = build(config)
  workdir = os.path.abspath(workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints,
                                 keep_best=config.keep_best_checkpoints)
  ckpt.check_compatible(program.abstract, model=config.model.name,
                        saved_model=_saved_model(workdir))
  resume.record_launch(config, workdir, resuming=bool(ckpt.all_steps()),
                       write=jax.process_index() == 0)
  state, first_step = _initial_state(program, ckpt)
  _log_start(program)

  evaluate = eval_loop(program)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.tensorboard)
  host_batches = data.batches(config.data, config.data.train_split,
                              batch_size=mesh_lib.local_batch_size(config.batch_size), train=True,
                              process_index=jax.process_index(),
                              process_count=jax.process_count(), seed=seeds(config)[1],
                              start_step=first_step)
  batches = prefetch.to_device(host_batches, program.mesh)  # input overlaps compute
  meter = _Meter(program, writer, first_step)
  eval_metrics: dict[str, float] | None = None
  preempted_at = None
  train_step = None
  try:
    with _Preemption() as preemption:
      for step in range(first_step + 1, program.total_steps + 1):
        batch = next(batches)
        if train_step is None:
          log.info('compiling the train step ...')
          train_step, seconds = program.compiled_train_step(state, batch)
          log.info('train step compiled in %.1fs' % seconds if seconds is not None else
                   'train step: compiled earlier in this process (same program)')
          meter.restart_clock()
        state, step_metrics = train_step(state, program.hparams, batch)
        meter.add(step, step_metrics)

        last = step == program.total_steps
        log_now = step % config.log_every_steps == 0 or last
        save_now = step in program.eval_steps or step % config.checkpoint_every_steps == 0
        stop_now = preemption.reached(step)
        if log_now or save_now or stop_now:
          _check_finite(meter.fetch(), config, ckpt)
        if log_now:
          meter.log(step)
        if step in program.eval_steps:
          jax.block_until_ready(state)  # what is still training is train time, the rest eval time
          with meter.paused():
            eval_metrics = evaluate(state, ema=bool(config.ema_decay))
            writer.write(step, 'eval', eval_metrics)
            log.info(eval_line(step, program.steps_per_epoch, eval_metrics))
            ckpt.save(step, state, {checkpoint.BEST_METRIC: _best_metric(config, eval_metrics)})
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
    return {'preempted_at_step': preempted_at, 'steps': program.total_steps,
            'resumed_from_step': first_step, 'signal': preemption.received}, state

  if eval_metrics is None:  # resumed a finished run: evaluate what it ended with
    eval_metrics = evaluate(state, ema=bool(config.ema_decay))
    log.info(eval_line(program.total_steps, program.steps_per_epoch, eval_metrics))
    ckpt.save(program.total_steps, state,
              {checkpoint.BEST_METRIC: _best_metric(config, eval_metrics)})
  ckpt.close()
  writer.close()
  results = {
      'model': config.model.name,
      'dataset': config.data.name,
      'eval_split': config.data.eval_split,
      'eval': eval_metrics,
      'steps': program.total_steps,
      'epochs': optim.epoch(program.total_steps, program.steps_per_epoch),
      'resumed_from_step': first_step,
      'train_time_s': meter.train_seconds,
      'wall_time_s': time.time() - start_time,
      'load_average_1min': [min(meter.loads), max(meter.loads)] if meter.loads else None,
      'skipped_train_examples': _report_skipped(host_batches, 'train'),
      'skipped_updates': int(jax.device_get(state.skipped_updates)),
      'devices': program.mesh.size,
      'processes': jax.process_count(),
  }
  _write_results(workdir, results, resumed_finished=first_step == program.total_steps)
  log.info('held-out %s after %d steps, %s wall; results in %s',
           eval_line(program.total_steps, program.steps_per_epoch, eval_metrics).split(': ', 1)[1],
           program.total_steps, _duration(results['wall_time_s']),
           os.path.join(workdir, 'results.json'))
  return results, state


def _initial_state(program: Program, ckpt) -> tuple[train_state.TrainState, int]:
  """The latest readable checkpoint's state and step, or a fresh state (of ``init_from``'s
  weights, when set) at step 0."""
  config = program.config
  latest, state = ckpt.restore_latest(program.abstract, start_over=config.restart_if_unrestorable)
  if latest is not None:
    log.info('resumed from %s at step %d', ckpt.path(latest), latest)
    return state, latest
  state = program.init(jax.random.PRNGKey(seeds(config)[0]))
  if config.init_from:
    state = _load_pretrained(config.init_from, state, program.tx, program.state_sharding)
  return state, 0


def _log_start(program: Program) -> None:
  config = program.config
  n_params = sum(x.size for x in jax.tree.leaves(program.abstract.params))
  log.info('%s: %s parameters, %d classes at %dx%d | %d devices, %d processes | global batch %d, '
           '%.1f steps/epoch, %d steps (%.1f epochs) | %s lr %.4g (= %g x %d / %d)',
           config.model.name, f'{n_params:,}', program.num_classes, config.data.image_size,
           config.data.image_size, program.mesh.size, jax.process_count(), config.batch_size,
           float(program.steps_per_epoch), program.total_steps,
           optim.epoch(program.total_steps, program.steps_per_epoch), config.optimizer.name,
           program.peak_lr, config.optimizer.lr, config.batch_size, config.optimizer.lr_batch)


def _write_results(workdir: str, results: dict[str, Any], *, resumed_finished: bool) -> None:
  """``results.json``; a relaunch of a finished run only re-evaluates and keeps the run's
  record (and wall time)."""
  path = os.path.join(workdir, 'results.json')
  if jax.process_index() == 0 and not (resumed_finished and os.path.exists(path)):
    with open(path, 'w') as f:
      json.dump(results, f, indent=2)


def _saved_model(workdir: str) -> str | None:
  """The model name in ``workdir/config.json`` (of the run that wrote its checkpoints)."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)['model']['name']
  except (OSError, ValueError, KeyError, TypeError):
    return None
