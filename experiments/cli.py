"""What ``experiments.train`` and ``experiments.evaluate`` share: the ``--config`` flag, logging,
JAX's persistent compilation cache (``--compilation_cache``) and the CPU's convolution library
(``--cpu_convolutions``)."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from inception_jax import machine

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')

# Programs that compile faster than this are not written to the persistent cache: reading one
# back costs a file read and the key's hash of the program, and the steps worth caching (the
# train step, the eval step, the state's initialisation) take seconds to minutes.
MIN_COMPILE_SECS = 0.5


def default_compilation_cache() -> str:
  """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/inception_jax/jax_cache``
  (``~/.cache/...``): outside any workdir, shared by every run of this user."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'inception_jax', 'jax_cache')


COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', default_compilation_cache(),
    "JAX's persistent compilation cache: a relaunch (after a preemption, or to evaluate) reads "
    "the compiled steps back instead of compiling them again; --compilation_cache='' turns it "
    'off')


def enable_compilation_cache(directory: str | None) -> str | None:
  """Point JAX's persistent compilation cache at ``directory`` (made if missing); ``''`` or None
  leaves it off. Returns the absolute directory, or None."""
  if not directory:
    return None
  import jax
  directory = os.path.abspath(os.path.expanduser(directory))
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:  # the user's choice wins
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECS)
  return directory


# XLA:CPU's convolution library: inception_jax.machine.set_cpu_convolutions.
CPU_CONVOLUTIONS = flags.DEFINE_enum(
    'cpu_convolutions', 'auto', list(machine.CPU_CONVOLUTIONS),
    "XLA:CPU's convolutions: 'ynnpack' (XLA's default), 'xla' (its own emitter), 'auto' "
    '(inference: xla at inputs of at least 150 pixels; training: xla at inputs of at least 256 '
    'pixels on CPUs with AVX-512, for models without depthwise convolutions; ynnpack '
    'otherwise); no effect on GPUs and TPUs or when XLA_FLAGS already sets '
    '--xla_cpu_experimental_ynn_fusion_type')


def resolve_config_path(argv: list[str]) -> list[str]:
  """A bare config file name (``--config=v1.py:quick``) names a file of experiments/configs/."""
  out = []
  for i, arg in enumerate(argv):
    if i and argv[i - 1] == '--config':  # "--config FILE" form
      arg = _resolve(arg)
    elif arg.startswith('--config='):
      arg = '--config=' + _resolve(arg[len('--config='):])
    out.append(arg)
  return out


def _resolve(spec: str) -> str:
  path, sep, arg = spec.partition(':')
  if os.sep not in path and not os.path.exists(path):
    candidate = os.path.join(CONFIG_DIR, path)
    if os.path.exists(candidate):
      path = candidate
  return path + sep + arg


def setup_logging(quiet: bool = False) -> None:
  """Our progress lines on stderr (warnings only when ``quiet``, e.g. on processes other than
  the first); other libraries (orbax, absl) at their warnings only, less orbax's warning about
  each checkpoint saved without eval metrics (by design, between evals)."""
  from inception_jax import checkpoint
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
  log = logging.getLogger('inception_jax')
  log.handlers[:] = [handler]
  log.setLevel(logging.WARNING if quiet else logging.INFO)
  log.propagate = False
  if not flags.FLAGS['verbosity'].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  absl = logging.getLogger('absl')
  if not any(isinstance(f, checkpoint.NoEvalNoWarning) for f in absl.filters):
    absl.addFilter(checkpoint.NoEvalNoWarning())


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl flag parsing, with an unknown config field reported in one line."""
  argv = resolve_config_path(argv)
  try:
    return flag_values(argv)
  except (AttributeError, KeyError):  # config_flags: an override of a field that is not there
    config = _config_alone(argv)
    for arg in argv:
      match = re.match(r'--config\.([\w.]+)', arg)
      missing = match and _missing(config, match.group(1).split('.'))
      if missing:
        sys.exit(f'FATAL: --config.{match.group(1)}: the config has no field {missing}')
    raise
  except flags.Error as err:
    sys.exit(f'FATAL flags parsing error: {err}\nPass --helpshort or --helpfull to see help.')


def _missing(config, path: list[str]) -> str | None:
  """The first field of ``path`` that ``config`` lacks, with the nearest existing names."""
  node = config
  for depth, key in enumerate(path):
    if not hasattr(node, 'keys'):
      return None  # below a leaf: not ours to judge
    if key not in node:
      near = difflib.get_close_matches(key, list(node.keys()), n=3)
      name = '.'.join(path[:depth + 1])
      return f'{name!r}' + (f' (did you mean {", ".join(near)}?)' if near else '')
    node = node[key]
  return None


def _config_alone(argv: list[str]):
  """The config that ``argv`` names, without its overrides."""
  spec = []
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      spec = [arg]
    elif arg == '--config' and i + 1 < len(argv):
      spec = [arg, argv[i + 1]]
  args = argv[:1] + spec
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=values, sys_argv=args)
  values(args)
  return values.config
