"""What ``experiments.train`` and ``experiments.evaluate`` share: the ``--config`` flag, logging
(``--verbose``), the checks that refuse a bad config name or workdir in one line before JAX is
imported, JAX's persistent compilation cache (``--compilation_cache``) and the CPU's convolution
library (``--cpu_convolutions``). A user's mistake ends in one line, ``FATAL: <message>``
(:mod:`inception_jax.entry`)."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from inception_jax import entry, errors, machine

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


VERBOSE = flags.DEFINE_bool(
    'verbose', False, "show other libraries' INFO and WARNING logging (orbax, absl, TensorFlow); "
    'off by default')


class ConfigFileError(errors.UserError):
  """``--config`` names no config file, or one whose argument it does not take."""


class WorkdirError(errors.UserError):
  """``--workdir`` cannot be a directory this process writes."""


# XLA:CPU's convolution library: inception_jax.machine.set_cpu_convolutions.
CPU_CONVOLUTIONS = flags.DEFINE_enum(
    'cpu_convolutions', 'auto', list(machine.CPU_CONVOLUTIONS),
    "XLA:CPU's convolutions: 'ynnpack' (XLA's default), 'xla' (its own emitter), 'auto' "
    '(inference: xla at inputs of at least 150 pixels; training: xla at inputs of at least 256 '
    'pixels on CPUs with AVX-512, for models without depthwise convolutions; ynnpack '
    'otherwise); no effect on GPUs and TPUs or when XLA_FLAGS already sets '
    '--xla_cpu_experimental_ynn_fusion_type')


def config_files() -> list[str]:
  """The config files of experiments/configs/ (``v1.py``, ...)."""
  return sorted(f for f in os.listdir(CONFIG_DIR)
                if f.endswith('.py') and not f.startswith('_') and f != 'common.py')


def resolve_config_path(argv: list[str]) -> list[str]:
  """A bare config file name (``--config=v1.py:quick``) names a file of experiments/configs/;
  :class:`ConfigFileError` for a name that is neither a file nor a config of that folder."""
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
  if path and not os.path.isfile(path):
    raise ConfigFileError(_no_config_file(spec))
  return path + sep + arg


def _no_config_file(spec: str) -> str:
  path, sep, arg = spec.partition(':')
  base, names = os.path.basename(path), config_files()
  if not base.endswith('.py') and (base + '.py' in names or os.path.isfile(path + '.py')):
    return (f'--config={spec}: no such file; config files end in .py: '
            f'--config={path}.py{sep}{arg}')
  near = difflib.get_close_matches(base, names, n=1)
  return (f'--config={spec}: no such config file; the configs are {", ".join(names)} (a bare '
          f'name is one of experiments/configs/, e.g. --config=v1.py:quick; or give the path of '
          f'your own)' + (f'; did you mean --config={near[0]}{sep}{arg}?' if near else ''))


def _user_error_in(err: BaseException) -> errors.UserError | None:
  """The first :class:`UserError` raised under ``err`` (absl and config_flags wrap it)."""
  found, seen = None, set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, errors.UserError):
      found = err  # the innermost one: the wrappers repeat it with their traceback
    err = err.__cause__ or err.__context__
  return found


def _config_spec(argv: list[str]) -> str | None:
  """What ``--config`` was given, as typed."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      spec = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def setup_logging(quiet: bool = False) -> None:
  """Our progress lines on stderr (warnings only when ``quiet``, e.g. on processes other than
  the first); other libraries (orbax, absl, TensorFlow) at their errors only, unless
  ``--verbose`` (or absl's own ``--verbosity``)."""
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
  log = logging.getLogger('inception_jax')
  log.handlers[:] = [handler]
  log.setLevel(logging.WARNING if quiet else logging.INFO)
  log.propagate = False
  from inception_jax import checkpoint
  absl = logging.getLogger('absl')  # orbax's warning of each checkpoint saved between evals
  if not any(isinstance(f, checkpoint.NoEvalNoWarning) for f in absl.filters):
    absl.addFilter(checkpoint.NoEvalNoWarning())
  if flags.FLAGS['verbosity'].present:
    return
  verbose = flags.FLAGS.is_parsed() and VERBOSE.value  # a notebook parses no flags
  entry.quiet(verbose)
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)


def check_workdir(workdir: str) -> str:
  """The absolute ``workdir``, or :class:`WorkdirError` when it is a file, lies under a file, or
  lies in a directory this user cannot write. Creates nothing."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory; give a new directory '
                       '(or the workdir of the run to resume)')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f'--workdir={workdir}: {existing} is a file, so no directory can be made '
                       'under it; give a workdir elsewhere')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WorkdirError(f'--workdir={workdir}: {existing} is not writable by this user; give a '
                       'workdir in a directory you can write')
  return path


def make_workdir(workdir: str) -> str:
  """:func:`check_workdir`, then make it; a failure (a read-only file system, a full disk) is a
  :class:`WorkdirError` naming the directory."""
  path = check_workdir(workdir)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as err:
    raise WorkdirError(f'--workdir={workdir}: cannot make {path} ({err.strerror}); give a '
                       'workdir in a directory you can write') from None
  return path


def check_data(config) -> None:
  """:class:`~inception_jax.errors.ConfigError` for a dataset that is not there or not prepared,
  or that lacks the configured splits; before JAX, and before ``--distributed`` starts it. A TFDS
  dataset that the run may prepare (``config.data.download``, a manual download) is left to the
  run: this prepares nothing."""
  from inception_jax import data
  if data.kind(config.data.name) == 'tfds':
    from inception_jax.data import tfds
    if not tfds.is_prepared(config.data):
      return
  data.check_splits(config.data)


def config_source() -> str:
  """The ``--config`` value as given (``v1.py:quick``)."""
  return _config_spec(_ORIGINAL_ARGV) or 'the config file'


def config_defaults():
  """The config that ``--config`` names, without the ``--config.x`` overrides: what the run's
  summary compares with."""
  return _config_alone(_PARSED_ARGV)


_PARSED_ARGV: list[str] = []
_ORIGINAL_ARGV: list[str] = []


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl flag parsing; a bad ``--config`` name, an unknown config field or argument, a missing
  flag: one line."""
  global _PARSED_ARGV, _ORIGINAL_ARGV
  _ORIGINAL_ARGV = list(argv)
  spec = _config_spec(argv)
  try:
    argv = resolve_config_path(argv)
  except errors.UserError as err:
    sys.exit(entry.fatal(err))
  _PARSED_ARGV = argv
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
    user = _user_error_in(err)
    if user is not None:  # a config's get_config refused its argument
      sys.exit(entry.fatal(f'--config={spec}: {user}'))
    sys.exit(entry.fatal(f'{err} (see --helpfull)'))


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
