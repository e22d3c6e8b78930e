"""A sweep's runs past one machine: one SLURM job-array task per run, through submitit.

:func:`submit` sends the runs as one job array with at most ``array_parallelism`` tasks running
at once; each array task calls one run (a picklable callable without arguments, such as the
runner's task that trains one run of the sweep directory and returns its results) and returns
its result. :func:`wait` collects them: every run done or failed, with the exception's first line.
``executor='local'`` runs the same tasks as local processes (submitit's local executor: the CI's
way of testing this without SLURM), ``'debug'`` in this process.

Preemption and time limits. submitit asks SLURM for ``--signal=USR2@signal_delay_s``: USR2 comes
that long before the time limit (and, on clusters configured that way, before a preemption), and
submitit's handler then requeues the job (``scontrol requeue``) with what the callable's
``checkpoint`` returns, here the same runner and the same run (:class:`Requeueable`). Requeued
at once, a run would lose what it trained since its last checkpoint, so :class:`Requeueable`
first hands the notice to the run as SIGTERM, the training loop's preemption signal: the loop
writes a checkpoint after the current step and returns ``{'preempted_at_step': N, ...}``; then
the job is requeued, and the requeued task resumes the run from that checkpoint (the loop's
bitwise resume). A run that has not returned ``grace_s`` after the notice (one still compiling,
or in no loop that handles SIGTERM) is requeued anyway and resumes from its latest checkpoint.
With several processes per run (``nodes`` > 1), JAX's preemption service gets the SIGTERM and
stops every process at the same step; process 0 requeues the job.

SIGTERM alone (``scancel``, or SLURM's own preemption, which sends SIGTERM and later SIGKILL)
also stops the run at a checkpoint; the task then exits without a result, and whoever sent it
decides: a cluster with ``PreemptMode=REQUEUE`` requeues the job, which resumes the run; a
cancelled run stays cancelled (relaunching the sweep resumes it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, Callable, Mapping, Sequence

import submitit
from submitit.core import job_environment
from submitit.core import utils as submitit_utils

from inception_jax import errors

log = logging.getLogger('inception_jax.sweep.slurm')

EXECUTORS = ('slurm', 'local', 'debug')


def is_preempted(result: Any) -> bool:
  """Whether a run's result says it stopped at a preemption rather than finished: the training
  loop's ``{'preempted_at_step': N, ...}``."""
  return isinstance(result, Mapping) and 'preempted_at_step' in result


def _preemption_signal() -> signal.Signals:
  # submitit's: USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise (the same for every executor).
  return submitit.JobEnvironment._usr_sig()  # pylint: disable=protected-access


def _submitit_handles_preemption() -> bool:
  # Inside a job, submitit's process_job has installed its requeue handler before calling us.
  if threading.current_thread() is not threading.main_thread():
    return False
  handler = signal.getsignal(_preemption_signal())
  return isinstance(getattr(handler, '__self__', None), job_environment.SignalHandler)


class _Notice:
  """While a run is called inside a submitit job: a preemption or timeout notice goes to the run
  as SIGTERM; submitit's own handler (checkpoint, requeue, exit) is kept for afterwards, or for
  ``grace_s`` later if the run has not returned by then, or for a second notice."""

  def __init__(self, grace_s: float):
    self.grace_s = grace_s
    self.signum: int | None = None
    self.submitit_handler: Any = None
    self._escalated = False
    self._returned = threading.Event()

  def __enter__(self):
    self.sig = _preemption_signal()
    self.submitit_handler = signal.signal(self.sig, self._handle)
    return self

  def __exit__(self, *exc):
    self._returned.set()
    signal.signal(self.sig, self.submitit_handler)

  def _handle(self, signum, frame):
    if self.signum is not None:  # the grace period is over, or a second notice: requeue now
      self._escalated = True
      self.requeue(frame)
      return
    self.signum = signum
    term = signal.getsignal(signal.SIGTERM)
    if not callable(term):  # SIGTERM would kill the process: nobody to hand the notice to
      self._escalated = True
      self.requeue(frame)
      return
    log.warning('%s: preemption or time limit notice, passed to the run as SIGTERM; the job '
                'is requeued once the run has written its checkpoint (at most %.0f s)',
                signal.Signals(signum).name, self.grace_s)
    threading.Thread(target=self._escalate_after_grace, daemon=True).start()
    signal.raise_signal(signal.SIGTERM)

  def _escalate_after_grace(self):
    if not self._returned.wait(self.grace_s):
      log.warning('the run did not stop within %.0f s of the notice: requeuing it now (it '
                  'resumes from its latest checkpoint)', self.grace_s)
      os.kill(os.getpid(), self.sig)  # handled in the main thread, by _handle

  def requeue(self, frame=None) -> None:
    """submitit's handler: the callable's ``checkpoint`` goes to the job's pickle and the job is
    requeued, and this process exits (SystemExit); it raises ``UncompletedJobError`` when the job
    may not be requeued (timed out too often), and returns on processes other than the job's
    first (which is the one that requeues)."""
    handler = self.submitit_handler
    if callable(handler):
      handler(self.signum if self.signum is not None else self.sig, frame)


class Requeueable(submitit.helpers.Checkpointable):
  """Calls one run inside a submitit job so that a preemption or time limit requeues it, and the
  requeued job resumes it (module docstring). ``runner(task)`` returns ``task()``;
  ``runner.checkpoint(task)`` is submitit's requeue hook: the same runner and task
  (``DelayedSubmission(runner, task)``), since a run's progress lives in its own checkpoints, not
  in this object. ``preempted(result)`` tells a run's result at a preemption from a final one.
  Outside a submitit job (or in its debug executor) it only calls the task."""

  def __init__(self, grace_s: float = 90.0,
               preempted: Callable[[Any], bool] = is_preempted):
    self.grace_s = grace_s
    self.preempted = preempted

  def __call__(self, task: Callable[[], Any]) -> Any:
    if not _submitit_handles_preemption():
      return task()
    with _Notice(self.grace_s) as notice:
      result = task()
    if notice.signum is not None:
      # The run stopped at a checkpoint after the notice (or finished meanwhile: then the
      # requeued task finds it finished and only re-reads its results).
      if not self.preempted(result):
        return result
      notice.requeue()
      sys.exit(0)  # a process other than the job's first: the requeue ends it
    if self.preempted(result):
      # SIGTERM without submitit's notice: scancel, or the scheduler's own preemption. No
      # result: the scheduler requeues the job or it stays cancelled.
      sys.exit(f'stopped by SIGTERM at step {result.get("preempted_at_step")} after writing a '
               f'checkpoint; not requeued by this task (a requeued job or a relaunched sweep '
               f'resumes the run)')
    return result

  def checkpoint(self, task: Callable[[], Any]) -> submitit.helpers.DelayedSubmission:
    """The requeued job: this runner again on the same task."""
    return submitit.helpers.DelayedSubmission(self, task)


def submit(tasks: Sequence[Callable[[], Any]], *, folder: str, executor: str = 'slurm',
           partition: str | None = None, nodes: int = 1, tasks_per_node: int = 1,
           gpus_per_node: int | None = None, cpus_per_task: int | None = None,
           mem_gb: float | None = None, timeout_min: int = 24 * 60,
           array_parallelism: int = 16, signal_delay_s: int = 120,
           max_num_timeout: int = 3, grace_s: float | None = None, name: str = 'sweep',
           extra: Mapping[str, Any] | None = None) -> list[submitit.Job]:
  """Submits ``tasks`` (picklable callables without arguments, one per run) as one job array of
  ``executor`` ('slurm', 'local' or 'debug'), logs and pickles in ``folder``, and returns its
  jobs in the order of ``tasks``.

  Each array task is one run on ``nodes`` nodes with ``tasks_per_node`` processes each (for JAX:
  1, each process driving its node's ``gpus_per_node`` GPUs), ``cpus_per_task`` CPUs,
  ``mem_gb`` memory, on ``partition``, for at most ``timeout_min`` minutes per launch. At most
  ``array_parallelism`` run at once (``--array=0-N%P``). USR2 comes ``signal_delay_s`` before
  the time limit; the run has ``grace_s`` (default: ``signal_delay_s - 30``) of it to write a
  checkpoint before the job is requeued; a run is requeued after at most ``max_num_timeout``
  time limits (preemptions do not count). ``extra``: further parameters for submitit's
  ``AutoExecutor.update_parameters`` (e.g. ``{'slurm_account': ..., 'slurm_qos': ...,
  'slurm_setup': ['source venv/bin/activate']}``)."""
  if executor not in EXECUTORS:
    raise errors.UserError(f'launcher executor {executor!r}: one of {", ".join(EXECUTORS)}')
  if not tasks:
    return []
  if grace_s is None:
    grace_s = max(signal_delay_s - 30, signal_delay_s / 2)
  if executor == 'slurm' and shutil.which('srun') is None:
    raise errors.UserError('the SLURM launcher submits from a machine with SLURM\'s commands: '
                           '`srun` is not on PATH here')
  ex = submitit.AutoExecutor(folder=folder, cluster=executor,
                             slurm_max_num_timeout=max_num_timeout)
  params: dict[str, Any] = dict(name=name, timeout_min=int(timeout_min), nodes=nodes,
                                tasks_per_node=tasks_per_node,
                                slurm_array_parallelism=array_parallelism,
                                slurm_signal_delay_s=signal_delay_s)
  for key, value in (('gpus_per_node', gpus_per_node), ('cpus_per_task', cpus_per_task),
                     ('mem_gb', mem_gb), ('slurm_partition', partition)):
    if value is not None:
      params[key] = value
  params.update(extra or {})
  ex.update_parameters(**params)
  jobs = ex.map_array(Requeueable(grace_s=grace_s), list(tasks))
  log.info('submitted %d run(s) to %s as job array %s (at most %d at once); logs in %s',
           len(jobs), executor, jobs[0].job_id.split('_')[0], array_parallelism, folder)
  return jobs


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How one submitted run ended: ``state`` 'done' (``result`` is what it returned) or 'failed'
  (``error``: the exception's first line, or why the job produced nothing)."""
  label: str
  job_id: str
  state: str
  result: Any = None
  error: str | None = None

  def line(self) -> str:
    return f'{self.label} [{self.job_id}]: {self.state}' + (f': {self.error}' if self.error
                                                            else '')


def exception_line(error: BaseException) -> str:
  """The first line of the exception a job ended with: for a job that raised, the
  ``Type: message`` line of the traceback submitit kept (the line after the last frame); for a
  job that produced nothing (killed, cancelled, out of memory), where its result should be and
  the job's state; otherwise the exception's own first line."""
  text = str(error)
  if isinstance(error, submitit_utils.FailedJobError):
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
      for line in lines[frames[-1] + 1:]:
        if line.strip() and not line.startswith((' ', '\t')):
          return line.strip()
  if isinstance(error, submitit_utils.UncompletedJobError):
    return ' '.join(line.strip() for line in text.splitlines()[:2])
  first = next((line.strip() for line in text.splitlines() if line.strip()), '')
  return f'{type(error).__name__}: {first}' if first else type(error).__name__


def _label(job: submitit.Job) -> str:
  try:
    task = job.submission().args[0]
  except Exception:  # pylint: disable=broad-except  # a label is not worth failing for
    return job.job_id
  return str(getattr(task, 'run_id', None) or task)


def wait(jobs: Sequence[submitit.Job], labels: Sequence[str] | None = None,
         poll_s: float = 10.0) -> list[Outcome]:
  """Waits for every job and returns their :class:`Outcome` in the order of ``jobs``, logging
  each as it ends; one failed run does not stop the wait for the others. ``labels`` name the
  runs (default: each task's ``run_id``, or its ``str``)."""
  labels = list(labels) if labels is not None else [_label(j) for j in jobs]
  index = {id(j): i for i, j in enumerate(jobs)}
  outcomes: list[Outcome | None] = [None] * len(jobs)
  for job in submitit.helpers.as_completed(list(jobs), poll_frequency=poll_s):
    i = index[id(job)]
    try:
      outcome = Outcome(labels[i], job.job_id, 'done', result=job.result())
    except Exception as e:  # pylint: disable=broad-except  # the run's failure, reported
      outcome = Outcome(labels[i], job.job_id, 'failed', error=exception_line(e))
    outcomes[i] = outcome
    done = sum(o is not None for o in outcomes)
    (log.info if outcome.state == 'done' else log.warning)('%d/%d %s', done, len(jobs),
                                                           outcome.line())
  return outcomes
