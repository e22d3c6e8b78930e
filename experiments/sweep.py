r"""Ablations: train variants of a config with the same seeds, then tabulate them.

    python -m experiments.sweep --config=v3.py:quick --sweep=recipe --seeds=5 \
        --workdir=sweeps/v3_recipe
    python -m experiments.sweep --config=v1.py:quick --grid=optimizer.lr=0.0125,0.025 \
        --grid=loss.label_smoothing=0.0,0.1 --seeds=3 --workdir=sweeps/v1_lr_ls
    python -m experiments.sweep report sweeps/v3_recipe

``--sweep=NAME`` runs ``sweep_NAME(add)`` of the config file; ``--grid=FIELD=V1,V2``
(repeatable: the product) declares one on the command line; ``--config.FIELD=VALUE`` applies to
every point. The first point (or the one marked ``baseline``) is the baseline. Every point runs
with seeds 0..N-1, seed-major. Relaunching the same command skips finished runs and resumes
interrupted ones; ``--dry_run`` lists the runs and trains nothing. At the end (and with
``report DIR``) ``DIR/summary.csv``, ``DIR/summary.md`` and plots are written. The library is
:mod:`inception_jax.sweep`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from inception_jax import errors, machine

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file (FILE[:ARG]); its '
                                          '--config.FIELD=VALUE overrides apply to every point',
                                          lock_config=True)
_SWEEP = flags.DEFINE_string('sweep', None, 'run sweep_NAME(add) of the config file')
_GRID = flags.DEFINE_multi_string('grid', [], 'FIELD=V1,V2,...: one axis of the sweep; several '
                                  'give their product (with --sweep too)')
_SEEDS = flags.DEFINE_integer('seeds', 1, 'train every point with seeds 0..N-1 (paired)')
_WORKDIR = flags.DEFINE_string('workdir', None, "the sweep's directory (runs/, sweep.json, "
                               'summary.csv, summary.md)')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'print every run (id, variant, seed, state) and '
                             'the total steps, and train nothing')
_EXTEND = flags.DEFINE_bool('extend', False, 'accept a changed definition in an existing sweep '
                            'directory: finished runs are kept, new ones added')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'runs at a time, each in its own process (with '
                                 '--devices_per_run GPUs each); 1: one after another in this '
                                 'process, over all devices')
_DEVICES_PER_RUN = flags.DEFINE_integer('devices_per_run', 0, 'with --parallel: GPUs per run '
                                        '(CUDA_VISIBLE_DEVICES); 0 leaves the devices as they are')
_VMAP_SEEDS = flags.DEFINE_integer('vmap_seeds', 1, 'train K seeds of a point at a time as one '
                                   'program (a leading model axis); pays on accelerators that a '
                                   'small model leaves idle, not on CPUs (BENCHMARKS.md)')
_SHARED_BATCHES = flags.DEFINE_bool('shared_batches', False, 'with --vmap_seeds: every member '
                                    "sees the first member's batches (else each its own order)")
_LAUNCHER = flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'],
                              "'local': on this machine; 'slurm': a SLURM job array through "
                              'submitit, one task per run')
_SLURM_PARTITION = flags.DEFINE_string('slurm_partition', None, 'with --launcher=slurm')
_SLURM_NODES = flags.DEFINE_integer('slurm_nodes', 1, 'with --launcher=slurm: nodes per run (more '
                                    'than 1: each run is a multi-host training, one process per '
                                    'node joining jax.distributed)')
_SLURM_GPUS = flags.DEFINE_integer('slurm_gpus', 1, 'with --launcher=slurm: GPUs per node')
_SLURM_CPUS = flags.DEFINE_integer('slurm_cpus', 8, 'with --launcher=slurm: CPUs per process')
_SLURM_SETUP = flags.DEFINE_multi_string('slurm_setup', [], 'with --launcher=slurm: a shell line '
                                         'run before each task (a module load, a venv)')
_NOWAIT = flags.DEFINE_bool('nowait', False, 'with --launcher=slurm: exit after submitting; '
                            'report later with: python -m experiments.sweep report DIR')
_SLURM_TIME = flags.DEFINE_integer('slurm_time', 240, 'with --launcher=slurm: minutes per task '
                                   '(a task that runs out is requeued and resumes)')
_SLURM_PARALLELISM = flags.DEFINE_integer('slurm_parallelism', 8, 'with --launcher=slurm: '
                                          'tasks of the array running at once')
_SLURM_LOCAL = flags.DEFINE_bool('slurm_local', False, "with --launcher=slurm: submitit's local "
                                 'executor instead of SLURM (real processes on this machine)')


def main(argv):
  cli.setup_logging()
  try:
    if len(argv) > 1:
      if argv[1] != 'report' or len(argv) != 3:
        raise errors.UserError(f'unexpected arguments {argv[1:]}; to tabulate a sweep: '
                               'python -m experiments.sweep report DIR')
      _report(argv[2])
      return
    _sweep()
  except errors.UserError as err:
    sys.exit(f'FATAL: {err}')


def _config_spec(argv: list[str]) -> tuple[str, str | None]:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      spec = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
    else:
      continue
    path, sep, config_arg = spec.partition(':')
    return path, (config_arg if sep else None)
  raise errors.UserError('--config=FILE[:ARG] is required (e.g. --config=v3.py:quick)')


def _sweep() -> None:
  from inception_jax.sweep import runner
  if not _WORKDIR.value:
    raise errors.UserError('--workdir=DIR is required: the sweep directory')
  if _CONFIG.value is None:
    raise errors.UserError('--config=FILE[:ARG] is required (e.g. --config=v3.py:quick)')
  if _SEEDS.value < 1:
    raise errors.UserError(f'--seeds={_SEEDS.value}: give at least 1')
  path, arg = _config_spec(cli.resolve_config_path(sys.argv))
  module = runner.load_config_module(path)
  default = module.get_config(arg) if arg is not None else module.get_config()
  base = _CONFIG.value
  points = runner.Points()
  if _SWEEP.value:
    points = runner.declared(module, _SWEEP.value, arg)
  grid = runner.parse_grid(_GRID.value, base) if _GRID.value else []
  if grid and points.variants:  # the product of both
    combined = runner.Points()
    for v in points.variants:
      for g in grid:
        combined({**v.overrides, **g}, name=f'{v.name}|{runner.variant_name(g)}',
                 baseline=v.name == points.baseline and g is grid[0])
    points = combined
  elif grid:
    for g in grid:
      points(g)
  if not points.variants:
    raise errors.UserError('give --sweep=NAME (a sweep_NAME function of the config file) or '
                           '--grid=FIELD=V1,V2')
  sweep = runner.define(_WORKDIR.value, config_path=path, arg=arg, base=base, default=default,
                        variants=points.variants, baseline=points.baseline,
                        seeds=list(range(_SEEDS.value)), extend=_EXTEND.value)
  if _DRY_RUN.value:
    _print_runs(sweep)
    return
  if _LAUNCHER.value == 'local' and _PARALLEL.value <= 1:
    runner.validate(sweep)  # every point's config, before anything compiles
  if _LAUNCHER.value == 'slurm':
    _slurm(sweep)
  else:
    if _PARALLEL.value <= 1:
      from inception_jax import models
      machine.set_cpu_convolutions(cli.CPU_CONVOLUTIONS.value, base.data.image_size,
                                    training=True, model=models.info(base.model.name).name)
      cli.enable_compilation_cache(cli.COMPILATION_CACHE.value)
    outcome = runner.execute(sweep, parallel=_PARALLEL.value,
                             devices_per_run=_DEVICES_PER_RUN.value,
                             vmap_seeds=_VMAP_SEEDS.value, shared_batches=_SHARED_BATCHES.value)
    _finish(sweep, outcome)


def _print_runs(sweep) -> None:
  steps = sweep.total_steps()
  print(f'{sweep.directory}: {len(sweep.runs)} runs ({len(sweep.definition["variants"])} '
        f'variants x {len(sweep.definition["seeds"])} seeds), baseline {sweep.baseline!r}')
  for run in sweep.runs:
    overrides = ', '.join(f'{k}={v!r}' for k, v in run.overrides.items()) or '(the config)'
    print(f'  {run.id}  seed {run.seed}  {steps[run.id]} steps  [{sweep.state(run)}]  '
          f'{overrides}')
  todo = sum(steps[r.id] for r in sweep.runs if sweep.state(r) != 'done')
  print(f'total: {sum(steps.values())} steps, {todo} still to train')


def _finish(sweep, outcome) -> None:
  ran = len(outcome.done)
  line = (f'sweep {sweep.directory}: {ran} trained, {len(outcome.skipped)} finished earlier, '
          f'{len(outcome.failed)} failed, of {len(sweep.runs)}')
  print(line)
  for run_id, error in outcome.failed.items():
    print(f'  failed: {run_id}: {error}')
  if outcome.interrupted:
    sys.exit(f'stopped: {outcome.interrupted}; relaunch the same command to continue')
  _report(sweep.directory)
  if outcome.failed:
    sys.exit(1)


def _report(directory: str) -> None:
  from inception_jax.sweep import report
  if not os.path.exists(os.path.join(directory, 'sweep.json')):
    raise errors.UserError(f'{directory} holds no sweep (no sweep.json); give the --workdir of a '
                           'python -m experiments.sweep run')
  summary = report.summarize(directory)
  print(summary.markdown)
  print('written: ' + ', '.join([summary.csv, summary.markdown_path, *summary.plots]))


def _slurm(sweep) -> None:
  from inception_jax.sweep import runner, slurm
  todo = [r for r in sweep.runs if sweep.state(r) != 'done']
  tasks = [runner.RunTask(sweep.directory, r.id, distributed=_SLURM_NODES.value > 1)
           for r in todo]
  extra = {'slurm_setup': list(_SLURM_SETUP.value)} if _SLURM_SETUP.value else None
  jobs = slurm.submit(tasks, folder=os.path.join(sweep.directory, 'slurm'),
                      executor='local' if _SLURM_LOCAL.value else 'slurm',
                      partition=_SLURM_PARTITION.value, nodes=_SLURM_NODES.value,
                      gpus_per_node=_SLURM_GPUS.value if not _SLURM_LOCAL.value else None,
                      cpus_per_task=_SLURM_CPUS.value, timeout_min=_SLURM_TIME.value,
                      array_parallelism=_SLURM_PARALLELISM.value, extra=extra)
  print(f'submitted {len(jobs)} runs of {sweep.directory} ({len(sweep.runs) - len(todo)} '
        'finished earlier)')
  if _NOWAIT.value:
    print(f'report when they are done: python -m experiments.sweep report {sweep.directory}')
    return
  outcomes = slurm.wait(jobs)
  for o in outcomes:
    print(f'  {o.line()}')
  _report(sweep.directory)
  if any(o.state != 'done' for o in outcomes):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
