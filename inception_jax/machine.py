"""What a benchmark records about the machine it ran on: the CPU and its vector extensions, the
load, the process' CPU time and memory. Figures from a CPU are only comparable on the same CPU
with the same extensions and nothing else running, so every benchmark row carries these. Also
the one CPU setting the entry points make: which library runs XLA:CPU's convolutions."""

from __future__ import annotations

import functools
import os
import platform
import re
import resource
import sys
import threading
import time

# /proc/cpuinfo flags -> the names the benchmark tables print, in that order (XLA:CPU and oneDNN
# pick their kernels by these: AVX2+FMA, AVX-512, VNNI int8 dot products, BF16 and AMX tiles).
VECTOR_EXTENSIONS = (
    ('avx2', 'AVX2'), ('fma', 'FMA'), ('avx512f', 'AVX-512'), ('avx512_vnni', 'AVX512-VNNI'),
    ('avx_vnni', 'AVX-VNNI'), ('avx512_bf16', 'AVX512-BF16'), ('amx_bf16', 'AMX-BF16'),
    ('neon', 'NEON'), ('asimd', 'ASIMD'), ('sve', 'SVE'))

# Above this 1-minute load average the machine is not idle: something else competes for the
# cores, and wall-clock figures fall with it (unevenly between frameworks).
IDLE_LOAD = 0.5


def _cpuinfo() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return f.read()
  except OSError:
    return ''


def cpu_name(cpuinfo: str | None = None) -> str:
  for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
    if line.startswith('model name'):
      return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine()


def vector_extensions(cpuinfo: str | None = None) -> list[str]:
  """The :data:`VECTOR_EXTENSIONS` this CPU reports (first processor's ``flags`` or
  ``Features`` line); empty where /proc/cpuinfo is missing."""
  flags: set[str] = set()
  for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
    key, sep, value = line.partition(':')
    if sep and key.strip() in ('flags', 'Features'):
      flags = set(value.split())
      break
  return [name for flag, name in VECTOR_EXTENSIONS if flag in flags]


def describe() -> dict:
  """The CPU of this machine: model, extensions, cores usable by this process."""
  usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return {'cpu': cpu_name(), 'vector_extensions': vector_extensions(),
          'cpu_count': os.cpu_count(), 'usable_cores': usable}


def cpu_label(d: dict) -> str:
  """``AMD EPYC (AVX2, AVX-512, ...), 2 cores``: one table cell."""
  ext = ', '.join(d.get('vector_extensions') or ()) or 'no AVX2'
  return f'{d["cpu"]} ({ext}), {d["cpu_count"]} cores'


def load_average() -> float:
  """The 1-minute load average (NaN where the OS has none)."""
  try:
    return os.getloadavg()[0]
  except OSError:
    return float('nan')


def wait_for_idle(threshold: float = IDLE_LOAD, timeout: float = 0.0,
                  poll: float = 5.0) -> float:
  """Waits up to ``timeout`` seconds for the 1-minute load average to fall to ``threshold``
  (it decays with a one-minute time constant after a previous run); returns the last reading."""
  deadline = time.monotonic() + timeout
  load = load_average()
  while load > threshold and time.monotonic() < deadline:
    time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    load = load_average()
  return load


def add_idle_flags(parser) -> None:
  """The benchmarks' load flags: ``--max_load``, ``--idle_wait``, ``--allow_load``."""
  parser.add_argument('--max_load', type=float, default=IDLE_LOAD,
                      help='refuse to run above this 1-minute load average (an idle machine)')
  parser.add_argument('--idle_wait', type=float, default=120.0,
                      help='seconds to wait for the load to fall below --max_load before refusing')
  parser.add_argument('--allow_load', action='store_true',
                      help='run on a loaded machine anyway; the row is marked "loaded"')


def require_idle(parser, args) -> float:
  """The 1-minute load average once it is at most ``args.max_load`` (waiting up to
  ``args.idle_wait`` seconds), or at once with ``args.allow_load``; otherwise ``parser.error``."""
  if args.allow_load:
    return load_average()
  load = wait_for_idle(args.max_load, args.idle_wait)
  if load > args.max_load:
    parser.error(f'the 1-minute load average is {load:.2f}, above --max_load {args.max_load} '
                 f'after waiting {args.idle_wait:g} s: the machine is not idle and the figures '
                 'would not hold. Stop what else runs, or pass --allow_load to mark the row '
                 '"loaded"')
  return load


def cpu_seconds() -> float:
  """User + system CPU time of this process (all its threads) so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def rss_high_water() -> int:
  """Peak resident set of this process so far, bytes (Linux reports KiB, macOS bytes)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024


def rss_now() -> int:
  """Resident set of this process now, bytes (the high-water mark where /proc is missing)."""
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  except OSError:
    return rss_high_water()


class RssSampler:
  """Largest resident set seen while the block runs, sampled every ``interval`` seconds."""

  def __init__(self, interval: float = 0.02):
    self.interval, self.peak = interval, 0
    self._stop = threading.Event()

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_now())
      self._stop.wait(self.interval)

  def __enter__(self):
    self.peak = rss_now()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_now())


# XLA:CPU hands every convolution to YNNPACK by default; its own emitter (Eigen) runs inference
# on large maps faster, and on AVX-512 the training of the 299-pixel models too, while depthwise
# convolutions and small inputs train faster with YNNPACK. 'auto' chooses by those rules; the
# measurements behind the thresholds: BENCHMARKS.md, "XLA:CPU's convolutions for training and
# inference".
CPU_CONVOLUTIONS = ('auto', 'xla', 'ynnpack')
LARGE_INPUT = 150  # 'auto': XLA's emitter for inference from this input size up
LARGE_TRAINING_INPUT = 256  # and for training from this one (the 299-pixel models), on AVX-512
# Models with depthwise convolutions (Xception's separable ones), which train faster with YNNPACK.
DEPTHWISE_MODELS = frozenset({'xception'})
_YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'


def set_cpu_convolutions(choice: str, image_size: int, *, training: bool,
                         model: str = '') -> str:
  """Choose XLA:CPU's convolutions for a process that trains (``training``) or only runs
  inference on inputs of ``image_size``: 'ynnpack' (XLA's default), 'xla' (its own emitter) or
  'auto': xla for inference from LARGE_INPUT pixels up, and for training from
  LARGE_TRAINING_INPUT up on a CPU with AVX-512 unless ``model`` (a registered name) is one of
  DEPTHWISE_MODELS; ynnpack otherwise. Sets ``XLA_FLAGS``, which JAX reads when it starts its first backend: call
  before anything computes. No effect on GPUs and TPUs; the user's own
  ``--xla_cpu_experimental_ynn_fusion_type`` wins. Returns what the CPU uses: 'xla' or
  'ynnpack'."""
  if choice not in CPU_CONVOLUTIONS:
    raise ValueError(f'cpu convolutions must be one of {CPU_CONVOLUTIONS}, got {choice!r}')
  if choice == 'auto':
    if training:
      xla = (image_size >= LARGE_TRAINING_INPUT and model not in DEPTHWISE_MODELS
             and 'AVX-512' in vector_extensions())
    else:
      xla = image_size >= LARGE_INPUT
    choice = 'xla' if xla else 'ynnpack'
  current = os.environ.get('XLA_FLAGS', '')
  if _YNN_FLAG in current:
    return cpu_convolutions(current)
  if not _jaxlib_has_ynn():
    return 'xla'  # no YNNPACK in this jaxlib: XLA's emitter is all there is
  if choice == 'xla':
    os.environ['XLA_FLAGS'] = f'{current} {_YNN_FLAG}='.strip()
  return choice


def cpu_convolutions(flags: str | None = None) -> str:
  """The library XLA:CPU runs convolutions with under ``flags`` (default: ``XLA_FLAGS``), 'ynnpack'
  or 'xla': what :func:`set_cpu_convolutions` chose, and what the entry points pass to the models
  (their ``cpu_convolutions`` option), whose gradients take the forms it runs fastest."""
  return 'ynnpack' if ynnpack_convolutions(flags) else 'xla'


def ynnpack_convolutions(flags: str | None = None) -> bool:
  """Whether XLA:CPU hands convolutions to YNNPACK under ``flags`` (default: ``XLA_FLAGS``):
  yes unless ``--xla_cpu_experimental_ynn_fusion_type`` is given without
  ``individual_convolution`` (a list of names replaces the default set, which has it; a list of
  ``+name``/``-name`` edits it)."""
  if flags is None:
    flags = os.environ.get('XLA_FLAGS', '')
  if not _jaxlib_has_ynn():
    return False
  values = re.findall(re.escape(_YNN_FLAG) + r'=(\S*)', flags)
  if not values:
    return True
  names = [n.strip().lower() for n in values[-1].split(',') if n.strip()]
  edits = [(n[0], n[1:].removeprefix('library_fusion_type_')) for n in names if n[0] in '+-']
  if names and len(edits) == len(names):
    return ('-', 'individual_convolution') not in edits
  return 'individual_convolution' in [n.removeprefix('library_fusion_type_') for n in names]


@functools.lru_cache(maxsize=None)
def _jaxlib_has_ynn() -> bool:
  """jaxlib 0.10 and later have YNNPACK and its flag (an unknown flag in XLA_FLAGS aborts)."""
  from importlib import metadata
  try:
    major, minor = (int(x) for x in metadata.version('jaxlib').split('.')[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return False
  return (major, minor) >= (0, 10)
