"""Reliability: a hard kill or a preemption loses nothing and changes nothing, bad checkpoints and
non-finite steps never replace good state, a storage error never discards progress, bad configs
fail in one line before compiling, and two processes train together as one (and resume, or stop,
together).

Runs go through the real command line (``python -m experiments.train``) in subprocesses where the
exit status or several processes are the point, otherwise through ``train.train_and_evaluate``;
all share a persistent compilation cache, on the test-only tiny digits of train_utils.py.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

import jax
import numpy as np
import pytest

from inception_jax import checkpoint, checkpoint_recovery as recovery, train
from train_utils import NAN_STEP, final_state, read_metrics, tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

# A run long enough to be killed mid-way: 8 examples, batch 8, a checkpoint every 4 steps.
STEPS, EVERY = 16, 4
COMMAND = dict(total_steps=STEPS, checkpoint_every_steps=EVERY, keep_checkpoints=2)
CONFIG_FILE = f'''
import sys
sys.path.insert(0, {TESTS!r})
from train_utils import tiny


def get_config():
  return tiny('v1', **{COMMAND!r})
'''


@pytest.fixture(scope='module')
def cache():
  return os.environ['JAX_COMPILATION_CACHE_DIR']  # the session's (conftest.py)


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('config') / 'tiny_v1.py'
  path.write_text(CONFIG_FILE)
  return str(path)


def _env(cache_dir: str, **extra) -> dict[str, str]:
  return dict(os.environ, PYTHONPATH=REPO + os.pathsep + TESTS, JAX_COMPILATION_CACHE_DIR=cache_dir,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', **extra)


def _launch(config_file: str, workdir: str, cache_dir: str, *extra: str) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', f'--config={config_file}',
       f'--workdir={workdir}', *extra], cwd=REPO, env=_env(cache_dir), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
  _, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return err


def _last_logged_step(workdir: str) -> int:
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return max([json.loads(line)['step'] for line in f if line.strip()] or [0])
  except (OSError, ValueError):
    return 0


def _wait(proc: subprocess.Popen, done: Callable[[], bool], what: str) -> None:
  """Polls ``done`` until it holds, failing if the run ends first or after 10 minutes."""
  deadline = time.time() + 600
  while not done():
    assert proc.poll() is None, f'the run ended before {what}: {proc.stderr.read()[-3000:]}'
    assert time.time() < deadline, f'no {what} after 10 minutes'
    time.sleep(0.01)


def _wait_for_step(proc: subprocess.Popen, workdir: str, step: int) -> None:
  _wait(proc, lambda: _last_logged_step(workdir) >= step, f'step {step}')


def _wait_for_checkpoint(proc: subprocess.Popen, workdir: str, step: int) -> None:
  """Until the checkpoint of ``step`` is committed: the run logs a step before its asynchronous
  save of an earlier one has finished (orbax renames the step's directory into place last)."""
  path = os.path.join(workdir, 'checkpoints', str(step))
  _wait(proc, lambda: os.path.isdir(path), f'checkpoint {step}')


def _assert_bitwise_equal(a, b) -> None:
  leaves_a, tree_a = jax.tree.flatten(jax.device_get(a))
  leaves_b, tree_b = jax.tree.flatten(jax.device_get(b))
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, cache):
  """The final state of the command's run, uninterrupted: run in this process (the same programs
  under the same XLA flags, so the same bits) with the config the command loads."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  config = tiny('v1', **COMMAND)
  train.train_and_evaluate(config, workdir)
  return final_state(workdir, config)


def test_sigkill_then_relaunch_is_bitwise_the_uninterrupted_run(tmp_path, config_file, cache,
                                                                 uninterrupted):
  workdir = str(tmp_path)
  kill_at = random.Random().randint(EVERY + 1, STEPS - 6)  # after the first checkpoint
  proc = _launch(config_file, workdir, cache)
  _wait_for_checkpoint(proc, workdir, EVERY)
  _wait_for_step(proc, workdir, kill_at)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, 'results.json'))

  err = _finish(_launch(config_file, workdir, cache))  # the same command again
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['steps'] == STEPS
  assert EVERY <= results['resumed_from_step'] <= kill_at + EVERY, (kill_at, results)
  assert f'at step {results["resumed_from_step"]}' in err
  state = final_state(workdir, tiny('v1', **COMMAND))
  # Parameters, batch statistics, optimizer state, EMA, step, rng: all bit for bit.
  _assert_bitwise_equal(state, uninterrupted)


def test_sigterm_checkpoints_exits_cleanly_and_the_relaunch_continues(tmp_path, config_file, cache,
                                                                      uninterrupted):
  workdir = str(tmp_path)
  proc = _launch(config_file, workdir, cache)
  _wait_for_step(proc, workdir, EVERY + 2)
  proc.send_signal(signal.SIGTERM)
  err = _finish(proc)  # exit status 0
  assert 'SIGTERM received' in err
  stopped = [int(word) for line in err.splitlines() if 'preempted' in line
             for word in line.split() if word.isdigit()]
  assert stopped, err[-2000:]
  step = stopped[0]
  assert EVERY + 2 <= step < STEPS
  ckpt = checkpoint.Checkpointer(workdir)
  assert ckpt.latest_step() == step  # written at the step it stopped, not the last periodic one
  ckpt.close()
  assert not os.path.exists(os.path.join(workdir, 'results.json'))

  _finish(_launch(config_file, workdir, cache))
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['resumed_from_step'] == step
  _assert_bitwise_equal(final_state(workdir, tiny('v1', **COMMAND)), uninterrupted)


def _checkpoint_files(directory: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(root, f), directory)
                for root, _, files in os.walk(directory) for f in files)


@pytest.fixture(scope='module')
def straight_six(tmp_path_factory, cache):
  """The final state of an uninterrupted 6-step run, checkpointing every 2 steps."""
  workdir = str(tmp_path_factory.mktemp('straight_six') / 'run')
  config = tiny('v1', total_steps=6, checkpoint_every_steps=2)
  train.train_and_evaluate(config, workdir)
  return final_state(workdir, config)


@pytest.fixture(scope='module')
def killed(tmp_path_factory, config_file, cache):
  """A workdir of a real killed run: the command (checkpointing every 2 steps) killed with
  SIGKILL once its checkpoint of step 4 is committed; what it was writing after that (a step-6
  temporary directory, a committed step 6) is removed, so that its checkpoints are those of
  steps 2 and 4."""
  import shutil
  workdir = str(tmp_path_factory.mktemp('killed') / 'run')
  proc = _launch(config_file, workdir, cache, '--config.checkpoint_every_steps=2',
                 '--config.keep_checkpoints=3')
  _wait_for_checkpoint(proc, workdir, 4)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  directory = os.path.join(workdir, 'checkpoints')
  for name in os.listdir(directory):
    if name.split('.')[0].isdigit() and int(name.split('.')[0]) > 4:
      shutil.rmtree(os.path.join(directory, name))
  assert sorted(os.listdir(directory)) == ['2', '4']
  return workdir


def _overwrite(path: str) -> None:
  """Same size, other bytes: a bad sector, a torn write."""
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(random.Random(path).randbytes(size))


def _damage(step4: str, damage: str) -> str:
  """Damages the checkpoint directory ``step4`` as ``damage`` says; the reason the run must give
  (a regular expression)."""
  files = _checkpoint_files(step4)
  by_size = sorted(files, key=lambda f: -os.path.getsize(os.path.join(step4, f)))
  if damage == 'every file overwritten':
    for f in files:
      _overwrite(os.path.join(step4, f))
    return f'its manifest {recovery.MANIFEST} does not parse'
  if damage == 'every file overwritten, no manifest':  # as written before manifests existed
    os.remove(os.path.join(step4, recovery.MANIFEST))
    for f in files:
      if f != recovery.MANIFEST:
        _overwrite(os.path.join(step4, f))
    return re.escape('_CHECKPOINT_METADATA does not parse (no manifest to check the rest against)')
  if damage == 'metadata overwritten':
    for f in ('_CHECKPOINT_METADATA', os.path.join('default', '_METADATA')):
      _overwrite(os.path.join(step4, f))
    return 'default/_METADATA does not match its CRC-32 in the manifest'
  if damage == 'largest data files truncated':
    for f in by_size[:2]:
      with open(os.path.join(step4, f), 'r+b') as fh:
        fh.truncate(os.path.getsize(os.path.join(step4, f)) // 2)
    return r'default/\S+ has \d+ bytes, the manifest says \d+'
  if damage == 'largest data file removed':
    os.remove(os.path.join(step4, by_size[0]))
    return re.escape(f'{by_size[0]} is missing')
  assert damage == 'a manifest entry mismatching'  # the files as written, the manifest not
  path = os.path.join(step4, recovery.MANIFEST)
  with open(path) as f:
    manifest = json.load(f)
  manifest['files'][by_size[0]]['crc32'] ^= 1
  with open(path, 'w') as f:
    json.dump(manifest, f)
  return re.escape(f'{by_size[0]} does not match its CRC-32 in the manifest')


@pytest.mark.parametrize('damage', [
    'every file overwritten', 'every file overwritten, no manifest', 'metadata overwritten',
    'largest data files truncated', 'largest data file removed', 'a manifest entry mismatching'])
def test_corrupt_checkpoint_is_reported_and_the_one_before_is_used(tmp_path, killed, straight_six,
                                                                   damage, caplog):
  workdir = _copy(killed, tmp_path)  # checkpoints of steps 2 and 4
  step4 = os.path.join(workdir, 'checkpoints', '4')
  before = _checkpoint_files(step4)
  reason = _damage(step4, damage)
  damaged = _checkpoint_files(step4)

  config = tiny('v1', total_steps=6, checkpoint_every_steps=2)  # a shorter run: accepted
  with caplog.at_level('ERROR', logger='inception_jax'):
    results = train.train_and_evaluate(config, workdir)
  assert results['resumed_from_step'] == 2
  errors_logged = [r.getMessage() for r in caplog.records
                   if r.levelname == 'ERROR' and r.name.startswith('inception_jax')]
  assert re.fullmatch(rf'checkpoint of step 4 at {re.escape(step4)} is corrupt: {reason}; '
                      'falling back to the checkpoint before it', errors_logged[0]), errors_logged
  # Nothing deleted: the damaged checkpoint is set aside whole.
  aside = os.listdir(os.path.join(workdir, checkpoint.UNREADABLE_DIR))
  assert len(aside) == 1 and aside[0].startswith('4-')
  assert _checkpoint_files(os.path.join(workdir, checkpoint.UNREADABLE_DIR, aside[0])) == damaged
  assert len(damaged) == len(before) - (damage.startswith(('largest data file removed',
                                                           'every file overwritten, no')))
  assert checkpoint.Checkpointer(workdir).all_steps() == [2, 4, 6]  # its own step 4 rewritten
  # ... and the run is the one it would have been.
  _assert_bitwise_equal(final_state(workdir, config), straight_six)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_good_checkpoints(tmp_path, cache):
  config = tiny('v1', total_steps=6, checkpoint_every_steps=2, **{'data.name': 'digits_tiny_nan'})
  with pytest.raises(FloatingPointError, match=rf'step {NAN_STEP}: non-finite loss \(nan\)'):
    train.train_and_evaluate(config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.all_steps() == [NAN_STEP - 1]  # nothing after the bad step was written
  ckpt.close()
  state = final_state(str(tmp_path), config)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_nonfinite_update_skipped_and_counted_when_configured(tmp_path, cache):
  config = tiny('v1', total_steps=4, nonfinite='skip', **{'data.name': 'digits_tiny_nan'})
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['skipped_updates'] == 1
  records = read_metrics(str(tmp_path))
  assert [r['nonfinite'] for r in records] == [float(r['step'] == NAN_STEP) for r in records]
  state = final_state(str(tmp_path), config)
  assert int(state.skipped_updates) == 1 and int(state.step) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves((state.params, state.ema_params)))


def test_a_nonfinite_state_is_never_written(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, {'w': np.ones(3, np.float32)})
  with pytest.raises(FloatingPointError, match='step 2: the training state holds NaN or Inf'):
    ckpt.save(2, {'w': np.array([1.0, np.inf, 0.0], np.float32)})
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [1]


# ------------------------------------------------------------------- config validation

@pytest.mark.parametrize('overrides,message', [
    ({'model.name': 'inception_v9'}, "config.model.name: unknown model 'inception_v9'"),
    ({'data.image_size': 64},
     r'config.data.image_size=64 is below the minimum input size of inception_v1 \(65\)'),
    ({'batch_size': 6}, r'config.batch_size=6 must be a positive multiple of the device count'),
    ({'data.name': 'imagefolder:/no/such/folder'}, 'config.data.name=.*/no/such/folder'),
    ({'nonfinite': 'ignore'}, "config.nonfinite='ignore'"),
])
def test_config_errors_are_one_line_naming_the_field(overrides, message, monkeypatch):
  if 'batch_size' in overrides:  # 4 devices: 6 does not split
    monkeypatch.setattr(train.mesh_lib, 'make_mesh',
                        lambda: train.mesh_lib.Mesh(np.array(jax.devices() * 4), ('data',)))
  with pytest.raises(ValueError, match=message) as err:
    train.validate(tiny('v1', **overrides))
  assert '\n' not in str(err.value)


def test_workdir_of_another_model_is_refused_before_compiling(tmp_path, cache):
  train.train_and_evaluate(tiny('v1', total_steps=1), str(tmp_path))
  with pytest.raises(ValueError, match=r"config.model.name='inception_v3', but .* holds "
                                       r'inception_v1 checkpoints of another model') as err:
    train.train_and_evaluate(tiny('v3', total_steps=1), str(tmp_path))
  assert '\n' not in str(err.value)
  with open(tmp_path / 'config.json') as f:  # the run's record is not overwritten
    assert json.load(f)['model']['name'] == 'inception_v1'


def test_command_line_reports_a_config_error_in_one_line(tmp_path, config_file, cache):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', f'--config={config_file}',
       f'--workdir={tmp_path}', '--config.data.image_size=40'],
      cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      'FATAL: config.data.image_size=40 is below the minimum input size of inception_v1 (65)')


# ------------------------------------------------------------------- a relaunch, changed

def _command(module: str, cache_dir: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=_env(cache_dir),
                        capture_output=True, text=True, timeout=600)


def _fatal(proc: subprocess.CompletedProcess) -> str:
  """The one ``FATAL:`` line (at exit orbax's asyncio threads sometimes print after it)."""
  fatal = [line for line in proc.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1, proc.stderr[-3000:]
  return fatal[0]


# The two_checkpoints run's config, as the command line gives it.
AS_RUN = ('--config.total_steps=4', '--config.checkpoint_every_steps=2',
          '--config.keep_checkpoints=3')


@pytest.mark.parametrize('change,message', [
    (('--config.dtype=bfloat16', '--config.batch_size=16'),
     r"config.batch_size=16 \(the run's: 8\), config.dtype='bfloat16' \(the run's: 'float32'\): a "
     r'change of the program or of the meaning of the checkpoints in (\S+) \(its config: '
     r'\1/config.json\); use another --workdir'),
    (('--config.optimizer.lr=0.2', '--config.seed=3', '--config.total_steps=6'),
     r"config.optimizer.lr=0.2 \(the run's: 0.025\), config.seed=3 \(the run's: 0\): the resumed "
     r'run would not be the one it continues \(its config: \S+/config.json\); set '
     r'--config.allow_config_change=True to continue with the change, or use another --workdir'),
])
def test_a_relaunch_that_changes_the_run_is_refused_in_one_line(
    tmp_path, two_checkpoints, config_file, cache, change, message):
  workdir = _copy(two_checkpoints, tmp_path)
  os.remove(os.path.join(workdir, 'results.json'))
  before, files = _snapshot(workdir), sorted(os.listdir(workdir))
  proc = _command('experiments.train', cache, f'--config={config_file}', f'--workdir={workdir}',
                  *AS_RUN, *change)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert re.fullmatch('FATAL: ' + message, _fatal(proc)), _fatal(proc)
  assert _snapshot(workdir) == before and sorted(os.listdir(workdir)) == files  # nothing written


def test_a_relaunch_that_changes_what_comes_next_continues_and_keeps_each_config(
    tmp_path, two_checkpoints, config_file, cache):
  """A longer run is accepted and listed; a new seed only with allow_config_change, listed too.
  config.json stays the first launch's, config.1.json is this one's."""
  workdir = _copy(two_checkpoints, tmp_path)
  with open(os.path.join(workdir, 'config.json')) as f:
    first = f.read()
  proc = _command('experiments.train', cache, f'--config={config_file}', f'--workdir={workdir}',
                  *AS_RUN, '--config.total_steps=6', '--config.seed=3',
                  '--config.allow_config_change=True')
  assert proc.returncode == 0, proc.stderr[-3000:]
  listed = [line for line in proc.stderr.splitlines() if 'with its config changed' in line]
  assert len(listed) == 1 and listed[0].endswith(
      f"continuing the run in {workdir} with its config changed: config.total_steps=6 (the run's: "
      "4), config.seed=3 (the run's: 0)"), proc.stderr[-3000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert (results['resumed_from_step'], results['steps']) == (4, 6)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == first
  with open(os.path.join(workdir, 'config.1.json')) as f:
    second = json.load(f)
  assert (second['total_steps'], second['seed'], second['allow_config_change']) == (6, 3, True)
  assert sorted(n for n in os.listdir(workdir) if n.startswith('config')) == [
      'config.1.json', 'config.json']


@pytest.mark.parametrize('name,expected', [
    ('model.options.dropout_rate', 'refused'), ('data.image_size', 'refused'),
    ('optimizer.name', 'refused'), ('batch_size', 'refused'), ('dtype', 'refused'),
    ('total_steps', 'accepted'), ('checkpoint_every_steps', 'accepted'),
    ('data.data_dir', 'accepted'), ('log_every_steps', 'accepted'),
    ('seed', 'allowed'), ('optimizer.lr', 'allowed'), ('optimizer.decay_epochs', 'allowed'),
    ('loss.label_smoothing', 'allowed'), ('a_field_added_later', 'allowed'),
])
def test_what_a_config_change_on_resume_is(name, expected):
  from inception_jax import resume
  assert resume.kind(name) == expected


# ------------------------------------------------------------------- evaluate a workdir

@pytest.mark.parametrize('case', ['another model', 'no such workdir', 'no such step'])
def test_evaluate_answers_a_wrong_workdir_or_step_in_one_line(tmp_path, two_checkpoints,
                                                              config_file, cache, case):
  workdir = _copy(two_checkpoints, tmp_path)
  before, files = _snapshot(workdir), sorted(os.listdir(workdir))
  directory = os.path.join(workdir, 'checkpoints')
  args = [f'--config={config_file}', f'--workdir={workdir}']
  if case == 'another model':
    args.append('--config.model.name=inception_v2')
    expected = (r"FATAL: config.model.name='inception_v2', but \S+ holds inception_v1 checkpoints "
                r'of another model or head \(.*\); use another --workdir')
  elif case == 'no such workdir':
    args[1] = f'--workdir={workdir}/missing'
    expected = re.escape(f'FATAL: --workdir {workdir}/missing does not exist')
  else:
    args.append('--step=3')
    expected = re.escape(f'FATAL: no checkpoint of step 3 in {directory}; it holds steps 2, 4 '
                         '(latest: 4, best: 4)')
  proc = _command('experiments.evaluate', cache, *args)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert re.fullmatch(expected, _fatal(proc)), _fatal(proc)
  assert 'Traceback' not in proc.stderr and 'trying again' not in proc.stderr
  assert _snapshot(workdir) == before and sorted(os.listdir(workdir)) == files
  assert not os.path.exists(f'{workdir}/missing')


def test_predict_classifies_with_a_workdirs_checkpoint_or_names_the_steps_there(
    tmp_path, two_checkpoints, capsys):
  from PIL import Image
  from inception_jax import entry, predict
  image = str(tmp_path / 'digit.png')
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(image)
  assert entry.run(predict.main, ['--workdir', two_checkpoints, '--step', '7', image]) == 1
  directory = os.path.join(two_checkpoints, 'checkpoints')
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f'FATAL: no checkpoint of step 7 in {directory}; it holds steps 2, 4 (latest: 4, best: 4)')
  assert entry.run(predict.main, ['--workdir', two_checkpoints, '--step', '2', image]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f'{image}: inception_v1' and len(out) == 6  # the top 5 of 10 classes
  assert all(re.fullmatch(rf'  {rank}\. \d +\d+\.\d\d%  \(class \d\)', line)
             for rank, line in enumerate(out[1:], 1)), out


# ------------------------------------------------------------------- Ctrl-C

def _read_until(proc: subprocess.Popen, text: str) -> list[str]:
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if text in line:
      return lines
  raise AssertionError(f'the run ended before {text!r}: {"".join(lines)[-3000:]}')


def test_ctrl_c_checkpoints_and_exits_130_and_a_second_one_stops_at_once(tmp_path, config_file,
                                                                         cache):
  workdir = str(tmp_path)
  proc = _launch(config_file, workdir, cache)
  _wait_for_step(proc, workdir, EVERY + 2)
  proc.send_signal(signal.SIGINT)
  err = proc.communicate(timeout=600)[1]
  assert proc.returncode == 130, err[-3000:]
  stopped = [line for line in err.splitlines() if 'preempted (SIGINT)' in line]
  assert len(stopped) == 1, err[-3000:]
  step = int(re.search(r'checkpoint of step (\d+) written to', stopped[0]).group(1))
  assert EVERY + 2 <= step < STEPS
  assert stopped[0].endswith(f'{os.path.join(workdir, "checkpoints", str(step))}; relaunch the '
                             'same command to continue')
  ckpt = checkpoint.Checkpointer(workdir)
  assert ckpt.latest_step() == step  # written at the step it stopped
  ckpt.close()
  assert 'Traceback' not in err and not os.path.exists(os.path.join(workdir, 'results.json'))

  # Relaunched, then Ctrl-C twice: the second stops it at once.
  proc = _launch(config_file, workdir, cache)
  _read_until(proc, f'at step {step}')  # resumed
  _wait_for_step(proc, workdir, step + 1)
  proc.send_signal(signal.SIGINT)
  _read_until(proc, 'SIGINT received')
  proc.send_signal(signal.SIGINT)
  err = proc.communicate(timeout=600)[1]
  assert proc.returncode == 130, err[-3000:]
  assert [line for line in err.splitlines() if line.startswith('FATAL')] == [
      'FATAL: interrupted twice; stopped at once (relaunch the same command to continue from the '
      'latest checkpoint)'], err[-3000:]
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


# ------------------------------------------------------------------- two processes

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


_PROCESS = r'''
import sys
import jax, numpy as np
sys.path.insert(0, {tests!r})
from inception_jax import mesh, train
from train_utils import tiny
mesh.initialize_distributed('localhost:{port}', 2, {pid})
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
results, state = train.run(tiny('v1', total_steps=1), {workdir!r})
local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)
leaves = jax.tree_util.tree_flatten_with_path(local)[0]
np.savez({out!r}, **{{jax.tree_util.keystr(k): v for k, v in leaves}})
print('RESULTS', results['eval']['loss'], results['processes'], results['devices'])
'''


def test_two_processes_train_together_like_one(tmp_path, cache):
  """``jax.distributed`` with a localhost coordinator, 2 processes of 2 CPU devices each; each
  feeds half of the global batch of 8. Both end with identical state, equal (within float
  tolerance: the cross-device sums round differently) to one process with the whole batch.
  One step: from the random start, later steps amplify the rounding (tests/test_train.py's
  eight-device test measures that)."""
  port, workdir = _free_port(), str(tmp_path / 'run')
  # The compile flags of this process (conftest.py): the single-process run below is compiled
  # with them, and other flags compile another program, which rounds differently.
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'.strip()
  procs = []
  for pid in range(2):
    code = _PROCESS.format(tests=TESTS, port=port, pid=pid, workdir=workdir,
                           out=str(tmp_path / f'state{pid}.npz'))
    procs.append(subprocess.Popen(
        [sys.executable, '-c', code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(cache, XLA_FLAGS=flags)))
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert all(out.split('RESULTS')[1].split()[1:] == ['2', '4'] for out, _ in outs)

  a, b = (dict(np.load(tmp_path / f'state{pid}.npz')) for pid in range(2))
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)

  config = tiny('v1', total_steps=1)
  single, state = train.run(config, str(tmp_path / 'single'))
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  one = {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}
  assert one.keys() == a.keys()
  # One step from the same start, within the rounding of the sums' order, which backpropagation
  # through BatchNorm over 8 examples at initialisation amplifies (measured with the tests' XLA
  # flags: BatchNorm biases, zero at the start, 0.5% apart after the step on one EPYC, 2.3% on
  # another, with AVX-512; the weights' update the same). Per array, relative to its size: arrays
  # that start at zero (biases, the statistics) are all update, so a wrong reduction
  # (per-process statistics or gradients over half the batch) shows there at tens of percent.
  errors = {key: float(np.linalg.norm(a[key] - one[key]) / (np.linalg.norm(one[key]) or 1.0))
            for key in a}
  worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
  assert worst[0][1] <= 5e-2, worst
  loss = float(outs[0][0].split('RESULTS')[1].split()[0])
  np.testing.assert_allclose(loss, single['eval']['loss'], rtol=1e-3)
  # The two processes wrote one checkpoint directory together.
  assert final_state(workdir, config).step == 1


# ------------------------------------------------------------------- storage faults
# Faults as preemptible pods meet them: files on disk overwritten or truncated, a read that the
# storage fails (EIO), a disk that fills during an asynchronous save. A corrupt checkpoint is
# set aside and the one before used; anything else stops the run with every checkpoint in place.

@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory, cache):
  """A workdir with the checkpoints of steps 2 and 4 of a 4-step tiny run."""
  workdir = str(tmp_path_factory.mktemp('two_checkpoints') / 'run')
  train.train_and_evaluate(tiny('v1', total_steps=4, checkpoint_every_steps=2), workdir)
  assert checkpoint.Checkpointer(workdir).all_steps() == [2, 4]
  return workdir


def _copy(workdir: str, to) -> str:
  import shutil
  return shutil.copytree(workdir, str(to / 'run'))


def _snapshot(workdir: str) -> dict[str, bytes]:
  """Every file under ``workdir/checkpoints`` with its content."""
  root = os.path.join(workdir, 'checkpoints')
  out = {}
  for name in _checkpoint_files(root):
    with open(os.path.join(root, name), 'rb') as f:
      out[name] = f.read()
  return out


def _data_file(workdir: str, step: int) -> str:
  """The largest file of a checkpoint: array data, under ``default/``."""
  directory = os.path.join(workdir, 'checkpoints', str(step))
  return max((os.path.join(directory, f) for f in _checkpoint_files(directory)),
             key=os.path.getsize)


@pytest.fixture
def failing_reads(monkeypatch):
  """``fail(n, error)``: the next ``n`` checkpoint reads of this process raise ``error`` (as the
  storage would, from inside orbax's read); returns the list of the paths read."""
  import orbax.checkpoint as ocp
  monkeypatch.setattr(recovery, 'RESTORE_BACKOFF_S', 0.01)
  real = ocp.StandardCheckpointHandler.restore
  calls = []

  def fail(n: int, error: BaseException):
    def restore(self, directory, *args, **kwargs):
      calls.append(str(directory))
      if len(calls) <= n:
        raise error
      return real(self, directory, *args, **kwargs)
    monkeypatch.setattr(ocp.StandardCheckpointHandler, 'restore', restore)
    return calls
  return fail


def test_a_transient_read_error_is_retried_and_nothing_is_moved(tmp_path, two_checkpoints,
                                                                failing_reads, caplog):
  workdir = _copy(two_checkpoints, tmp_path)
  before = _snapshot(workdir)
  calls = failing_reads(2, OSError(errno.EIO, 'Input/output error'))
  with caplog.at_level('WARNING', logger='inception_jax'):
    results = train.train_and_evaluate(tiny('v1', total_steps=4, checkpoint_every_steps=2),
                                       workdir)
  assert results['resumed_from_step'] == 4  # the newest, not step 0 and not the one before
  assert len(calls) == 3 and all(c.endswith(os.path.join('4', 'default')) for c in calls)
  assert sum('trying again' in r.getMessage() for r in caplog.records) == 2
  assert not os.path.exists(os.path.join(workdir, checkpoint.UNREADABLE_DIR))
  assert _snapshot(workdir) == before


def test_a_persistent_read_error_stops_with_every_checkpoint_in_place(tmp_path, two_checkpoints,
                                                                      failing_reads):
  workdir = _copy(two_checkpoints, tmp_path)
  os.remove(os.path.join(workdir, 'results.json'))
  before = _snapshot(workdir)
  calls = failing_reads(100, OSError(errno.EIO, 'Input/output error'))
  step4 = os.path.join(workdir, 'checkpoints', '4')
  with pytest.raises(checkpoint.CheckpointUnavailableError,
                     match=rf'step 4 at {step4} could not be read: OSError: .*Input/output error '
                           rf'\(tried {recovery.RESTORE_RETRIES + 1} times; every checkpoint'):
    train.train_and_evaluate(tiny('v1', total_steps=6, checkpoint_every_steps=2), workdir)
  assert len(calls) == recovery.RESTORE_RETRIES + 1  # step 2 never tried: no silent fallback
  assert _snapshot(workdir) == before
  assert not os.path.exists(os.path.join(workdir, checkpoint.UNREADABLE_DIR))
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


def test_an_error_after_the_files_verified_is_reported_as_a_bug_at_once(tmp_path,
                                                                        two_checkpoints,
                                                                        failing_reads):
  """Not the storage (no retry) and not corruption (no fallback): every checkpoint in place."""
  workdir = _copy(two_checkpoints, tmp_path)
  os.remove(os.path.join(workdir, 'results.json'))
  before = _snapshot(workdir)
  calls = failing_reads(100, KeyError('params'))
  step4 = os.path.join(workdir, 'checkpoints', '4')
  with pytest.raises(checkpoint.CheckpointIncompatibleError,
                     match=rf"^checkpoint of step 4 at {step4} verified intact against its "
                           r"manifest, and restoring it failed: KeyError: 'params'; a bug or a "
                           r'checkpoint of other versions or another config, not the storage'):
    train.train_and_evaluate(tiny('v1', total_steps=6, checkpoint_every_steps=2), workdir)
  assert len(calls) == 1
  assert _snapshot(workdir) == before
  assert not os.path.exists(os.path.join(workdir, checkpoint.UNREADABLE_DIR))


@pytest.mark.parametrize('error,corrupt', [
    (OSError(errno.EIO, 'Input/output error'), False),
    (TimeoutError('read timed out'), False),
    (MemoryError(), False),
    (KeyError('params'), False),  # a bug is no evidence about the checkpoint
    (FileNotFoundError(errno.ENOENT, 'No such file or directory'), True),
    (ValueError('UNKNOWN: Error reading local file "x": [os_error_code=\'5\']'), False),
    (ValueError('NOT_FOUND: Error reading local file "x": [os_error_code=\'2\']'), True),
    (ValueError('OUT_OF_RANGE: Requested byte range [0, 55155) is not valid'), True),
    (ValueError('RESOURCE_EXHAUSTED: No space left on device [os_error_code=\'28\']'), False),
])
def test_what_counts_as_corrupt(error, corrupt):
  wrapped = Exception('Encountered error while reading array index')  # orbax's wrapper
  wrapped.__cause__ = error
  assert checkpoint.is_corrupt(error) == checkpoint.is_corrupt(wrapped) == corrupt


def test_every_checkpoint_corrupt_stops_the_command_non_zero_until_told_to_start_over(
    tmp_path, two_checkpoints, config_file, cache):
  workdir = _copy(two_checkpoints, tmp_path)
  for step in (2, 4):  # every file overwritten (of step 2, all but its manifest)
    directory = os.path.join(workdir, 'checkpoints', str(step))
    for name in _checkpoint_files(directory):
      if step == 4 or name != recovery.MANIFEST:
        _overwrite(os.path.join(directory, name))
  before = _snapshot(workdir)
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', f'--config={config_file}',
       f'--workdir={workdir}'], cwd=REPO, env=_env(cache), capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  # The error is one line; at exit orbax's asyncio threads sometimes print after it ("RuntimeError:
  # Event loop is closed"), so it is looked for, not taken as the last line.
  fatal = [line for line in proc.stderr.splitlines() if line.startswith('FATAL: ')]
  assert len(fatal) == 1, proc.stderr[-3000:]
  last = fatal[0]
  assert re.fullmatch(
      f'FATAL: no checkpoint in {re.escape(os.path.join(workdir, "checkpoints"))} can be restored, '
      f'tried newest first: step 4: its manifest {recovery.MANIFEST} does not parse; step 2: '
      r'\S+ does not match its CRC-32 in the manifest\. Nothing was moved or deleted\. To start '
      r'over from step 0 .*, set --config\.restart_if_unrestorable=true', last), last
  assert _snapshot(workdir) == before  # nothing moved, nothing written
  assert not os.path.exists(os.path.join(workdir, checkpoint.UNREADABLE_DIR))

  results = train.train_and_evaluate(
      tiny('v1', total_steps=2, restart_if_unrestorable=True), workdir)
  assert results['resumed_from_step'] == 0
  aside = sorted(os.listdir(os.path.join(workdir, checkpoint.UNREADABLE_DIR)))
  assert [name.split('-')[0] for name in aside] == ['2', '4']
  assert checkpoint.Checkpointer(workdir).all_steps() == [2]


def test_a_disk_that_fills_during_a_save_stops_the_run_and_keeps_the_checkpoints_before(
    tmp_path, two_checkpoints, monkeypatch):
  """ENOSPC raised by the array writer, which runs in orbax's background thread: it must surface
  (measured with a real 64 KiB tmpfs: tensorstore's RESOURCE_EXHAUSTED ... No space left on
  device, raised by orbax at the next wait)."""
  from orbax.checkpoint._src.serialization import serialization
  workdir = _copy(two_checkpoints, tmp_path)
  os.remove(os.path.join(workdir, 'results.json'))
  real = serialization.async_serialize_from_host

  async def write(rslices, tensorstore_spec, **kwargs):
    if re.search(r'checkpoints/[68][./]', json.dumps(tensorstore_spec)):
      raise OSError(errno.ENOSPC, 'No space left on device')
    return await real(rslices, tensorstore_spec, **kwargs)
  monkeypatch.setattr(serialization, 'async_serialize_from_host', write)
  config = tiny('v1', total_steps=8, checkpoint_every_steps=2)
  with pytest.raises(checkpoint.CheckpointWriteError,
                     match=r'writing the checkpoint of step 6 to .*checkpoints/6 failed: OSError: '
                           r'.*No space left on device; the checkpoints before it are kept as '
                           r'they were \(latest: step 4'):
    train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  assert checkpoint.Checkpointer(workdir).all_steps() == [2, 4]
  assert int(final_state(workdir, config).step) == 4  # still readable
  assert not os.path.exists(os.path.join(workdir, 'results.json'))



def test_a_real_full_disk_surfaces_from_the_asynchronous_save(tmp_path):
  """The same on a 256 KiB tmpfs (where this test may mount one: root on Linux): tensorstore's
  RESOURCE_EXHAUSTED from orbax's background thread, reported with the step, and the checkpoint
  before it still reads."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  if sys.platform != 'linux' or os.geteuid() != 0 or subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(disk)],
      capture_output=True).returncode:
    pytest.skip('mounting a small tmpfs needs root on Linux')
  try:
    ckpt = checkpoint.Checkpointer(str(disk / 'run'))
    small = {'w': np.ones(100, np.float32)}
    ckpt.save(1, small)
    noise = np.random.default_rng(0).random(200_000).astype(np.float32)  # 800 kB, incompressible
    ckpt.save(2, {'w': noise})
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match=r'step 2 to .*checkpoints/2 failed: .*No space left on device.* '
                             r'\(latest: step 1'):
      ckpt.close()
    again = checkpoint.Checkpointer(str(disk / 'run'))
    assert again.all_steps() == [1]
    np.testing.assert_array_equal(again.restore(1, small)['w'], small['w'])
    again.close()
  finally:
    subprocess.run(['umount', str(disk)], check=True)


_RESUME = r'''
import errno, sys
import jax
sys.path.insert(0, {tests!r})
import orbax.checkpoint as ocp
from inception_jax import checkpoint, checkpoint_recovery, mesh, train
from train_utils import tiny
mesh.initialize_distributed('localhost:{port}', 2, {pid})
checkpoint_recovery.RESTORE_BACKOFF_S = 0.01
if jax.process_index() == 1:  # this process alone cannot read the checkpoints
  def fail(*args, **kwargs):
    raise {error}
  {patch} = fail
try:
  train.run(tiny('v1', total_steps=6, checkpoint_every_steps=2), {workdir!r})
except checkpoint.CheckpointError as err:
  sys.exit(f'STOPPED {{type(err).__name__}}: {{err}}')
'''


@pytest.mark.parametrize('patch,error,process1', [
    ('ocp.StandardCheckpointHandler.restore', "OSError(errno.EIO, 'Input/output error')",
     'could not read it'),
    ('checkpoint_recovery.verify', "checkpoint.CorruptCheckpointError('a file is missing')",
     'found it corrupt'),
])
def test_two_processes_stop_together_when_one_cannot_read_the_checkpoint(
    tmp_path, two_checkpoints, cache, patch, error, process1):
  """Process 1 fails to read (storage, or files it sees missing) what process 0 reads: both stop,
  neither resumes or starts over alone, and nothing is moved."""
  workdir = _copy(two_checkpoints, tmp_path)
  before = _snapshot(workdir)
  errs = [err for _, err in _two_processes(_RESUME, workdir, cache, error=error, patch=patch,
                                           expect=1)]
  last = [err.strip().splitlines()[-1] for err in errs]
  assert last[0].startswith('STOPPED CheckpointUnavailableError: the processes do not agree on '
                            f'the checkpoint of step 4 at {workdir}/checkpoints/4: process 0 '
                            f'read it, process 1 {process1}'), last[0]
  assert last[1].startswith('STOPPED Checkpoint'), last[1]
  assert _snapshot(workdir) == before
  assert not os.path.exists(os.path.join(workdir, checkpoint.UNREADABLE_DIR))


_AGREE = r'''
import sys
import jax, numpy as np
sys.path.insert(0, {tests!r})
from inception_jax import checkpoint, mesh, train
from train_utils import tiny
mesh.initialize_distributed('localhost:{port}', 2, {pid})
config = tiny('v1', total_steps=6, checkpoint_every_steps=2)
ckpt = checkpoint.Checkpointer({workdir!r})
step, state = ckpt.restore_latest(train.build(config).abstract)
ckpt.close()
print('RESUMED', step, int(state.step), float(sum(np.abs(np.asarray(x.addressable_data(0))).sum()
                                                 for x in jax.tree.leaves(state.params))))
'''


def test_two_processes_fall_back_together_past_a_corrupt_checkpoint(tmp_path, two_checkpoints,
                                                                    cache):
  """Step 4 truncated on the shared disk: both processes pass it over and restore step 2, the
  same state; process 0 sets step 4 aside once."""
  workdir = _copy(two_checkpoints, tmp_path)
  victim = _data_file(workdir, 4)
  with open(victim, 'r+b') as f:
    f.truncate(os.path.getsize(victim) // 2)
  outs = _two_processes(_AGREE, workdir, cache)
  resumed = [out.split('RESUMED')[1].split() for out, _ in outs]
  assert resumed[0][:2] == resumed[1][:2] == ['2', '2'] and resumed[0][2] == resumed[1][2]
  aside = os.listdir(os.path.join(workdir, checkpoint.UNREADABLE_DIR))
  assert len(aside) == 1 and aside[0].startswith('4-')
  assert checkpoint.Checkpointer(workdir).all_steps() == [2]


def _two_processes(script: str, workdir: str, cache_dir: str, **fields) -> list[tuple[str, str]]:
  """Runs ``script`` in 2 processes of 2 CPU devices each (jax.distributed on localhost);
  their (stdout, stderr), each process having exited 0 (``expect=0``) or as told."""
  expect = fields.pop('expect', 0)
  port = _free_port()
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'.strip()
  procs = [subprocess.Popen(
      [sys.executable, '-c', script.format(tests=TESTS, port=port, pid=pid, workdir=workdir,
                                           **fields)],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=_env(cache_dir, XLA_FLAGS=flags)) for pid in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=300))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == expect, err[-3000:]
  return outs
