"""Orbax's and asyncio's log noise around checkpoint reads and saves, kept
off the user's screen.

A failed restore leaves asyncio tasks and tensorstore threads behind that
report the same failure a hundred times over; a save that fills the disk is
logged by each of Orbax's background threads with its traceback; a
read-only manager warns about every option it turns off. The failures
themselves are raised and reported by `checkpointing`; this module only
drops their copies.
"""

import contextlib
import logging as std_logging
import os
import sys

from absl import logging


@contextlib.contextmanager
def quiet_async_leftovers():
  """Keeps a failed restore's leftovers off the user's screen.

  When one array of a step cannot be read, Orbax abandons its other reads
  with their event loop: asyncio logs each as "Task exception was never
  retrieved", and tensorstore's threads, finishing them later (while the
  next step is tried, or at exit), report "Event loop is closed" through
  `sys.excepthook`, over a hundred tracebacks for a small state. The
  failure itself is raised and reported (`Checkpointer._report_bad`);
  these copies of it are dropped: asyncio's log is silenced while the
  restore runs, and from the first restore on the hooks drop reports of
  that one error for the rest of the process (every other report passes).
  """
  asyncio_log = std_logging.getLogger('asyncio')
  level = asyncio_log.level
  asyncio_log.setLevel(std_logging.CRITICAL)
  _drop_closed_loop_reports()
  try:
    yield
  finally:
    asyncio_log.setLevel(level)


def _is_closed_loop_error(value, tb):
  """An asyncio "Event loop is closed" raised by `_check_closed`."""
  if not (isinstance(value, RuntimeError) and
          str(value) == 'Event loop is closed'):
    return False
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and tb.tb_frame.f_code.co_name == '_check_closed'


def _drop_closed_loop_reports():
  """Wraps `sys.excepthook` and `sys.unraisablehook` (once each) to drop
  asyncio's "Event loop is closed"; tensorstore's threads report through
  the first (`PyErr_Print`)."""
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
  if not getattr(excepthook, 'drops_closed_loop_reports', False):

    def filtered_excepthook(kind, value, tb):
      if not _is_closed_loop_error(value, tb):
        excepthook(kind, value, tb)

    filtered_excepthook.drops_closed_loop_reports = True
    sys.excepthook = filtered_excepthook
  if not getattr(unraisablehook, 'drops_closed_loop_reports', False):

    def filtered_unraisablehook(info):
      if not _is_closed_loop_error(info.exc_value, info.exc_traceback):
        unraisablehook(info)

    filtered_unraisablehook.drops_closed_loop_reports = True
    sys.unraisablehook = filtered_unraisablehook


@contextlib.contextmanager
def quiet_orbax(quiet):
  """Silences Orbax's warning that a manager is read-only (it is intended)."""
  if not quiet:
    yield
    return
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


# How tensorstore (a ValueError) and Python (an OSError) say a disk or quota
# is full.
FULL_MARKERS = ('RESOURCE_EXHAUSTED', 'No space left on device',
                'Disk quota exceeded')


def is_disk_full(error):
  """Whether `error` (an exception) says the disk or quota is full."""
  text = str(error)
  return any(marker in text for marker in FULL_MARKERS)


class _DiskFullFilter(std_logging.Filter):
  """Drops Orbax's own reports of a save that ran out of space: each of its
  background threads logs the failure with a traceback, asyncio logs each
  abandoned write, and `Checkpointer.wait_until_finished` raises it once,
  as one line."""

  def filter(self, record):
    if (record.name != 'asyncio' and
        f'{os.sep}orbax{os.sep}' not in record.pathname):
      return True
    if is_disk_full(record.getMessage()):
      return False
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and is_disk_full(exc))


def drop_disk_full_reports():
  """Installs `_DiskFullFilter` on absl's logger, and the hooks of
  `quiet_async_leftovers` (a failed save leaves asyncio's leftovers too);
  once per process."""
  for logger in (logging.get_absl_logger(), std_logging.getLogger('asyncio')):
    if not any(isinstance(f, _DiskFullFilter) for f in logger.filters):
      logger.addFilter(_DiskFullFilter())
  _drop_closed_loop_reports()
