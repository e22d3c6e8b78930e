r"""Top-1/top-5 on a config's eval split, of the raw and the EMA weights.

    # a training workdir's latest checkpoint (or --step=N, --step=best)
    python -m experiments.evaluate --config=v1.py:quick --workdir=workdirs/v1_quick
    # converted pretrained weights (python -m inception_jax.convert --out DIR)
    python -m experiments.evaluate --config=v3.py --weights=weights/v3_tf

The library function is ``inception_jax.evaluate.evaluate``.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from inception_jax import entry, errors, machine

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file (FILE[:ARG])',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'training directory whose checkpoint to evaluate')
_WEIGHTS = flags.DEFINE_string('weights', None, 'converted-weights directory to evaluate instead')
_STEP = flags.DEFINE_string('step', None, "checkpoint step, or 'best' (default: the latest)")
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'print what the evaluation would do (the config fields that differ from '
    "the file's, model, data, devices, batch per device) and stop before compiling")
flags.mark_flags_as_required(['config'])
flags.mark_flags_as_mutual_exclusive(['workdir', 'weights'], required=True)


def _check_weights(config, weights: str) -> None:
  """A converted-weights directory that classifies the config's dataset, or one line."""
  from inception_jax import data, pretrained
  meta = pretrained.load_meta(weights)
  classes, have = meta['options'].get('num_classes'), data.info(config.data).num_classes
  if classes != have:
    raise errors.UserError(
        f'--weights={weights} classifies {classes} classes, {config.data.name} has {have}; '
        f'evaluate weights of this dataset, or fine-tune these with --config.init_from={weights} '
        '(python -m experiments.train)')


@entry.exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup_logging()
  config = _CONFIG.value
  step = _STEP.value
  if step not in (None, 'best'):
    try:
      step = int(step)
    except ValueError:
      raise errors.UserError(f"--step={step}: give a step number or 'best'") from None
  cli.check_data(config)  # before JAX: not prepared, no such folder or split
  machine.set_cpu_convolutions(cli.CPU_CONVOLUTIONS.value, config.data.image_size,
                                training=False)
  if not _DRY_RUN.value:
    cli.enable_compilation_cache(cli.COMPILATION_CACHE.value)
  if _WEIGHTS.value:
    _check_weights(config, _WEIGHTS.value)
  from inception_jax import evaluate, summary, train
  lines = summary.lines(config, cli.config_defaults(), source=cli.config_source(),
                        mode='evaluate')
  lines.append(f'weights: {_WEIGHTS.value}' if _WEIGHTS.value else
               f'checkpoint: {_WORKDIR.value}, step {"latest" if step is None else step}')
  if _DRY_RUN.value:
    print('\n'.join(lines))
    return
  for line in lines:
    train.log.info('%s', line)
  from inception_jax import checkpoint
  try:
    result = evaluate.evaluate(config, _WORKDIR.value, weights=_WEIGHTS.value, step=step)
  except checkpoint.CheckpointError as err:  # storage: the step, the path, and the cause
    sys.exit(entry.fatal(err))
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
