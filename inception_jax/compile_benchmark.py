"""Compile time and step time of a model's training gradient, scanned against unrolled blocks.

    python -m inception_jax.compile_benchmark --model inception_resnet_v2 --batch 2 --size 299

(Families without runs of identical blocks, v1 to v3, have the unrolled layout only.)

For each layout: ``jax.jit(jax.value_and_grad(loss)).lower(...).compile()`` timed ``--repeats``
times (caches cleared between), loss the mean of the train-mode logits with mutable
``batch_stats``; then the compiled step run ``--steps`` times. Wall and process CPU seconds
(all threads; less sensitive than wall time to other load on the machine). Prints the machine
(CPU model, vector extensions, the 1-minute load average before each compile) and a table of
medians; refuses to start on a loaded machine as the other benchmarks do (``--allow_load``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

from inception_jax import entry, machine, models


def measure(name: str, *, scan: bool, batch: int, size: int, repeats: int,
            steps: int) -> dict[str, Any]:
  """Median compile and step seconds of ``name``'s training gradient (one layout)."""
  kernels = dict(cpu_convolutions=machine.cpu_convolutions())
  module = models.create(name, **kernels)  # scanned, where the family has runs of blocks
  if not hasattr(module, 'runs'):
    if scan:
      raise ValueError(f'{name} has no scanned layout; use --layouts unrolled')
  elif not scan:
    module = models.create(name, scan=False, **kernels)
  x = jnp.asarray(jax.random.uniform(jax.random.PRNGKey(0), (batch, size, size, 3)) * 2 - 1)
  init = jax.jit(lambda rng: module.init(rng, x[:1], train=False))
  variables = init(jax.random.PRNGKey(0))
  params, batch_stats = variables['params'], variables['batch_stats']
  rng = jax.random.PRNGKey(1)

  def loss(params, batch_stats, x, rng):
    logits, state = module.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                 mutable=['batch_stats'], rngs={'dropout': rng})
    return jnp.mean(logits.astype(jnp.float32)), state['batch_stats']

  args = (params, batch_stats, x, rng)
  compile_s, compile_cpu_s, lower_s, loads = [], [], [], []
  for _ in range(repeats):
    jax.clear_caches()
    loads.append(machine.load_average())
    start, cpu = time.perf_counter(), time.process_time()
    lowered = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(*args)
    mid = time.perf_counter()
    step = lowered.compile()
    compile_s.append(time.perf_counter() - start)
    compile_cpu_s.append(time.process_time() - cpu)
    lower_s.append(mid - start)
  jax.block_until_ready(step(*args))  # warm-up
  step_s, step_cpu_s = [], []
  for _ in range(steps):
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(step(*args))
    step_s.append(time.perf_counter() - start)
    step_cpu_s.append(time.process_time() - cpu)
  return {'model': name, 'scan': scan, 'batch': batch, 'size': size,
          'compile_s': compile_s, 'compile_cpu_s': compile_cpu_s, 'lower_s': lower_s,
          'step_s': step_s, 'step_cpu_s': step_cpu_s, 'load_1min': loads,
          'compile_median_s': statistics.median(compile_s),
          'compile_cpu_median_s': statistics.median(compile_cpu_s),
          'step_median_s': statistics.median(step_s),
          'step_cpu_median_s': statistics.median(step_cpu_s)}


def main(argv: list[str] | None = None) -> None:
  parser = entry.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='inception_resnet_v2', help='model name or alias')
  for flag, default, text in (('--batch', 2, 'images per step'), ('--size', 299, 'input side'),
                              ('--repeats', 3, 'compilations timed per layout'),
                              ('--steps', 5, 'timed steps after each compilation')):
    parser.add_argument(flag, type=int, default=default, help=text)
  parser.add_argument('--layouts', default='scan,unrolled',
                      help="comma-separated subset of 'scan' and 'unrolled'")
  machine.add_idle_flags(parser)
  args = parser.parse_args(argv)
  entry.quiet(args.verbose)
  layouts = args.layouts.split(',')
  if not set(layouts) <= {'scan', 'unrolled'}:
    parser.error(f"--layouts takes 'scan' and/or 'unrolled', got {args.layouts!r}")
  load = machine.require_idle(parser, args)
  jax.config.update('jax_enable_compilation_cache', False)  # time real compiles
  print(json.dumps({'machine': machine.describe(), 'jax': jax.__version__,
                    'backend': jax.default_backend(), 'load_1min_before': load,
                    'loaded': load > args.max_load,
                    'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), flush=True)
  rows = []
  for layout in layouts:
    row = measure(args.model, scan=layout == 'scan', batch=args.batch, size=args.size,
                  repeats=args.repeats, steps=args.steps)
    print(json.dumps(row), flush=True)
    rows.append(row)
  print('\n| layout | compile s, wall (runs) | compile s, CPU (runs) | step s, wall | step s, '
        'CPU | load before runs |')
  print('|---|---|---|---|---|---|')
  for row in rows:
    runs = lambda key: ', '.join(f'{s:.1f}' for s in row[key])
    print(f"| {'scanned' if row['scan'] else 'unrolled'} | {row['compile_median_s']:.1f} "
          f"({runs('compile_s')}) | {row['compile_cpu_median_s']:.1f} ({runs('compile_cpu_s')}) | "
          f"{row['step_median_s']:.2f} | {row['step_cpu_median_s']:.2f} | {runs('load_1min')} |")


if __name__ == '__main__':
  sys.exit(entry.run(main))
