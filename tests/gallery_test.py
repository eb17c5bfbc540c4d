"""Gallery renders agree with single renders; edit scores see what changed."""

import dataclasses

from absl.testing import absltest
import jax
import numpy as np

from condnerf import experiment as experiment_lib
from condnerf import gallery
from condnerf import inference
from condnerf.configs import base
from condnerf.edit import methods
from condnerf.edit import optimize
from condnerf.edit import scoring
from condnerf.edit import scribbles
from tests import scenes

jax.config.update('jax_disable_most_optimizations', True)


class GalleryTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    config = base.get_config('fast,runlocal')
    config.codes.dim = 4
    config.codes.init_scale = 1.0  # codes far apart: renders differ.
    config.render.update(num_frames=3, radius=4.0, elevation=30.0)
    scene = scenes.tiny_scene(num_train=3, num_test=2, size=12, num_codes=3)
    cls.exp = experiment_lib.build_experiment(config, scene=scene,
                                         mesh=scenes.small_mesh())
    cls.state = jax.device_get(cls.exp.init_state(jax.random.key(0)))
    cls.frames = scene.test
    cls.table = np.asarray(cls.state.codes['appearance'])

  def _render(self, view, code):
    return inference.render_with_code(
        self.exp, self.state.params, scribbles.view_rays(self.frames, view),
        code)

  def test_frame_codes_follow_appearance_ids(self):
    got = gallery.frame_codes(self.state, self.frames, [1, 0])
    ids = self.frames.appearance_ids
    np.testing.assert_array_equal(got['appearance'],
                                  self.table[[ids[1], ids[0]]])
    no_code = dataclasses.replace(self.frames,
                                  appearance_ids=np.array([-1, 0]))
    np.testing.assert_allclose(
        gallery.frame_codes(self.state, no_code, [0])['appearance'],
        self.table.mean(0, keepdims=True), rtol=1e-6)

  def test_code_grid_cells_are_renders(self):
    sheet, renders = gallery.code_grid(self.exp, self.state, self.frames,
                                       [0, 1], self.table[:2])
    self.assertLen(renders, 2)
    self.assertLen(renders[1], 2)
    # One batched render per row: equal to single renders up to the float
    # rounding of the vmapped color head.
    np.testing.assert_allclose(renders[1][0],
                               self._render(1, self.table[0])['rgb'],
                               rtol=1e-5, atol=1e-6)
    self.assertGreater(np.abs(renders[0][0] - renders[0][1]).max(), 1e-3)
    self.assertEqual(sheet.shape[-1], 3)
    plain, _ = gallery.code_grid(self.exp, self.state, self.frames, [0, 1],
                                 self.table[:2], ground_truth=False, scale=2)
    self.assertGreater(plain.shape[0], sheet.shape[0])  # two rows, 2x cells.
    with self.assertRaisesRegex(ValueError, 'code_names'):
      gallery.code_grid(self.exp, self.state, self.frames, [0],
                        self.table[:2], code_names=['one'])

  def test_interpolation_strip_ends_are_the_codes(self):
    rays = scribbles.view_rays(self.frames, 0)
    sheet, sweep = gallery.interpolation_strip(
        self.exp, self.state, rays, self.table[0], self.table[1], num=3)
    self.assertLen(sweep, 3)
    np.testing.assert_allclose(sweep[0], self._render(0, self.table[0])['rgb'],
                               atol=1e-6)
    np.testing.assert_allclose(sweep[2], self._render(0, self.table[1])['rgb'],
                               atol=1e-6)
    self.assertEqual(sheet.ndim, 3)

  def test_orbit(self):
    frames = gallery.orbit(self.exp, self.state, self.table[0])
    self.assertLen(frames, 3)
    self.assertEqual(frames[0].shape, (12, 12, 3))
    self.assertBetween(float(np.min(frames)), 0.0, 1.0)
    self.assertLen(gallery.orbit(self.exp, self.state, self.table[0],
                                 num_frames=2), 2)

  def test_edit_pictures_and_scores(self):
    info = optimize.EditInfo(steps=1, seconds=0.5, compile_seconds=0.0,
                             loss_start=1.0, loss_end=0.5)
    code_edit = methods.EditResult('code', self.table[2], self.state.params,
                                   info=info)
    heads = {k: (jax.tree.map(lambda x: 1.5 * x + 0.1, v)
                 if k.startswith('heads') else v)
             for k, v in self.state.params.items()}
    head_edit = methods.EditResult('color_head', self.table[2], heads,
                                   info=info)
    sheet = gallery.edit_sheet(self.exp, self.state,
                               {'code': code_edit, 'head': head_edit},
                               self.frames, [0, 1])
    self.assertEqual(sheet.shape[-1], 3)
    _, change = gallery.geometry_sheet(self.exp, self.state, code_edit,
                                       self.frames, 0)
    self.assertEqual(change, {'depth': 0.0, 'acc': 0.0})
    alpha = self.frames.alphas[0]
    batch = scribbles.scribble_batch(self.frames, [0], [alpha > 0.5],
                                     [(0.2, 0.4, 0.9)])
    others = list(self.table[:2])
    original = methods.unedited(self.state)
    code_score = scoring.scribble_score(self.exp, original, code_edit, batch,
                                        self.frames, [0, 1], others)
    self.assertEqual(code_score['method'], 'code')
    self.assertEqual((code_score['drift_depth'], code_score['drift_opacity'],
                      code_score['collateral']), (0.0, 0.0, 0.0))
    self.assertEqual((code_score['steps'], code_score['seconds']), (1, 0.5))
    rendered = code_edit.render(self.exp, batch.rays)['rgb']
    mse = np.mean((np.clip(rendered, 0, 1) - batch.target)**2)
    self.assertAlmostEqual(code_score['scribble_psnr'],
                           -10 * np.log10(mse), places=4)
    head_score = scoring.scribble_score(self.exp, original, head_edit, batch,
                                        self.frames, [0], others)
    self.assertEqual(head_score['drift_depth'], 0.0)  # heads only.
    self.assertGreater(head_score['collateral'], 1e-3)


if __name__ == '__main__':
  absltest.main()
