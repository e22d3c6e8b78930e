"""Sweeps (inception_jax/sweep/runner.py, experiments/sweep.py): declaration and --grid
expansion, paired seed-major runs, --dry_run, a changed definition refused, an interrupted sweep
resumed to the uninterrupted sweep's results, a failed run recorded while the rest finish, one
compile for a sweep of numbers, and vmapped seeds equal to their standalone runs.

The runs train the test-only digits of tests/train_utils.py for a few steps.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import v1
from inception_jax import errors, evaluate, optim, train
from inception_jax.sweep import members, runner
from train_utils import read_metrics, tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V1_FILE = os.path.join(REPO, 'experiments', 'configs', 'v1.py')


def test_helpers_expand_points():
  assert runner.product({'a': [1, 2], 'b': [3, 4]}) == [
      {'a': 1, 'b': 3}, {'a': 1, 'b': 4}, {'a': 2, 'b': 3}, {'a': 2, 'b': 4}]
  assert runner.zipped({'a': [1, 2], 'b': [3, 4]}) == [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  with pytest.raises(errors.UserError, match='different lengths'):
    runner.zipped({'a': [1], 'b': [1, 2]})
  assert runner.chain([{'a': 1}], runner.product({'b': [2, 3]})) == [{'a': 1}, {'b': 2}, {'b': 3}]


def test_grid_reads_each_value_as_its_fields_type():
  base = v1.get_config('quick')
  base.lock()
  points = runner.parse_grid(['optimizer.lr=0.1,0.2', 'loss.label_smoothing=0,0.1',
                              'optimizer.nesterov=true'], base)
  assert points == [
      {'optimizer.lr': 0.1, 'loss.label_smoothing': 0.0, 'optimizer.nesterov': True},
      {'optimizer.lr': 0.1, 'loss.label_smoothing': 0.1, 'optimizer.nesterov': True},
      {'optimizer.lr': 0.2, 'loss.label_smoothing': 0.0, 'optimizer.nesterov': True},
      {'optimizer.lr': 0.2, 'loss.label_smoothing': 0.1, 'optimizer.nesterov': True}]
  assert all(type(p['loss.label_smoothing']) is float for p in points)
  with pytest.raises(errors.UserError, match=r"no field 'loss.label_smothing' \(did you mean "
                                             r'label_smoothing'):
    runner.parse_grid(['loss.label_smothing=0.1'], base)
  with pytest.raises(errors.UserError, match="'x' is not a int"):
    runner.parse_grid(['batch_size=32,x'], base)
  with pytest.raises(errors.UserError, match='--grid=FIELD=V1,V2'):
    runner.parse_grid(['optimizer.lr'], base)


def test_declared_sweep_runs_paired_seeds_seed_major():
  module = runner.load_config_module(V1_FILE)
  points = runner.declared(module, 'recipe', 'quick')
  names = [v.name for v in points.variants]
  assert points.baseline == 'recipe' and names[0] == 'recipe' and len(names) == 4
  base = module.get_config('quick')
  runs = runner.make_runs(base, points.variants, [0, 1, 2])
  assert [(r.variant, r.seed) for r in runs] == [(n, s) for s in (0, 1, 2) for n in names]
  assert len({r.id for r in runs}) == len(runs)
  assert [r.id for r in runner.make_runs(base, points.variants, [0, 1, 2])] == [r.id for r in runs]
  by = {(r.variant, r.seed): r for r in runs}
  for v in points.variants:
    for seed in (0, 1, 2):
      # paired: a variant's run differs from the baseline's of the same seed in its overrides only
      diff = runner.differences(by[v.name, seed].config, by['recipe', seed].config)
      assert set(diff) == set(v.overrides), (v.name, diff)
      assert by[v.name, seed].config.seed == seed
  # A config that fixes the data order: the seeds move the initialisation alone.
  base.data_seed = 5
  fixed = runner.make_runs(base, points.variants[:1], [0, 1])
  assert [(r.config.init_seed, r.config.data_seed, r.config.seed) for r in fixed] == [
      (0, 5, 0), (1, 5, 0)]
  assert train.seeds(fixed[1].config) == (1, 5)
  with pytest.raises(errors.UserError, match='declares: recipe'):
    runner.declared(module, 'recipes', 'quick')


def _cli(*args, check_one_line_error=False):
  proc = subprocess.run([sys.executable, '-m', 'experiments.sweep', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  if check_one_line_error:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('FATAL: '), proc.stderr
    return lines[0]
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


def test_dry_run_lists_every_run_and_a_changed_definition_is_refused(tmp_path):
  sweep_dir = str(tmp_path / 'sweep')
  common = ['--config=v1.py:quick', '--seeds=2', f'--workdir={sweep_dir}', '--dry_run']
  out = _cli('--grid=loss.label_smoothing=0.0,0.1', *common)
  lines = [l for l in out.splitlines() if l.startswith('  ')]
  assert len(lines) == 4 and all('180 steps' in l and '[pending]' in l for l in lines), out
  assert [l.split()[2] for l in lines] == ['0', '0', '1', '1']  # seed-major
  assert 'total: 720 steps, 720 still to train' in out
  assert os.listdir(os.path.join(sweep_dir, 'runs')) == []  # nothing trained
  definition = json.load(open(os.path.join(sweep_dir, 'sweep.json')))
  assert definition['baseline'] == 'loss.label_smoothing=0.0' and definition['seeds'] == [0, 1]

  line = _cli('--grid=loss.label_smoothing=0.0,0.2', *common, check_one_line_error=True)
  assert 'variants' in line and '--extend' in line and 'seeds' not in line.split('(')[1]
  line = _cli('--grid=loss.label_smoothing=0.0,0.1', *common, '--config.optimizer.lr=0.1',
              check_one_line_error=True)
  assert 'overrides' in line and 'optimizer.lr' in line
  out = _cli('--grid=loss.label_smoothing=0.0,0.2', *common, '--extend')
  assert sum('loss.label_smoothing=0.2' in l for l in out.splitlines()) == 2, out
  line = _cli('--grid=loss.label_smothing=0.1', '--config=v1.py:quick',
              f'--workdir={tmp_path / "other"}', '--dry_run', check_one_line_error=True)
  assert 'did you mean label_smoothing' in line


def _sweep(directory, lrs=(0.05, 0.1), seeds=(0, 1)):
  # dropout 0.25: a program of this module's alone, so that its compiles are counted here
  base = tiny('v1', total_steps=4, checkpoint_every_steps=2,
              **{'model.options.dropout_rate': 0.25})
  base.lock()
  variants = [runner.Variant(runner.variant_name(p), p)
              for p in runner.product({'optimizer.lr': list(lrs)})]
  return runner.define(str(directory), config_path=V1_FILE, arg='quick', base=base,
                       default=v1.get_config('quick'), variants=variants, baseline=None,
                       seeds=list(seeds))


def _results(sweep):
  out = {}
  for run in sweep.runs:
    with open(os.path.join(sweep.run_dir(run), 'results.json')) as f:
      out[run.id] = json.load(f)['eval']
  return out


class _Lines(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def test_interrupted_sweep_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch):
  logger = logging.getLogger('inception_jax')  # its own handler: entry points stop propagation
  lines = _Lines()
  logger.addHandler(lines)
  level = logger.level
  logger.setLevel(logging.INFO)
  straight = _sweep(tmp_path / 'straight')
  assert not runner.execute(straight).failed

  sweep = _sweep(tmp_path / 'sweep')
  assert [r.id for r in sweep.runs] == [r.id for r in straight.runs]  # ids: config and seed
  failing, stopped = sweep.runs[1].id, sweep.runs[2].id
  reached = train._Preemption.reached

  def first_launch(s, run):
    if run.id == failing:
      raise RuntimeError('the storage went away')
    # as a SIGTERM after step 2 would: checkpoint, then return
    monkeypatch.setattr(train._Preemption, 'reached',
                        (lambda self, step: step == 2) if run.id == stopped else reached)
    return runner.train_one(s, run)

  outcome = runner.execute(sweep, runner=first_launch)
  monkeypatch.setattr(train._Preemption, 'reached', reached)
  assert outcome.done == [sweep.runs[0].id] and list(outcome.failed) == [failing]
  assert 'storage went away' in outcome.failed[failing] and stopped in outcome.interrupted
  assert [sweep.state(r) for r in sweep.runs] == ['done', 'failed', 'interrupted', 'pending']

  trained = []
  outcome = runner.execute(
      runner.open_sweep(sweep.directory),
      runner=lambda s, run: trained.append(run.id) or runner.train_one(s, run))
  assert trained == [failing, stopped, sweep.runs[3].id]  # the finished run is not trained again
  assert outcome.skipped == [sweep.runs[0].id] and not outcome.failed
  with open(os.path.join(sweep.run_dir(stopped), 'results.json')) as f:
    assert json.load(f)['resumed_from_step'] == 2
  assert _results(sweep) == {k: v for k, v in _results(straight).items()}

  # Each run's own rate, from one compiled train step for all twelve launches of runs.
  for run in sweep.runs:
    lr = read_metrics(sweep.run_dir(run))[0]['lr']
    assert lr == pytest.approx(optim.learning_rate(run.config), rel=1e-6), run.id
  logger.removeHandler(lines)
  logger.setLevel(level)
  compiles = [line for line in lines.lines if 'train step compiled in' in line]
  assert len(compiles) == 1, compiles


def test_vmapped_seeds_equal_their_standalone_runs(tmp_path):
  configs = [tiny('v1', total_steps=3, seed=s) for s in (0, 1)]
  for c in configs:
    train.train_and_evaluate(c, str(tmp_path / f'alone{c.seed}'))
  together = members.train_members(configs, [str(tmp_path / f'member{c.seed}') for c in configs])
  assert [r['vmap_members'] for r in together] == [2, 2]
  for c in configs:
    a = jax.device_get(evaluate.restore_state(c, str(tmp_path / f'alone{c.seed}'))[1])
    b = jax.device_get(evaluate.restore_state(c, str(tmp_path / f'member{c.seed}'))[1])
    assert int(a.step) == int(b.step) == 3
    # float32: XLA sums the members' convolutions in another order; three steps at a rate that
    # decays from 0.025 keep the weights within a few float32 roundings of the step's update.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6),
                 (a.params, a.batch_stats, a.ema_params), (b.params, b.batch_stats, b.ema_params))
    alone = read_metrics(str(tmp_path / f'alone{c.seed}'))
    member = read_metrics(str(tmp_path / f'member{c.seed}'))
    np.testing.assert_allclose([r['loss'] for r in member], [r['loss'] for r in alone],
                               rtol=1e-5)
  # the two members are different runs (their own seeds), not copies
  assert together[0]['eval'] != together[1]['eval'] or not np.allclose(
      [r['loss'] for r in read_metrics(str(tmp_path / 'member0'))],
      [r['loss'] for r in read_metrics(str(tmp_path / 'member1'))])


TINY_CONFIG = '''
from experiments.configs import v1


def get_config(arg=None):
  c = v1.get_config('quick')
  c.batch_size, c.eval_batch_size, c.total_steps = 8, 120, 2
  c.eval_every_epochs, c.log_every_steps, c.tensorboard = 0.0, 1, False
  return c


def sweep_lr(add):
  add(name='base', baseline=True)
  add({'optimizer.lr': 0.05}, name='double rate')
'''


def test_submitit_local_executor_runs_a_sweep(tmp_path):
  """--launcher=slurm through submitit's local executor: real processes, one per run."""
  (tmp_path / 'tiny.py').write_text(TINY_CONFIG)
  sweep_dir = tmp_path / 'sweep'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', f'--config={tmp_path / "tiny.py"}',
       '--sweep=lr', '--seeds=1', f'--workdir={sweep_dir}', '--launcher=slurm', '--slurm_local',
       '--slurm_parallelism=1'], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count(': done') == 2, proc.stdout
  sweep = runner.open_sweep(str(sweep_dir))
  assert [sweep.state(r) for r in sweep.runs] == ['done', 'done']
  lines = (sweep_dir / 'summary.csv').read_text().splitlines()
  assert lines[0].startswith('variant,metric,n,mean,ci_low,ci_high,delta,delta_ci_low,'
                             'delta_ci_high')
  assert {l.split(',')[0] for l in lines[1:]} == {'base', 'double rate'}
  # each process its own rate (both in their warm-up's first step): twice the base's
  base, double = (read_metrics(sweep.run_dir(r))[0]['lr'] for r in sweep.runs)
  assert double == pytest.approx(2 * base, rel=1e-6) and base > 0
