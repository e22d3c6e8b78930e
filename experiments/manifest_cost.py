r"""What a checkpoint's manifest costs: its CRC-32s at commit and their verification before a
restore, beside orbax's own save and restore of the same state.

    python -m experiments.manifest_cost --config=inception_resnet_v2.py --dir=/tmp/manifest_cost

The state is the config's full training state (parameters, BatchNorm statistics, optimizer state,
EMA) in its shapes and dtypes, filled with random values (so that it compresses as trained
weights do, hardly at all); nothing is compiled. Prints one line per measurement, best of
``--repeats`` (the file reads after the first are from the page cache, as a restore right after
a verification reads them).
"""

import os
import shutil
import time

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file (FILE[:ARG])')
_DIR = flags.DEFINE_string('dir', '/tmp/manifest_cost', 'scratch directory (removed first)')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timings of each measurement; the best is printed')
flags.mark_flags_as_required(['config'])


def _best(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def main(argv):
  del argv
  cli.setup_logging()
  import jax
  import numpy as np
  from inception_jax import checkpoint, checkpoint_recovery as recovery, machine, train
  config = _CONFIG.value
  config.data.name = 'synthetic'  # the state's shapes only; no dataset needed
  abstract = train.build(config).abstract
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype)
                       if np.issubdtype(x.dtype, np.floating) else np.zeros(x.shape, x.dtype),
                       abstract)
  size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  shutil.rmtree(_DIR.value, ignore_errors=True)
  ckpt = checkpoint.Checkpointer(_DIR.value)
  t0 = time.perf_counter()
  ckpt.save(1, state)
  ckpt.close()
  save = time.perf_counter() - t0
  step = os.path.join(ckpt.directory, '1')
  files = recovery._files(step)
  on_disk = sum(os.path.getsize(os.path.join(step, f)) for f in files)
  manifest = _best(lambda: recovery.write_manifest(step), _REPEATS.value)
  verify = _best(lambda: recovery.verify(step, 'step 1'), _REPEATS.value)
  reader = checkpoint.Checkpointer(_DIR.value)
  restore = _best(lambda: reader.restore(1, state), _REPEATS.value)
  reader.close()
  cpu = machine.cpu_label(machine.describe())
  print(f'{config.model.name}: state {size / 1e6:.0f} MB in {len(jax.tree.leaves(state))} '
        f'arrays, {on_disk / 1e6:.0f} MB in {len(files)} files | {cpu} | load average '
        f'{os.getloadavg()[0]:.1f}')
  print(f'orbax save (with the manifest) {save:.2f}s | manifest (CRC-32 of every file) '
        f'{manifest:.2f}s = {on_disk / manifest / 1e9:.2f} GB/s | verify {verify:.2f}s | orbax '
        f'restore (with the verification) {restore:.2f}s')
  shutil.rmtree(_DIR.value, ignore_errors=True)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
