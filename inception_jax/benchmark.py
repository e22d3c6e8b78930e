r"""Throughput of the compiled train step and eval forward pass, optionally beside PyTorch.

    python -m inception_jax.benchmark --model inception_v3 --mode train --batch 8
    python -m inception_jax.benchmark --model inception_v3 --mode infer --batch 256 \
        --dtype bfloat16 --compare torch
    python -m inception_jax.benchmark --all --batch 8 --infer_batch 16 --compare torch \
        --markdown /tmp/table.md

What is timed is the program training runs (:mod:`inception_jax.train`): the paper config of the
model (``experiments/configs``: optimizer, clipping, weight decay, label smoothing, aux-head
weights, EMA, model options) on the synthetic dataset, state built by ``train``'s own helpers,
jitted with the same shardings and state donation; ``--mode infer`` times the eval step that
evaluation runs (forward in eval mode plus the loss and top-k sums). The batch is put on the
device once and reused, so the host does no work per step, and the host waits for the device
only after the last timed step. Compile time (``lower().compile()``) is reported apart.

Model FLOPs utilisation: ``images/s x FLOPs per image / peak FLOP/s``. FLOPs per image are the
eval forward pass counted by :func:`inception_jax.models.flops` (2 per multiply-add, every tap of
every convolution); a train step counts 3x that (the forward, and a backward twice as costly:
gradients of activations and of weights), the usual convention; the aux heads, BatchNorm's
statistics and the optimizer are not counted. The peak comes from :data:`PEAK_FLOPS` by device
kind and compute dtype, or ``--peak_tflops``; without either (CPUs) MFU is n/a and only the
achieved FLOP/s is printed.

``--compare torch`` times the matching PyTorch model (:data:`TORCH_MODELS`) in the same process on
the same device, batch, image size and dtype, with the recipe's optimizer, clipping, label
smoothing, aux loss and EMA: on a GPU channels_last with bfloat16 autocast (for
``--dtype bfloat16``), eager and ``torch.compile``; on a CPU channels_last eager with
``torch.set_num_threads(os.cpu_count())``. It prints ``jax images/s / torch images/s``.
TensorFlow is never imported; PyTorch only with ``--compare torch``.

Peak memory: the device's ``memory_stats()['peak_bytes_in_use']`` where the backend has it (GPU,
TPU) and ``torch.cuda.max_memory_allocated``; on a CPU the process' resident-set high-water
(``getrusage``) for JAX, which runs first and includes compilation, and the largest resident set
sampled while PyTorch runs.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

MODES = ('train', 'infer')
DTYPES = ('float32', 'bfloat16')

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

# Dense (no 2:4 sparsity) peak FLOP/s per device, by a substring of JAX's ``device_kind`` (first
# match wins) and compute dtype. float32 on NVIDIA GPUs is the TF32 tensor-core peak: XLA runs
# float32 convolutions in TF32 at JAX's default precision. Sources: NVIDIA's H100 and A100
# datasheets (their tables give the sparse figure, twice these; H200 has H100 SXM's compute),
# Cloud TPU system-architecture pages (bf16 per chip).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ('H100 PCIe', {'bfloat16': 756.5e12, 'float32': 378e12}),
    ('H100', {'bfloat16': 989.4e12, 'float32': 494.7e12}),  # SXM
    ('H200', {'bfloat16': 989.4e12, 'float32': 494.7e12}),
    ('A100', {'bfloat16': 312e12, 'float32': 156e12}),
    ('TPU v4', {'bfloat16': 275e12}),
    ('TPU v5 lite', {'bfloat16': 197e12}),  # v5e
    ('TPU v5e', {'bfloat16': 197e12}),
    ('TPU v5', {'bfloat16': 459e12}),  # v5p
    ('TPU v6', {'bfloat16': 918e12}),  # v6e (Trillium)
]

TRAIN_FLOPS_FACTOR = 3  # forward + backward (2x forward); see the module docstring


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The :data:`PEAK_FLOPS` entry for this device and dtype, or None when unknown."""
  for key, peaks in PEAK_FLOPS:
    if key.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def mfu(flops_per_image_fwd: float, images_per_s: float, mode: str,
        peak: float | None) -> float | None:
  """Model FLOPs utilisation: achieved model FLOP/s over ``peak`` (None when the peak is)."""
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if not peak:
    return None
  factor = TRAIN_FLOPS_FACTOR if mode == 'train' else 1
  return factor * flops_per_image_fwd * images_per_s / peak


def model_name(name: str) -> str:
  """The registry name of ``name`` (or an alias); ValueError naming the known ones otherwise."""
  from inception_jax import models
  canonical = models.info(name).name
  if canonical not in CONFIGS:
    raise ValueError(f'no benchmark recipe for {canonical!r}; known: {", ".join(CONFIGS)}')
  return canonical


# ------------------------------------------------------------------------------- machine

def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _load() -> float:
  try:
    return os.getloadavg()[0]
  except OSError:
    return float('nan')


def _cpu_seconds() -> float:
  """User + system CPU time of this process (all its threads) so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _rss_high_water() -> int:
  """Peak resident set of this process so far, bytes (Linux reports KiB, macOS bytes)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024


def _rss_now() -> int:
  """Resident set of this process now, bytes (the high-water mark where /proc is missing)."""
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  except OSError:
    return _rss_high_water()


class _RssSampler:
  """Largest resident set seen while the block runs, sampled every ``interval`` seconds."""

  def __init__(self, interval: float = 0.02):
    self.interval, self.peak = interval, 0
    self._stop = threading.Event()

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss_now())
      self._stop.wait(self.interval)

  def __enter__(self):
    self.peak = _rss_now()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss_now())


# ----------------------------------------------------------------------------------- JAX

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


def _jax_device() -> dict[str, Any]:
  import jax
  dev = jax.devices()[0]
  out = {'platform': dev.platform, 'device_kind': dev.device_kind,
         'device_count': jax.device_count(), 'jax_version': jax.__version__}
  if dev.platform == 'cpu':
    out['cpu'] = cpu_name()
    out['cpu_count'] = os.cpu_count()
  return out


def _device_peak_memory() -> int | None:
  import jax
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def benchmark_jax(model: str, mode: str, batch: int, dtype: str = 'float32',
                  image_size: int | None = None, steps: int = 10, warmup: int = 2,
                  peak: float | None = None) -> dict[str, Any]:
  """Time ``steps`` compiled train steps (or eval steps) of ``model`` after ``warmup`` untimed
  ones; returns images/s, step and compile time, peak memory, FLOPs and MFU (see the module
  docstring)."""
  import jax
  from inception_jax import data, mesh as mesh_lib, models, optim, steps as steps_lib, train

  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  config = paper_config(model, batch=batch, image_size=image_size, dtype=dtype)
  s = train.setup(config)  # validates batch, size and dtype; the synthetic dataset needs no TF
  size = config.data.image_size
  replicated = mesh_lib.replicated(s.mesh)
  batch_sharding = mesh_lib.batch_sharded(s.mesh)
  local = next(data.batches(config.data, 'train' if mode == 'train' else 'validation',
                            batch_size=mesh_lib.local_batch_size(batch), train=mode == 'train',
                            process_index=jax.process_index(),
                            process_count=jax.process_count(), seed=config.seed))
  images = mesh_lib.global_batch(local, s.mesh)

  # The programs of train.train_and_evaluate: its train step, and the jit of train._make_eval.
  if mode == 'train':
    tx, schedule = optim.make(config.optimizer, s.peak_lr, s.steps_per_epoch)
    create, abstract = train._abstract_state(s, tx)
    state_sharding = jax.tree.map(lambda x: x.sharding, abstract)
    state = jax.jit(create, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
    step_fn = train.jit_train_step(s, tx, schedule, state_sharding)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, images).compile()
    compile_s = time.perf_counter() - t0

    def run(n):
      nonlocal state
      out = None
      for _ in range(n):
        state, out = compiled(state, images)
      jax.block_until_ready((state, out))
  else:
    variables = jax.jit(train._init_fn(s.model, size), out_shardings=replicated)(
        jax.random.PRNGKey(config.seed))
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    step_fn = jax.jit(functools.partial(steps_lib.eval_step, apply_fn=s.model.apply),
                      in_shardings=(replicated, replicated, batch_sharding),
                      out_shardings=replicated)
    t0 = time.perf_counter()
    compiled = step_fn.lower(params, batch_stats, images).compile()
    compile_s = time.perf_counter() - t0

    def run(n):
      jax.block_until_ready([compiled(params, batch_stats, images) for _ in range(n)])

  t0 = time.perf_counter()
  run(max(warmup, 1))  # the first call also allocates; never timed
  warmup_s = time.perf_counter() - t0
  load_start, cpu0 = _load(), _cpu_seconds()
  t0 = time.perf_counter()
  run(steps)
  elapsed = time.perf_counter() - t0
  load_end, cpu_s = _load(), _cpu_seconds() - cpu0

  device = _jax_device()
  device_peak = _device_peak_memory()
  if device_peak is not None:
    memory, memory_kind = device_peak, 'device peak_bytes_in_use'
  else:
    memory, memory_kind = _rss_high_water(), 'process RSS high-water (incl. compilation)'
  fwd = models.flops(config.model.name, size)['flops']
  ips = batch * steps / elapsed
  peak = peak if peak else peak_flops(device['device_kind'], dtype)
  factor = TRAIN_FLOPS_FACTOR if mode == 'train' else 1
  return {
      'framework': 'jax', 'model': config.model.name, 'mode': mode, 'batch': batch,
      'image_size': size, 'dtype': dtype, 'steps': steps, 'warmup': max(warmup, 1),
      'images_per_s': ips, 'step_time_s': elapsed / steps, 'compile_s': compile_s,
      'warmup_s': warmup_s, 'peak_memory_bytes': memory, 'peak_memory_kind': memory_kind,
      'flops_per_image_fwd': fwd, 'model_flops_per_s': factor * fwd * ips,
      'peak_flops': peak, 'mfu': mfu(fwd, ips, mode, peak),
      'process_cpu_s': cpu_s, 'load_avg_1m': [load_start, load_end], 'device': device,
      'recipe': {'optimizer': config.optimizer.name, 'clip_norm': config.optimizer.clip_norm,
                 'label_smoothing': config.loss.label_smoothing,
                 'aux_weight': config.loss.aux_weight, 'ema_decay': config.ema_decay},
  }


# --------------------------------------------------------------------------------- torch

def _torchvision_googlenet(train: bool):
  import torchvision
  return torchvision.models.googlenet(weights=None, aux_logits=train, transform_input=False,
                                      init_weights=False)


def _bninception(train: bool):
  import pretrainedmodels
  return pretrainedmodels.bninception(num_classes=1000, pretrained=None)


def _facenet_inception_resnet_v1(train: bool):
  from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1
  return InceptionResnetV1(pretrained=None, classify=True, num_classes=1000)


def _timm(name: str, **kw):
  def build(train: bool):
    import timm
    return timm.create_model(name, pretrained=False, **{k: v(train) for k, v in kw.items()})
  return build


# Model name -> (what is compared, builder(train) -> torch module). The aux heads are built for
# training where the JAX recipe trains them (v1: both of torchvision's, v3: timm's).
TORCH_MODELS: dict[str, tuple[str, Callable[[bool], Any]]] = {
    'inception_v1': ('torchvision googlenet', _torchvision_googlenet),
    'inception_v2': ('pretrainedmodels bninception', _bninception),
    'inception_v3': ('timm inception_v3', _timm('inception_v3', aux_logits=lambda train: train)),
    'inception_v4': ('timm inception_v4', _timm('inception_v4')),
    'inception_resnet_v1': ('facenet-pytorch InceptionResnetV1', _facenet_inception_resnet_v1),
    'inception_resnet_v2': ('timm inception_resnet_v2', _timm('inception_resnet_v2')),
    'xception': ('timm legacy_xception', _timm('legacy_xception')),
}


def _torch_outputs(out):
  """(logits, aux list) of a torch model's output: a tensor, timm's (logits, aux) or
  torchvision's GoogLeNetOutputs(logits, aux2, aux1)."""
  if isinstance(out, (tuple, list)):
    return out[0], [a for a in out[1:] if a is not None]
  return out, []


def benchmark_torch(model: str, mode: str, batch: int, dtype: str = 'float32',
                    image_size: int | None = None, steps: int = 10, warmup: int = 2,
                    compile: bool = False, device: str | None = None) -> dict[str, Any]:
  """The PyTorch counterpart of :func:`benchmark_jax`: same model, recipe, batch, size, dtype.

  ``device`` defaults to CUDA when available. channels_last always; bfloat16 by autocast;
  ``compile`` wraps the model in ``torch.compile`` (its compilation happens during warm-up and is
  reported as ``first_step_s``). On a GPU, cuDNN autotuning is on and float32 may use TF32, as
  XLA does at JAX's default precision.
  """
  import torch

  name = model_name(model)
  config = paper_config(name, batch=batch, image_size=image_size, dtype=dtype)
  size = config.data.image_size
  device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
  if device == 'cpu':
    torch.set_num_threads(os.cpu_count())
  else:  # as timm's benchmark script; TF32 for float32 as XLA's default precision
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision('high')
  train = mode == 'train'
  what, build = TORCH_MODELS[name]
  torch.manual_seed(0)
  net = build(train).to(device=device, memory_format=torch.channels_last)
  net.train(train)
  runner = torch.compile(net) if compile else net
  gen = torch.Generator(device='cpu').manual_seed(0)
  x = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(
      device=device, memory_format=torch.channels_last)
  labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)
  autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                            enabled=dtype == 'bfloat16')

  if train:
    opt, params = config.optimizer, [p for p in net.parameters() if p.requires_grad]
    lr = opt.lr * batch / opt.lr_batch
    if opt.name == 'rmsprop':
      optimizer = torch.optim.RMSprop(params, lr=lr, alpha=opt.rms_decay, eps=opt.epsilon,
                                      momentum=opt.momentum, weight_decay=opt.weight_decay)
    else:
      optimizer = torch.optim.SGD(params, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                  weight_decay=opt.weight_decay)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.loss.label_smoothing)
    ema = [p.detach().clone() for p in params] if config.ema_decay else None

    def step():
      optimizer.zero_grad(set_to_none=True)
      with autocast:
        logits, aux = _torch_outputs(runner(x))
        loss = criterion(logits.float(), labels)
        for a in aux:
          loss = loss + config.loss.aux_weight * criterion(a.float(), labels)
      loss.backward()
      if opt.clip_norm:
        torch.nn.utils.clip_grad_norm_(params, opt.clip_norm)
      optimizer.step()
      if ema is not None:
        with torch.no_grad():
          torch._foreach_lerp_(ema, params, 1.0 - config.ema_decay)
  else:
    def step():
      with torch.inference_mode(), autocast:
        runner(x)

  def sync():
    if device == 'cuda':
      torch.cuda.synchronize()

  with _RssSampler() as rss:
    if device == 'cuda':
      torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()
    sync()
    first_step_s = time.perf_counter() - t0
    for _ in range(max(warmup, 1) - 1):
      step()
    sync()
    load_start, cpu0 = _load(), _cpu_seconds()
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    elapsed = time.perf_counter() - t0
    load_end, cpu_s = _load(), _cpu_seconds() - cpu0
  if device == 'cuda':
    memory, memory_kind = torch.cuda.max_memory_allocated(), 'torch.cuda.max_memory_allocated'
  else:
    memory, memory_kind = rss.peak, 'process RSS, largest sampled during the torch run'
  variant = ('torch.compile' if compile else 'eager') + ', channels_last' + (
      ', bf16 autocast' if dtype == 'bfloat16' else '')
  return {
      'framework': 'torch', 'model': name, 'reference': what, 'variant': variant,
      'compiled': compile, 'mode': mode, 'batch': batch, 'image_size': size, 'dtype': dtype,
      'steps': steps, 'warmup': max(warmup, 1), 'images_per_s': batch * steps / elapsed,
      'step_time_s': elapsed / steps, 'first_step_s': first_step_s,
      'peak_memory_bytes': int(memory), 'peak_memory_kind': memory_kind,
      'process_cpu_s': cpu_s, 'load_avg_1m': [load_start, load_end],
      'device': {'type': device, 'torch_version': torch.__version__,
                 'threads': torch.get_num_threads(),
                 'name': torch.cuda.get_device_name() if device == 'cuda' else cpu_name()},
  }


# ----------------------------------------------------------------------------------- CLI

def _gib(n: int | None) -> str:
  return 'n/a' if n is None else f'{n / 2**30:.2f} GiB'


def _fmt_mfu(r: dict[str, Any]) -> str:
  achieved = f'{r["model_flops_per_s"] / 1e12:.3g} TFLOP/s model FLOPs'
  if r['mfu'] is None:
    return f'MFU n/a (peak unknown for this device; --peak_tflops) | {achieved}'
  return f'MFU {100 * r["mfu"]:.1f}% of {r["peak_flops"] / 1e12:.1f} TFLOP/s | {achieved}'


def _per_cpu_s(r: dict[str, Any]) -> float:
  """Images per CPU-second of the process (all threads) over the timed loop."""
  return r['batch'] * r['steps'] / r['process_cpu_s'] if r['process_cpu_s'] > 0 else float('nan')


def report_lines(result: dict[str, Any]) -> list[str]:
  j = result['jax']
  dev = j['device']
  where = dev['device_kind'] if dev['platform'] != 'cpu' else \
      f'CPU {dev["cpu"]}, {dev["cpu_count"]} cores'
  lines = [
      f'{j["model"]} {j["mode"]} | batch {j["batch"]} at {j["image_size"]}x{j["image_size"]} '
      f'{j["dtype"]} | {where} | {result["date"]}',
      f'  jax {dev["jax_version"]} ({dev["device_count"]} device(s)): '
      f'{j["images_per_s"]:.2f} images/s ({_per_cpu_s(j):.2f} per CPU-second) | '
      f'step {1e3 * j["step_time_s"]:.1f} ms | '
      f'compile {j["compile_s"]:.1f} s | peak memory {_gib(j["peak_memory_bytes"])} '
      f'({j["peak_memory_kind"]}) | {_fmt_mfu(j)}',
  ]
  for key, t in result.get('torch', {}).items():
    lines.append(
        f'  torch {t["device"]["torch_version"]} {t["reference"]} ({t["variant"]}, '
        f'{t["device"]["threads"]} threads): {t["images_per_s"]:.2f} images/s '
        f'({_per_cpu_s(t):.2f} per CPU-second) | step '
        f'{1e3 * t["step_time_s"]:.1f} ms | first step {t["first_step_s"]:.1f} s | peak memory '
        f'{_gib(t["peak_memory_bytes"])} ({t["peak_memory_kind"]})')
  for key, ratio in result.get('ratio', {}).items():
    lines.append(f'  ratio jax / torch {key}: {ratio:.2f}x')
  load = [*j['load_avg_1m'], *[x for t in result.get('torch', {}).values()
                               for x in t['load_avg_1m']]]
  lines.append(f'  load average (1 min) over the timed loops: {min(load):.2f} to {max(load):.2f}')
  return lines


def run_one(args, model: str, mode: str, batch: int) -> dict[str, Any]:
  """One ``--model`` benchmark (and its PyTorch comparison): the ``--json`` dict."""
  result = {'date': datetime.date.today().isoformat(), 'command': _command(args, model, mode,
                                                                           batch)}
  peak = args.peak_tflops * 1e12 if args.peak_tflops else None
  result['jax'] = benchmark_jax(model, mode, batch, args.dtype, args.image_size, args.steps,
                                args.warmup, peak)
  if args.compare == 'torch':
    import gc
    gc.collect()  # the JAX buffers are gone before PyTorch allocates
    import torch
    on_gpu = torch.cuda.is_available()
    compiles = {'auto': [False, True] if on_gpu else [False], 'no': [False],
                'yes': [True], 'both': [False, True]}[args.torch_compile]
    result['torch'], result['ratio'] = {}, {}
    for c in compiles:
      key = 'compiled' if c else 'eager'
      t = benchmark_torch(model, mode, batch, args.dtype, args.image_size, args.steps,
                          args.warmup, compile=c)
      result['torch'][key] = t
      result['ratio'][key] = result['jax']['images_per_s'] / t['images_per_s']
  return result


def _argv(args, model: str, mode: str, batch: int) -> list[str]:
  """The single-model arguments that reproduce one result of ``args``."""
  argv = ['--model', model, '--mode', mode, '--batch', str(batch)]
  if args.dtype != 'float32':
    argv += ['--dtype', args.dtype]
  if args.image_size:
    argv += ['--image_size', str(args.image_size)]
  argv += ['--steps', str(args.steps), '--warmup', str(args.warmup)]
  if args.compare:
    argv += ['--compare', args.compare]
  if args.torch_compile != 'auto':
    argv += ['--torch_compile', args.torch_compile]
  if args.peak_tflops:
    argv += ['--peak_tflops', f'{args.peak_tflops:g}']
  return argv


def _command(args, model: str, mode: str, batch: int) -> str:
  return 'python -m inception_jax.benchmark ' + shlex.join(_argv(args, model, mode, batch))


def markdown_table(results: list[dict[str, Any]]) -> str:
  """One row per result: what was run, where, and the figures (several PyTorch variants of one
  row are separated by semicolons, in the same order as their ratios)."""
  head = ('| model | mode | batch | size | dtype | JAX images/s | JAX images per CPU-s | '
          'JAX step ms | JAX compile s | JAX peak memory | MFU | PyTorch | PyTorch images/s | '
          'PyTorch images per CPU-s | ratio JAX/PyTorch | device | date | load avg 1 min | '
          'command |')
  rows = [head, '|' + '---|' * (head.count('|') - 1)]
  for r in results:
    j, runs = r['jax'], list(r.get('torch', {}).values())
    dev = j['device']
    device = dev['device_kind'] if dev['platform'] != 'cpu' else \
        f'{dev["cpu"]}, {dev["cpu_count"]} cores'
    join = lambda items: '; '.join(items) or '-'  # noqa: E731
    load = [*j['load_avg_1m'], *[x for t in runs for x in t['load_avg_1m']]]
    util = 'n/a' if j['mfu'] is None else f'{100 * j["mfu"]:.1f}%'
    cells = [
        j['model'], j['mode'], j['batch'], j['image_size'], j['dtype'],
        f'{j["images_per_s"]:.2f}', f'{_per_cpu_s(j):.2f}', f'{1e3 * j["step_time_s"]:.0f}',
        f'{j["compile_s"]:.0f}', _gib(j['peak_memory_bytes']), util,
        join([f'{t["reference"]} ({t["variant"]}, {t["device"]["threads"]} threads)'
              for t in runs]),
        join([f'{t["images_per_s"]:.2f}' for t in runs]),
        join([f'{_per_cpu_s(t):.2f}' for t in runs]),
        join([f'{v:.2f}' for v in r.get('ratio', {}).values()]),
        device, r['date'], f'{min(load):.1f}-{max(load):.1f}', f'`{r["command"]}`']
    rows.append('| ' + ' | '.join(map(str, cells)) + ' |')
  return '\n'.join(rows) + '\n'


def _run_all(args) -> tuple[list[dict[str, Any]], list[str]]:
  """Every model, train then infer, each in a fresh process (so that peak memory and compiled
  state are per model); returns the results and the commands that failed."""
  results, failed = [], []
  for model in CONFIGS:
    for mode in MODES:
      batch = args.batch if mode == 'train' else (args.infer_batch or args.batch)
      argv = _argv(args, model, mode, batch)
      with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'result.json')
        proc = subprocess.run([sys.executable, '-m', 'inception_jax.benchmark', *argv,
                               '--json', out])
        if proc.returncode:  # one failing model does not cost the others' figures
          failed.append(_command(args, model, mode, batch))
          print(f'FAILED (exit {proc.returncode}): {failed[-1]}', file=sys.stderr, flush=True)
          continue
        with open(out) as f:
          results.append(json.load(f))
  return results, failed


def main(argv: list[str] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
  p = argparse.ArgumentParser(prog='python -m inception_jax.benchmark',
                              description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--model', help='a model name or alias (python -m inception_jax.models)')
  p.add_argument('--all', action='store_true', help='every model, train and infer')
  p.add_argument('--mode', default='train', choices=MODES)
  p.add_argument('--batch', type=int, default=8, help='images per step (global)')
  p.add_argument('--infer_batch', type=int, default=0, help='--all: infer batch (default --batch)')
  p.add_argument('--dtype', default='float32', choices=DTYPES, help='compute dtype')
  p.add_argument('--image_size', type=int, default=0, help='default: the model\'s native size')
  p.add_argument('--steps', type=int, default=10, help='timed steps')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  p.add_argument('--compare', choices=['torch'], help='also time the PyTorch counterpart')
  p.add_argument('--torch_compile', default='auto', choices=['auto', 'no', 'yes', 'both'],
                 help='PyTorch eager and/or torch.compile (auto: both on GPU, eager on CPU)')
  p.add_argument('--peak_tflops', type=float, default=0.0,
                 help='device peak for MFU, TFLOP/s (default: the known-devices table)')
  p.add_argument('--json', default='', help='write the results here')
  p.add_argument('--markdown', default='', help='--all: write the markdown table here')
  args = p.parse_args(argv)
  if args.all == bool(args.model):
    p.error('give --model NAME or --all')
  for field in ('batch', 'steps'):
    if getattr(args, field) <= 0:
      p.error(f'--{field} must be positive')
  if args.compare == 'torch':
    # JAX would otherwise reserve most of an accelerator's memory before PyTorch runs.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  if args.model:
    try:
      args.model = model_name(args.model)
    except ValueError as err:
      p.error(str(err))

  failed = []
  if args.all:
    results, failed = _run_all(args)
    table = markdown_table(results)
    print(table)
    if args.markdown:
      with open(args.markdown, 'w') as f:
        f.write(table)
  else:
    try:
      results = run_one(args, args.model, args.mode, args.batch)
    except ValueError as err:  # a size, batch or dtype the recipe cannot run: one line
      if str(err).startswith('config.'):
        p.error(str(err))
      raise
    print('\n'.join(report_lines(results)))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)
  if failed:
    sys.exit(f'{len(failed)} benchmark(s) failed: ' + '; '.join(failed))
  return results


if __name__ == '__main__':
  main()
