r"""Top-1/top-5 on a config's eval split, of the raw and the EMA weights.

    # a training workdir's latest checkpoint (or --step=N, --step=best)
    python -m experiments.evaluate --config=v1.py:quick --workdir=workdirs/v1_quick
    # converted pretrained weights (python -m inception_jax.convert --out DIR)
    python -m experiments.evaluate --config=v3.py --weights=weights/v3_tf

The library function is ``inception_jax.train.evaluate``.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from inception_jax import errors, machine

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file (FILE[:ARG])',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'training directory whose checkpoint to evaluate')
_WEIGHTS = flags.DEFINE_string('weights', None, 'converted-weights directory to evaluate instead')
_STEP = flags.DEFINE_string('step', None, "checkpoint step, or 'best' (default: the latest)")
flags.mark_flags_as_required(['config'])
flags.mark_flags_as_mutual_exclusive(['workdir', 'weights'], required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup_logging()
  machine.set_cpu_convolutions(cli.CPU_CONVOLUTIONS.value, _CONFIG.value.data.image_size,
                                training=False)
  cli.enable_compilation_cache(cli.COMPILATION_CACHE.value)
  from inception_jax import checkpoint, train
  step = _STEP.value
  if step not in (None, 'best'):
    try:
      step = int(step)
    except ValueError:
      sys.exit(f"FATAL: --step={step}: give a step number or 'best'")
  try:
    result = train.evaluate(_CONFIG.value, _WORKDIR.value, weights=_WEIGHTS.value, step=step)
  except errors.UserError as err:  # a config, a workdir or a step that is not there: one line
    sys.exit(f'FATAL: {err}')
  except checkpoint.CheckpointError as err:  # storage: the step, the path, and the cause
    sys.exit(f'FATAL: {err}')
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
