"""Errors of the user's making, told apart by class rather than by message.

Every entry point (``experiments.*``, ``python -m inception_jax.*``) catches :class:`UserError`
and prints its message as one line, without a traceback, exiting non-zero; any other exception
is a bug and keeps its traceback. So a message names the input at fault and the fix.
"""

from __future__ import annotations


class UserError(Exception):
  """A mistake of the user's (a bad flag, a missing file, data not prepared): the message is the
  one line an entry point prints."""


class ConfigError(UserError, ValueError):
  """A config value that cannot run. ``field`` is its dotted path (``'data.image_size'``) and
  the message starts with ``config.<field>``, so one line says what to change; entry points
  catch this class and print that line without a traceback."""

  def __init__(self, field: str, message: str):
    self.field = field
    head = f'config.{field}'
    super().__init__(message if message.startswith(head) else f'{head}: {message}')
