"""The errors a user can fix: bad data, config, edit input, run folder.

Owns `UserError`, the base of every exception whose message names the
problem and the fix (the runners print it as one line and exit with code 2,
see `experiments/main.py`), and the kinds that have no better home:
`ConfigError` (a config value that cannot work) and `StartupError` (the
processes of a multi-process run could not start together). Loaders, the
editor, checkpoints and the run folder define their own subclasses
(`data.base.DataError`, `edit.scribbles.EditError`,
`checkpointing.CheckpointMismatchError`, `workdir.WorkdirError`, ...).

Programming errors (a wrong type passed by Python code, a bug) are not
`UserError`s: they keep their traceback.
"""


class UserError(Exception):
  """Bad input whose message says what is wrong and how to fix it."""

  def __str__(self):
    return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(UserError, ValueError):
  """A config value that cannot work (unknown name, bad range, typo)."""


class StartupError(UserError, ConnectionError):
  """The processes of a multi-process run could not start together."""


def one_line(error):
  """The message of `error` on one line (later lines joined with '; ')."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return '; '.join(lines) or type(error).__name__
