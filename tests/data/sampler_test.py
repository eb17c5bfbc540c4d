"""Training ray batches: each ray carries its own pixel's color and alpha."""

import dataclasses

from absl.testing import absltest
import numpy as np

from condnerf.data import base
from condnerf.data import sampler as sampler_lib
from tests import scenes


def _share(frames, index, count, shards):
  """The frames a loader reads for process `index` of `count`."""
  share = base.Share(index, count, train_shards=shards, evals=False)
  held = share.train_indices(len(frames))
  return dataclasses.replace(frames.subset(held), global_indices=held,
                             split_size=len(frames))


def _global_batch(frames, batch_size, step, count, shards, shared):
  """Every process's rows of the batch of `step`, concatenated."""
  parts = [sampler_lib.RaySampler(
      _share(frames, p, count, shards) if shared else frames, batch_size,
      seed=5, process_index=p, process_count=count, shards=shards).batch(step)
           for p in range(count)]
  return {name: np.concatenate([getattr(b.rays, name) for b in parts])
          for name in ('origins', 'directions', 'code_ids')} | {
              'rgb': np.concatenate([b.rgb for b in parts])}


class RaySamplerTest(absltest.TestCase):

  def test_alpha_belongs_to_the_same_pixel_as_rgb(self):
    frames = scenes.tiny_scene(num_train=3).train
    # Write each pixel's alpha into its red channel: a misaligned draw shows.
    frames = dataclasses.replace(frames, images=[
        np.stack([a, 1.0 - a, a], axis=-1) for a in frames.alphas])
    batch = sampler_lib.RaySampler(frames, 256, seed=0).batch(3)
    self.assertEqual(batch.alpha.shape, (256,))
    self.assertEqual(batch.alpha.dtype, np.float32)
    np.testing.assert_array_equal(batch.rgb[:, 0], batch.alpha)
    self.assertGreater(batch.alpha.max(), 0.5)  # both kinds of pixel drawn.
    self.assertLess(batch.alpha.min(), 0.5)

  def test_frames_without_alpha_are_opaque(self):
    frames = dataclasses.replace(scenes.tiny_scene().train, alphas=None)
    batch = sampler_lib.RaySampler(frames, 64, seed=0).batch(0)
    np.testing.assert_array_equal(batch.alpha, np.ones(64, np.float32))


class FrameShardsTest(absltest.TestCase):
  """train.frame_shards: one block per shard, whatever the process count."""

  def setUp(self):
    super().setUp()
    # Six frames, code row = frame index: a ray names the frame it is from.
    self.frames = scenes.tiny_scene(num_train=6, num_codes=6).train
    np.testing.assert_array_equal(self.frames.appearance_ids, np.arange(6))

  def test_each_block_is_drawn_from_its_shard_only(self):
    rays = _global_batch(self.frames, 48, step=2, count=1, shards=3,
                         shared=False)
    blocks = rays['code_ids'].reshape(3, 16)
    for shard, block in enumerate(blocks):
      self.assertTrue(np.all(block % 3 == shard), block)
      self.assertLen(np.unique(block), 2)  # both frames of the shard drawn.

  def test_processes_holding_their_shards_draw_the_one_process_batch(self):
    for shards in (2, 3, 6):
      reference = _global_batch(self.frames, 48, 7, 1, shards, False)
      for count in (2, 4, 8):
        if 48 % count:
          continue
        with self.subTest(shards=shards, processes=count):
          got = _global_batch(self.frames, 48, 7, count, shards, True)
          for name, value in reference.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)

  def test_a_process_reads_only_the_shards_its_rows_come_from(self):
    # 4 processes, 2 shards: processes 0, 1 need shard 0, 2, 3 shard 1.
    for index, frames in ((0, [0, 2, 4]), (1, [0, 2, 4]), (3, [1, 3, 5])):
      share = base.Share(index, 4, train_shards=2, evals=False)
      np.testing.assert_array_equal(share.train_indices(6), frames)
    # 2 processes, 6 shards: three shards each.
    self.assertEqual(
        base.Share(1, 2, train_shards=6).train_shard_range(), range(3, 6))
    # 4 processes, 6 shards: process 1 has rows 12-23 of 48, blocks 1 and 2.
    self.assertEqual(
        base.Share(1, 4, train_shards=6).train_shard_range(), range(1, 3))

  def test_steps_draw_different_rays_and_shards_change_the_draw(self):
    one = _global_batch(self.frames, 48, 7, 1, 1, False)['rgb']
    self.assertFalse(np.array_equal(
        one, _global_batch(self.frames, 48, 8, 1, 1, False)['rgb']))
    self.assertFalse(np.array_equal(
        one, _global_batch(self.frames, 48, 7, 1, 2, False)['rgb']))

  def test_bad_shards_are_refused_with_the_reason(self):
    with self.assertRaisesRegex(ValueError, 'divisible by the 1 processes '
                                'and the 5 frame shards'):
      sampler_lib.RaySampler(self.frames, 48, 0, shards=5)
    with self.assertRaisesRegex(ValueError, 'more than the 6 training'):
      sampler_lib.RaySampler(self.frames, 64, 0, shards=8)
    other = _share(self.frames, 0, 2, 2)  # process 0's frames, not 1's.
    with self.assertRaisesRegex(ValueError, r'needs training frames \[1, 3, '
                                r'5\] of shards \[1\] of 2'):
      sampler_lib.RaySampler(other, 48, 0, process_index=1, process_count=2,
                             shards=2)


if __name__ == '__main__':
  absltest.main()
