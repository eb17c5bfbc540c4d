"""Tests for condnerf.checkpointing."""

import glob
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from condnerf import checkpointing


def _make_state(width=4, seed=0):
  """A small `{'step', 'params', 'codes', 'opt_state'}` tree with Adam."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  params = {'dense': {'kernel': jax.random.normal(k1, (3, width)),
                      'bias': jax.random.normal(k2, (width,))}}
  codes = {'appearance': jax.random.normal(k3, (5, 2))}
  tx = optax.adam(1e-2)
  opt_state = tx.init({'params': params, 'codes': codes})
  # One update so that the moments are not all zero.
  grads = jax.tree.map(jnp.ones_like, {'params': params, 'codes': codes})
  _, opt_state = tx.update(grads, opt_state)
  return {'step': jnp.asarray(seed, jnp.int32), 'params': params,
          'codes': codes, 'opt_state': opt_state}


def _abstract(state, sharding=None):
  abstract = jax.eval_shape(lambda: state)
  if sharding is None:
    return abstract
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      abstract)


def _tree_snapshot(folder):
  """{relative path: (size, mtime_ns, bytes)} of every file under `folder`."""
  snapshot = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        data = f.read()
      stat = os.stat(path)
      snapshot[os.path.relpath(path, folder)] = (stat.st_size,
                                                 stat.st_mtime_ns, data)
  return snapshot


class CheckpointerTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.enter_context(tempfile.TemporaryDirectory())
    self.ckpt_dir = os.path.join(self.workdir, 'checkpoints')

  def _checkpointer(self, **kwargs):
    ckpt = checkpointing.Checkpointer(self.ckpt_dir, **kwargs)
    self.addCleanup(ckpt.close)
    return ckpt

  def _save_steps(self, steps, **kwargs):
    ckpt = checkpointing.Checkpointer(self.ckpt_dir, **kwargs)
    for step in steps:
      self.assertTrue(ckpt.save(step, _make_state(seed=step)))
    ckpt.close()

  def test_round_trip_with_sharding(self):
    state = _make_state(seed=7)
    ckpt = self._checkpointer()
    self.assertTrue(ckpt.save(7, state))
    ckpt.wait_until_finished()

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = _abstract(state, replicated)
    restored, step = self._checkpointer().restore(abstract)

    self.assertEqual(step, 7)
    self.assertEqual(jax.tree.structure(restored), jax.tree.structure(state))
    self.assertIsInstance(restored['opt_state'][0], optax.ScaleByAdamState)
    chex.assert_trees_all_close(restored, state)
    for leaf in jax.tree.leaves(restored):
      self.assertEqual(leaf.sharding, replicated)

  def test_no_checkpoint_returns_none(self):
    ckpt = self._checkpointer()
    self.assertIsNone(ckpt.latest_step())
    self.assertEqual(ckpt.all_steps(), [])
    self.assertEqual(ckpt.restore(_abstract(_make_state())), (None, None))

  def test_max_to_keep_and_interval(self):
    ckpt = self._checkpointer(max_to_keep=2, save_interval_steps=2)
    for step in (2, 4, 6):
      self.assertTrue(ckpt.save(step, _make_state(seed=step)))
    self.assertFalse(ckpt.save(7, _make_state()))
    self.assertTrue(ckpt.save(7, _make_state(seed=7), force=True))
    self.assertFalse(ckpt.save(7, _make_state(seed=7), force=True))
    ckpt.wait_until_finished()
    self.assertEqual(ckpt.all_steps(), [6, 7])
    self.assertEqual(ckpt.latest_step(), 7)
    self.assertEqual(sorted(os.listdir(self.ckpt_dir)), ['6', '7'])

  def test_restore_specific_step(self):
    self._save_steps([1, 2])
    ckpt = self._checkpointer()
    restored, step = ckpt.restore(_abstract(_make_state()), step=1)
    self.assertEqual(step, 1)
    chex.assert_trees_all_close(restored, _make_state(seed=1))
    with self.assertRaisesRegex(ValueError, 'No checkpoint for step 5'):
      ckpt.restore(_abstract(_make_state()), step=5)

  @parameterized.named_parameters(
      ('shape', {'width': 8}, "first at 'params/dense/bias'",
       r'checkpoint has float32\[4\], model expects float32\[8\]'),
      ('missing_leaf', {'extra_code': True}, "'codes/shape'",
       r'checkpoint has no such leaf, model expects float32\[5, 3\]'),
  )
  def test_mismatch_raises(self, change, path, shapes):
    self._save_steps([1])
    other = _make_state(width=change.get('width', 4))
    if change.get('extra_code'):
      other['codes']['shape'] = jnp.zeros((5, 3))
    ckpt = self._checkpointer()
    with self.assertRaisesRegex(checkpointing.CheckpointMismatchError,
                                path) as cm:
      ckpt.restore(_abstract(other))
    message = str(cm.exception)
    self.assertRegex(message, shapes)
    self.assertIn('different model configuration', message)
    self.assertIn('--workdir', message)

  def test_python_scalar_step(self):
    # A Python int is stored as int64 and eval_shape makes a weak int32; that
    # is not a configuration mismatch.
    state = _make_state()
    state['step'] = 5
    ckpt = self._checkpointer()
    ckpt.save(5, state)
    restored, step = ckpt.restore(_abstract(state))
    self.assertEqual(step, 5)
    self.assertEqual(int(restored['step']), 5)

  def test_dtype_mismatch_raises(self):
    self._save_steps([1])
    other = _make_state()
    other['step'] = other['step'].astype(jnp.float32)
    with self.assertRaisesRegex(checkpointing.CheckpointMismatchError,
                                r"'step'.*int32\[\].*float32\[\]"):
      self._checkpointer().restore(_abstract(other))

  def _corrupt(self, step, kind):
    item = os.path.join(self.ckpt_dir, str(step), 'state')
    if kind == 'truncated_metadata':
      path = os.path.join(item, '_METADATA')
      with open(path, 'r+') as f:
        f.truncate(os.path.getsize(path) // 2)
    elif kind == 'deleted_metadata':
      os.remove(os.path.join(item, '_METADATA'))
    elif kind == 'deleted_item':
      shutil.rmtree(item)
    elif kind == 'truncated_data':
      data_files = glob.glob(os.path.join(item, 'd', '*'))
      self.assertNotEmpty(data_files)
      for path in data_files:
        with open(path, 'r+') as f:
          f.truncate(os.path.getsize(path) // 2)
    else:
      raise ValueError(kind)

  @parameterized.parameters(
      'truncated_metadata', 'deleted_metadata', 'deleted_item')
  def test_corrupt_latest_falls_back(self, kind):
    self._check_corrupt_latest_falls_back(kind)

  # When tensorstore fails to read one array, Orbax's asyncio loop closes while
  # reads of the other arrays are still pending; their completion callbacks
  # then raise "Event loop is closed" inside tensorstore threads, which Python
  # reports as unraisable exceptions. The restore itself raises properly and is
  # handled; the noise is third-party and comes only from damaged data files.
  @pytest.mark.filterwarnings(
      r'ignore:(?s)Exception ignored in. None.*RuntimeError. Event loop is '
      r'closed:pytest.PytestUnraisableExceptionWarning')
  def test_truncated_data_falls_back(self):
    self._check_corrupt_latest_falls_back('truncated_data')

  def _check_corrupt_latest_falls_back(self, kind):
    self._save_steps([1, 2, 3])
    self._corrupt(3, kind)
    ckpt = self._checkpointer()
    with self.assertLogs('absl', level='WARNING') as logs:
      restored, step = ckpt.restore(_abstract(_make_state()))
    self.assertEqual(step, 2)
    chex.assert_trees_all_close(restored, _make_state(seed=2))
    self.assertTrue(
        any('step 3' in line and 'corrupt' in line for line in logs.output),
        logs.output)
    # Training resumes from step 2 and reaches step 3 again: the unreadable
    # checkpoint is replaced rather than kept.
    self.assertTrue(ckpt.save(3, _make_state(seed=30)))
    restored, step = ckpt.restore(_abstract(_make_state()))
    self.assertEqual(step, 3)
    chex.assert_trees_all_close(restored, _make_state(seed=30))

  def test_all_corrupt_raises(self):
    self._save_steps([1, 2])
    self._corrupt(1, 'deleted_item')
    self._corrupt(2, 'truncated_metadata')
    ckpt = self._checkpointer()
    with self.assertRaisesRegex(checkpointing.CheckpointCorruptError,
                                r'No readable checkpoint among steps \[2, 1\]'):
      ckpt.restore(_abstract(_make_state()))

  def test_unfinalized_save_is_ignored_with_warning(self):
    self._save_steps([1])
    # What an interrupted save leaves behind: a step folder not yet renamed.
    shutil.copytree(os.path.join(self.ckpt_dir, '1'),
                    os.path.join(self.ckpt_dir, '2.orbax-checkpoint-tmp-17'))
    ckpt = self._checkpointer()
    self.assertEqual(ckpt.all_steps(), [1])
    with self.assertLogs('absl', level='WARNING') as logs:
      _, step = ckpt.restore(_abstract(_make_state()))
    self.assertEqual(step, 1)
    self.assertTrue(any('unfinalized checkpoint for step 2' in line
                        for line in logs.output), logs.output)
    # The next save removes the leftover folder.
    ckpt.save(2, _make_state(seed=2))
    ckpt.wait_until_finished()
    self.assertEqual(sorted(os.listdir(self.ckpt_dir)), ['1', '2'])

  def test_read_only_reader_changes_nothing(self):
    self._save_steps([1, 2])
    # A running training's save in flight, which a reader must not touch.
    shutil.copytree(os.path.join(self.ckpt_dir, '2'),
                    os.path.join(self.ckpt_dir, '3.orbax-checkpoint-tmp-9'))
    before = _tree_snapshot(self.ckpt_dir)
    reader = checkpointing.Checkpointer(self.ckpt_dir, read_only=True)
    restored, step = reader.restore(_abstract(_make_state()))
    self.assertEqual(step, 2)
    chex.assert_trees_all_close(restored, _make_state(seed=2))
    with self.assertRaisesRegex(RuntimeError, 'read-only'):
      reader.save(4, _make_state(seed=4))
    reader.close()
    self.assertEqual(_tree_snapshot(self.ckpt_dir), before)
    with self.assertRaises(FileNotFoundError):  # and creates no folder.
      checkpointing.Checkpointer(os.path.join(self.workdir, 'nowhere'),
                                 read_only=True)
    self.assertFalse(os.path.exists(os.path.join(self.workdir, 'nowhere')))

  def test_reader_opening_during_a_rotation_lists_again(self):
    # A training retires step 1 after Orbax listed it but before it read the
    # folder's timestamp (seen in CI): the reader must list again.
    self._save_steps([1, 2])
    real = ocp.CheckpointManager
    calls = []

    def racing_manager(*args, **kwargs):
      calls.append(args)
      if len(calls) == 1:
        shutil.rmtree(os.path.join(self.ckpt_dir, '1'))
        raise FileNotFoundError(os.path.join(self.ckpt_dir, '1'))
      return real(*args, **kwargs)

    with mock.patch.object(ocp, 'CheckpointManager', racing_manager):
      reader = checkpointing.Checkpointer(self.ckpt_dir, read_only=True)
    self.assertLen(calls, 2)
    self.assertEqual(reader.all_steps(), [2])
    _, step = reader.restore(_abstract(_make_state()))
    self.assertEqual(step, 2)
    reader.close()
    # A training's own manager does not hide such an error.
    calls.clear()
    self._save_steps([3])
    with mock.patch.object(ocp, 'CheckpointManager', racing_manager):
      with self.assertRaises(FileNotFoundError):
        checkpointing.Checkpointer(self.ckpt_dir)

  def test_failed_save_keeps_previous_checkpoint(self):
    ckpt = checkpointing.Checkpointer(self.ckpt_dir, max_to_keep=1)
    ckpt.save(1, _make_state(seed=1))
    ckpt.wait_until_finished()

    temporary_path = ocp.path.atomicity.AtomicRenameTemporaryPath
    original_finalize = temporary_path.finalize

    async def crashing_finalize(self_, *args, **kwargs):
      if os.path.basename(str(self_.get_final())) == '2':
        raise OSError('simulated crash before the final rename')
      return await original_finalize(self_, *args, **kwargs)

    with mock.patch.object(temporary_path, 'finalize', crashing_finalize):
      ckpt.save(2, _make_state(seed=2))
      with self.assertRaisesRegex(Exception, 'simulated crash'):
        ckpt.wait_until_finished()
    self.assertIn('1', os.listdir(self.ckpt_dir))
    self.assertNotIn('2', os.listdir(self.ckpt_dir))
    self.assertEqual(ckpt.all_steps(), [1])
    restored, step = ckpt.restore(_abstract(_make_state()))
    self.assertEqual(step, 1)
    chex.assert_trees_all_close(restored, _make_state(seed=1))
    ckpt.close()

    with self.assertLogs('absl', level='WARNING') as logs:
      _, step = self._checkpointer().restore(_abstract(_make_state()))
    self.assertEqual(step, 1)
    self.assertTrue(any('unfinalized checkpoint for step 2' in line
                        for line in logs.output), logs.output)

  def test_disk_full_during_a_save_is_one_error(self):
    ckpt = checkpointing.Checkpointer(self.ckpt_dir, max_to_keep=1)
    self.addCleanup(ckpt.close)
    ckpt.save(1, _make_state(seed=1))
    ckpt.wait_until_finished()
    temporary_path = ocp.path.atomicity.AtomicRenameTemporaryPath
    original_finalize = temporary_path.finalize

    async def full_finalize(self_, *args, **kwargs):
      if os.path.basename(str(self_.get_final())) == '2':
        # How tensorstore reports it (a ValueError).
        raise ValueError('RESOURCE_EXHAUSTED: Failed writing: "x/d/ab": '
                         "No space left on device [os_error_code='28']")
      return await original_finalize(self_, *args, **kwargs)

    with mock.patch.object(temporary_path, 'finalize', full_finalize):
      ckpt.save(2, _make_state(seed=2))
      with self.assertNoLogs('absl', level='ERROR'):
        with self.assertRaises(checkpointing.CheckpointWriteError) as caught:
          ckpt.wait_until_finished()
    message = str(caught.exception)
    self.assertIn('Saving checkpoint step 2', message)
    self.assertIn('disk is full', message)
    self.assertIn('step 1, the latest complete checkpoint, is intact', message)
    self.assertNotIn('\n', message)
    self.assertEqual(ckpt.all_steps(), [1])

  def test_a_real_full_disk(self):
    """On a 200 KiB tmpfs (where this process may mount one)."""
    small = self.enter_context(tempfile.TemporaryDirectory())
    if os.geteuid() != 0 or os.system(
        f'mount -t tmpfs -o size=200k tmpfs {small} 2>/dev/null') != 0:
      self.skipTest('cannot mount a small tmpfs here (needs root)')
    self.addCleanup(os.system, f'umount {small}')
    ckpt = checkpointing.Checkpointer(os.path.join(small, 'ckpt'))
    ckpt.save(1, _make_state(width=8, seed=1))
    ckpt.wait_until_finished()
    with self.assertRaisesRegex(checkpointing.CheckpointWriteError,
                                'disk is full.*step 1, the latest'):
      ckpt.save(2, _make_state(width=40_000, seed=2))
      ckpt.wait_until_finished()
    self.assertEqual(ckpt.all_steps(), [1])
    ckpt.close()
    _, step = checkpointing.Checkpointer(
        os.path.join(small, 'ckpt'), read_only=True).restore(
            _abstract(_make_state(width=8)))
    self.assertEqual(step, 1)


if __name__ == '__main__':
  absltest.main()
