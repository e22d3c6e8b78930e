r"""Throughput of the compiled train step and eval forward pass, optionally beside PyTorch.

    python -m benchmarks.throughput --model inception_v3 --mode train --batch 8 --compare torch
    python -m benchmarks.throughput --model inception_v3 --mode infer --batch 256 \
        --dtype bfloat16 --compare torch
    python -m benchmarks.throughput --all --batch 8 --infer_batch 16 --compare torch \
        --markdown /tmp/table.md

What is timed is the program training runs (``inception_jax.train.build``: the paper recipe of
``experiments/configs`` on synthetic data, same shardings and state donation) or, with
``--mode infer``, evaluation's eval step; ``--compare torch`` times the reference PyTorch model
with the same recipe (:mod:`benchmarks.torch_models`): on a GPU eager and ``torch.compile``, on a
CPU eager on every core, channels_last, bfloat16 by autocast. Every figure is the median of
``--repeats`` runs (at least 3) of ``--steps`` steps.

Hygiene: each result records the CPU model and its vector extensions, and the 1-minute load
average before the run. Above ``--max_load`` (0.5) the tool waits up to ``--idle_wait`` seconds
for the machine to settle, then refuses; ``--allow_load`` runs anyway and marks the row
``loaded``. TensorFlow is never imported; PyTorch only with ``--compare torch``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks import jax_timing, mfu, report
from inception_jax import entry, errors, machine, models

DTYPES = ('float32', 'bfloat16')


def run_one(args, model: str, mode: str, batch: int, load_before: float) -> dict[str, Any]:
  """One ``--model`` benchmark (and its PyTorch comparison): the ``--json`` dict."""
  result = {'date': datetime.date.today().isoformat(),
            'command': _command(args, model, mode, batch), 'load_avg_1m_before': load_before,
            'loaded': load_before > args.max_load, 'max_load': args.max_load}
  peak = args.peak_tflops * 1e12 if args.peak_tflops else None
  size = args.image_size or jax_timing.paper_config(model, batch=batch).data.image_size
  result['cpu_convolutions'] = machine.set_cpu_convolutions(
      args.cpu_convolutions, size, training=mode == 'train',
      model=models.info(model).name)
  result['jax'] = jax_timing.benchmark_jax(model, mode, batch, args.dtype, args.image_size,
                                           args.steps, args.warmup, args.repeats, peak)
  if args.compare == 'torch':
    import gc
    gc.collect()  # the JAX buffers are gone before PyTorch allocates
    import torch
    from benchmarks import torch_models
    on_gpu = torch.cuda.is_available()
    compiles = {'auto': [False, True] if on_gpu else [False], 'no': [False],
                'yes': [True], 'both': [False, True]}[args.torch_compile]
    result['torch'], result['ratio'] = {}, {}
    for c in compiles:
      key = 'compiled' if c else 'eager'
      t = torch_models.benchmark_torch(model, mode, batch, args.dtype, args.image_size,
                                       args.steps, args.warmup, args.repeats, compile=c)
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
  argv += ['--steps', str(args.steps), '--warmup', str(args.warmup),
           '--repeats', str(args.repeats)]
  if args.cpu_convolutions != 'auto':
    argv += ['--cpu_convolutions', args.cpu_convolutions]
  if args.compare:
    argv += ['--compare', args.compare]
  if args.torch_compile != 'auto':
    argv += ['--torch_compile', args.torch_compile]
  if args.peak_tflops:
    argv += ['--peak_tflops', f'{args.peak_tflops:g}']
  return argv


def _command(args, model: str, mode: str, batch: int) -> str:
  return 'python -m benchmarks.throughput ' + shlex.join(_argv(args, model, mode, batch))


def _run_all(args) -> tuple[list[dict[str, Any]], list[str]]:
  """Every model, train then infer, each in a fresh process (peak memory and compiled state
  per model; each waits for the load of the one before to settle)."""
  results, failed = [], []
  hygiene = ['--max_load', str(args.max_load), '--idle_wait', str(args.idle_wait)] + (
      ['--allow_load'] if args.allow_load else [])
  for model in jax_timing.CONFIGS:
    for mode in mfu.MODES:
      batch = args.batch if mode == 'train' else (args.infer_batch or args.batch)
      with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'result.json')
        proc = subprocess.run([sys.executable, '-m', 'benchmarks.throughput',
                               *_argv(args, model, mode, batch), *hygiene, '--json', out])
        if proc.returncode:  # one failing model does not cost the others' figures
          failed.append(_command(args, model, mode, batch))
          print(f'FAILED (exit {proc.returncode}): {failed[-1]}', file=sys.stderr, flush=True)
          continue
        with open(out) as f:
          results.append(json.load(f))
  return results, failed


def parser() -> entry.ArgumentParser:
  p = entry.ArgumentParser(prog='python -m benchmarks.throughput',
                              description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--model', help='a model name or alias (python -m inception_jax.models)')
  p.add_argument('--all', action='store_true', help='every model, train and infer')
  p.add_argument('--mode', default='train', choices=mfu.MODES, help='what is timed')
  p.add_argument('--batch', type=int, default=8, help='images per step (global)')
  p.add_argument('--infer_batch', type=int, default=0, help='--all: infer batch (default --batch)')
  p.add_argument('--dtype', default='float32', choices=DTYPES, help='compute dtype')
  p.add_argument('--image_size', type=int, default=0, help="default: the model's native size")
  p.add_argument('--steps', type=int, default=10, help='timed steps per run')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  p.add_argument('--repeats', type=int, default=3, help='timed runs; the median is reported')
  p.add_argument('--compare', choices=['torch'], help='also time the PyTorch counterpart')
  p.add_argument('--torch_compile', default='auto', choices=['auto', 'no', 'yes', 'both'],
                 help='PyTorch eager and/or torch.compile (auto: both on GPU, eager on CPU)')
  p.add_argument('--peak_tflops', type=float, default=0.0,
                 help='device peak for MFU, TFLOP/s (default: the known-devices table)')
  machine.add_idle_flags(p)
  p.add_argument('--cpu_convolutions', default='auto', choices=machine.CPU_CONVOLUTIONS,
                 help="XLA:CPU's convolutions (inception_jax.machine.set_cpu_convolutions): "
                      "'auto' = XLA's emitter for inference at inputs of 150 pixels and more, "
                      "else YNNPACK")
  p.add_argument('--json', default='', help='write the results here')
  p.add_argument('--markdown', default='', help='--all: write the markdown table here')
  return p


def main(argv: list[str] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
  p = parser()
  args = p.parse_args(argv)
  entry.quiet(args.verbose)
  if args.all == bool(args.model):
    p.error('give --model NAME or --all')
  for field in ('batch', 'steps'):
    if getattr(args, field) <= 0:
      p.error(f'--{field} must be positive')
  if args.repeats < 3:
    p.error(f'--repeats must be at least 3 (the median of three runs or more), got {args.repeats}')
  if args.compare == 'torch':
    # JAX would otherwise reserve most of an accelerator's memory before PyTorch runs.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

  failed = []
  if args.all:
    results, failed = _run_all(args)
    table = report.markdown_table(results)
    print(table)
    if args.markdown:
      with open(args.markdown, 'w') as f:
        f.write(table)
  else:
    try:
      args.model = jax_timing.model_name(args.model)
    except ValueError as err:
      p.error(str(err))
    load = machine.require_idle(p, args)
    try:
      results = run_one(args, args.model, args.mode, args.batch, load)
    except errors.ConfigError as err:  # a size, batch or dtype the recipe cannot run
      p.error(str(err))
    print('\n'.join(report.report_lines(results)))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)
  if failed:
    sys.exit(f'{len(failed)} benchmark(s) failed: ' + '; '.join(failed))
  return results


if __name__ == '__main__':
  sys.exit(entry.run(main))
