r"""What a sweep costs: the train step's compiles over a sweep of numbers, and K seeds vmapped
against K runs one after another, beside PyTorch.

    python -m benchmarks.sweep step --vmap 4            # one step: JAX, K vmapped, PyTorch
    python -m benchmarks.sweep runs --vmap 4 --steps 45 # K runs of v1:quick, each with compile
    python -m benchmarks.sweep compiles                 # 4 rates x 3 seeds of v1:quick

``step`` times the train step of GoogLeNet's recipe (SGD with momentum, auxiliary heads, EMA)
at 65x65, batch 32, on synthetic data: ours alone, ours with K members under ``jax.vmap``
(images/s per member), and torchvision's GoogLeNet in eager PyTorch (channels_last, every core),
median of ``--repeats``. ``runs`` trains K runs of ``v1.py:quick`` (``--steps`` each) one after
another and then as one vmapped program (:mod:`inception_jax.sweep.members`), both including
compilation. ``compiles`` runs a 4-rate x 3-seed sweep of ``v1.py:quick`` for ``--steps``
steps a run and counts the train step's compilations in its log. Each result records the CPU and
its vector extensions and the load average before it; above ``--max_load`` the tool waits, then
refuses unless ``--allow_load``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time

from benchmarks import jax_timing
from inception_jax import machine


def _step(args) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from benchmarks import torch_models
  from inception_jax import data, mesh as mesh_lib, optim, train
  from inception_jax.sweep import members

  one = jax_timing.benchmark_jax('inception_v1', 'train', args.batch, image_size=args.size,
                                 steps=args.iters, repeats=args.repeats)
  config = jax_timing.paper_config('inception_v1', batch=args.batch, image_size=args.size)
  program = train.build(config, reuse=False)
  local = next(data.batches(config.data, 'train', batch_size=args.batch, train=True, seed=0))
  k = args.vmap
  batch = jax.device_put({key: np.stack([v] * k) for key, v in local.items()},
                         jax.sharding.NamedSharding(program.mesh,
                                                    jax.sharding.PartitionSpec(None, 'data')))
  state = jax.device_put(
      jax.tree.map(lambda *xs: jnp.stack(xs),
                   *[jax.device_get(program.init(jax.random.PRNGKey(i))) for i in range(k)]),
      mesh_lib.replicated(program.mesh))
  step = members._mapped_step(program.train_step, optim.switches(config.optimizer),
                              program.model.apply, program.mesh)
  t0 = time.perf_counter()
  compiled = step.lower(state, program.hparams, batch).compile()
  compile_s = time.perf_counter() - t0

  def run(n):
    nonlocal state
    out = None
    for _ in range(n):
      state, out = compiled(state, program.hparams, batch)
    jax.block_until_ready((state, out))

  run(1)
  seconds = jax_timing.timed_runs(run, args.iters, args.repeats)
  vmapped = statistics.median(seconds) / args.iters
  torch_result = torch_models.benchmark_torch('inception_v1', 'train', args.batch,
                                              image_size=args.size, steps=args.iters,
                                              repeats=args.repeats, device=None)
  t_one = args.batch / one['images_per_s']
  t_torch = args.batch / torch_result['images_per_s']
  return {
      'what': 'step', 'batch': args.batch, 'image_size': args.size, 'members': k,
      'jax_step_s': t_one, 'jax_compile_s': one['compile_s'],
      'vmapped_step_s': vmapped, 'vmapped_compile_s': compile_s,
      'vmapped_step_per_member_s': vmapped / k, 'torch_step_s': t_torch,
      'jax_vs_torch': t_torch / t_one, 'vmapped_per_member_vs_torch': t_torch / (vmapped / k),
      'vmapped_per_member_vs_jax': t_one / (vmapped / k),
  }


def _quick_configs(seeds, steps: int):
  from experiments.configs import v1
  out = []
  for seed in seeds:
    c = v1.get_config('quick')
    c.total_steps = steps
    c.eval_every_epochs = 0.0
    c.tensorboard = False
    c.seed = seed
    out.append(c)
  return out


def _runs(args) -> dict:
  from inception_jax import train
  from inception_jax.sweep import members
  configs = _quick_configs(range(args.vmap), args.steps)
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    for i, c in enumerate(configs):
      train._programs.cache_clear()  # each run compiles its own, as separate launches would
      train.train_and_evaluate(c, f'{tmp}/alone{i}')
    sequential = time.perf_counter() - t0
    train._programs.cache_clear()
    members._mapped_step.cache_clear()
    t0 = time.perf_counter()
    members.train_members(configs, [f'{tmp}/member{i}' for i in range(args.vmap)])
    together = time.perf_counter() - t0
  images = args.vmap * args.steps * configs[0].batch_size
  return {'what': 'runs', 'members': args.vmap, 'steps': args.steps,
          'sequential_s': sequential, 'vmapped_s': together,
          'sequential_images_per_s': images / sequential, 'vmapped_images_per_s': images / together,
          'speedup': sequential / together}


def _compiles(args) -> dict:
  from experiments.configs import v1
  from inception_jax.sweep import runner

  records = []

  class Count(logging.Handler):
    def emit(self, record):
      if 'train step compiled' in record.getMessage():
        records.append(record.getMessage())

  logger = logging.getLogger('inception_jax')
  logger.addHandler(Count())
  logger.setLevel(logging.INFO)
  base = _quick_configs([0], args.steps)[0]
  variants = [runner.Variant(runner.variant_name(p), p)
              for p in runner.product({'optimizer.lr': [0.0125, 0.025, 0.05, 0.1]})]
  with tempfile.TemporaryDirectory() as tmp:
    sweep = runner.define(tmp, config_path=v1.__file__, arg='quick', base=base,
                          default=v1.get_config('quick'), variants=variants, baseline=None,
                          seeds=[0, 1, 2])
    t0 = time.perf_counter()
    outcome = runner.execute(sweep)
    wall = time.perf_counter() - t0
  return {'what': 'compiles', 'runs': len(sweep.runs), 'done': len(outcome.done),
          'train_step_compiles': len(records), 'log_lines': records, 'wall_s': wall}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('what', choices=['step', 'runs', 'compiles'])
  parser.add_argument('--vmap', type=int, default=4, help='members (K)')
  parser.add_argument('--batch', type=int, default=32, help='per member (step)')
  parser.add_argument('--size', type=int, default=65, help='image size (step)')
  parser.add_argument('--iters', type=int, default=10, help='steps per timed repeat (step)')
  parser.add_argument('--repeats', type=int, default=3, help='timed repeats; the median counts')
  parser.add_argument('--steps', type=int, default=45, help='steps per run (runs, compiles)')
  parser.add_argument('--json', default=None, help='also write the result to this file')
  machine.add_idle_flags(parser)
  args = parser.parse_args(argv)
  load = machine.require_idle(parser, args)
  result = {'step': _step, 'runs': _runs, 'compiles': _compiles}[args.what](args)
  result.update(load_avg_1m_before=load, cpu=machine.cpu_label(machine.describe()),
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
  text = json.dumps(result, indent=2)
  print(text)
  if args.json:
    with open(args.json, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  main()
