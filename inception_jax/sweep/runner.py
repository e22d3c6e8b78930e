"""Sweeps: variants of a config, each trained with the same seeds, in one resumable directory.

A sweep is declared in the config file beside ``get_config`` (big_vision's convention)::

    def sweep_smoothing(add, arg=None):
      add(name='recipe', baseline=True)                 # the config as it is
      add({'loss.label_smoothing': 0.0}, name='no smoothing')
      for point in product({'loss.aux_weight': [0.0, 0.2]}):
        add(point)

or on the command line (``--grid=loss.label_smoothing=0.0,0.1``; several ``--grid`` give their
product). Every variant is trained with the same seeds (``seed`` 0..N-1, or ``init_seed`` /
``data_seed`` alone when the config fixes the other), so that variants are compared seed for seed
(Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks": data order,
augmentation and initialisation each move results). Runs go seed-major: every variant's seed 0
before any seed 1, so a sweep stopped half-way is already a paired comparison.

On disk, ``DIR/sweep.json`` is the definition (config file and its hash, overrides, variants,
seeds, code revision) and ``DIR/runs/<run id>/`` each run's workdir (``config.json``,
``checkpoints/``, ``metrics.jsonl``, ``results.json``) with ``status.json`` and ``log.txt``. A
run's id is its variant's overrides made readable, its seed and a hash of its whole resolved
config. Relaunching the same command skips finished runs, resumes interrupted ones from their
checkpoints (the training loop's bitwise resume) and starts the rest; a directory whose
definition differs is refused, naming the fields, unless extended (``extend=True``).

Runs that differ only in numbers the train step takes as data (rates, schedule, weight decay,
label smoothing, auxiliary weight, EMA decay) or in their seed share one compiled train step in
the process (:func:`inception_jax.train.build`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import inspect
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Sequence

import ml_collections

from inception_jax import errors

log = logging.getLogger('inception_jax.sweep')

DEFINITION = 'sweep.json'
RUNS = 'runs'
STATUS = 'status.json'
BASELINE = 'baseline'
# What a relaunch must find as it was (else refused, unless extended).
COMPARED = ('config', 'config_sha256', 'arg', 'overrides', 'variants', 'baseline', 'seeds',
            'code')


# ------------------------------------------------------------------------ declaring points

def product(axes: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Every combination of the values of ``axes`` (``{field: values}``), the last axis fastest."""
  names = list(axes)
  return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


def zipped(axes: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The i-th value of every axis together (all of one length)."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise errors.UserError(f'zipped axes have different lengths: '
                           f'{ {k: len(v) for k, v in axes.items()} }')
  return [dict(zip(axes, values)) for values in zip(*axes.values())]


def chain(*groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """The points of each group, one group after the other."""
  return [dict(p) for group in groups for p in group]


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  overrides: dict[str, Any]


class Points:
  """The ``add`` handed to a ``sweep_NAME(add)`` function: ``add({field: value, ...})`` or
  ``add(**{'field': value})`` adds a variant; ``name=`` names it (default: its overrides);
  ``baseline=True`` makes it the baseline (default: the first)."""

  def __init__(self):
    self.variants: list[Variant] = []
    self.baseline: str | None = None

  def __call__(self, fields: dict[str, Any] | None = None, /, *, name: str | None = None,
               baseline: bool = False, **more: Any) -> None:
    overrides = {**(fields or {}), **more}
    name = name or variant_name(overrides)
    if any(v.name == name for v in self.variants):
      raise errors.UserError(f'sweep: two variants are named {name!r}; give each its own name=')
    self.variants.append(Variant(name, overrides))
    if baseline:
      if self.baseline is not None:
        raise errors.UserError(f'sweep: both {self.baseline!r} and {name!r} are marked baseline')
      self.baseline = name


def variant_name(overrides: dict[str, Any]) -> str:
  """``field=value,...`` of ``overrides``, or ``'baseline'`` for none."""
  if not overrides:
    return BASELINE
  return ','.join(f'{k}={_short(v)}' for k, v in overrides.items())


def _short(value: Any) -> str:
  return repr(value) if isinstance(value, str) else str(value)


def parse_grid(specs: Sequence[str], base) -> list[dict[str, Any]]:
  """``--grid=FIELD=V1,V2`` flags as the product of their points, each value read as the type of
  ``FIELD`` in ``base`` (a field that does not exist is refused, with the nearest names)."""
  axes: dict[str, list[Any]] = {}
  for spec in specs:
    field, sep, values = spec.partition('=')
    field = field.strip()
    if not sep or not field or not values:
      raise errors.UserError(f'--grid={spec}: write --grid=FIELD=V1,V2 (e.g. '
                             '--grid=loss.label_smoothing=0.0,0.1)')
    current = _lookup(base, field, f'--grid={spec}')
    axes[field] = [_parse_value(v.strip(), current, f'--grid={spec}') for v in values.split(',')]
  return product(axes)


def _lookup(config, field: str, where: str) -> Any:
  node = config
  parts = field.split('.')
  for depth, key in enumerate(parts):
    if not hasattr(node, 'keys') or key not in node:
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      near = difflib.get_close_matches(key, keys, n=3)
      hint = f' (did you mean {", ".join(near)}?)' if near else ''
      raise errors.UserError(f'{where}: the config has no field '
                             f'{".".join(parts[:depth + 1])!r}{hint}')
    node = node[key]
  return node


def _parse_value(text: str, current: Any, where: str) -> Any:
  """``text`` as a value of ``current``'s type (a placeholder's: a Python literal)."""
  try:
    if isinstance(current, bool):
      if text.lower() in ('true', '1', 'yes'):
        return True
      if text.lower() in ('false', '0', 'no'):
        return False
      raise ValueError(text)
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    import ast
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  except ValueError:
    raise errors.UserError(f'{where}: {text!r} is not a {type(current).__name__}') from None


# ------------------------------------------------------------------------ configs and runs

def load_config_module(path: str):
  """The config file at ``path`` as a module (for its ``get_config`` and ``sweep_*``)."""
  name = 'inception_jax_sweep_config_' + hashlib.sha1(path.encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or not os.path.exists(path):
    raise errors.UserError(f'--config: no config file {path}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def declared(module, name: str, arg: str | None) -> Points:
  """The variants of ``sweep_<name>`` in ``module``."""
  fn = getattr(module, f'sweep_{name}', None)
  if fn is None:
    known = sorted(k[len('sweep_'):] for k in dir(module) if k.startswith('sweep_'))
    raise errors.UserError(
        f'--sweep={name}: {module.__file__} has no sweep_{name}(add); '
        + (f'it declares: {", ".join(known)}' if known else 'it declares no sweep_* function; '
           'use --grid=FIELD=V1,V2 or add one'))
  points = Points()
  if len(inspect.signature(fn).parameters) > 1:
    fn(points, arg)
  else:
    fn(points)
  if not points.variants:
    raise errors.UserError(f'--sweep={name}: sweep_{name} added no point')
  return points


def apply_overrides(config, overrides: dict[str, Any], where: str):
  """A copy of ``config`` with ``overrides`` (``{dotted field: value}``) set; a field that does
  not exist, or a value of another type, is refused naming the field."""
  config = copy.deepcopy(config)
  for field, value in overrides.items():
    _lookup(config, field, where)
    parent, _, key = field.rpartition('.')
    node = _lookup(config, parent, where) if parent else config
    try:
      node[key] = value
    except (TypeError, ValueError) as err:
      raise errors.UserError(f'{where}: {field}={value!r}: {err}') from None
  return config


def flat(config) -> dict[str, Any]:
  """``{dotted field: value}`` of a ConfigDict (placeholders as their values)."""
  out = {}

  def walk(node, prefix):
    for key in sorted(node.keys()):
      value = node[key]
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, f'{prefix}{key}.')
      else:
        out[prefix + key] = value
  walk(config, '')
  return out


def differences(config, default) -> dict[str, Any]:
  """The fields of ``config`` whose values differ from ``default``'s."""
  a, b = flat(config), flat(default)
  return {k: _jsonable(v) for k, v in a.items() if k not in b or b[k] != v}


def _jsonable(value):
  return list(value) if isinstance(value, tuple) else value


def config_digest(config) -> str:
  text = json.dumps({k: _jsonable(v) for k, v in flat(config).items()}, sort_keys=True,
                    default=str)
  return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Run:
  id: str
  variant: str
  seed: int
  overrides: dict[str, Any]
  config: Any = dataclasses.field(repr=False, compare=False)


def _slug(text: str) -> str:
  text = re.sub(r'[^A-Za-z0-9._=+-]+', '_', text).strip('_')
  return text[:80] or 'run'


def seed_field(config) -> str:
  """The field a sweep's seeds set: ``seed``, unless the config fixes ``init_seed`` or
  ``data_seed``, when the seeds move the other one alone."""
  init, order = config.get('init_seed'), config.get('data_seed')
  if init is not None and order is not None:
    raise errors.UserError('config.init_seed and config.data_seed are both set: the seeds would '
                           'change nothing; unset one of them')
  if order is not None:
    return 'init_seed'
  if init is not None:
    return 'data_seed'
  return 'seed'


def make_runs(base, variants: Sequence[Variant], seeds: Sequence[int]) -> list[Run]:
  """Every (variant, seed) run, seed-major, with its resolved config and id."""
  field = seed_field(base)
  runs, ids = [], set()
  configs = {v.name: apply_overrides(base, v.overrides, f'sweep point {v.name!r}')
             for v in variants}
  for seed in seeds:
    for v in variants:
      config = apply_overrides(configs[v.name], {field: int(seed)}, f'seed {seed}')
      run_id = f'{_slug(v.name)}-s{seed}-{config_digest(config)[:8]}'
      if run_id in ids:
        raise errors.UserError(f'sweep: variants resolve to the same config ({v.name!r}, seed '
                               f'{seed}); remove the duplicate')
      ids.add(run_id)
      runs.append(Run(run_id, v.name, int(seed), dict(v.overrides), config))
  return runs


def code_revision() -> str:
  """The git revision of the code (with a hash of uncommitted changes), else the version."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    head = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()
    diff = subprocess.run(['git', '-C', root, 'diff', 'HEAD', '--', 'inception_jax',
                           'experiments'], capture_output=True, text=True, check=True,
                          timeout=60).stdout
  except (OSError, subprocess.SubprocessError):
    import inception_jax
    return f'version {getattr(inception_jax, "__version__", "unknown")}'
  return head + (f'+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:12]}' if diff else '')


# ------------------------------------------------------------------------------ the sweep

@dataclasses.dataclass
class Sweep:
  """A sweep's definition and its runs (seed-major)."""
  directory: str
  definition: dict[str, Any]
  runs: list[Run]

  @property
  def baseline(self) -> str:
    return self.definition['baseline']

  def run_dir(self, run: Run | str) -> str:
    return os.path.join(self.directory, RUNS, run if isinstance(run, str) else run.id)

  def status(self, run: Run | str) -> dict[str, Any]:
    try:
      with open(os.path.join(self.run_dir(run), STATUS)) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {'state': 'pending'}

  def state(self, run: Run | str) -> str:
    return self.status(run).get('state', 'pending')

  def total_steps(self) -> dict[str, int]:
    """Steps of each run (its schedule's length on its dataset)."""
    from inception_jax import data, train
    out = {}
    for run in self.runs:
      out[run.id] = train.duration(run.config, data.info(run.config.data))[1]
    return out


def validate(sweep: Sweep) -> None:
  """Refuse a point whose config cannot run (``errors.ConfigError`` naming the variant and the
  field) before any run trains."""
  from inception_jax import train
  seen = set()
  for run in sweep.runs:
    if run.variant in seen:
      continue
    seen.add(run.variant)
    try:
      train.validate(run.config)
    except errors.ConfigError as err:
      raise errors.UserError(f'sweep point {run.variant!r}: {err}') from None


def define(directory: str, *, config_path: str, arg: str | None, base, default,
           variants: Sequence[Variant], baseline: str | None, seeds: Sequence[int],
           extend: bool = False, extra: dict[str, Any] | None = None) -> Sweep:
  """The sweep in ``directory``: written if new; checked against what is there if not (a
  difference is refused, naming each field, unless ``extend``, which keeps every finished run
  and adds the new ones)."""
  if not variants:
    raise errors.UserError('sweep: no variant; give --sweep=NAME or --grid=FIELD=V1,V2')
  if len(set(seeds)) != len(seeds) or not seeds:
    raise errors.UserError(f'sweep: seeds {list(seeds)} must be distinct and at least one')
  names = [v.name for v in variants]
  baseline = baseline or names[0]
  if baseline not in names:
    raise errors.UserError(f'sweep: baseline {baseline!r} is not among the variants {names}')
  with open(config_path, 'rb') as f:
    config_sha = hashlib.sha256(f.read()).hexdigest()
  definition = {
      'config': os.path.abspath(config_path), 'arg': arg, 'config_sha256': config_sha,
      'overrides': differences(base, default), 'baseline': baseline,
      'variants': [{'name': v.name, 'overrides': {k: _jsonable(x) for k, x in v.overrides.items()}}
                   for v in variants],
      'seeds': [int(s) for s in seeds], 'code': code_revision(), **(extra or {}),
  }
  path = os.path.join(directory, DEFINITION)
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise errors.UserError(f'--workdir={directory} is a file; give a directory for the sweep')
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changed = [k for k in COMPARED if _canonical(old.get(k)) != _canonical(definition.get(k))]
    if changed and not extend:
      details = '; '.join(f'{k}: {_brief(old.get(k))} -> {_brief(definition.get(k))}'
                          for k in changed)
      raise errors.UserError(
          f'{directory} holds another sweep ({details}); relaunch with the same command, use '
          'another --workdir, or pass --extend to keep its finished runs and add these')
    if changed:
      log.warning('extending %s: %s changed', directory, ', '.join(changed))
      definition['history'] = old.get('history', []) + [{k: old.get(k) for k in COMPARED}]
  runs = make_runs(base, variants, seeds)
  definition['runs'] = [{'id': r.id, 'variant': r.variant, 'seed': r.seed} for r in runs]
  os.makedirs(os.path.join(directory, RUNS), exist_ok=True)
  _write_json(path, definition)
  return Sweep(os.path.abspath(directory), definition, runs)


def open_sweep(directory: str) -> Sweep:
  """The sweep already defined in ``directory`` (for a single run's task, or a report)."""
  path = os.path.join(directory, DEFINITION)
  if not os.path.exists(path):
    raise errors.UserError(f'{directory} holds no sweep ({DEFINITION} is missing)')
  with open(path) as f:
    definition = json.load(f)
  module = load_config_module(definition['config'])
  default = module.get_config(definition['arg']) if definition['arg'] is not None else (
      module.get_config())
  base = apply_overrides(default, definition['overrides'], f'{path} overrides')
  variants = [Variant(v['name'], v['overrides']) for v in definition['variants']]
  runs = make_runs(base, variants, definition['seeds'])
  return Sweep(os.path.abspath(directory), definition, runs)


def _canonical(value):
  return json.dumps(value, sort_keys=True, default=str)


def _brief(value) -> str:
  text = json.dumps(value, sort_keys=True, default=str)
  return text if len(text) <= 120 else text[:117] + '...'


def _write_json(path: str, value) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2, default=str)
  os.replace(tmp, path)


def set_status(sweep: Sweep, run: Run, state: str, **extra: Any) -> None:
  """Write ``run``'s ``status.json`` (process 0 of a run over several processes)."""
  if 'jax' in sys.modules and sys.modules['jax'].process_index() != 0:
    return
  os.makedirs(sweep.run_dir(run), exist_ok=True)
  _write_json(os.path.join(sweep.run_dir(run), STATUS),
              {'state': state, 'variant': run.variant, 'seed': run.seed,
               'overrides': {k: _jsonable(v) for k, v in run.overrides.items()},
               'time': time.time(), **extra})


# ----------------------------------------------------------------------------- executing

def train_one(sweep: Sweep, run: Run) -> dict[str, Any]:
  """Train ``run`` in its directory (resuming from its checkpoint), recording its state; its
  log lines also go to the run's ``log.txt``. Returns the loop's results (after a preemption
  signal: ``{'preempted_at_step': N, ...}``, the run's state ``'interrupted'``)."""
  from inception_jax import train
  workdir = sweep.run_dir(run)
  os.makedirs(workdir, exist_ok=True)
  handler = logging.FileHandler(os.path.join(workdir, 'log.txt'))
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
  root = logging.getLogger('inception_jax')
  root.addHandler(handler)
  if root.level == logging.NOTSET or root.level > logging.INFO:
    handler.setLevel(logging.INFO)
    root.setLevel(logging.INFO)
  set_status(sweep, run, 'running')
  try:
    results = train.train_and_evaluate(run.config, workdir)
  except BaseException as err:
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
      set_status(sweep, run, 'interrupted', error=type(err).__name__)
      raise
    set_status(sweep, run, 'failed', error=_first_line(err))
    with open(os.path.join(workdir, 'error.txt'), 'w') as f:
      f.write(''.join(traceback.format_exception(err)))
    raise
  finally:
    root.removeHandler(handler)
    handler.close()
  if 'preempted_at_step' in results:
    set_status(sweep, run, 'interrupted', step=results['preempted_at_step'])
    return results
  set_status(sweep, run, 'done', wall_time_s=results.get('wall_time_s'))
  return results


def _first_line(err: BaseException) -> str:
  text = str(err).strip().splitlines()
  return f'{type(err).__name__}: {text[0] if text else ""}'.strip()


@dataclasses.dataclass
class Outcome:
  done: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)  # finished before this launch
  failed: dict[str, str] = dataclasses.field(default_factory=dict)
  interrupted: str | None = None


def train_group(sweep: Sweep, runs: Sequence[Run], shared_batches: bool = False) -> None:
  """Train ``runs`` (the seeds of one variant) as one vmapped program
  (:mod:`inception_jax.sweep.members`), recording their states."""
  from inception_jax.sweep import members
  for run in runs:
    set_status(sweep, run, 'running', vmap_members=len(runs))
  try:
    members.train_members([r.config for r in runs], [sweep.run_dir(r) for r in runs],
                          shared_batches=shared_batches)
  except BaseException as err:
    for run in runs:
      set_status(sweep, run, 'interrupted' if isinstance(err, KeyboardInterrupt) else 'failed',
                 error=_first_line(err))
    raise
  for run in runs:
    set_status(sweep, run, 'done', vmap_members=len(runs))


def groups(runs: Sequence[Run], size: int) -> list[list[Run]]:
  """``runs`` in groups of up to ``size`` seeds of one variant, in the order of each group's
  first run (so seed-major as far as groups allow)."""
  by_variant: dict[str, list[Run]] = {}
  for run in runs:
    by_variant.setdefault(run.variant, []).append(run)
  out = []
  for run_list in by_variant.values():
    out.extend(run_list[i:i + size] for i in range(0, len(run_list), size))
  order = {run.id: i for i, run in enumerate(runs)}
  return sorted(out, key=lambda g: order[g[0].id])


def execute(sweep: Sweep, *, runner: Callable[[Sweep, Run], Any] = train_one,
            parallel: int = 1, devices_per_run: int = 0, vmap_seeds: int = 1,
            shared_batches: bool = False) -> Outcome:
  """Train every run not yet done, seed-major: one after another in this process
  (``parallel=1``; ``vmap_seeds=K``: K seeds of a variant at a time as one program), or in
  ``parallel`` processes at a time, each on its own ``devices_per_run`` GPUs
  (``CUDA_VISIBLE_DEVICES``). A failed run is recorded and the rest go on; a signal stops the
  sweep after the current run's checkpoint."""
  outcome = Outcome()
  todo = []
  for run in sweep.runs:
    state = sweep.state(run)
    if state == 'done':
      outcome.skipped.append(run.id)
    else:
      todo.append(run)
  total = len(sweep.runs)
  if outcome.skipped:
    log.info('sweep: %d of %d runs finished earlier; %d to train', len(outcome.skipped), total,
             len(todo))
  if parallel > 1:
    return _execute_parallel(sweep, todo, outcome, parallel, devices_per_run)
  if vmap_seeds > 1:
    return _execute_groups(sweep, todo, outcome, vmap_seeds, shared_batches)
  started = time.time()
  for i, run in enumerate(todo):
    previous = sweep.status(run)
    log.info('sweep: run %d/%d %s (variant %s, seed %d)%s', len(outcome.skipped) + i + 1, total,
             run.id, run.variant, run.seed,
             f' - {previous["state"]} before, resuming' if previous['state'] != 'pending' else '')
    try:
      results = runner(sweep, run)
      if isinstance(results, dict) and 'preempted_at_step' in results:
        outcome.interrupted = (f'{run.id} stopped at step {results["preempted_at_step"]} '
                               '(checkpoint written)')
        break
      outcome.done.append(run.id)
    except KeyboardInterrupt:
      outcome.interrupted = f'{run.id} interrupted'
      break
    except Exception as err:  # recorded; the sweep goes on
      outcome.failed[run.id] = _first_line(err)
      if sweep.state(run) != 'failed':
        set_status(sweep, run, 'failed', error=_first_line(err))
      log.error('sweep: run %s failed: %s (traceback in %s)', run.id, _first_line(err),
                os.path.join(sweep.run_dir(run), 'error.txt'))
    _progress(outcome, total, i + 1, len(todo), started)
  return outcome


def _execute_groups(sweep: Sweep, todo: list[Run], outcome: Outcome, size: int,
                    shared_batches: bool) -> Outcome:
  started, trained, total = time.time(), 0, len(sweep.runs)
  for group in groups(todo, size):
    log.info('sweep: runs %s (variant %s, seeds %s) as one program', ', '.join(r.id for r in group),
             group[0].variant, [r.seed for r in group])
    try:
      train_group(sweep, group, shared_batches)
      outcome.done.extend(r.id for r in group)
    except KeyboardInterrupt:
      outcome.interrupted = f'{group[0].id} and its group interrupted'
      break
    except Exception as err:  # recorded; the sweep goes on
      for run in group:
        outcome.failed[run.id] = _first_line(err)
      log.error('sweep: runs %s failed: %s', ', '.join(r.id for r in group), _first_line(err))
    trained += len(group)
    _progress(outcome, total, trained, len(todo), started)
  return outcome


def _progress(outcome: Outcome, total: int, trained: int, todo: int, started: float) -> None:
  finished = len(outcome.done) + len(outcome.skipped)
  per_run = (time.time() - started) / max(trained, 1)
  eta = per_run * (todo - trained)
  log.info('sweep: %d/%d runs done%s | ETA %s', finished, total,
           f', {len(outcome.failed)} failed' if outcome.failed else '', _duration(eta))


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def _execute_parallel(sweep: Sweep, todo: list[Run], outcome: Outcome, parallel: int,
                      devices_per_run: int) -> Outcome:
  """Runs in ``parallel`` child processes (``python -m inception_jax.sweep.runner DIR ID``),
  each given its own device set; this process never starts a JAX backend."""
  pending = list(todo)
  slots: dict[int, tuple[subprocess.Popen, Run] | None] = {i: None for i in range(parallel)}
  started, trained = time.time(), 0
  total = len(sweep.runs)
  while pending or any(slots.values()):
    for slot, job in slots.items():
      if job is None and pending:
        run = pending.pop(0)
        env = dict(os.environ)
        if devices_per_run:
          ids = range(slot * devices_per_run, (slot + 1) * devices_per_run)
          env['CUDA_VISIBLE_DEVICES'] = ','.join(map(str, ids))
        log.info('sweep: starting %s (variant %s, seed %d) in process slot %d', run.id,
                 run.variant, run.seed, slot)
        proc = subprocess.Popen([sys.executable, '-m', 'inception_jax.sweep.runner',
                                 sweep.directory, run.id], env=env)
        slots[slot] = (proc, run)
    time.sleep(0.5)
    for slot, job in slots.items():
      if job is None or job[0].poll() is None:
        continue
      proc, run = job
      slots[slot] = None
      trained += 1
      state = sweep.status(run)
      if proc.returncode == 0 and state.get('state') == 'done':
        outcome.done.append(run.id)
      elif state.get('state') == 'interrupted':
        outcome.interrupted = f'{run.id} interrupted'
      else:
        outcome.failed[run.id] = state.get('error', f'exit status {proc.returncode}')
        log.error('sweep: run %s failed: %s', run.id, outcome.failed[run.id])
      _progress(outcome, total, trained, len(todo), started)
    if outcome.interrupted:
      for job in slots.values():
        if job is not None:
          job[0].terminate()
      for job in slots.values():
        if job is not None:
          job[0].wait()
      break
  return outcome


class RunTask:
  """One run of a sweep as a picklable callable (a SLURM array task, a child process); returns
  the loop's results (``{'preempted_at_step': N, ...}`` after a preemption signal).
  ``distributed``: the run spans several processes (SLURM nodes), which first join
  ``jax.distributed`` (arguments detected from SLURM's environment)."""

  def __init__(self, directory: str, run_id: str, distributed: bool = False):
    self.directory, self.run_id, self.distributed = directory, run_id, distributed

  def __call__(self) -> dict[str, Any]:
    if self.distributed:
      from inception_jax import mesh
      mesh.initialize_distributed()
    sweep = open_sweep(self.directory)
    run = next((r for r in sweep.runs if r.id == self.run_id), None)
    if run is None:
      raise errors.UserError(f'{self.directory} has no run {self.run_id}')
    if sweep.state(run) == 'done':
      with open(os.path.join(sweep.run_dir(run), 'results.json')) as f:
        return json.load(f)
    return train_one(sweep, run)

  def __repr__(self) -> str:
    return f'RunTask({self.directory!r}, {self.run_id!r})'


def _main(argv: list[str]) -> int:
  """``python -m inception_jax.sweep.runner DIR RUN_ID``: train one run of a defined sweep."""
  if len(argv) != 3:
    print('usage: python -m inception_jax.sweep.runner SWEEP_DIR RUN_ID', file=sys.stderr)
    return 2
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
  logger = logging.getLogger('inception_jax')
  logger.handlers[:] = [handler]
  logger.setLevel(logging.INFO)
  logger.propagate = False
  try:
    results = RunTask(argv[1], argv[2])()
  except errors.UserError as err:
    print(f'FATAL: {err}', file=sys.stderr)
    return 1
  return 130 if 'preempted_at_step' in results else 0


if __name__ == '__main__':
  sys.exit(_main(sys.argv))
