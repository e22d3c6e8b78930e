r"""The GPU benchmark in one command, in priority order, within a time budget.

    python -m benchmarks.gpu                      # results under $OUT (or ./gpu_results)
    python -m benchmarks.gpu --budget 480 --out /tmp/gpu
    python -m benchmarks.gpu --dry_run --out /tmp/gpu   # on a CPU: tiny sizes, same code path

Needs JAX with CUDA and PyTorch with timm; no TensorFlow (never imported), no network. Order:
Inception-v3 bfloat16 training (JAX, timm eager, timm ``torch.compile``), then its inference,
then the sweep and FID measurements of issues 34 and 31 (``EXTRAS``), then the other models the
same way. Each job runs in its own process (a crash or a hang costs
that row only) and appends its row to ``results.jsonl`` the moment it has it; ``results.md`` is
rewritten after every row. A job whose estimated time no longer fits in ``--budget`` seconds is
skipped and recorded as such; the estimates are corrected by the ratio of measured to estimated
time of the jobs already run. MFU: model FLOPs (``inception_jax.models.flops``, 3x the forward
for a train step) over the device's dense bfloat16 peak (:mod:`benchmarks.mfu`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

from inception_jax import entry

# The models in priority order: v3 first, then those timm has, then the others.
ORDER = ('inception_v3', 'inception_v4', 'inception_resnet_v2', 'xception', 'inception_v1',
         'inception_v2', 'inception_resnet_v1')
MODES = ('train', 'infer')
VARIANTS = ('jax', 'torch_eager', 'torch_compile')

# Seconds a job takes on an H100-class GPU, process start and compilation included (the first
# guesses; the running correction adjusts them to the machine).
_COMPILE_S = {'inception_v1': 30, 'inception_v2': 30, 'inception_v3': 60, 'inception_v4': 90,
              'inception_resnet_v1': 90, 'inception_resnet_v2': 150, 'xception': 60}


# The other questions the GPU answers, each a command of its own tool run as a job after
# Inception-v3's rows: (arguments after ``python -m``, estimated seconds, dry-run arguments).
EXTRAS = {
    # Issue 34: one train step of GoogLeNet's recipe at 65 px, batch 32, alone, K=4 members
    # under vmap, and torchvision's GoogLeNet eager (benchmarks.sweep).
    'sweep_vmap': (['benchmarks.sweep', 'step', '--vmap', '4', '--allow_load'], 120,
                   ['--vmap', '2', '--batch', '2', '--iters', '1', '--repeats', '1']),
    # Issue 31: fid.Evaluator on generated 64x64 images, extrapolated to 10,000 per evaluation.
    'fid_evaluator': (['inception_jax.fid.benchmark', '--evaluator', '2000', '--batch', '200',
                       '--size', '64', '--allow_load'], 150,
                      ['--evaluator', '4', '--batch', '2', '--evaluator_target', '8']),
    # Issue 31: statistics of 500 mixed-size and 500 one-size JPEGs, this CLI against
    # pytorch-fid and clean-fid (their wheels carried to the machine), each tool a process.
    'fid_folders': (['inception_jax.fid.benchmark', '--folders', '--images', '500',
                     '--allow_load'], 420, ['--images', '4', '--batch_folder', '2']),
}


def estimate(model: str, mode: str, variant: str) -> float:
  train = mode == 'train'
  if variant == 'jax':
    return 15 + _COMPILE_S[model] * (1.0 if train else 0.5)
  if variant == 'torch_eager':
    return 25.0
  return 40 + _COMPILE_S[model] * (1.5 if train else 1.0)  # inductor compiles fwd (+ bwd)


def jobs(models: list[str], modes: list[str], variants: list[str],
         extras: list[str] = ()) -> list[tuple[str, str, str]]:
  """The plan: each model's modes and variants, ``extras`` (as ``(name, 'extra', '-')``) after
  the first model's rows."""
  plan = [(m, mode, v) for m in models for mode in modes for v in variants]
  first = len(modes) * len(variants) if models else 0
  return plan[:first] + [(name, 'extra', '-') for name in extras] + plan[first:]


def extra_command(name: str, dry_run: bool) -> list[str]:
  """The command of one of ``EXTRAS``; its output's last lines are its row."""
  argv, _, dry = EXTRAS[name]
  return [sys.executable, '-m', *argv, *(dry if dry_run else [])]


# ----------------------------------------------------------------------------- one job

def run_job(args) -> dict[str, Any]:
  """One (model, mode, variant) in this process: the row (images/s median of the runs, step
  time, compile or first-step time, peak memory, MFU)."""
  from benchmarks import jax_timing, mfu as mfu_lib
  from inception_jax import models
  common = dict(model=args.model, mode=args.mode, batch=args.batch_of[args.mode],
                dtype=args.dtype, image_size=args.image_size or None, steps=args.steps,
                warmup=args.warmup, repeats=args.repeats)
  if args.variant == 'jax':
    r = jax_timing.benchmark_jax(**common)
    device = r['device']['device_kind']
  else:
    from benchmarks import torch_models
    r = torch_models.benchmark_torch(**common, compile=args.variant == 'torch_compile')
    device = r['device']['name']
    fwd = models.flops(r['model'], r['image_size'])['flops']
    peak = mfu_lib.peak_flops(device, args.dtype)
    r.update(flops_per_image_fwd=fwd, peak_flops=peak,
             model_flops_per_s=mfu_lib.model_flops_per_s(fwd, r['images_per_s'], args.mode),
             mfu=mfu_lib.mfu(fwd, r['images_per_s'], args.mode, peak))
  r.update(variant_key=args.variant, device_name=device,
           tensorflow_imported='tensorflow' in sys.modules)
  return r


# ----------------------------------------------------------------------------- the plan

def _row_md(r: dict[str, Any]) -> str:
  if r['mode'] == 'extra':
    reason = f': {r["reason"]}' if r.get('reason') else ' (output below)'
    return f'| {r["model"]} | extra | - | - | - | - | - | - | {r["status"]}{reason} |'
  if r.get('status') != 'ok':
    return (f'| {r["model"]} | {r["mode"]} | {r["variant_key"]} | - | - | - | - | - | '
            f'{r["status"]}: {r.get("reason", "")} |')
  util = 'n/a' if r.get('mfu') is None else f'{100 * r["mfu"]:.1f}%'
  first = r.get('compile_s', r.get('first_step_s', 0.0))
  runs = ', '.join(f'{x:.0f}' for x in r['runs_images_per_s'])
  return (f'| {r["model"]} | {r["mode"]} | {r["variant_key"]} | {r["batch"]} | '
          f'{r["images_per_s"]:.1f} ({runs}) | {1e3 * r["step_time_s"]:.1f} | {util} | '
          f'{first:.0f} | ok, {r["device_name"]}, {r["dtype"]}, {r["image_size"]}px |')


def write_markdown(path: str, rows: list[dict[str, Any]]) -> None:
  lines = ['| model | mode | variant | batch | images/s median (runs) | step ms | MFU | '
           'compile or first step s | status |', '|---|---|---|---|---|---|---|---|---|']
  lines += [_row_md(r) for r in rows]
  ratios = []
  for (model, mode) in dict.fromkeys((r['model'], r['mode']) for r in rows
                                     if r['mode'] != 'extra'):
    got = {r['variant_key']: r['images_per_s'] for r in rows
           if r['model'] == model and r['mode'] == mode and r.get('status') == 'ok'}
    for ref in ('torch_eager', 'torch_compile'):
      if 'jax' in got and ref in got:
        ratios.append(f'- {model} {mode}: JAX / {ref} = {got["jax"] / got[ref]:.2f}x')
  outputs = [f'### {r["model"]}\n\n```\n{r["output"]}\n```' for r in rows
             if r['mode'] == 'extra' and r.get('status') == 'ok']
  with open(path, 'w') as f:
    f.write('\n'.join(lines + [''] + ratios + [''] + outputs) + '\n')


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
  p = entry.ArgumentParser(prog='python -m benchmarks.gpu', description=__doc__.split('\n\n')[0])
  p.add_argument('--out', default=os.environ.get('OUT') or 'gpu_results',
                 help='folder for the results (default $OUT, else gpu_results)')
  p.add_argument('--budget', type=float, default=480.0, help='seconds for everything')
  p.add_argument('--models', default='', help='default: all, in priority order')
  p.add_argument('--modes', default=','.join(MODES), help='comma-separated, of ' + ', '.join(MODES))
  p.add_argument('--variants', default=','.join(VARIANTS),
                 help='comma-separated, of ' + ', '.join(VARIANTS))
  p.add_argument('--dtype', default='bfloat16', help='compute dtype')
  p.add_argument('--train_batch', type=int, default=128, help='images per train step')
  p.add_argument('--infer_batch', type=int, default=256, help='images per inference call')
  p.add_argument('--image_size', type=int, default=0, help="default: each model's native size")
  p.add_argument('--steps', type=int, default=20, help='timed steps per run')
  p.add_argument('--warmup', type=int, default=3, help='untimed steps after compilation')
  p.add_argument('--repeats', type=int, default=3, help='timed runs; the median is reported')
  p.add_argument('--extras', default=','.join(EXTRAS),
                 help="comma-separated, of " + ', '.join(EXTRAS) + " ('' for none)")
  p.add_argument('--dry_run', action='store_true',
                 help='CPU check of this script: inception_v1 at 65 px, batch 2, 2 steps, eager')
  p.add_argument('--job', default='', help=argparse.SUPPRESS)  # model,mode,variant (a child)
  args = p.parse_args(argv)
  entry.quiet(args.verbose)
  if args.dry_run:
    args.models = args.models or 'inception_v1'
    args.variants = 'jax,torch_eager'
    args.dtype, args.image_size, args.train_batch, args.infer_batch = 'float32', 65, 2, 2
    args.steps, args.warmup = 2, 1
  args.models = args.models or ','.join(ORDER)
  args.batch_of = {'train': args.train_batch, 'infer': args.infer_batch}

  if args.job:  # a child: one job, its row as the last line of stdout
    args.model, args.mode, args.variant = args.job.split(',')
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    print(json.dumps(run_job(args)), flush=True)
    return []

  os.makedirs(args.out, exist_ok=True)
  jsonl, md = os.path.join(args.out, 'results.jsonl'), os.path.join(args.out, 'results.md')
  start, correction, rows = time.monotonic(), 1.0, []
  extras = [e for e in args.extras.split(',') if e]
  unknown = sorted(set(extras) - set(EXTRAS))
  if unknown:
    p.error(f'--extras: unknown {", ".join(unknown)}; choose from {", ".join(EXTRAS)}')
  plan = jobs(args.models.split(','), args.modes.split(','), args.variants.split(','), extras)
  for model, mode, variant in plan:
    base = {'model': model, 'mode': mode, 'variant_key': variant,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    left = args.budget - (time.monotonic() - start)
    need = (EXTRAS[model][1] if mode == 'extra' else estimate(model, mode, variant)) * correction
    need *= 0.05 if args.dry_run else 1.0
    if need > left:
      row = {**base, 'status': 'skipped',
             'reason': f'needs about {need:.0f} s, {max(left, 0):.0f} s of the budget left'}
    else:
      if mode == 'extra':
        cmd = extra_command(model, args.dry_run)
      else:
        cmd = [sys.executable, '-m', 'benchmarks.gpu', '--job', f'{model},{mode},{variant}',
               *(argv if argv is not None else sys.argv[1:])]
      t0 = time.monotonic()
      try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
        took = time.monotonic() - t0
        if proc.returncode == 0 and mode == 'extra':
          row = {**base, 'status': 'ok', 'job_s': took,
                 'output': '\n'.join(proc.stdout.strip().splitlines()[-40:])}
        elif proc.returncode == 0:
          row = {**base, **json.loads(proc.stdout.strip().splitlines()[-1]), 'status': 'ok',
                 'job_s': took}
        else:
          row = {**base, 'status': 'failed', 'job_s': took,
                 'reason': ' '.join(proc.stderr.strip().splitlines()[-1:])[:300]}
      except subprocess.TimeoutExpired:
        took = time.monotonic() - t0
        row = {**base, 'status': 'timed out', 'job_s': took,
               'reason': f'killed at the end of the budget after {took:.0f} s'}
      if not args.dry_run:
        correction = min(3.0, max(0.5, 0.5 * correction + 0.5 * took / max(need, 1.0)))
    rows.append(row)
    with open(jsonl, 'a') as f:
      f.write(json.dumps(row) + '\n')
    write_markdown(md, rows)
    print(_row_md(row), flush=True)
  return rows


if __name__ == '__main__':
  sys.exit(entry.run(main))
