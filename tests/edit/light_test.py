"""Light edits: set, turned, copied or fitted, they move only the light."""

from absl.testing import absltest
import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import inference
from condnerf import lighting
from condnerf.configs import base
from condnerf.edit import linear
from condnerf.edit import methods
from condnerf.edit import operations
from condnerf.edit import scribbles
from tests.edit import methods_test


def _edit_config(**values):
  config = base.get_config().edit
  config.unlock()
  config.update(operation='relight', **values)
  return config


class LightEditTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.exp, cls.state = methods_test.trained_tiny(head='palette',
                                                   shading='sh', steps=150)
    cls.frames = cls.exp.scene.test
    cls.start = codes_lib.row(jax.device_get(cls.state.codes), 1)
    cls.rays = scribbles.view_rays(cls.frames, 0)
    cls.before = inference.render_with_code(cls.exp, cls.state.params,
                                            cls.rays, cls.start)

  def _assert_only_light_moved(self, result):
    self.assertIs(result.params, self.state.params)
    for entry in ('appearance', 'palette'):
      np.testing.assert_array_equal(result.code[entry], self.start[entry])
    after = result.render(self.exp, self.rays)
    np.testing.assert_array_equal(after['acc'], self.before['acc'])
    np.testing.assert_array_equal(after['depth'], self.before['depth'])
    return after

  def test_set_turn_and_copy_change_only_the_light(self):
    light = np.asarray(self.start['light'])
    for kwargs in ({'direction': (1.0, 0.0, 0.2)}, {'rotate': 90.0},
                   {'light': lighting.directional((0, -1, 1), 0.3, 0.2)},
                   {'intensity': 0.9}):
      result = methods.relight(self.exp, self.state, self.start, **kwargs)
      after = self._assert_only_light_moved(result)
      self.assertGreater(np.abs(after['rgb'] - self.before['rgb']).max(),
                         1e-3, kwargs)
      self.assertGreater(np.abs(result.code['light'] - light).max(), 1e-3)
    turned = methods.relight(self.exp, self.state, self.start, rotate=90.0)
    np.testing.assert_allclose(
        turned.code['light'],
        lighting.rotate_about(light, 90.0, self.exp.scene.up), atol=1e-6)
    # Other codes of the table are untouched: edits return a new code.
    np.testing.assert_array_equal(
        jax.device_get(self.state.codes)['light'][1], light)

  def _target_batch(self, wanted):
    """48 pixels of view 0 inside the chair, colored as `wanted` renders."""
    pixels = np.argwhere(self.frames.alphas[0] > 0.99)
    pixels = pixels[np.linspace(0, len(pixels) - 1, 48).astype(int)]
    colors = inference.render_with_code(self.exp, self.state.params,
                                        self.rays, wanted)['rgb']
    return scribbles.scribble_batch(self.frames, [0], [pixels],
                                    [colors[tuple(pixels.T)]])

  def test_fit_reaches_a_light_from_its_pixels(self):
    target_light = lighting.directional((-0.6, 0.5, 0.6), 0.7, 0.35)
    wanted = {**self.start, 'light': target_light}
    batch = self._target_batch(wanted)
    result = methods.run_edit(self.exp, self.state, batch, 'light',
                              init_code=self.start)
    self._assert_only_light_moved(result)
    self.assertLess(result.info.loss_end, 0.05 * result.info.loss_start)
    got = inference.render_with_code(self.exp, self.state.params, batch.rays,
                                     result.code)['rgb']
    np.testing.assert_allclose(got, batch.target, atol=0.02)

  def test_solve_look_finds_a_looks_palette_and_light_direction(self):
    # A look of the same light strength: another palette, another direction.
    strength = lighting.estimate(self.start['light'])
    wanted = {**self.start,
              'palette': np.asarray(self.start['palette'])[::-1] * 0.8,
              'light': lighting.directional(
                  (-0.6, 0.5, 0.6), strength['intensity'],
                  strength['ambient'])}
    batch = self._target_batch(wanted)

    def error(code):
      got = inference.render_with_code(self.exp, self.state.params,
                                       batch.rays, code)['rgb']
      return float(np.mean((got - batch.target)**2))

    solved = linear.solve_look(self.exp, self.state.params, self.start, batch)
    self.assertLess(error(solved), 0.1 * error(self.start))
    # The light keeps its strength: only its direction was searched.
    found = lighting.estimate(solved['light'])
    np.testing.assert_allclose(found['intensity'], strength['intensity'],
                               atol=1e-3)
    np.testing.assert_allclose(found['ambient'], strength['ambient'],
                               atol=1e-3)
    np.testing.assert_array_equal(solved['appearance'],
                                  self.start['appearance'])
    # Gradient fits after it move only the latent vector.
    self.assertEqual(linear.gradient_entries(solved), ('appearance',))
    result = methods.run_edit(self.exp, self.state, batch, 'code', steps=5,
                              init_code=self.start)
    np.testing.assert_array_equal(result.code['light'], solved['light'])
    np.testing.assert_array_equal(result.code['palette'], solved['palette'])

  def test_bad_input(self):
    plain_exp, plain_state = methods_test.trained_tiny(head='palette',
                                                       steps=2)
    with self.assertRaisesRegex(scribbles.EditError,
                                "shading='none'.*shading=sh"):
      methods.relight(plain_exp, plain_state,
                      codes_lib.row(plain_state.codes, 0), rotate=10.0)
    self.assertNotIn('light', methods.methods_for(plain_exp.model))
    with self.assertRaisesRegex(scribbles.EditError, 'non-zero length'):
      operations.parse_light(_edit_config(light_direction='0,0,0'))
    with self.assertRaisesRegex(scribbles.EditError, 'changes nothing'):
      operations.parse_light(_edit_config())
    for key in ('light_rotate', 'light_intensity', 'light_ambient'):
      with self.assertRaisesRegex(scribbles.EditError,
                                  f'edit.{key}=nan is not finite'):
        operations.parse_light(_edit_config(**{key: float('nan')}))
    light = np.zeros((9, 3))
    light[0, 0] = np.inf
    with self.assertRaisesRegex(ValueError, 'light code is not finite: 1 of '
                                'its 27'):
      lighting.check_light(light)
    with self.assertRaisesRegex(scribbles.EditError,
                                r"light_from=7 is not a frame of the 'test'.*"
                                r'0\.\.1'):
      operations._relight(  # pylint: disable=protected-access
          self.exp, self.state, _edit_config(light_from=7), self.frames,
          '/nonexistent/bank.npz', None)
    like = codes_lib.row(jax.device_get(self.state.codes), 0)
    with self.assertRaisesRegex(codes_lib.CodeBankError,
                                r"'light': \(4, 3\)"):
      codes_lib.check_like({**like, 'light': np.zeros((4, 3))}, like, 'odd')


if __name__ == '__main__':
  absltest.main()
