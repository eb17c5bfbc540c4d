"""The run folder: its layout, safe output names, atomic writes and locks.

A run folder `DIR` holds:
  DIR/config.json          the resolved config of the run, with the history of
                           changes accepted on resume (`config_record`).
  DIR/train.lock           present while a training runs: pid, host, start.
  DIR/checkpoints/         Orbax checkpoints (`checkpointing`); only a
                           training writes here, readers open it read-only.
  DIR/train_clock.json     the training-time record (`train_clock`).
  DIR/metrics.jsonl, tb/   training curves (`writers`).
  DIR/val/, eval/, render/ validation, evaluation and path renders.
  DIR/edit/codes.npz       the code bank (written under .codes.npz.lock).
  DIR/edit/runs/<name>/    one folder per edit (`edit_output`); runs made
                           before this layout, DIR/edit/<name>/, are still
                           found by `find_edit`.
  DIR/edit/report.json     the edit benchmark's report (evaluator `edit`).

Owns where each of these lives, the checks that keep a user-given name inside
its parent folder and off the files the run owns, the write-then-rename
helpers every writer uses (a reader never sees a partial file, a failure
leaves the old one; files and folders get the user's umask), the replacement
of a whole output folder only once the new one is complete, the exclusive
training lock and the code bank's lock. It does not own what goes into the
files.
"""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile

import numpy as np

from condnerf import errors

CHECKPOINTS = 'checkpoints'
CONFIG_FILE = 'config.json'
EDIT = 'edit'
EDIT_RUNS = 'runs'
BANK_FILE = 'codes.npz'
BANK_LOCK = '.codes.npz.lock'  # beside the run's bank.
MANIFEST = '.outputs.json'  # what a shared folder's last staged write put.
# Folders of DIR that only the training writes: no evaluator may be named so.
TRAINING_FOLDERS = (CHECKPOINTS, 'tb', 'profile')
# Longest plain name: staging adds a prefix and suffix to it (limit 255).
MAX_NAME_BYTES = 200


class WorkdirError(errors.UserError):
  """A name or path that would leave its folder, or a folder in use."""


def check_workdir(workdir):
  """Refuses a `--workdir` that cannot be a run folder, before anything is
  read or written: a file, or a symlink to nothing.

  Returns:
    workdir.
  Raises:
    WorkdirError: naming what is there and the fix.
  """
  if os.path.islink(workdir) and not os.path.exists(workdir):
    raise WorkdirError(
        f'--workdir={workdir} is a symlink to {os.readlink(workdir)}, which '
        'does not exist; create that folder or give another --workdir.')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file, not a folder; give '
                       'a folder (it is created if missing).')
  return workdir


def checkpoint_dir(workdir):
  return os.path.join(workdir, CHECKPOINTS)


def edit_dir(workdir):
  return os.path.join(workdir, EDIT)


def bank_path(workdir):
  """The run's code bank, `DIR/edit/codes.npz`."""
  return os.path.join(workdir, EDIT, BANK_FILE)


def check_name(name, what):
  """Returns `name` if it is a plain file name; raises WorkdirError if not.

  A plain name is non-empty, not '.' or '..', has no path separator and is
  at most `MAX_NAME_BYTES` long, so `os.path.join(parent, name)` stays
  inside `parent` and its staging folder's name fits the file system.

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
  if len(name.encode('utf-8', 'surrogateescape')) > MAX_NAME_BYTES:
    raise WorkdirError(
        f'{what} is {len(name.encode("utf-8", "surrogateescape"))} bytes '
        f'long ({name[:24]!r}...); use at most {MAX_NAME_BYTES}.')
  return name


def _is_edit_output(path):
  """Whether `path` is a folder an edit wrote (it holds a report.json)."""
  return os.path.isfile(os.path.join(path, 'report.json'))


def edit_output(workdir, name):
  """Where edit `name` writes: `DIR/edit/runs/<name>/`, after the checks.

  Raises:
    WorkdirError: `name` is not plain, or names something the run folder
      owns other than an earlier output of an edit: the bank, the
      benchmark's report, a mask, any file of `DIR/edit/` or
      `DIR/edit/runs/` (nothing is touched).
  """
  check_name(name, 'edit.name')
  edit = edit_dir(workdir)
  for folder in (edit, os.path.join(edit, EDIT_RUNS)):
    if os.path.lexists(folder) and not os.path.isdir(folder):
      raise WorkdirError(
          f'{folder} is a file, but the run keeps its edits in a folder '
          'there; move the file aside (e.g. to '
          f'{os.path.basename(folder)}.file) and edit again.')
  owned = {BANK_FILE, BANK_LOCK, EDIT_RUNS, MANIFEST, 'report.json'}
  taken = os.path.join(edit, name)
  if name in owned or (os.path.lexists(taken) and not _is_edit_output(taken)):
    raise WorkdirError(
        f'edit.name={name!r} is the name of {taken}, which the run folder '
        'owns (the code bank, the benchmark report, a mask or another file '
        'of it); choose another name, e.g. blue_chair.')
  out = child(os.path.join(edit, EDIT_RUNS), name, 'edit.name')
  if os.path.lexists(out) and not os.path.isdir(out):
    raise WorkdirError(f'edit.name={name!r}: {out} exists and is not an '
                       "edit's folder; remove it or choose another name.")
  return out


def find_edit(workdir, name):
  """The folder of an earlier edit `name`: `DIR/edit/runs/<name>/`, or the
  layout before it, `DIR/edit/<name>/`.

  Raises:
    WorkdirError: no edit of that name (the message lists those there are).
  """
  check_name(name, 'edit name')
  edit = edit_dir(workdir)
  for path in (os.path.join(edit, EDIT_RUNS, name), os.path.join(edit, name)):
    if _is_edit_output(path):
      return path
  raise WorkdirError(f'No edit {name!r} in {edit}; it has '
                     f'{list_edits(workdir) or "none"}.')


def list_edits(workdir):
  """Names of the run's edits, both layouts, sorted."""
  edit = edit_dir(workdir)
  names = set()
  for folder in (os.path.join(edit, EDIT_RUNS), edit):
    if os.path.isdir(folder):
      names.update(n for n in os.listdir(folder) if not n.startswith('.') and
                   _is_edit_output(os.path.join(folder, n)))
  return sorted(names)


def check_evaluator_name(name):
  """Refuses an evaluator name whose folder `DIR/<name>` is not an output
  folder (a training's own folder, or not a plain name)."""
  check_name(name, 'evals name')
  if name in TRAINING_FOLDERS:
    raise WorkdirError(
        f'evals.{name}: an evaluator writes to DIR/{name}/, which holds the '
        "training's own files; name it otherwise, e.g. evals.my_eval.")
  return name


def child(parent, name, what):
  """`parent/name` after checking `name`; the result lies inside `parent`."""
  path = os.path.join(parent, check_name(name, what))
  real_parent = os.path.realpath(parent)
  if os.path.dirname(os.path.realpath(path)) != real_parent:
    raise WorkdirError(f'{what}={name!r} resolves outside {parent}; choose '
                       'another name.')
  return path


def umask():
  """The process's file-mode creation mask (read without changing it)."""
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o022)  # no /proc: the only portable way reads by setting.
  os.umask(mask)
  return mask


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
    os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it 0600.
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


def _mkdtemp(prefix, parent):
  """`tempfile.mkdtemp` with the umask's mode instead of 0700."""
  path = tempfile.mkdtemp(prefix=prefix, dir=parent)
  os.chmod(path, 0o777 & ~umask())
  return path


@contextlib.contextmanager
def staged_dir(out_dir, shared=False):
  """Yields an empty temporary folder that replaces `out_dir` on success.

  The old `out_dir` (if any) stays in place until the new one is complete;
  on an error the temporary folder is removed and `out_dir` is untouched.

  Args:
    out_dir: the output folder.
    shared: `out_dir` also holds files others own (`DIR/edit`: the bank,
      edits): then only the entries of the new folder replace theirs, one
      rename each, and the entries the previous staged write put there
      (recorded in `MANIFEST`) that the new one lacks are removed; nothing
      else in `out_dir` is touched.
  """
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  name = os.path.basename(out_dir)
  tmp = _mkdtemp(f'.{name}.new-', parent)
  try:
    yield tmp
    if shared:
      _merge_into(tmp, out_dir)
      return
    old = None
    if os.path.exists(out_dir):
      old = _mkdtemp(f'.{name}.old-', parent)
      os.rename(out_dir, os.path.join(old, name))
    os.rename(tmp, out_dir)
    if old:
      shutil.rmtree(old)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _merge_into(new, out_dir):
  """Moves the entries of folder `new` into `out_dir` (see `staged_dir`)."""
  os.makedirs(out_dir, exist_ok=True)
  manifest = os.path.join(out_dir, MANIFEST)
  try:
    with open(manifest, encoding='utf-8') as f:
      before = set(json.load(f))
  except (OSError, ValueError, TypeError):
    before = set()
  entries = sorted(os.listdir(new))
  for entry in entries:
    target = os.path.join(out_dir, entry)
    if os.path.isdir(os.path.join(new, entry)) and os.path.isdir(target):
      aside = _mkdtemp(f'.{entry}.old-', out_dir)
      os.rename(target, os.path.join(aside, entry))
      os.rename(os.path.join(new, entry), target)
      shutil.rmtree(aside)
    else:
      os.replace(os.path.join(new, entry), target)
  for entry in sorted(before - set(entries)):
    path = os.path.join(out_dir, check_name(entry, MANIFEST))
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
  write_json(manifest, entries)


@contextlib.contextmanager
def file_lock(path, what):
  """Holds an exclusive `fcntl.flock` on `path` (created if missing), waiting
  for other processes that hold it; the file itself stays.

  Args:
    path: the lock file.
    what: what it guards, for the message of a lock that cannot be made.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise WorkdirError(f'Cannot open the lock {path} of {what}: '
                       f'{e.strerror}; check the folder is writable.') from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # releases the flock.


def bank_lock(bank):
  """The lock every read-merge-write of the code bank `bank` holds."""
  folder, name = os.path.split(os.path.abspath(bank))
  return file_lock(os.path.join(folder, f'.{name}.lock'),
                   f'the code bank {bank}')
