"""Errors of the user's making, told apart by class rather than by message."""

from __future__ import annotations


class ConfigError(ValueError):
  """A config value that cannot run. ``field`` is its dotted path (``'data.image_size'``) and
  the message starts with ``config.<field>``, so one line says what to change; entry points
  catch this class and print that line without a traceback."""

  def __init__(self, field: str, message: str):
    self.field = field
    head = f'config.{field}'
    super().__init__(message if message.startswith(head) else f'{head}: {message}')
