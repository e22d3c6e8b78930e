r"""The README's two recipe tables, from the configs themselves.

    python -m experiments.recipes_table                   # the paper recipes, no training
    python -m experiments.recipes_table --quick --workdir=workdirs/quick_table
    python -m experiments.recipes_table --quick --names=v3,xception   # some of them

The first table: each config's optimizer, rate at its default batch (and rescaled to 1024),
warm-up, length and the final/peak rate ratio, and the EMA's decay per step. ``--quick`` trains
all seven ``:quick`` configs one after the other (a workdir each under ``--workdir``; a finished
one is re-evaluated, not retrained) and prints config, steps, held-out top-1 of the raw and the
EMA weights, wall time, and the 1-minute load average over the run's log lines (on a shared
machine the wall time says little without it).
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import cli
from inception_jax import entry, errors

NAMES = ('v1', 'v2', 'v3', 'v4', 'inception_resnet_v1', 'inception_resnet_v2', 'xception')
IMAGENET_TRAIN = 1_281_167

_QUICK = flags.DEFINE_bool('quick', False, 'train the seven :quick configs and print their table')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/quick_table', 'with --quick: where the runs go')
_NAMES = flags.DEFINE_list('names', list(NAMES), 'with --quick: these configs only, in this order')


def _config(name: str, quick: bool):
  import importlib
  return importlib.import_module(f'experiments.configs.{name}').get_config('quick' if quick
                                                                          else None)


def recipe_rows() -> list[str]:
  from inception_jax import optim
  rows = ['| config | optimizer | batch | peak lr (at 1024) | warm-up | epochs | final / peak lr '
          '| EMA decay per step |', '|---|---|---|---|---|---|---|---|']
  for name in NAMES:
    c = _config(name, False)
    peak = optim.learning_rate(c)
    spe = optim.steps_per_epoch(IMAGENET_TRAIN, c.batch_size)
    total = optim.epochs_to_steps(c.num_epochs, spe)
    ratio = optim.final_lr_ratio(c.optimizer, peak, total, spe)
    ema = optim.ema_step_decay(c)
    rows.append(
        f'| `{name}.py` | {c.optimizer.name} | {c.batch_size} | {peak:.3g} '
        f'({peak * 1024 / c.batch_size:.3g}) | {c.optimizer.warmup_epochs:g} epochs | '
        f'{c.num_epochs:g} | {ratio:.3f} | '
        f'{f"{ema:.5f} ({c.ema_decay} per {c.ema_batch})" if ema else "none"} |')
  return rows


def quick_rows(root: str, names=NAMES) -> list[str]:
  import json
  from inception_jax import train
  unknown = sorted(set(names) - set(NAMES))
  if unknown:
    raise errors.UserError(f'--names: unknown configs {unknown}; known: {", ".join(NAMES)}')
  rows = ['| config | steps (batch) | top-1 raw | top-1 EMA | wall time | load average |',
          '|---|---|---|---|---|---|']
  for name in names:
    workdir = os.path.join(root, name)
    config = _config(name, True)
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, 'results.json')) as f:  # the run's record, its wall time
      results = json.load(f)
    ev = results['eval']
    ema = f'{ev["ema_top1"]:.2%}' if 'ema_top1' in ev else 'none'
    minutes, seconds = divmod(int(round(results['wall_time_s'])), 60)
    load = results.get('load_average_1min')
    load = f'{load[0]:.1f}-{load[1]:.1f}' if load else 'not recorded'
    rows.append(f'| `{name}.py:quick` | {results["steps"]} ({config.batch_size}) | '
                f'{ev["top1"]:.2%} | {ema} | {minutes} min {seconds:02d} s | {load} |')
    print(rows[-1], flush=True)
  return rows


@entry.exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup_logging()
  cli.enable_compilation_cache(cli.COMPILATION_CACHE.value)  # a finished run: its eval step
  rows = quick_rows(_WORKDIR.value, _NAMES.value) if _QUICK.value else recipe_rows()
  print('\n'.join(rows))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
