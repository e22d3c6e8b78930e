"""Times the programs training and evaluation run: the paper recipe of a model
(``experiments/configs``) on synthetic data, built by :func:`inception_jax.train.build`.

The batch is put on the device once and reused, so the host does no work per step; the host
waits for the device only at the end of each timed run. Compilation (``lower().compile()``) is
timed apart, then ``warmup`` untimed steps, then ``repeats`` runs of ``steps`` steps each: the
figure is the median run.
"""

from __future__ import annotations

import importlib
import statistics
import time
from typing import Any

from benchmarks import mfu as mfu_lib
from inception_jax import machine

# Model name -> its paper recipe in experiments/configs.
CONFIGS = {
    'inception_v1': 'v1',
    'inception_v2': 'v2',
    'inception_v3': 'v3',
    'inception_v4': 'v4',
    'inception_resnet_v1': 'inception_resnet_v1',
    'inception_resnet_v2': 'inception_resnet_v2',
    'xception': 'xception',
}


def model_name(name: str) -> str:
  """The registry name of ``name`` (or an alias); ValueError naming the known ones otherwise."""
  from inception_jax import models
  canonical = models.info(name).name
  if canonical not in CONFIGS:
    raise ValueError(f'no benchmark recipe for {canonical!r}; known: {", ".join(CONFIGS)}')
  return canonical


def paper_config(name: str, *, batch: int, image_size: int | None = None,
                 dtype: str = 'float32'):
  """The paper recipe of ``name`` on synthetic data at this batch, size and compute dtype."""
  name = model_name(name)
  config = importlib.import_module(f'experiments.configs.{CONFIGS[name]}').get_config()
  config.data.name = 'synthetic'
  if image_size:
    config.data.image_size = image_size
  config.batch_size = config.eval_batch_size = batch
  config.dtype = dtype
  return config


def timed_runs(run, steps: int, repeats: int) -> list[float]:
  """Seconds of each of ``repeats`` calls ``run(steps)``."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run(steps)
    out.append(time.perf_counter() - t0)
  return out


def summarise(batch: int, steps: int, seconds: list[float]) -> dict[str, Any]:
  """Images/s of the median run, and of every run."""
  rates = [batch * steps / s for s in seconds]
  median = statistics.median(rates)
  return {'images_per_s': median, 'step_time_s': batch / median, 'repeats': len(seconds),
          'runs_images_per_s': rates}


def _device() -> dict[str, Any]:
  import jax
  dev = jax.devices()[0]
  out = {'platform': dev.platform, 'device_kind': dev.device_kind,
         'device_count': jax.device_count(), 'jax_version': jax.__version__}
  if dev.platform == 'cpu':
    out.update(machine.describe())
  return out


def _device_peak_memory() -> int | None:
  import jax
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def benchmark_jax(model: str, mode: str, batch: int, dtype: str = 'float32',
                  image_size: int | None = None, steps: int = 10, warmup: int = 2,
                  repeats: int = 3, peak: float | None = None) -> dict[str, Any]:
  """Images/s (median of ``repeats``), step and compile time, peak memory, FLOPs and MFU of
  the train step (``mode='train'``) or the eval step (``'infer'``) of ``model``."""
  import jax
  from inception_jax import data, mesh as mesh_lib, models, train

  if mode not in mfu_lib.MODES:
    raise ValueError(f'mode must be one of {mfu_lib.MODES}, got {mode!r}')
  config = paper_config(model, batch=batch, image_size=image_size, dtype=dtype)
  # fresh programs: compile_s times a compilation, not a reuse (ConfigError: batch, size, dtype)
  program = train.build(config, reuse=False)
  local = next(data.batches(config.data, 'train' if mode == 'train' else 'validation',
                            batch_size=mesh_lib.local_batch_size(batch), train=mode == 'train',
                            process_index=jax.process_index(),
                            process_count=jax.process_count(), seed=config.seed))
  images = mesh_lib.global_batch(local, program.mesh)
  state = program.init(jax.random.PRNGKey(config.seed))

  if mode == 'train':
    t0 = time.perf_counter()
    compiled = program.train_step.lower(state, program.hparams, images).compile()
    compile_s = time.perf_counter() - t0

    def run(n):
      nonlocal state
      out = None
      for _ in range(n):
        state, out = compiled(state, program.hparams, images)
      jax.block_until_ready((state, out))
  else:
    t0 = time.perf_counter()
    compiled = program.eval_step.lower(state.params, state.batch_stats, images).compile()
    compile_s = time.perf_counter() - t0

    def run(n):
      jax.block_until_ready([compiled(state.params, state.batch_stats, images)
                             for _ in range(n)])

  t0 = time.perf_counter()
  run(max(warmup, 1))  # the first call also allocates; never timed
  warmup_s = time.perf_counter() - t0
  cpu0 = machine.cpu_seconds()
  seconds = timed_runs(run, steps, repeats)
  cpu_s = machine.cpu_seconds() - cpu0
  load_after = machine.load_average()

  device = _device()
  device_peak = _device_peak_memory()
  if device_peak is not None:
    memory, memory_kind = device_peak, 'device peak_bytes_in_use'
  else:
    memory, memory_kind = machine.rss_high_water(), 'process RSS high-water (incl. compilation)'
  size = config.data.image_size
  fwd = models.flops(config.model.name, size)['flops']
  timing = summarise(batch, steps, seconds)
  peak = peak if peak else mfu_lib.peak_flops(device['device_kind'], dtype)
  ips = timing['images_per_s']
  return {
      'framework': 'jax', 'model': config.model.name, 'mode': mode, 'batch': batch,
      'image_size': size, 'dtype': dtype, 'steps': steps, 'warmup': max(warmup, 1), **timing,
      'compile_s': compile_s, 'warmup_s': warmup_s, 'peak_memory_bytes': memory,
      'peak_memory_kind': memory_kind, 'flops_per_image_fwd': fwd,
      'model_flops_per_s': mfu_lib.model_flops_per_s(fwd, ips, mode), 'peak_flops': peak,
      'mfu': mfu_lib.mfu(fwd, ips, mode, peak), 'process_cpu_s': cpu_s,
      'images_per_cpu_s': batch * steps * repeats / cpu_s if cpu_s > 0 else float('nan'),
      'load_avg_1m_after': load_after, 'device': device,
      'recipe': {'optimizer': config.optimizer.name, 'clip_norm': config.optimizer.clip_norm,
                 'label_smoothing': config.loss.label_smoothing,
                 'aux_weight': config.loss.aux_weight, 'ema_decay': config.ema_decay},
  }
