"""What every command-line entry point shares: one error path, quiet success, one flag style.

* :func:`run` calls an entry point's ``main``; a :class:`~inception_jax.errors.UserError` (a
  mistake of the user's: a bad flag, a missing file, data not prepared) is printed as one line,
  ``FATAL: <message>``, and the exit status is 1. Any other exception is a bug and keeps its
  traceback. :func:`exit_on_user_error` does the same for absl's ``app.run`` mains.
* :func:`quiet` turns other libraries' INFO and WARNING logging off (TensorFlow's C++ log, absl,
  orbax), so that a command that succeeds prints what it was asked for; ``--verbose`` keeps them.
* :class:`ArgumentParser`: argparse whose usage errors are one line too, and whose flags are
  spelled with underscores (``--num_classes``); dashed spellings of flags that other tools spell
  so (``--batch-size``) are aliases, given as further option strings.

This module imports neither JAX nor TensorFlow: an entry point can refuse a bad input before
paying for them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Callable, Sequence

from inception_jax import errors

# Loggers of other libraries that report progress or advice at INFO/WARNING level.
THIRD_PARTY_LOGGERS = ('absl', 'orbax', 'tensorflow', 'h5py', 'keras')


def fatal(err: BaseException | str) -> str:
  """The one line an entry point prints for a user's mistake."""
  return f'FATAL: {err}'


def run(main: Callable[[Sequence[str] | None], int | None],
        argv: Sequence[str] | None = None) -> int:
  """``main(argv)``'s exit status (its int, else 0); a :class:`UserError` prints :func:`fatal` on
  stderr and gives 1."""
  try:
    status = main(argv)
  except errors.UserError as err:
    print(fatal(err), file=sys.stderr)
    return 1
  return status if isinstance(status, int) else 0  # a benchmark's main returns its results


def exit_on_user_error(main: Callable) -> Callable:
  """Wrap an absl ``main(argv)``: a :class:`UserError` exits with :func:`fatal`'s line."""
  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except errors.UserError as err:
      sys.exit(fatal(err))
  return wrapped


def quiet(verbose: bool = False) -> None:
  """Other libraries at their errors only (``verbose``: as they are). Call it before TensorFlow
  is imported: its C++ log level is read once, at import."""
  if verbose:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # the user's own setting wins
  for name in THIRD_PARTY_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  if 'absl.logging' in sys.modules:  # orbax logs through absl
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)


def progress_logging(verbose: bool = False, level: int = logging.INFO) -> None:
  """This package's log lines on stderr at ``level``; other libraries :func:`quiet`."""
  quiet(verbose)
  log = logging.getLogger('inception_jax')
  if not log.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter('%(message)s'))
    log.addHandler(handler)
  log.setLevel(level)
  log.propagate = False


class ArgumentParser(argparse.ArgumentParser):
  """argparse with a one-line usage error (``FATAL: prog: message; see --help``), exit status 2,
  and ``--verbose``."""

  def __init__(self, *args, verbose: bool = True, **kwargs):
    kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
    super().__init__(*args, **kwargs)
    if verbose:
      self.add_argument('--verbose', action='store_true',
                        help="show other libraries' INFO and WARNING logging (off by default)")

  def error(self, message: str):
    self.exit(2, fatal(f'{self.prog}: {message}; see --help') + '\n')
