"""The sweep report on constructed sweep directories whose answers are known: means, ``n``,
differences paired by seed (on data where the unpaired difference has the other sign), the
significance mark on a clear effect and not on noise, P(better) with ties and lower-is-better
metrics, the runs that are not in the tables, the files written, and the bootstrap interval's
coverage on normal samples."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from inception_jax.sweep import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [0, 1, 2, 3, 4]
# Baseline top-1 per seed: a seed-to-seed spread (40 points) far larger than the effects below.
BASE_TOP1 = [50.0, 60.0, 70.0, 80.0, 90.0]


def _train_records(final_loss: float, steps: int = 100, every: int = 10) -> list[dict]:
  # Loss falling linearly to final_loss at the last step.
  return [{'step': s, 'split': 'train', 'time': float(s), 'loss': final_loss + (steps - s) / 10,
           'top1': s / steps, 'lr': 0.1, 'grad_norm': 1.0, 'epoch': s / 50}
          for s in range(every, steps + 1, every)]


def _eval_records(top1: float, loss: float, ema: bool) -> list[dict]:
  out = []
  for s, scale in ((50, 0.5), (100, 1.0)):
    r = {'step': s, 'split': 'eval', 'time': float(s), 'top1': top1 * scale,
         'top5': min(1.0, top1 * scale + 0.1), 'loss': loss / scale}
    if ema:
      r.update(ema_top1=top1 * scale + 0.01, ema_top5=1.0, ema_loss=loss / scale)
    out.append(r)
  return out


def write_run(sweep_dir, run_id, variant, seed, state='done', *, top1=None, eval_loss=1.0,
              train_loss=0.5, wall=100.0, ema=False, error=None, overrides=None):
  """One run directory: status.json and, when done, results.json and metrics.jsonl as the
  runner and the training loop write them. ``top1`` in percent."""
  run_dir = os.path.join(sweep_dir, 'runs', run_id)
  os.makedirs(run_dir, exist_ok=True)
  status = {'state': state, 'variant': variant, 'seed': seed, 'overrides': overrides or {}}
  if error is not None:
    status['error'] = error
  with open(os.path.join(run_dir, 'status.json'), 'w') as f:
    json.dump(status, f)
  if state != 'done':
    return run_dir
  ev = {'top1': top1 / 100, 'top5': 1.0, 'loss': eval_loss}
  if ema:
    ev.update(ema_top1=top1 / 100 + 0.01, ema_top5=1.0, ema_loss=eval_loss)
  results = {'eval': ev, 'wall_time_s': wall, 'train_time_s': wall * 0.9, 'steps': 100}
  with open(os.path.join(run_dir, 'results.json'), 'w') as f:
    json.dump(results, f)
  with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
    for r in _train_records(train_loss) + _eval_records(top1 / 100, eval_loss, ema):
      f.write(json.dumps(r) + '\n')
  return run_dir


def write_sweep(sweep_dir, variants, seeds=SEEDS, baseline=None):
  os.makedirs(os.path.join(sweep_dir, 'runs'), exist_ok=True)
  definition = {'config': 'v3.py:quick', 'seeds': seeds, 'baseline': baseline or variants[0],
                'variants': [{'name': v, 'overrides': {}} for v in variants],
                'revision': 'abc123'}  # a key the report does not know: ignored
  with open(os.path.join(sweep_dir, 'sweep.json'), 'w') as f:
    json.dump(definition, f)


@pytest.fixture
def sweep(tmp_path):
  """baseline; 'better': +1 point on every seed but seed 4, which failed; 'noise': +-1 around
  the baseline; 'lower_loss': eval loss lower on 3 seeds, equal on one, higher on one."""
  d = str(tmp_path / 'sweep')
  write_sweep(d, ['baseline', 'better', 'noise', 'lower_loss'])
  better = [0.9, 1.1, 1.0, 1.05]
  noise = [1.0, -1.0, 0.5, -0.5, 0.0]
  loss_diff = [-0.1, -0.2, -0.05, 0.0, 0.3]
  for s in SEEDS:
    b = BASE_TOP1[s]
    write_run(d, f'baseline-s{s}', 'baseline', s, top1=b, eval_loss=1.0 + s / 10,
              train_loss=0.5 + s / 100, wall=100.0 + s)
    if s < 4:
      write_run(d, f'better-s{s}', 'better', s, top1=b + better[s], eval_loss=1.0 + s / 10,
                wall=100.0 + s)
    else:
      write_run(d, f'better-s{s}', 'better', s, 'failed',
                error='FloatingPointError: step 7: non-finite loss (nan)\nTraceback ...')
    write_run(d, f'noise-s{s}', 'noise', s, top1=b + noise[s], eval_loss=1.0 + s / 10)
    write_run(d, f'lower_loss-s{s}', 'lower_loss', s, top1=b,
              eval_loss=1.0 + s / 10 + loss_diff[s])
  return d


def _row(rows, variant, metric):
  (row,) = [r for r in rows if r.variant == variant and r.metric == metric]
  return row


def test_means_and_differences_are_paired_by_seed(sweep):
  s = report.summarize(sweep, n_resamples=2000, plots=False)
  base, better = _row(s.rows, 'baseline', 'top1'), _row(s.rows, 'better', 'top1')
  assert base.n == 5 and base.mean == pytest.approx(70.0)
  assert better.n == 4 and better.mean == pytest.approx(np.mean(BASE_TOP1[:4]) + 1.0125)
  # Unpaired, 'better' looks 3.99 points worse (it lacks the best seed); paired, it is 1.0125
  # better on each of the 4 seeds both finished.
  assert better.mean - base.mean == pytest.approx(-3.9875)
  assert better.n_paired == 4
  assert better.delta == pytest.approx(1.0125)
  assert 0.9 <= better.delta_ci_low < better.delta < better.delta_ci_high <= 1.1
  assert better.significant and better.p_better == 1.0
  # The unpaired interval of 'better' alone is as wide as the seeds' spread.
  assert better.ci_high - better.ci_low > 10
  # The baseline's own difference: 0, no interval, no P(better).
  assert base.delta == 0.0 and math.isnan(base.delta_ci_low) and math.isnan(base.p_better)
  assert not base.significant


def test_noise_is_not_marked_and_p_better_counts_ties_half(sweep):
  rows = report.summarize(sweep, n_resamples=2000, plots=False).rows
  noise = _row(rows, 'noise', 'top1')
  assert noise.delta == pytest.approx(0.0, abs=1e-12)
  assert noise.delta_ci_low < 0 < noise.delta_ci_high and not noise.significant
  assert noise.p_better == pytest.approx((2 + 0.5) / 5)  # 2 wins, 2 losses, 1 tie
  # Loss: lower is better. 3 lower, 1 equal, 1 higher.
  loss = _row(rows, 'lower_loss', 'eval_loss')
  assert loss.p_better == pytest.approx((3 + 0.5) / 5)
  assert loss.delta == pytest.approx(np.mean([-0.1, -0.2, -0.05, 0.0, 0.3]))
  assert not loss.significant  # the +0.3 seed puts 0 inside the interval
  # Equal top-1 on every seed: a point interval at 0, not significant, all ties.
  same = _row(rows, 'lower_loss', 'top1')
  assert (same.delta, same.delta_ci_low, same.delta_ci_high) == (0.0, 0.0, 0.0)
  assert same.delta_ci_method == 'constant' and not same.significant and same.p_better == 0.5


def test_csv_has_a_row_per_variant_and_metric(sweep):
  s = report.summarize(sweep, n_resamples=2000, plots=False)
  with open(s.csv) as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0].keys()) == report.COLUMNS
  # No run keeps an EMA: its metric is left out rather than reported as n = 0 everywhere.
  metrics = ['top1', 'eval_loss', 'train_loss', 'wall_time_s']
  variants = ['baseline', 'better', 'noise', 'lower_loss']
  assert [(r['variant'], r['metric']) for r in table] == [(v, m) for m in metrics
                                                          for v in variants]
  better = next(r for r in table if r['variant'] == 'better' and r['metric'] == 'top1')
  assert (int(better['n']), int(better['n_paired'])) == (4, 4)
  assert float(better['delta']) == pytest.approx(1.0125)
  assert better['significant'] == 'True' and better['better'] == 'higher'
  base = next(r for r in table if r['variant'] == 'baseline' and r['metric'] == 'top1')
  assert float(base['delta']) == 0.0 and base['delta_ci_low'] == base['delta_ci_high'] == ''
  wall = next(r for r in table if r['variant'] == 'baseline' and r['metric'] == 'wall_time_s')
  assert float(wall['mean']) == pytest.approx(102.0) and wall['better'] == 'lower'


def test_failed_and_missing_runs_are_reported(sweep):
  # A run still going and a (variant, seed) with no run directory at all.
  write_sweep(sweep, ['baseline', 'better', 'noise', 'lower_loss', 'late'], seeds=SEEDS)
  write_run(sweep, 'late-s0', 'late', 0, 'running')
  s = report.summarize(sweep, n_resamples=2000, plots=False)
  problems = {(p.variant, p.seed): p for p in s.collection.problems}
  assert problems['better', 4].state == 'failed'
  assert problems['late', 0].state == 'running'
  assert [problems['late', k].state for k in range(1, 5)] == ['missing'] * 4
  assert len(problems) == 6 and len(s.collection.records) == 19
  assert _row(s.rows, 'late', 'top1').n == 0 and math.isnan(_row(s.rows, 'late', 'top1').mean)
  assert 'better seed 4 (better-s4): failed: FloatingPointError: step 7: non-finite loss' in (
      s.markdown)
  assert 'Runs not in the tables (1 failed, 4 missing, 1 running)' in s.markdown
  assert '19 of 25 runs finished' in s.markdown


def test_a_preempted_run_marked_done_is_incomplete(tmp_path):
  d = str(tmp_path)
  write_sweep(d, ['baseline'], seeds=[0, 1])
  write_run(d, 'a', 'baseline', 0, top1=50.0)
  run = write_run(d, 'b', 'baseline', 1, top1=50.0)
  with open(os.path.join(run, 'results.json'), 'w') as f:
    json.dump({'preempted_at_step': 40, 'steps': 100}, f)
  os.makedirs(os.path.join(d, 'runs', 'c'))  # a run directory the runner had not written into
  write_run(d, 'd', 'baseline', 0, top1=60.0)  # seed 0 again: the first by run id counts
  c = report.collect(d)
  assert [(r.seed, r.run_id, r.metrics['top1']) for r in c.records] == [(0, 'a', 50.0)]
  assert sorted((p.seed, p.run_id, p.state) for p in c.problems if p.seed is not None) == [
      (0, 'd', 'duplicate'), (1, 'b', 'incomplete')]
  (unknown,) = [p for p in c.problems if p.seed is None]
  assert unknown.state == 'unknown' and unknown.line().startswith('run c: unknown: no readable')


def test_markdown_states_the_method_and_marks_significance(sweep):
  md = report.summarize(sweep, n_resamples=2000, plots=False).markdown
  assert 'bias-corrected and accelerated (BCa) bootstrap' in md
  assert 'scipy.stats.bootstrap' in md and '2,000 resamples' in md
  better = next(line for line in md.splitlines() if line.startswith('| `better`'))
  noise = next(line for line in md.splitlines() if line.startswith('| `noise`'))
  assert '**+1.01 [' in better and better.count('*') == 5  # bold and the mark
  assert '**' not in noise and '*' not in noise.replace('|', '')
  with open(os.path.join(sweep, 'summary.md'), encoding='utf-8') as f:
    assert f.read() == md


def test_the_report_is_reproducible(sweep):
  report.summarize(sweep, n_resamples=2000, plots=False)
  with open(os.path.join(sweep, 'summary.csv')) as f:
    first = f.read()
  report.summarize(sweep, n_resamples=2000, plots=False)
  with open(os.path.join(sweep, 'summary.csv')) as f:
    assert f.read() == first


def test_ema_metric_and_plots(tmp_path):
  d = str(tmp_path)
  write_sweep(d, ['baseline', 'ema_off'])
  for s in SEEDS:
    write_run(d, f'b{s}', 'baseline', s, top1=BASE_TOP1[s], ema=True)
    write_run(d, f'e{s}', 'ema_off', s, top1=BASE_TOP1[s] - 1 - s / 10, ema=False)
  s = report.summarize(d, n_resamples=1000)
  ema = _row(s.rows, 'baseline', 'ema_top1')
  assert ema.n == 5 and ema.mean == pytest.approx(71.0)
  assert _row(s.rows, 'ema_off', 'ema_top1').n == 0
  assert _row(s.rows, 'ema_off', 'top1').delta == pytest.approx(-1.2)
  assert sorted(os.path.basename(p) for p in s.plots) == ['curves.png', 'deltas.png']
  for path in s.plots:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as im:
      im.load()  # decodes the whole image
      assert im.width > 300 and im.height > 200
      # Something drawn: not one flat colour.
      assert len(im.convert('L').getcolors(maxcolors=1 << 16)) > 10


def test_final_train_loss_averages_the_last_tenth_of_the_steps():
  records = [{'step': s, 'split': 'train', 'loss': float(s)} for s in (50, 90, 95, 100)]
  # Steps 91-100: the records of steps 95 (covering 91-95) and 100 (96-100), equally weighted.
  assert report.final_train_loss(records) == pytest.approx(97.5)
  # A short last window weighs by the steps it covers: 96-99 then 100 alone.
  records = [{'step': s, 'split': 'train', 'loss': float(s)} for s in (80, 90, 99, 100)]
  assert report.final_train_loss(records) == pytest.approx((9 * 99 + 100) / 10)
  assert report.final_train_loss([{'step': 3, 'split': 'eval', 'loss': 1.0}]) is None


def test_metrics_of_a_resumed_run_keep_the_last_record_of_each_step(tmp_path):
  lines = [{'step': 10, 'split': 'train', 'loss': 5.0},
           {'step': 20, 'split': 'train', 'loss': 9.0},  # logged, then preempted
           {'step': 20, 'split': 'train', 'loss': 4.0},  # the resumed run's
           {'step': 20, 'split': 'eval', 'top1': 0.3}]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for r in lines:
      f.write(json.dumps(r) + '\n')
    f.write('{"step": 30, "spl')  # a write cut short
  records = report.read_metrics(str(tmp_path))
  assert [(r['step'], r['split'], r.get('loss')) for r in records] == [
      (10, 'train', 5.0), (20, 'eval', None), (20, 'train', 4.0)]


def test_degenerate_samples():
  assert all(math.isnan(x) for x in report.interval([1.0, 2.0])[:2])
  assert report.interval([1.0, 2.0])[2] == ''
  assert report.interval([3.0] * 5) == (3.0, 3.0, 'constant')
  low, high, method = report.interval([1.0, 2.0, 3.0, 4.0, 5.0])
  assert method == 'BCa' and 1.0 <= low < 3.0 < high <= 5.0


def test_interval_coverage_on_normal_samples():
  # 400 samples of n = 10 from N(0, 1): how often the 95% interval covers the true mean 0. A
  # bootstrap interval of the mean is the sample's own spread (divisor n) with normal quantiles,
  # so its coverage is below nominal at small n: for the percentile interval
  # P(|t_9| < 1.96 * sqrt(9/10)) = 0.904, and BCa measured 0.891-0.911 over 2,000 draws. With
  # 400 draws the binomial standard deviation is 0.015; the band 0.84-0.96 is 4 of them on
  # either side (fails by chance with probability < 1e-4 for any seed), and it rejects an
  # interval a third narrower (coverage ~0.75) or the data's range (~0.998).
  rng = np.random.default_rng(20210101)
  draws = 400
  covered = 0
  for i in range(draws):
    low, high, method = report.interval(rng.standard_normal(10), n_resamples=2000, seed=i)
    assert method == 'BCa'
    covered += low <= 0.0 <= high
  assert 0.84 <= covered / draws <= 0.96, covered / draws


def test_import_pulls_in_no_heavy_modules():
  code = ('import sys, inception_jax.sweep.report; '
          'print(sorted(m for m in ("tensorflow", "torch", "jax", "matplotlib") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, capture_output=True,
                       text=True).stdout
  assert out.strip() == '[]'


def test_not_a_sweep_directory(tmp_path):
  from inception_jax import errors
  with pytest.raises(errors.UserError, match='no sweep.json'):
    report.collect(str(tmp_path))


def test_percentile_interval_where_bca_is_undefined(monkeypatch):
  # BCa of a mean is finite on any sample that varies; the fallback is a guard, exercised here
  # by a bootstrap whose BCa interval came out NaN.
  import dataclasses
  from scipy import stats
  real = stats.bootstrap

  def nan_bca(*args, method, **kwargs):
    result = real(*args, method=method, **kwargs)
    if method == 'BCa':
      nan = type(result.confidence_interval)(math.nan, math.nan)
      result = dataclasses.replace(result, confidence_interval=nan)
    return result

  monkeypatch.setattr(stats, 'bootstrap', nan_bca)
  x = np.array([0.0, 1.0, 5.0, 2.0, 9.0])
  low, high, method = report.interval(x, n_resamples=5000)
  assert method == 'percentile'
  means = real((x,), np.mean, n_resamples=5000, method='percentile',
               rng=np.random.default_rng(report.SEED)).bootstrap_distribution
  assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-3)
