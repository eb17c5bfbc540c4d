"""The run's config record, `DIR/config.json`, and the guard on resume.

Owns writing the resolved config of a run (`record_config`), reading it back
(`load_config_json`, `config_history`), and the rule that a resumed training
whose config differs from the recorded one is refused unless the change is
announced (`--allow_config_change`). A record that is missing, does not
parse, is not a JSON object, or lacks the sections a run must have is never
taken as "no changes": resume is refused naming the file, and an announced
change keeps a damaged file as `config.json.damaged` before recording
afresh.
"""

import json
import os

from condnerf import workdir as workdir_lib

CONFIG_FILE = workdir_lib.CONFIG_FILE
DAMAGED_SUFFIX = '.damaged'
_HISTORY = '_history'  # key of config.json holding earlier versions.

# Config keys that say how a run is watched, not what it trains: they may
# change when a run is resumed without --allow_config_change.
RESUME_FREE_KEYS = ('eval.', 'evals.', 'render.', 'edit.', 'train.log_every',
                    'train.checkpoint_every', 'train.keep_checkpoints',
                    'train.val_every')


class ConfigChangedError(workdir_lib.WorkdirError):
  """A resumed run's config differs from the one it was trained with."""


class ConfigRecordError(workdir_lib.WorkdirError):
  """`DIR/config.json` is unreadable, not a config, or lacks sections."""


def _path(workdir):
  return os.path.join(workdir, CONFIG_FILE)


def _read(workdir):
  """The whole JSON object of config.json, or None when there is none.

  Raises:
    ConfigRecordError: it cannot be read, does not parse, or is not an
      object.
  """
  path = _path(workdir)
  if not os.path.lexists(path):
    return None
  fix = ('restore it from a copy, or resume with --allow_config_change to '
         'record the current config afresh (the damaged file is kept as '
         f'{CONFIG_FILE}{DAMAGED_SUFFIX})')
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except ValueError as e:
    raise ConfigRecordError(f'{path} is not valid JSON ({e}); {fix}.') from e
  except OSError as e:
    raise ConfigRecordError(f'Cannot read {path} ({e.strerror}); {fix}.'
                            ) from e
  if not isinstance(value, dict):
    raise ConfigRecordError(f'{path} holds a JSON {type(value).__name__}, '
                            f'not a config object; {fix}.')
  return value


def load_config_json(workdir):
  """The config recorded in `DIR/config.json` (without its history), or None.

  Raises:
    ConfigRecordError: see `_read`.
  """
  recorded = _read(workdir)
  if recorded is not None:
    recorded.pop(_HISTORY, None)
  return recorded


def config_history(workdir):
  """Earlier versions of a run's config: [{'step', 'changes', 'config'}]."""
  recorded = _read(workdir)
  history = (recorded or {}).get(_HISTORY, [])
  return history if isinstance(history, list) else []


def save_config_json(workdir, config_dict, history=()):
  """Atomically writes the resolved config to `DIR/config.json`.

  Args:
    workdir: run directory; created if missing.
    config_dict: nested mapping of JSON values, or a ConfigDict.
    history: earlier versions (see `config_history`), kept under '_history'.
  Returns:
    The path written.
  """
  if hasattr(config_dict, 'to_dict'):
    config_dict = config_dict.to_dict()
  value = dict(config_dict)
  if history:
    value[_HISTORY] = list(history)
  return workdir_lib.write_json(_path(workdir), value)


def _resume_free(key):
  return any(key == k or (k.endswith('.') and key.startswith(k))
             for k in RESUME_FREE_KEYS)


def config_changes(recorded, current, prefix=''):
  """Keys whose values differ between two configs, `{'a.b': (old, new)}`.

  Keys only one side has (fields added to the code since the run started)
  and `RESUME_FREE_KEYS` are not compared.

  Args:
    recorded: nested dict of JSON values (config.json).
    current: nested dict of JSON values (the resolved config).
    prefix: dotted path of these dicts (recursion).
  """
  changes = {}
  for name in sorted(set(recorded) & set(current)):
    key = prefix + str(name)
    old, new = recorded[name], current[name]
    if _resume_free(key):
      continue
    if isinstance(old, dict) and isinstance(new, dict):
      changes.update(config_changes(old, new, key + '.'))
    elif old != new:
      changes[key] = (old, new)
  return changes


def missing_sections(recorded, current):
  """Top-level keys of `current` a run must have that `recorded` lacks
  (those of `RESUME_FREE_KEYS` aside)."""
  return sorted(k for k in current
                if k not in recorded and not _resume_free(k + '.'))


def _check_complete(workdir, recorded, current):
  missing = missing_sections(recorded, current)
  if missing:
    raise ConfigRecordError(
        f'{_path(workdir)} lacks {", ".join(missing)}, which every run '
        'records, so it cannot tell whether the config changed; restore it '
        'from a copy, or resume with --allow_config_change to record the '
        'current config afresh (the old file is kept as '
        f'{CONFIG_FILE}{DAMAGED_SUFFIX}).')


def _refuse_changes(workdir, changes, resumed_step):
  listed = '; '.join(f'{k}: {old!r} -> {new!r}'
                     for k, (old, new) in list(changes.items())[:8])
  more = len(changes) - 8
  listed += f'; and {more} more' if more > 0 else ''
  raise ConfigChangedError(
      f'The config differs from the one {workdir} was trained with '
      f'(its {CONFIG_FILE}), resuming at step {resumed_step}: {listed}. '
      'Resume with the recorded values, start a new --workdir, or pass '
      '--allow_config_change to continue with the new ones (the old '
      f'config stays in the history of {CONFIG_FILE}).')


def record_config(workdir, config_dict, resumed_step=None,
                  allow_change=False, write=True):
  """Writes the run's config, refusing unannounced changes on resume.

  Args:
    workdir: the run folder.
    config_dict: the resolved config as JSON values (`json.loads(
      config.to_json())`).
    resumed_step: the checkpoint step a training resumes from, or None for
      a fresh run (which simply writes its config).
    allow_change: accept a changed config on resume; the previous version
      is kept in the history with the step at which it changed. A damaged
      record is then moved aside (`config.json.damaged`) and recorded
      afresh.
    write: write the file (process 0); the others only check.
  Returns:
    The path of config.json.
  Raises:
    ConfigChangedError: the config differs from the recorded one and
      `allow_change` is False (nothing is written).
    ConfigRecordError: on resume, the record is damaged or incomplete and
      `allow_change` is False (nothing is written).
  """
  path = _path(workdir)
  history, damaged = [], None
  if resumed_step is not None:
    try:
      recorded, history = load_config_json(workdir), config_history(workdir)
      if recorded is None:
        raise ConfigRecordError(
            f'{workdir} has checkpoints but no {CONFIG_FILE}, so it cannot '
            'tell whether the config changed; restore the file from a copy, '
            'or resume with --allow_config_change to record the current '
            'config afresh.')
      _check_complete(workdir, recorded, config_dict)
    except ConfigRecordError as e:
      if not allow_change:
        raise
      recorded, history, damaged = None, [], e
    if recorded is not None:
      changes = config_changes(recorded, config_dict)
      if changes and not allow_change:
        _refuse_changes(workdir, changes, resumed_step)
      if changes:
        history.append({'step': int(resumed_step),
                        'changes': {k: list(v) for k, v in changes.items()},
                        'config': recorded})
  if write:
    if damaged is not None and os.path.lexists(path):
      os.replace(path, path + DAMAGED_SUFFIX)
    if damaged is not None:
      history = [{'step': int(resumed_step), 'changes': {}, 'config': None,
                  'note': f'recorded afresh: {damaged}'}]
    save_config_json(workdir, config_dict, history)
  return path
