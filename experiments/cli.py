"""What every runner shares: CPU devices, flag parsing and one-line errors.

Import this module before jax in a runner (`from experiments import cli` as
its first import): on a CPU host it exposes every core as a device, so the
data-parallel steps use them all (no effect on GPU/TPU backends). Then
`cli.run(main)` starts the absl app with:
  * one-line errors: a `condnerf.errors.UserError` (bad data, config, edit,
    checkpoint, run folder, start-up), a bad flag, or a file-system error
    on a named path (a read-only run folder, a full disk, a file where a
    folder belongs) prints `error: ...` on one line and exits with code 2;
    `--verbosity=1` shows the traceback;
  * an interrupted training (Ctrl-C, SIGTERM) prints where it stopped and
    exits with 128 + the signal number;
  * logging at WARNING unless `--verbosity` is given (Orbax logs every save
    at INFO).
"""

import os

os.environ.setdefault(
    'XLA_FLAGS', f'--xla_force_host_platform_device_count={os.cpu_count()}')

# pylint: disable=g-import-not-at-top,wrong-import-position
import ast
import errno
import re
import signal
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections

from condnerf import errors

USER_ERROR_EXIT = 2


def fail(message):
  """Prints `error: message` on one line and exits with code 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT)


def _flag_message(error, argv):
  """A bad flag or config override, as one readable line."""
  text = str(error)
  if isinstance(error, (AttributeError, KeyError)):
    # ml_collections reports an unknown key as the repr of a KeyError.
    text = text.replace('\\n', '\n').replace("\\'", "'")
    key = re.search(r"'([^'\s]+)'", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    name = key.group(1) if key else text.strip('\'"')
    override = next((a for a in argv[1:] if a.startswith('--config.') and
                     f'.{name}.' in a.split('=', 1)[0] + '.'), None)
    text = f'unknown config key {name!r}'
    text += f' in {override}' if override else ''
    text += f' (did you mean {hint.group(1)!r}?)' if hint else ''
    text += '; the config is locked, so overrides must name existing fields'
  return errors.one_line(text)


_EVAL_OVERRIDE = re.compile(r'--config\.evals\.([^.=]+)\.([^.=]+)=(.*)', re.S)


def _literal(text):
  """A flag's value as a Python literal (3, 0.5, True, 'a'), else the text."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _set_evaluators(config, overrides):
  """Applies `--config.evals.NAME.KEY=VALUE` overrides: to an evaluator the
  config has, or adding `evals.NAME` (a new evaluator). A value must suit
  the type of the field it replaces; the evaluators' own check then refuses
  an unknown type or argument, naming those there are."""
  with config.unlocked():
    for name, key, value in overrides:
      if name not in config.evals:
        config.evals[name] = ml_collections.ConfigDict()
      config.evals[name][key] = _literal(value)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config key as one line.

  The config is locked, so an override must name an existing field, except
  under `evals`: `--config.evals.NAME.type=...` with its arguments adds the
  evaluator `evals.NAME` (docs/command_line.md's way to add one).
  """
  try:
    evals = [a for a in argv[1:] if _EVAL_OVERRIDE.fullmatch(a)]
    rest = [a for a in argv if a not in evals]
    saved, sys.argv = sys.argv, rest  # config_flags reads overrides there.
    try:
      remaining = flags.FLAGS(rest)
    finally:
      sys.argv = saved
    config = flags.FLAGS['config'].value if 'config' in flags.FLAGS else None
    if evals and (config is None or 'evals' not in config):
      return flags.FLAGS(argv)  # says what is wrong with them.
    if evals:
      _set_evaluators(config, [_EVAL_OVERRIDE.fullmatch(a).groups()
                               for a in evals])
    return remaining
  except (flags.Error, AttributeError, KeyError, TypeError,
          ValueError) as e:
    fail(_flag_message(e, argv) + ' (see --helpfull)')


_OS_HINTS = {
    errno.EROFS: 'the file system is read-only: copy the run elsewhere, or '
                 'give --workdir a writable folder',
    errno.EACCES: "check the folder's permissions, or give --workdir a "
                  'folder you can write',
    errno.EPERM: "check the folder's permissions",
    errno.ENOSPC: 'the disk is full: free some space and run again (the '
                  'latest complete checkpoint is kept)',
    errno.EDQUOT: 'the disk quota is used up: free some space',
    errno.EISDIR: 'a folder stands where a file belongs: move it aside',
    errno.ENOTDIR: 'a file stands where a folder belongs: move it aside',
    errno.EEXIST: 'a file stands where a folder belongs: move it aside',
    errno.ENAMETOOLONG: 'the name is too long for the file system: use a '
                        'shorter one',
}


def os_message(error):
  """A file-system error (read-only run folder, full disk, a file where a
  folder belongs) as one line: what failed on which path, and the fix."""
  paths = ' -> '.join(str(p) for p in (error.filename, error.filename2) if p)
  hint = _OS_HINTS.get(error.errno, 'check the path')
  return f'{error.strerror or type(error).__name__}: {paths}; {hint}.'


def _verbose():
  return flags.FLAGS['verbosity'].present and flags.FLAGS.verbosity >= 1


def run(main):
  """`app.run(main)` with the behaviour in the module docstring."""

  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except errors.UserError as e:
      if _verbose():
        raise
      fail(errors.one_line(e))
    except OSError as e:
      if _verbose() or not e.filename:
        raise
      fail(os_message(e))
    except KeyboardInterrupt as e:
      if _verbose():
        raise
      print(str(e) or 'Interrupted.', file=sys.stderr, flush=True)
      sys.exit(128 + getattr(e, 'signum', signal.SIGINT))

  app.run(guarded, flags_parser=parse_flags)
