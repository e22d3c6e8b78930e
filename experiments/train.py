r"""Train a config and evaluate it; the loop is ``inception_jax.train.train_and_evaluate``.

    python -m experiments.train --config=v1.py:quick --workdir=workdirs/v1_quick
    python -m experiments.train --config=v3.py --workdir=workdirs/v3 --config.batch_size=512

A bare config file name resolves in experiments/configs/. Relaunching the same command resumes
from the latest checkpoint in the workdir (after a kill, SIGTERM, Ctrl-C or a crash). SIGTERM
and Ctrl-C write a checkpoint after the current step (exit status 0 and 130); a second Ctrl-C
stops at once (130). A relaunch with a changed config is checked against the run's
(``inception_jax.resume``). ``--distributed``
calls ``jax.distributed.initialize()`` first, for several processes or hosts (each feeds its own
share of the batch); two processes on one CPU machine:

    for i in 0 1; do XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m experiments.train --config=v1.py:quick --workdir=workdirs/v1_2proc --distributed \
      --coordinator_address=localhost:12355 --num_processes=2 --process_id=$i & done; wait
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from inception_jax import entry, errors, machine

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file (FILE[:ARG])',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory for checkpoints, metrics and results')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'print what the run would do (the config fields that differ from the '
    "file's, steps, epochs, peak rate, EMA decay per step, devices, batch per device) and stop "
    'before compiling; creates nothing')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'call jax.distributed.initialize() first: several processes train '
    'together, each feeding its share of the global batch (on TPU pods and SLURM/Kubernetes '
    'clusters the arguments below are detected)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'with --distributed: host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'with --distributed: how many processes train together')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   "with --distributed: this process' index, 0 to "
                                   'num_processes - 1')
flags.mark_flags_as_required(['config', 'workdir'])

log = logging.getLogger('inception_jax.train')


@entry.exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup_logging()
  config, dry_run = _CONFIG.value, _DRY_RUN.value
  cli.check_workdir(_WORKDIR.value)  # before JAX: a file, or under one
  cli.check_data(config)  # before JAX: not prepared, no such folder or split
  from inception_jax import models
  try:
    name = models.info(config.model.name).name
  except ValueError as err:
    raise errors.ConfigError('model.name', str(err)) from None
  machine.set_cpu_convolutions(cli.CPU_CONVOLUTIONS.value, config.data.image_size,
                                training=True, model=name)
  if not dry_run:
    cli.enable_compilation_cache(cli.COMPILATION_CACHE.value)
  import jax
  if _DISTRIBUTED.value:
    from inception_jax import mesh
    mesh.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if jax.process_index():
      cli.setup_logging(quiet=True)
  from inception_jax import checkpoint, summary, train
  lines = summary.lines(config, cli.config_defaults(), source=cli.config_source(), mode='train')
  if dry_run:
    print('\n'.join(lines))
    return
  for line in lines:
    log.info('%s', line)
  cli.make_workdir(_WORKDIR.value)
  try:
    results = train.train_and_evaluate(config, _WORKDIR.value)
  except KeyboardInterrupt:  # the second Ctrl-C
    print('FATAL: interrupted twice; stopped at once (relaunch the same command to continue from '
          'the latest checkpoint)', file=sys.stderr)
    sys.exit(130)
  except FloatingPointError as err:  # a non-finite loss: the step, and what was kept
    sys.exit(entry.fatal(err))
  except checkpoint.CheckpointError as err:  # storage: the step, the path, and what was kept
    sys.exit(entry.fatal(err))
  if results.get('signal') == 'SIGINT':  # the checkpoint is written; the shell's status of Ctrl-C
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
