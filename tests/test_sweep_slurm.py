"""The SLURM launcher through submitit's local executor: real processes, no SLURM. A job array
of runs where one fails and the others finish; a time-limit notice (USR2) that reaches the run as
SIGTERM, which stops at a checkpoint, is requeued and resumes from it; a run that ignores the
notice requeued after the grace period; SIGTERM alone not requeued; the requeue hook."""

from __future__ import annotations

import os
import signal
import time

import pytest
from submitit.helpers import DelayedSubmission

from inception_jax.sweep import slurm

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


# The tasks run in the job processes, which import this module to unpickle them: module level.


class WriteTask:
  """Writes ``value`` to ``path`` and returns it doubled, or raises."""

  def __init__(self, path: str, value: int, fail: bool = False):
    self.path, self.value, self.fail = path, value, fail
    self.run_id = f'run{value}'

  def __call__(self):
    if self.fail:
      raise ValueError(f'bad value {self.value}\nsecond line of the message')
    with open(self.path, 'w') as f:
      f.write(str(self.value))
    return {'doubled': 2 * self.value, 'pid': os.getpid()}


class ResumableTask:
  """The training loop in small: ``steps`` steps of ``step_s`` seconds; SIGTERM makes it write a
  checkpoint (the step reached) after the current step and return ``{'preempted_at_step': N}``;
  a new launch resumes from the checkpoint. It checkpoints nowhere else, so a launch that starts
  past step 0 proves the previous one was stopped through SIGTERM. Each launch appends
  ``pid first_step`` to ``launches``."""

  def __init__(self, workdir: str, steps: int = 60, step_s: float = 0.05):
    self.workdir, self.steps, self.step_s = workdir, steps, step_s

  def _path(self, name):
    return os.path.join(self.workdir, name)

  def __call__(self):
    start = 0
    if os.path.exists(self._path('ckpt')):
      with open(self._path('ckpt')) as f:
        start = int(f.read())
    with open(self._path('launches'), 'a') as f:
      f.write(f'{os.getpid()} {start}\n')
    stop = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
      for step in range(start + 1, self.steps + 1):
        time.sleep(self.step_s)
        with open(self._path('progress.tmp'), 'w') as f:
          f.write(str(step))
        os.replace(self._path('progress.tmp'), self._path('progress'))
        if stop:
          with open(self._path('ckpt'), 'w') as f:
            f.write(str(step))
          return {'preempted_at_step': step, 'steps': self.steps}
    finally:
      signal.signal(signal.SIGTERM, previous)
    return {'steps': self.steps, 'resumed_from_step': start}


class DeafTask:
  """Handles no signal: on its first launch it sleeps (up to 60 s), on the next it returns."""

  def __init__(self, workdir: str):
    self.workdir = workdir

  def __call__(self):
    path = os.path.join(self.workdir, 'launches')
    with open(path, 'a') as f:
      f.write(f'{os.getpid()} 0\n')
    with open(path) as f:
      launch = len(f.readlines())
    if launch == 1:
      time.sleep(60)
    return {'launch': launch}


@pytest.fixture(autouse=True)
def _importable_in_jobs(monkeypatch):
  # The job processes unpickle this module's classes by reference (and this checkout's package).
  path = os.environ.get('PYTHONPATH')
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join([TESTS, REPO] + ([path] if path else [])))


def _launches(workdir, n, timeout_s=60.0):
  """The ``(pid, first_step)`` of the first ``n`` launches, once they have started."""
  path = os.path.join(workdir, 'launches')
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    if os.path.exists(path):
      with open(path) as f:
        lines = [tuple(map(int, line.split())) for line in f if line.strip()]
      if len(lines) >= n:
        return lines
    time.sleep(0.05)
  raise TimeoutError(f'{n} launch(es) did not start in {timeout_s} s')


def _wait_for_step(workdir, step, timeout_s=60.0):
  path = os.path.join(workdir, 'progress')
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    try:
      with open(path) as f:
        if int(f.read() or 0) >= step:
          return
    except (OSError, ValueError):
      pass
    time.sleep(0.02)
  raise TimeoutError(f'step {step} not reached in {timeout_s} s')


def test_an_array_of_runs_where_one_fails(tmp_path):
  tasks = [WriteTask(str(tmp_path / f'out{v}'), v, fail=(v == 2)) for v in (1, 2, 3)]
  jobs = slurm.submit(tasks, folder=str(tmp_path / 'jobs'), executor='local',
                      array_parallelism=2, timeout_min=2, cpus_per_task=1)
  assert len(jobs) == 3
  outcomes = slurm.wait(jobs, poll_s=0.1)
  assert [(o.label, o.state) for o in outcomes] == [('run1', 'done'), ('run2', 'failed'),
                                                    ('run3', 'done')]
  assert [o.result['doubled'] for o in outcomes if o.state == 'done'] == [2, 6]
  # Each in its own process, not this one.
  assert os.getpid() not in {o.result['pid'] for o in outcomes if o.state == 'done'}
  assert outcomes[1].error == 'ValueError: bad value 2'
  assert outcomes[1].line().endswith(': failed: ValueError: bad value 2')
  assert [(tmp_path / f'out{v}').read_text() for v in (1, 3)] == ['1', '3']
  assert not (tmp_path / 'out2').exists()


def test_a_time_limit_notice_checkpoints_requeues_and_resumes(tmp_path):
  work = str(tmp_path)
  jobs = slurm.submit([ResumableTask(work)], folder=str(tmp_path / 'jobs'), executor='local',
                      timeout_min=2)
  (pid, first), = _launches(work, 1)
  assert first == 0
  _wait_for_step(work, 5)
  os.kill(pid, signal.SIGUSR2)  # what SLURM's --signal=USR2@delay sends before the time limit
  (outcome,) = slurm.wait(jobs, poll_s=0.1)
  assert outcome.state == 'done', outcome.error
  launches = _launches(work, 2)
  assert len(launches) == 2 and launches[1][0] != pid
  with open(os.path.join(work, 'ckpt')) as f:
    stopped_at = int(f.read())
  # The notice reached the run as SIGTERM: it stopped at a checkpoint after step 5, and the
  # requeued launch started from it rather than from 0.
  assert 5 <= stopped_at < 60 and launches[1][1] == stopped_at
  assert outcome.result == {'steps': 60, 'resumed_from_step': stopped_at}
  # The requeued job ran what the requeue hook pickled: the same runner and task.
  submission = jobs[0].submission()
  assert isinstance(submission.function, slurm.Requeueable)
  assert isinstance(submission.args[0], ResumableTask) and submission.args[0].workdir == work


def test_a_run_deaf_to_the_notice_is_requeued_after_the_grace_period(tmp_path):
  work = str(tmp_path)
  jobs = slurm.submit([DeafTask(work)], folder=str(tmp_path / 'jobs'), executor='local',
                      timeout_min=2, grace_s=1.0)
  (pid, _), = _launches(work, 1)
  t0 = time.time()
  os.kill(pid, signal.SIGUSR2)
  (outcome,) = slurm.wait(jobs, poll_s=0.1)
  assert outcome.state == 'done' and outcome.result == {'launch': 2}
  assert time.time() - t0 < 30  # not the 60 s the first launch would have slept


def test_sigterm_alone_stops_at_a_checkpoint_without_requeuing(tmp_path):
  # scancel, or SLURM's own preemption: the scheduler decides whether the job comes back.
  work = str(tmp_path)
  jobs = slurm.submit([ResumableTask(work)], folder=str(tmp_path / 'jobs'), executor='local',
                      timeout_min=2)
  (pid, _), = _launches(work, 1)
  _wait_for_step(work, 3)
  os.kill(pid, signal.SIGTERM)
  # submitit waits 15 s for a result file that a shared file system may show late; a local
  # disk shows it at once.
  jobs[0]._results_timeout_s = 1  # pylint: disable=protected-access
  (outcome,) = slurm.wait(jobs, poll_s=0.1)
  assert outcome.state == 'failed' and 'has not produced any output' in outcome.error
  assert len(_launches(work, 1)) == 1
  with open(os.path.join(work, 'ckpt')) as f:
    assert int(f.read()) >= 3


def test_the_requeue_hook_resubmits_the_same_task(tmp_path):
  runner = slurm.Requeueable(grace_s=5.0)
  task = WriteTask(str(tmp_path / 'x'), 7)
  delayed = runner.checkpoint(task)
  assert isinstance(delayed, DelayedSubmission)
  assert delayed.function is runner and delayed.args == (task,) and delayed.kwargs == {}
  # Outside a job the runner only calls the task.
  assert runner(task)['doubled'] == 14 and (tmp_path / 'x').read_text() == '7'


def test_preempted_results_are_told_from_final_ones():
  assert slurm.is_preempted({'preempted_at_step': 3, 'steps': 10})
  assert not slurm.is_preempted({'eval': {'top1': 0.5}, 'steps': 10})
  assert not slurm.is_preempted(None)


def test_an_unknown_executor_is_refused(tmp_path):
  from inception_jax import errors
  with pytest.raises(errors.UserError, match='slurm, local, debug'):
    slurm.submit([WriteTask(str(tmp_path / 'x'), 1)], folder=str(tmp_path), executor='pbs')


def test_the_debug_executor_runs_in_this_process(tmp_path):
  jobs = slurm.submit([WriteTask(str(tmp_path / 'x'), 5)], folder=str(tmp_path / 'jobs'),
                      executor='debug')
  (outcome,) = slurm.wait(jobs, poll_s=0.05)
  assert outcome.state == 'done' and outcome.result == {'doubled': 10, 'pid': os.getpid()}


def test_the_slurm_job_array_asks_for_what_was_given(tmp_path, monkeypatch):
  # A stand-in sbatch that keeps the script it is given and answers as SLURM does.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  sbatch = bin_dir / 'sbatch'
  sbatch.write_text('#!/bin/sh\ncp "$1" "$(dirname "$0")/submitted.sh"\n'
                    'echo "Submitted batch job 4242"\n')
  sbatch.chmod(0o755)
  (bin_dir / 'srun').write_text('#!/bin/sh\nexit 1\n')  # submitit looks for it to know SLURM
  (bin_dir / 'srun').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  tasks = [WriteTask(str(tmp_path / f'x{v}'), v) for v in range(3)]
  jobs = slurm.submit(tasks, folder=str(tmp_path / 'jobs'), partition='gpu', nodes=2,
                      gpus_per_node=8, cpus_per_task=32, timeout_min=240, array_parallelism=2,
                      name='abl', extra={'slurm_account': 'lab'})
  assert [j.job_id for j in jobs] == ['4242_0', '4242_1', '4242_2']
  script = (bin_dir / 'submitted.sh').read_text().splitlines()
  for line in ('--array=0-2%2', '--partition=gpu', '--nodes=2', '--ntasks-per-node=1',
               '--gpus-per-node=8', '--cpus-per-task=32', '--time=240', '--signal=USR2@120',
               '--account=lab', '--job-name=abl'):
    assert f'#SBATCH {line}' in script, line
  assert any('srun' in s and 'submitit.core._submit' in s for s in script)
  # Each array task unpickles the runner and its own run.
  submission = jobs[1].submission()
  assert isinstance(submission.function, slurm.Requeueable)
  assert submission.function.grace_s == 90 and submission.args[0].value == 1


def test_slurm_without_slurm_is_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))  # no srun, no sbatch
  from inception_jax import errors
  with pytest.raises(errors.UserError, match='srun'):
    slurm.submit([WriteTask(str(tmp_path / 'x'), 1)], folder=str(tmp_path / 'jobs'))
