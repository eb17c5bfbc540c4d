"""The exclusive training lock of a run folder, `DIR/train.lock`.

Owns `WorkdirLock` (one training per folder: an `fcntl.flock` the kernel
releases when its holder dies, and a record of the holder's pid, host and
start) and `read_lock` (who holds it, for readers and messages). The
folder's layout and its other locks are `workdir`'s.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

from condnerf import workdir as workdir_lib

LOCK_FILE = 'train.lock'


class WorkdirLockedError(workdir_lib.WorkdirError):
  """Another training holds the run folder."""



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
