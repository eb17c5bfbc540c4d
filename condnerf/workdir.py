"""The run folder: its layout, safe output names, atomic writes and the lock.

A run folder `DIR` holds:
  DIR/config.json          the resolved config of the run, with the history of
                           changes accepted on resume (`record_config`).
  DIR/train.lock           present while a training runs: pid, host, start.
  DIR/checkpoints/         Orbax checkpoints (`checkpointing`); only a
                           training writes here, readers open it read-only.
  DIR/train_clock.json     the training-time record (`train_clock`).
  DIR/metrics.jsonl, tb/   training curves (`writers`).
  DIR/val/, eval/, render/ validation, evaluation and path renders.
  DIR/edit/<name>/         one folder per edit; DIR/edit/codes.npz the bank.

Owns where each of these lives, the checks that keep a user-given name inside
its parent folder, the write-then-rename helpers every writer uses (a reader
never sees a partial file, a failure leaves the old one), the replacement of
a whole output folder only once the new one is complete, and the exclusive
training lock. It does not own what goes into the files.
"""

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import tempfile

import numpy as np

from condnerf import errors

CHECKPOINTS = 'checkpoints'
CONFIG_FILE = 'config.json'
LOCK_FILE = 'train.lock'
EDIT = 'edit'
BANK_FILE = 'codes.npz'
_HISTORY = '_history'  # key of config.json holding earlier versions.

# Config keys that say how a run is watched, not what it trains: they may
# change when a run is resumed without --allow_config_change.
RESUME_FREE_KEYS = ('eval.', 'evals.', 'render.', 'edit.', 'train.log_every',
                    'train.checkpoint_every', 'train.keep_checkpoints',
                    'train.val_every')


class WorkdirError(errors.UserError):
  """A name or path that would leave its folder, or a folder in use."""


class WorkdirLockedError(WorkdirError):
  """Another training holds the run folder."""


class ConfigChangedError(WorkdirError):
  """A resumed run's config differs from the one it was trained with."""


def checkpoint_dir(workdir):
  return os.path.join(workdir, CHECKPOINTS)


def edit_dir(workdir):
  return os.path.join(workdir, EDIT)


def bank_path(workdir):
  """The run's code bank, `DIR/edit/codes.npz`."""
  return os.path.join(workdir, EDIT, BANK_FILE)


def check_name(name, what):
  """Returns `name` if it is a plain file name; raises WorkdirError if not.

  A plain name is non-empty, not '.' or '..', and has no path separator, so
  `os.path.join(parent, name)` stays inside `parent`.

  Args:
    name: the user-given name.
    what: the setting it came from, for the message (e.g. 'edit.name').
  """
  name = str(name)
  bad = (not name.strip() or name in (os.curdir, os.pardir) or
         os.sep in name or (os.altsep and os.altsep in name) or '\0' in name)
  if bad:
    raise WorkdirError(
        f'{what}={name!r} is not a plain name; use letters, digits, "-" or '
        '"_" (no "/", not "." or ".."), e.g. blue_chair.')
  return name


def child(parent, name, what):
  """`parent/name` after checking `name`; the result lies inside `parent`."""
  path = os.path.join(parent, check_name(name, what))
  real_parent = os.path.realpath(parent)
  if os.path.dirname(os.path.realpath(path)) != real_parent:
    raise WorkdirError(f'{what}={name!r} resolves outside {parent}; choose '
                       'another name.')
  return path


def write_atomic(path, write_fn, binary=False):
  """Writes a file through a temporary sibling renamed over `path`.

  Args:
    path: the file to (re)place; its folder is created if missing.
    write_fn: called with the open temporary file.
    binary: open it in binary mode.
  Returns:
    path.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp', dir=folder)
  try:
    with os.fdopen(fd, 'wb' if binary else 'w',
                   **({} if binary else {'encoding': 'utf-8'})) as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  return path


def write_text(path, text):
  """Atomically writes `text` to `path`."""
  return write_atomic(path, lambda f: f.write(text))


def _json_default(value):
  """Converts numpy values for `json.dump`."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'{type(value).__name__} is not JSON serialisable: '
                  f'{value!r}')


def write_json(path, value, indent=2, sort_keys=True):
  """Atomically writes `value` as JSON (numpy scalars and arrays allowed)."""
  text = json.dumps(value, indent=indent, sort_keys=sort_keys,
                    default=_json_default) + '\n'
  return write_text(path, text)


@contextlib.contextmanager
def staged_dir(out_dir):
  """Yields an empty temporary folder that replaces `out_dir` on success.

  The old `out_dir` (if any) stays in place until the new one is complete;
  on an error the temporary folder is removed and `out_dir` is untouched.
  """
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  name = os.path.basename(out_dir)
  tmp = tempfile.mkdtemp(prefix=f'.{name}.new-', dir=parent)
  try:
    yield tmp
    old = None
    if os.path.exists(out_dir):
      old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
      os.rename(out_dir, os.path.join(old, name))
    os.rename(tmp, out_dir)
    if old:
      shutil.rmtree(old)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# The training lock.


def _process_start(pid):
  """The start time of process `pid` in clock ticks since boot, or None."""
  try:
    with open(f'/proc/{pid}/stat', encoding='utf-8') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(record):
  """Whether the process of a lock record still runs (on this host)."""
  pid = record.get('pid')
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  start = _process_start(pid)
  # A reused pid has another start time.
  return start is None or record.get('start_ticks') in (None, start)


def describe_holder(record):
  return (f"pid {record.get('pid')} on {record.get('host')} (started "
          f"{record.get('started')})")


class WorkdirLock:
  """An exclusive lock on a run folder, held by one training at a time.

  The lock file records the holder's pid, host and start time. The exclusion
  itself is an `fcntl.flock` on that file, which the kernel releases when the
  holder dies; a record left behind by a dead process on this host is taken
  over with a message. A record of another host cannot be checked, so it is
  refused while present.

  Example:
    with WorkdirLock(workdir):
      ...  # train
  """

  def __init__(self, workdir, message_fn=print):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._message = message_fn
    self._fd = None

  def acquire(self):
    """Takes the lock; raises WorkdirLockedError if another run holds it."""
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    for _ in range(10):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        record = _read_record(fd)
        os.close(fd)
        raise WorkdirLockedError(self._locked_message(record)) from None
      # The holder may have removed the file between our open and flock.
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      record = _read_record(fd)
      if record and not self._may_take_over(record):
        os.close(fd)
        raise WorkdirLockedError(self._locked_message(record))
      self._fd = fd
      self._write_record()
      return self
    raise WorkdirLockedError(f'Could not take {self.path}: it kept changing; '
                             'is another training starting in this folder?')

  def _may_take_over(self, record):
    if record.get('pid') is None:  # unreadable, and nobody holds the flock.
      self._message(f'Replacing the unreadable lock file {self.path}.')
      return True
    if record.get('host') != socket.gethostname():
      return False
    if record.get('pid') == os.getpid():
      return True  # left by this process (an earlier run in a notebook).
    if _alive(record):
      return False
    self._message(f'Taking over the stale lock {self.path} of '
                  f'{describe_holder(record)}, which is no longer running.')
    return True

  def _locked_message(self, record):
    holder = describe_holder(record) if record else 'another process'
    return (f'{os.path.dirname(self.path)} is in use by a training: '
            f'{holder} holds {self.path}. Wait for it to finish or stop it, '
            'or use another --workdir; if that process is gone, delete the '
            'lock file.')

  def _write_record(self):
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': datetime.datetime.now().isoformat(
                  timespec='seconds'),
              'start_ticks': _process_start(os.getpid())}
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, (json.dumps(record) + '\n').encode(), 0)
    os.fsync(self._fd)

  def release(self):
    """Removes the lock file and releases the lock (idempotent)."""
    if self._fd is None:
      return
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc_info):
    self.release()


def _read_record(fd):
  """The JSON record of an open lock file, {} when empty or unreadable."""
  try:
    text = os.pread(fd, 4096, 0).decode('utf-8', 'replace')
    record = json.loads(text) if text.strip() else {}
  except ValueError:
    return {'pid': None, 'host': None, 'started': 'unknown (unreadable)'}
  return record if isinstance(record, dict) else {}


def read_lock(workdir):
  """The record of a training holding `workdir`, or None when none does."""
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY)
  except FileNotFoundError:
    return None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return _read_record(fd) or {}
    return None  # nobody holds it: a leftover of a dead run.
  finally:
    os.close(fd)


# ---------------------------------------------------------------------------
# The recorded config.


def load_config_json(workdir):
  """The config recorded in `DIR/config.json` (without its history), or None.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    recorded = json.load(f)
  recorded.pop(_HISTORY, None)
  return recorded


def config_history(workdir):
  """Earlier versions of a run's config: [{'step', 'changes', 'config'}]."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return json.load(f).get(_HISTORY, [])


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
  return write_json(os.path.join(workdir, CONFIG_FILE), value)


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
      is kept in the history with the step at which it changed.
    write: write the file (process 0); the others only check.
  Returns:
    The path of config.json.
  Raises:
    ConfigChangedError: the config differs from the recorded one and
      `allow_change` is False (nothing is written).
  """
  recorded = load_config_json(workdir)
  history = config_history(workdir)
  if resumed_step is not None and recorded is not None:
    changes = config_changes(recorded, config_dict)
    if changes and not allow_change:
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
    if changes:
      history.append({'step': int(resumed_step),
                      'changes': {k: list(v) for k, v in changes.items()},
                      'config': recorded})
  path = os.path.join(workdir, CONFIG_FILE)
  if write:
    save_config_json(workdir, config_dict, history)
  return path
