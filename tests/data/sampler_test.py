"""Training ray batches: each ray carries its own pixel's color and alpha."""

import dataclasses

from absl.testing import absltest
import numpy as np

from condnerf.data import sampler as sampler_lib
from tests import scenes


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


if __name__ == '__main__':
  absltest.main()
