"""The report of a sweep: per variant and metric, the mean over seeds with a bootstrap interval,
and the difference from the baseline paired by seed.

A sweep directory ``DIR`` holds ``sweep.json`` (``config``, ``seeds``, ``baseline``, ``variants``:
``[{"name", "overrides"}, ...]``) and one directory per (variant, seed) under ``DIR/runs/``, with
``status.json`` (``state``: done, failed, running or pending; ``variant``, ``seed``, ``error``) and,
once done, the training loop's ``results.json`` and ``metrics.jsonl``. :func:`summarize` writes

* ``DIR/summary.csv``: one row per (variant, metric), columns :data:`COLUMNS`;
* ``DIR/summary.md``: one table per metric, its caption stating the method, and the runs that are
  not in the tables (failed, unfinished, missing), each with its reason;
* ``DIR/deltas.png``: each variant's paired difference from the baseline with its interval;
* ``DIR/curves.png``: learning curves (training loss and held-out top-1 against the step), the
  mean over seeds with a min-max band.

Metrics of a run (:data:`METRICS`): held-out top-1 of the raw weights (``eval.top1``) and of the
EMA weights (``eval.ema_top1``, in runs that keep an EMA), both as percentages; the final held-out
loss (``eval.loss``, raw weights); the final training loss (:func:`final_train_loss`); the wall
time (``wall_time_s``: the last launch's, so a run resumed after a preemption counts only its last
part).

The method (Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks",
MLSys; Agarwal et al. 2021, "Deep reinforcement learning at the edge of the statistical
precipice", NeurIPS): seeds are the unit of replication, so a variant's score is the mean over
its seeds with a confidence interval from a bootstrap over seeds, and a variant is compared with
the baseline seed for seed (every variant runs the same seeds), which cancels the variation the
seed causes in both (the initialisation and data order of seed k are the same in every variant):
the difference is the mean of the per-seed differences over the seeds both finished, with its own
bootstrap interval. The intervals are Efron's bias-corrected and accelerated (BCa) bootstrap
(Efron 1987, "Better bootstrap confidence intervals", JASA) of ``scipy.stats.bootstrap``, with a
fixed seed, so the same runs give the same report. Degenerate samples (:func:`interval`): fewer
than :data:`MIN_N` values have no interval; all-equal values have the point interval; a sample
on which BCa cannot be computed falls back to the percentile interval of the same resamples.

With few seeds a bootstrap interval of a mean is narrower than its nominal level: it is the
sample's own spread (the standard deviation with divisor n) with normal rather than Student-t
quantiles. Measured on normal samples (2,000 draws each): the 95% BCa interval covers the true
mean in 83-85% of draws at n = 5 and 89-91% at n = 10 (theory for the percentile interval:
P(|t_{n-1}| < 1.96 sqrt((n-1)/n)), 0.845 and 0.904). The caption says so; more seeds fix it.

Importing this module imports neither TensorFlow, PyTorch nor JAX; scipy when an interval is
computed, matplotlib when a plot is drawn.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import logging
import math
import os
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from inception_jax import errors

log = logging.getLogger('inception_jax.sweep.report')


@dataclasses.dataclass(frozen=True)
class Metric:
  """One metric of a run: ``name`` is its value in the ``metric`` column of summary.csv."""
  name: str
  title: str
  unit: str  # '%', 's' or '' (the tables' and the plots' labels)
  higher_is_better: bool
  decimals: int  # in summary.md


METRICS = (
    Metric('top1', 'Held-out top-1, raw weights', '%', True, 2),
    Metric('ema_top1', 'Held-out top-1, EMA weights', '%', True, 2),
    Metric('eval_loss', 'Final held-out loss, raw weights', '', False, 4),
    Metric('train_loss', 'Final training loss, main head', '', False, 4),
    Metric('wall_time_s', 'Wall time', 's', False, 1),
)
METRIC = {m.name: m for m in METRICS}

# The columns of summary.csv. The contract other tools rely on is the first nine; an undefined
# value (an interval of fewer than MIN_N values, the baseline's own difference) is an empty cell.
COLUMNS = ('variant', 'metric', 'n', 'mean', 'ci_low', 'ci_high', 'delta', 'delta_ci_low',
           'delta_ci_high', 'p_better', 'significant', 'n_paired', 'std', 'unit', 'better',
           'ci_method', 'delta_ci_method')

CONFIDENCE_LEVEL = 0.95
N_RESAMPLES = 10_000
SEED = 0  # of the bootstrap's resampling: a fixed seed, so the same runs give the same report
MIN_N = 3  # fewer values than this have no interval (see interval())
TRAIN_LOSS_FRACTION = 0.1  # final_train_loss: the mean over the last 10% of the steps


# Reading a sweep directory.


@dataclasses.dataclass(frozen=True)
class Record:
  """A finished run: its metrics by name (those of :data:`METRICS` the run has)."""
  variant: str
  seed: int
  run_id: str
  run_dir: str
  metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Problem:
  """A run that is not in the tables, and why: ``state`` is its status (failed, running,
  pending), or 'missing' (no run directory of this variant and seed), 'incomplete' (done but no
  readable results), 'duplicate' (a second finished run of the same variant and seed: the first
  by run id is used) or 'unknown' (a run directory without a readable status)."""
  variant: str | None
  seed: int | None
  run_id: str | None
  state: str
  error: str | None = None

  def line(self) -> str:
    what = (f'{self.variant} seed {self.seed}' if self.variant is not None
            else f'run {self.run_id}')
    where = f' ({self.run_id})' if self.run_id and self.variant is not None else ''
    why = f': {first_line(self.error)}' if self.error else ''
    return f'{what}{where}: {self.state}{why}'


@dataclasses.dataclass(frozen=True)
class Collection:
  """What :func:`collect` found: the finished runs (``records``) and every other run of the
  sweep (``problems``), with the sweep's definition."""
  sweep_dir: str
  definition: dict[str, Any]
  variants: list[str]  # the declared ones in their order, then any others found
  seeds: list[int]
  baseline: str
  records: list[Record]
  problems: list[Problem]


def first_line(text: str | None) -> str:
  """The first non-empty line of ``text`` (of an error message or a traceback's last line)."""
  for line in (text or '').strip().splitlines():
    if line.strip():
      return line.strip()
  return ''


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
  """The records of ``run_dir/metrics.jsonl`` in step order, the last of each (split, step): a
  run resumed from a checkpoint logs again the steps after it. A line that does not parse (a
  write cut short by a kill, which the resumed run's next line is then appended to) is skipped,
  with a warning. No file: no records."""
  path = os.path.join(run_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  by_key: dict[tuple[str, int], dict[str, Any]] = {}
  bad = 0
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        key = (str(record['split']), int(record['step']))
      except (ValueError, KeyError, TypeError):
        bad += 1
        continue
      by_key[key] = record
  if bad:
    log.warning('%s: %d unreadable line(s) skipped', path, bad)
  return sorted(by_key.values(), key=lambda r: (r['step'], r['split']))


def final_train_loss(records: Sequence[dict[str, Any]],
                     fraction: float = TRAIN_LOSS_FRACTION) -> float | None:
  """The mean training loss (of the main head, ``loss_main``, when logged) over the last
  ``fraction`` of the logged steps: each train record's loss is already the mean over the steps since the previous one, so the records whose step
  lies in the last ``fraction`` of the run (at least the last record) are averaged weighted by
  the steps each covers. One noisy logging window does not decide it, nor does a short last
  window (the loop logs at the last step whatever the interval). ``None`` without train
  records."""
  train = [r for r in records if r.get('split') == 'train' and 'loss' in r]
  if not train:
    return None
  # The main head's loss where the loop logs it: the total adds the auxiliary heads' weighted
  # losses, which a variant without them (or with another weight) would not be compared on.
  key = 'loss_main' if all('loss_main' in r for r in train) else 'loss'
  last_step = train[-1]['step']
  start = last_step * (1.0 - fraction)
  total = weight = 0.0
  previous = 0
  for i, r in enumerate(train):
    covered = max(r['step'] - previous, 1)
    previous = r['step']
    if r['step'] > start or i == len(train) - 1:
      total += covered * float(r[key])
      weight += covered
  return total / weight


def run_metrics(run_dir: str, results: dict[str, Any]) -> dict[str, float]:
  """The :data:`METRICS` of one finished run, from its ``results.json`` (``results``) and its
  ``metrics.jsonl``; a metric the run lacks (no EMA, no train records) is left out."""
  ev = results.get('eval') or {}
  out: dict[str, float] = {}
  if ev.get('top1') is not None:
    out['top1'] = 100.0 * float(ev['top1'])
  if ev.get('ema_top1') is not None:
    out['ema_top1'] = 100.0 * float(ev['ema_top1'])
  if ev.get('loss') is not None:
    out['eval_loss'] = float(ev['loss'])
  train_loss = final_train_loss(read_metrics(run_dir))
  if train_loss is not None:
    out['train_loss'] = train_loss
  if results.get('wall_time_s') is not None:
    out['wall_time_s'] = float(results['wall_time_s'])
  return out


def collect(sweep_dir: str) -> Collection:
  """The finished runs of the sweep in ``sweep_dir`` and a :class:`Problem` for every other one:
  every (declared variant, seed) of ``sweep.json`` is either a record or a problem, so nothing is
  dropped without a word. Raises :class:`~inception_jax.errors.UserError` when ``sweep_dir`` has
  no ``sweep.json``."""
  sweep_dir = os.path.abspath(sweep_dir)
  definition_path = os.path.join(sweep_dir, 'sweep.json')
  if not os.path.exists(definition_path):
    raise errors.UserError(f'{sweep_dir} is not a sweep directory: it has no sweep.json')
  definition = _read_json(definition_path)
  variants = [v['name'] for v in definition.get('variants', [])]
  seeds = [int(s) for s in definition.get('seeds', [])]
  baseline = definition.get('baseline') or (variants[0] if variants else None)

  records: dict[tuple[str, int], Record] = {}
  problems: list[Problem] = []
  seen: set[tuple[str, int]] = set()
  extra_variants: list[str] = []
  for run_dir in sorted(glob.glob(os.path.join(sweep_dir, 'runs', '*', ''))):
    run_dir = run_dir.rstrip(os.sep)
    run_id = os.path.basename(run_dir)
    try:
      status = _read_json(os.path.join(run_dir, 'status.json'))
      variant, seed, state = str(status['variant']), int(status['seed']), str(status['state'])
    except (OSError, ValueError, KeyError, TypeError) as e:
      problems.append(Problem(None, None, run_id, 'unknown', f'no readable status.json ({e})'))
      continue
    if variant not in variants and variant not in extra_variants:
      extra_variants.append(variant)
    seen.add((variant, seed))
    if state != 'done':
      problems.append(Problem(variant, seed, run_id, state, status.get('error')))
      continue
    try:
      results = _read_json(os.path.join(run_dir, 'results.json'))
    except (OSError, ValueError) as e:
      problems.append(Problem(variant, seed, run_id, 'incomplete', f'no readable results ({e})'))
      continue
    if 'preempted_at_step' in results or not isinstance(results.get('eval'), dict):
      problems.append(Problem(variant, seed, run_id, 'incomplete',
                              'results.json has no final evaluation'))
      continue
    if (variant, seed) in records:
      problems.append(Problem(variant, seed, run_id, 'duplicate',
                              f'the same variant and seed as {records[variant, seed].run_id}'))
      continue
    records[variant, seed] = Record(variant, seed, run_id, run_dir, run_metrics(run_dir, results))

  for variant in variants:
    for seed in seeds:
      if (variant, seed) not in seen:
        problems.append(Problem(variant, seed, None, 'missing', None))

  order = {v: i for i, v in enumerate(variants + extra_variants)}
  ordered = sorted(records.values(), key=lambda r: (order[r.variant], r.seed))
  problems.sort(key=lambda p: (order.get(p.variant, len(order)), p.seed if p.seed is not None
                               else -1, p.run_id or ''))
  if baseline is None and ordered:
    baseline = ordered[0].variant
  return Collection(sweep_dir, definition, variants + extra_variants, seeds, baseline, ordered,
                    problems)


# Statistics.


def interval(values: Iterable[float], *, confidence_level: float = CONFIDENCE_LEVEL,
             n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float, str]:
  """A ``confidence_level`` confidence interval of the mean of ``values`` and how it was made:
  ``(low, high, method)``.

  * ``'BCa'``: the bias-corrected and accelerated bootstrap (Efron 1987) of
    ``scipy.stats.bootstrap``, ``n_resamples`` resamples drawn with a generator seeded ``seed``.
  * ``'percentile'``: where BCa comes out undefined on a sample that is not constant (its
    acceleration or bias correction not finite; for a mean only through overflow or rounding, so
    this is a guard), the percentile interval of the same resamples.
  * ``'constant'``: all values are equal; every resample's mean is that value, so the bootstrap
    interval is that point (BCa divides by zero there).
  * ``''`` with NaN bounds: fewer than :data:`MIN_N` values. With two values a bootstrap of the
    mean takes 3 values, and no interval made from it means anything.
  """
  x = np.asarray(list(values), dtype=np.float64)
  if x.size < MIN_N:
    return math.nan, math.nan, ''
  if np.all(x == x[0]):
    return float(x[0]), float(x[0]), 'constant'
  from scipy import stats  # pylint: disable=import-outside-toplevel

  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # BCa's 0/0 on a degenerate sample
    warnings.simplefilter('ignore', stats.DegenerateDataWarning)
    result = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, vectorized=True,
                             confidence_level=confidence_level, method='BCa',
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
      return float(low), float(high), 'BCa'
    result = stats.bootstrap((x,), np.mean, n_resamples=0, vectorized=True,
                             confidence_level=confidence_level, method='percentile',
                             bootstrap_result=result, rng=np.random.default_rng(seed))
  low, high = result.confidence_interval
  return float(low), float(high), 'percentile'


def p_better(differences: Sequence[float], higher_is_better: bool) -> float:
  """P(variant better than baseline) over seeds: the fraction of paired seeds where the variant's
  value beats the baseline's (``differences`` = variant - baseline per seed; higher is better
  for accuracies, lower for loss and time), a tie counting half. NaN without paired seeds. It is
  the per-seed probability of improvement of Agarwal et al. 2021 (there across tasks, with the
  Mann-Whitney U statistic; here one pair per seed)."""
  d = np.asarray(differences, dtype=np.float64)
  if d.size == 0:
    return math.nan
  wins = np.sum(d > 0) if higher_is_better else np.sum(d < 0)
  return float((wins + 0.5 * np.sum(d == 0)) / d.size)


@dataclasses.dataclass(frozen=True)
class Row:
  """One (variant, metric) of summary.csv (see :data:`COLUMNS`). ``n`` counts the variant's
  finished seeds with the metric, ``n_paired`` the seeds finished in both it and the baseline;
  ``delta`` is the mean of the per-seed differences over those (variant - baseline), 0 for the
  baseline itself; ``significant``: the difference's interval excludes 0."""
  variant: str
  metric: str
  n: int
  mean: float
  ci_low: float
  ci_high: float
  delta: float
  delta_ci_low: float
  delta_ci_high: float
  p_better: float
  significant: bool
  n_paired: int
  std: float
  unit: str
  better: str
  ci_method: str
  delta_ci_method: str


def rows(collection: Collection, *, confidence_level: float = CONFIDENCE_LEVEL,
         n_resamples: int = N_RESAMPLES, seed: int = SEED) -> list[Row]:
  """The statistics of every (variant, metric): the metrics that some finished run has, in the
  order of :data:`METRICS`, and every variant (one without finished runs has ``n`` 0)."""
  kw = dict(confidence_level=confidence_level, n_resamples=n_resamples, seed=seed)
  present = [m for m in METRICS if any(m.name in r.metrics for r in collection.records)]
  out = []
  for metric in present:
    values = {v: {} for v in collection.variants}
    for r in collection.records:
      if metric.name in r.metrics:
        values[r.variant][r.seed] = r.metrics[metric.name]
    base = values.get(collection.baseline, {})
    for variant in collection.variants:
      mine = values[variant]
      x = np.array([mine[s] for s in sorted(mine)], dtype=np.float64)
      low, high, method = interval(x, **kw)
      paired = sorted(set(mine) & set(base))
      d = np.array([mine[s] - base[s] for s in paired], dtype=np.float64)
      if variant == collection.baseline:
        delta = 0.0 if x.size else math.nan
        d_low = d_high = p = math.nan
        d_method = ''
      else:
        delta = float(d.mean()) if d.size else math.nan
        d_low, d_high, d_method = interval(d, **kw)
        p = p_better(d, metric.higher_is_better)
      significant = bool(d_low > 0 or d_high < 0)  # False when NaN
      out.append(Row(
          variant=variant, metric=metric.name, n=int(x.size),
          mean=float(x.mean()) if x.size else math.nan, ci_low=low, ci_high=high, delta=delta,
          delta_ci_low=d_low, delta_ci_high=d_high, p_better=p, significant=significant,
          n_paired=len(paired), std=float(x.std(ddof=1)) if x.size > 1 else math.nan,
          unit=metric.unit, better='higher' if metric.higher_is_better else 'lower',
          ci_method=method, delta_ci_method=d_method))
  return out


# Writing the report.


def _cell(value: Any) -> str:
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return '' if math.isnan(value) else repr(value)
  return str(value)


def write_csv(path: str, table: Sequence[Row]) -> None:
  """``table`` to ``path``, columns :data:`COLUMNS`, NaN as an empty cell."""
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(COLUMNS)
    for row in table:
      w.writerow([_cell(getattr(row, c)) for c in COLUMNS])


_MARKS = {'percentile': ' ᵖ', 'constant': ' ᶜ'}


def _fmt(x: float, decimals: int, sign: bool = False) -> str:
  if math.isnan(x):
    return '–'
  return f'{x:+.{decimals}f}' if sign else f'{x:.{decimals}f}'


def _with_interval(x: float, low: float, high: float, method: str, decimals: int,
                   sign: bool = False) -> str:
  if math.isnan(x):
    return '–'
  text = _fmt(x, decimals, sign)
  if method:
    text += f' [{_fmt(low, decimals, sign)}, {_fmt(high, decimals, sign)}]{_MARKS.get(method, "")}'
  return text


def caption(*, confidence_level: float = CONFIDENCE_LEVEL, n_resamples: int = N_RESAMPLES,
            seed: int = SEED) -> str:
  """The method, as summary.md states it above its tables."""
  level = f'{confidence_level:.0%}'
  return (
      f'Each cell: the mean over seeds and its {level} confidence interval, a bias-corrected and '
      f'accelerated (BCa) bootstrap of the mean over seeds (Efron 1987; `scipy.stats.bootstrap`, '
      f'{n_resamples:,} resamples, generator seeded {seed}, so the report is reproducible). '
      f'Δ: the variant minus the baseline paired by seed, the mean of the per-seed differences '
      f'over the seeds finished in both (n paired), with its {level} BCa interval; **bold** and '
      f'`*`: that interval excludes 0. P(better): the fraction of paired seeds where the variant '
      f'beats the baseline, ties counting half (higher top-1 is better; lower loss and time). '
      f'Fewer than {MIN_N} values: no interval. All values equal: the interval is that value '
      f'(ᶜ; the bootstrap distribution is a point and BCa is undefined). Where BCa is undefined '
      f'on a sample that varies, the percentile interval of the same resamples (ᵖ). '
      f'With few seeds these intervals are narrower than their nominal level (measured on '
      f'normal samples: a 95% interval covers the mean in about 84% of draws at n = 5 and 90% '
      f'at n = 10), so a marked difference whose interval nearly touches 0 is tentative; more '
      f'seeds narrow the intervals and make them honest (Bouthillier et al. 2021, Agarwal et '
      f'al. 2021).')


def markdown(collection: Collection, table: Sequence[Row], **method: Any) -> str:
  """summary.md: a header naming the sweep, the caption (:func:`caption`), one table per metric
  and the runs not in the tables."""
  d = collection.definition
  done = len(collection.records)
  total = done + sum(p.state != 'duplicate' for p in collection.problems)
  seeds = ', '.join(str(s) for s in collection.seeds)
  lines = [f'# Sweep {os.path.basename(collection.sweep_dir)}', '',
           f'Config `{d.get("config", "?")}`, seeds {seeds or "?"}, baseline '
           f'`{collection.baseline}`: {done} of {total} runs finished.', '',
           caption(**method), '']
  by_metric: dict[str, list[Row]] = {}
  for row in table:
    by_metric.setdefault(row.metric, []).append(row)
  if not by_metric:
    lines += ['No finished runs.', '']
  for name, metric_rows in by_metric.items():
    metric = METRIC[name]
    unit = f' ({metric.unit})' if metric.unit else ''
    better = 'higher' if metric.higher_is_better else 'lower'
    lines += [f'## {metric.title}{unit}, {better} is better', '',
              '| variant | n | mean [CI] | Δ vs baseline [CI] | n paired | P(better) |',
              '|---|---:|---:|---:|---:|---:|']
    for r in metric_rows:
      if r.variant == collection.baseline:
        delta = 'baseline'
      else:
        delta = _with_interval(r.delta, r.delta_ci_low, r.delta_ci_high, r.delta_ci_method,
                               metric.decimals, sign=True)
        if r.significant:
          delta = f'**{delta}** *'
      p = '–' if math.isnan(r.p_better) else f'{r.p_better:.2f}'
      lines.append(f'| `{r.variant}` | {r.n} | '
                   f'{_with_interval(r.mean, r.ci_low, r.ci_high, r.ci_method, metric.decimals)} '
                   f'| {delta} | {r.n_paired} | {p} |')
    lines.append('')
  if collection.problems:
    counts: dict[str, int] = {}
    for p in collection.problems:
      counts[p.state] = counts.get(p.state, 0) + 1
    summary = ', '.join(f'{n} {state}' for state, n in sorted(counts.items()))
    lines += [f'## Runs not in the tables ({summary})', '']
    lines += [f'- {p.line()}' for p in collection.problems]
    lines.append('')
  return '\n'.join(lines)


def _new_figure(width: float, height: float):
  # The object-oriented API without pyplot: no global backend switched, no GUI, nothing
  # imported until a plot is drawn; savefig renders PNG with Agg.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  return Figure(figsize=(width, height), layout='constrained')


def plot_deltas(path: str, collection: Collection, table: Sequence[Row]) -> None:
  """``path`` (PNG): per metric, each variant's paired difference from the baseline with its
  interval (red where it excludes 0), a line at 0, the baseline on top."""
  metrics = [m for m in METRICS if any(r.metric == m.name for r in table)]
  variants = collection.variants
  ncols = min(3, len(metrics))
  nrows = -(-len(metrics) // ncols)
  fig = _new_figure(3.8 * ncols + 1.5, (0.4 * len(variants) + 1.4) * nrows + 0.4)
  axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
  for ax in axes[len(metrics):]:
    ax.set_visible(False)
  for ax, metric in zip(axes, metrics):
    by_variant = {r.variant: r for r in table if r.metric == metric.name}
    for y, variant in enumerate(variants):
      r = by_variant.get(variant)
      if r is None or math.isnan(r.delta):
        continue
      color = 'C3' if r.significant else ('0.5' if variant == collection.baseline else 'C0')
      if not math.isnan(r.delta_ci_low):
        xerr = [[r.delta - r.delta_ci_low], [r.delta_ci_high - r.delta]]
        ax.errorbar(r.delta, y, xerr=xerr, fmt='o', color=color, capsize=3)
      else:
        ax.plot(r.delta, y, 'o', color=color)
    ax.axvline(0.0, color='0.3', linewidth=0.8)
    unit = f' ({metric.unit})' if metric.unit else ''
    arrow = 'higher is better' if metric.higher_is_better else 'lower is better'
    ax.set_title(f'{metric.title}{unit}', fontsize=9)
    ax.set_xlabel(f'Δ vs baseline ({arrow})', fontsize=8)
    ax.grid(axis='x', alpha=0.3)
  axes[0].set_yticks(range(len(variants)), variants, fontsize=8)
  axes[0].invert_yaxis()
  fig.suptitle('Paired difference from the baseline, mean over seeds with its interval '
               '(red: excludes 0)', fontsize=10)
  fig.savefig(path, dpi=110)


def _curve(runs: Sequence[list[dict[str, Any]]], split: str, key: str, scale: float):
  """Steps logged by every run, and the values ``[run, step]`` of ``key`` there."""
  series = [{r['step']: scale * float(r[key]) for r in records
             if r.get('split') == split and r.get(key) is not None} for records in runs]
  series = [s for s in series if s]
  if not series:
    return None, None
  steps = sorted(set.intersection(*(set(s) for s in series)))
  return np.array(steps), np.array([[s[t] for t in steps] for s in series])


def plot_curves(path: str, collection: Collection) -> bool:
  """``path`` (PNG): training loss and held-out top-1 (raw weights, %) against the step, per
  variant the mean over its finished seeds with a min-max band, at the steps every seed logged.
  False (and no file) when no run logged anything."""
  panels = (('train', 'loss', 1.0, 'Training loss'), ('eval', 'top1', 100.0,
                                                      'Held-out top-1, raw weights (%)'))
  runs = {v: [read_metrics(r.run_dir) for r in collection.records if r.variant == v]
          for v in collection.variants}
  if not any(records for rs in runs.values() for records in rs):
    return False
  fig = _new_figure(11, 4.2)
  axes = fig.subplots(1, 2, squeeze=False)[0]
  for ax, (split, key, scale, title) in zip(axes, panels):
    for i, variant in enumerate(collection.variants):
      steps, values = _curve(runs[variant], split, key, scale)
      if steps is None or not steps.size:
        continue
      color = f'C{i % 10}'
      ax.plot(steps, values.mean(axis=0), color=color, linewidth=1.2,
              label=f'{variant} (n={values.shape[0]})')
      ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2,
                      linewidth=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7, loc='best')
  fig.suptitle('Learning curves: mean over seeds, band from min to max', fontsize=10)
  fig.savefig(path, dpi=110)
  return True


@dataclasses.dataclass(frozen=True)
class Summary:
  """What :func:`summarize` wrote: the paths, the Markdown text and the rows."""
  csv: str
  markdown_path: str
  markdown: str
  plots: list[str]
  rows: list[Row]
  collection: Collection


def summarize(sweep_dir: str, *, confidence_level: float = CONFIDENCE_LEVEL,
              n_resamples: int = N_RESAMPLES, seed: int = SEED, plots: bool = True) -> Summary:
  """Writes ``sweep_dir``'s summary.csv, summary.md and (``plots``) deltas.png and curves.png
  from the runs finished so far, and returns them. Running it again on the same runs writes the
  same files (the bootstrap's generator is seeded ``seed``)."""
  collection = collect(sweep_dir)
  method = dict(confidence_level=confidence_level, n_resamples=n_resamples, seed=seed)
  table = rows(collection, **method)
  csv_path = os.path.join(collection.sweep_dir, 'summary.csv')
  write_csv(csv_path, table)
  text = markdown(collection, table, **method)
  md_path = os.path.join(collection.sweep_dir, 'summary.md')
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write(text)
  written = []
  if plots and table:
    path = os.path.join(collection.sweep_dir, 'deltas.png')
    plot_deltas(path, collection, table)
    written.append(path)
  if plots and collection.records:
    path = os.path.join(collection.sweep_dir, 'curves.png')
    if plot_curves(path, collection):
      written.append(path)
  return Summary(csv_path, md_path, text, written, table, collection)
