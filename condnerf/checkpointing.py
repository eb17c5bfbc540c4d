"""Checkpoints of the training state.

Owns the on-disk layout of a run's checkpoints: one Orbax `CheckpointManager`
directory with a step folder per save, each holding a single item named
`state`, the pytree `{'step', 'params', 'codes', 'opt_state'}` written with
`StandardSave`. Optax states (named tuples) are saved as ordinary pytrees and
come back with the structure of the abstract tree given to `restore`. This
module does not own the run's `config.json` (`workdir`), nor the check that
a checkpoint fits the model (`checkpoint_match`).

It does not own what the state contains (`train_lib.py` builds it), when to
save (the loop decides; `save_interval_steps` only filters), or which process
logs. Every public method must be called on every process: Orbax coordinates
them (each writes its own shards; process 0 writes the metadata, renames and
deletes), so there is no host-only branch here. Every process reads the same
files, so all of them make the same fallback decisions in `restore`.

Guarantees:
  * Saving is atomic. Orbax writes a step into `<step>.orbax-checkpoint-tmp-*`
    and renames it to `<step>` once every array is committed. Old steps beyond
    `max_to_keep` are deleted only after that rename, so a crash or error
    during a save leaves the previous checkpoint intact. Leftover tmp folders
    are reported by `restore` and removed.
  * `restore` reads each step's metadata before touching any array. A tree or
    shape that differs from the abstract state raises `CheckpointMismatchError`
    (the workdir belongs to another model configuration). A step that cannot
    be read is logged and skipped in favour of the next older one; a later
    `save` of that same step number replaces it.
"""

from collections.abc import Mapping
import os
import time
from typing import Any

from absl import logging
import orbax.checkpoint as ocp

from condnerf import checkpoint_match
from condnerf import checkpoint_noise
from condnerf import errors

_ITEM = 'state'
_READER_RETRIES = 5
_SUMMARY_CHARS = 240  # of each unreadable step's error, in messages.


# Raised by `restore` when a checkpoint is of another model (kept here too,
# where its callers look for it).
CheckpointMismatchError = checkpoint_match.CheckpointMismatchError


class CheckpointCorruptError(errors.UserError, RuntimeError):
  """No requested checkpoint step could be read."""


class CheckpointWriteError(errors.UserError, RuntimeError):
  """A save failed for want of space (the step is dropped, older kept)."""


class Checkpointer:
  """Saves and restores the training state in one checkpoint directory.

  Example:
    ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), max_to_keep=3)
    state, step = ckpt.restore(jax.eval_shape(init_fn, key))
    ...
    ckpt.save(step, state)
    ckpt.close()
  """

  def __init__(self, directory, max_to_keep=3, save_interval_steps=1,
               read_only=False):
    """Opens a checkpoint directory.

    Args:
      directory: path of the folder that holds one sub-folder per step.
      max_to_keep: number of newest steps kept; older ones are deleted after a
        newer save is finalised. None keeps every step.
      save_interval_steps: `save` without `force` writes only when the step
        is a multiple of this.
      read_only: open for reading only (eval, render, edit, notebooks): the
        folder must exist, nothing in it is created, cleaned or deleted, and
        a training's save in flight (its tmp folder) is left alone. `save`
        then raises.
    """
    self._directory = os.path.abspath(os.fspath(directory))
    self._read_only = read_only
    # Unfinalised step folders left by an interrupted save. Orbax never lists
    # them as steps and removes them when the manager is created
    # (`cleanup_tmp_directories`), so note them first to report in `restore`.
    # A reader leaves them alone: they may be a running training's save.
    self._unfinalized_steps = ([] if read_only else
                               _unfinalized_steps(self._directory))
    # Steps found unreadable by `restore`; `save` replaces them.
    self._bad_steps = set()
    self._saving = None  # the step of the save in flight.
    if read_only:
      if not os.path.isdir(self._directory):
        raise FileNotFoundError(f'No checkpoint folder {self._directory}.')
      # Every option that could write is off, so Orbax has nothing to adjust
      # (it warns for each one it must turn off).
      options = ocp.CheckpointManagerOptions(
          read_only=True, max_to_keep=None, save_interval_steps=0,
          create=False, cleanup_tmp_directories=False)
    else:
      checkpoint_noise.drop_disk_full_reports()
      options = ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep,
          save_interval_steps=save_interval_steps,
          create=True,
          cleanup_tmp_directories=True,
      )
    def open_manager():
      with checkpoint_noise.quiet_orbax(read_only):
        return ocp.CheckpointManager(
            self._directory,
            options=options,
            item_handlers={_ITEM: ocp.StandardCheckpointHandler()},
        )

    self._manager = self._as_reader(open_manager)

  def _as_reader(self, list_steps):
    """Runs `list_steps` (which lists the step folders), retrying a reader.

    Orbax lists the step folders and then reads each one's timestamp; a
    running training may retire a step in between (FileNotFoundError). A
    read-only reader then lists again, up to `_READER_RETRIES` times; a
    training's own manager never races with itself, so it does not retry.
    """
    for attempt in range(_READER_RETRIES + 1):
      try:
        return list_steps()
      except FileNotFoundError:
        if not self._read_only or attempt == _READER_RETRIES:
          raise
        time.sleep(0.2 * (attempt + 1))

  @property
  def directory(self) -> str:
    return self._directory

  def save(self, step: int, state: Mapping[str, Any], force=False) -> bool:
    """Starts an asynchronous save of `state` as checkpoint `step`.

    The arrays are copied to host memory before this returns, so `state` may
    be donated or changed afterwards. The write finishes in the background;
    the next `save`, `restore`, `wait_until_finished` or `close` waits for it
    and re-raises any error it hit.

    Args:
      step: training step, used as the folder name.
      state: pytree `{'step', 'params', 'codes', 'opt_state'}` of jax or numpy
        arrays.
      force: save even if `step` is not a multiple of `save_interval_steps`.

    Returns:
      True if a save was started; False if the interval skipped it or `step`
      is already saved.
    """
    if self._read_only:
      raise RuntimeError(f'{self._directory} was opened read-only.')
    step = int(step)
    self.wait_until_finished()
    if step in self._manager.all_steps():
      if step not in self._bad_steps:
        logging.info('Checkpoint for step %d already exists; not saving it '
                     'again.', step)
        return False
      logging.warning('Replacing unreadable checkpoint for step %d in %s.',
                      step, self._directory)
      self._manager.delete(step)
      self._bad_steps.discard(step)
    started = self._manager.save(
        step,
        args=ocp.args.Composite(**{_ITEM: ocp.args.StandardSave(state)}),
        force=force)
    if started:
      self._saving = step
    return started

  def delete(self, step):
    """Deletes checkpoint `step` (a training discarding a suspect save)."""
    if self._read_only:
      raise RuntimeError(f'{self._directory} was opened read-only.')
    self.wait_until_finished()
    self._manager.delete(int(step))

  def latest_step(self) -> int | None:
    """Returns the newest step folder, or None when there is none.

    This is the newest finalised save (or one in flight), not necessarily a
    readable one; `restore` reports the step it actually used.
    """
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Returns every saved step, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state, step=None):
    """Restores a checkpoint into the structure and shardings of a template.

    With `step=None`, tries the newest step first. A step whose files cannot
    be read (deleted or truncated files, missing metadata) is logged with a
    warning and skipped for the next older one.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct`, e.g. from
        `jax.eval_shape`, with the structure of the saved state. Leaves that
        carry a `sharding` come back as `jax.Array`s placed with it (give
        shardings in multi-process runs); the others as Orbax restores them
        by default (numpy for leaves saved from numpy).
      step: a specific step to restore, or None for the newest readable one.

    Returns:
      `(state, step)`: the restored pytree (same structure as
      `abstract_state`) and its step; `(None, None)` if the directory holds no
      checkpoint.

    Raises:
      CheckpointMismatchError: a checkpoint's tree structure or a leaf's
        shape or dtype differs from `abstract_state`.
      CheckpointCorruptError: no candidate step could be read.
      ValueError: `step` was given but is not saved.
    """
    self.wait_until_finished()
    saved = self.all_steps()
    if step is not None:
      step = int(step)
      if step not in saved:
        raise ValueError(f'No checkpoint for step {step} in {self._directory};'
                         f' saved steps: {saved}.')
      candidates = [step]
    else:
      candidates = saved[::-1]
      for tmp_step, path in self._unfinalized_steps:
        logging.warning(
            'Ignoring unfinalized checkpoint for step %d at %s (a save was '
            'interrupted before it completed).', tmp_step, path)
      self._unfinalized_steps = []  # Reported once; Orbax has removed them.
    if not candidates:
      return None, None

    def template(metadata, candidate):
      checkpoint_match.check_matches(metadata, abstract_state, candidate,
                                     self._directory)
      return abstract_state

    restored, step_found = self._restore_first_readable(
        candidates, template, latest=step is None)
    if step_found != candidates[0]:
      logging.warning('Restored checkpoint step %d instead of step %d.',
                      step_found, candidates[0])
    return restored, step_found

  def _restore_first_readable(self, candidates, template, latest,
                              attempt=0):
    """Restores the first candidate step whose files can be read.

    A read-only reader (of a folder a training may be writing) lists the
    steps again when none could be read, and tries the new list.

    Args:
      candidates: steps to try, in order.
      template: `(metadata, step) -> abstract tree` to restore into; it may
        raise CheckpointMismatchError, which is not caught.
      latest: the candidates are every saved step (newest first), not one
        step asked for; listing again may find others.
      attempt: how many times the steps were listed again.
    Returns:
      (restored state, step).
    Raises:
      CheckpointCorruptError: no candidate could be read.
    """
    failures = []
    for candidate in candidates:
      try:
        with checkpoint_noise.quiet_async_leftovers():
          metadata = self._read_metadata(candidate)
      except Exception as e:  # pylint: disable=broad-exception-caught
        # Orbax and tensorstore raise OSError, ValueError or KeyError,
        # depending on which file is damaged.
        failures.append(self._report_bad(candidate, e))
        continue
      abstract = template(metadata, candidate)
      try:
        with checkpoint_noise.quiet_async_leftovers():
          restored = self._manager.restore(
              candidate,
              args=ocp.args.Composite(
                  **{_ITEM: ocp.args.StandardRestore(abstract)}))
      except Exception as e:  # pylint: disable=broad-exception-caught
        failures.append(self._report_bad(candidate, e))
        continue
      return restored[_ITEM], candidate
    if self._read_only and attempt < _READER_RETRIES:
      # A running training may have finished one step and retired the
      # others while we read; look again, unless nothing changed (the
      # steps are damaged, not gone).
      time.sleep(0.2 * (attempt + 1))
      self._as_reader(self._manager.reload)
      newer = self.all_steps()[::-1] if latest else list(candidates)
      if newer and newer != list(candidates):
        return self._restore_first_readable(newer, template, latest,
                                            attempt + 1)
    raise CheckpointCorruptError(
        f'No readable checkpoint among steps {candidates} in '
        f'{self._directory} (restore them from a copy, or move the folder '
        'aside to train afresh):\n' + '\n'.join(failures))

  def restore_entry(self, name, abstract_entry):
    """Restores one top-level entry of the newest readable checkpoint.

    Used to start a new run from another run's weights (transfer): only
    `name` (e.g. 'params') must match the new model; the rest of the saved
    state (codes, optimizer moments) may have any shape and is not returned.

    Args:
      name: top-level key of the saved state ('params', 'codes', ...).
      abstract_entry: pytree of `jax.ShapeDtypeStruct` that entry must match.
    Returns:
      `(entry, step)`, or `(None, None)` if the directory holds no checkpoint.
    Raises:
      CheckpointMismatchError: the entry is missing or its shapes differ.
      CheckpointCorruptError: no step could be read.
    """
    self.wait_until_finished()
    candidates = self.all_steps()[::-1]
    if not candidates:
      return None, None

    def template(metadata, candidate):
      if name not in metadata:
        raise CheckpointMismatchError(
            f'Checkpoint step {candidate} in {self._directory} has no '
            f'{name!r}; it holds {sorted(metadata)}.')
      checkpoint_match.check_matches(
          {name: metadata[name]}, {name: abstract_entry}, candidate,
          self._directory)
      return {key: abstract_entry if key == name else
              checkpoint_match.abstract_from_metadata(value)
              for key, value in metadata.items()}

    restored, step = self._restore_first_readable(candidates, template,
                                                  latest=True)
    return restored[name], step

  def wait_until_finished(self):
    """Blocks until the save in flight (if any) is written and finalised.

    Raises:
      CheckpointWriteError: the disk or quota filled up during the save.
      Exception: whatever else made the background save fail. The failed
        step is then absent from `all_steps`, and no older step was deleted.
    """
    step, self._saving = self._saving, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      # Orbax updates its in-memory step list when a save starts; re-read the
      # directory so the failed step is not listed and retired steps
      # (still on disk) are.
      self._manager.reload()
      text = str(e)
      if checkpoint_noise.is_disk_full(e):
        kept = self._manager.latest_step()
        raise CheckpointWriteError(
            f'Saving checkpoint step {step} in {self._directory} failed: the '
            'disk is full ('
            + text.splitlines()[0][:_SUMMARY_CHARS] + '). Free some space '
            'and resume: ' + (f'step {kept}, the latest complete checkpoint,'
                              ' is intact.' if kept is not None else
                              'no complete checkpoint was written yet.')
        ) from e
      raise

  def close(self):
    """Waits for pending saves and releases the manager's resources."""
    try:
      self.wait_until_finished()
    finally:
      self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def _read_metadata(self, step):
    """Returns the saved tree metadata of `step`; raises if unreadable."""
    metadata = self._manager.metadata(step).item_metadata[_ITEM]
    if metadata is None:
      # Orbax returns None (and logs) when the item's _METADATA file is gone.
      raise FileNotFoundError(f'no readable metadata for item {_ITEM!r}')
    return metadata

  def _report_bad(self, step, error):
    """Logs an unreadable step, remembers it, and returns a summary line
    (one line, its first `_SUMMARY_CHARS` characters: tensorstore's errors
    carry a page of spec)."""
    self._bad_steps.add(step)
    text = errors.one_line(error)
    if len(text) > _SUMMARY_CHARS:
      text = text[:_SUMMARY_CHARS] + '...'
    summary = f'step {step}: {type(error).__name__}: {text}'
    logging.warning(
        'Checkpoint for step %d in %s is corrupt or incomplete and is '
        'skipped: %s', step, self._directory, summary)
    return summary


def _unfinalized_steps(directory):
  """Returns `(step, path)` for each interrupted save left in `directory`."""
  if not os.path.isdir(directory):
    return []
  try:
    tmp_paths = ocp.utils.tmp_checkpoints(directory)
  except OSError:
    # Process 0 may already be deleting them; they only feed a warning.
    return []
  found = []
  for tmp in tmp_paths:
    path = tmp.get()
    try:
      step = ocp.utils.step_from_checkpoint_name(os.path.basename(str(path)))
    except ValueError:
      continue
    found.append((step, str(path)))
  return sorted(found)
