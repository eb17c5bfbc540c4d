"""Palette codes: the head's formula, closed-form edits and their guarantees."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import codes as codes_lib
from condnerf import fields
from condnerf import inference
from condnerf.edit import linear
from condnerf.edit import methods
from condnerf.edit import operations
from condnerf.edit import optimize
from condnerf.edit import scribbles
from tests.edit import methods_test


class PaletteHeadTest(absltest.TestCase):

  def test_colors_are_intensity_times_mixed_palette_plus_residual(self):
    head = fields.PaletteHead(palette_size=4, width=8, depth=1, dir_deg=2)
    keys = jax.random.split(jax.random.key(0), 5)
    feature = jax.random.normal(keys[0], (3, 5, 6))
    directions = jax.random.normal(keys[1], (3, 3))
    directions /= jnp.linalg.norm(directions, axis=-1, keepdims=True)
    code = {'appearance': jax.random.normal(keys[2], (3, 7)),
            'palette': jax.random.uniform(keys[3], (3, 4, 3))}
    points = jax.random.uniform(keys[0], (3, 5, 3), minval=-1.0)
    params = head.init(keys[4], feature, directions, code, points)
    # Make the residual non-zero (its output layer starts at zero).
    params = jax.tree.map(lambda p: p + 0.05, params)
    rgb = head.apply(params, feature, directions, code, points)
    terms = head.apply(params, feature, directions, code, points,
                       method='terms')
    w, s, r = (np.asarray(terms[k], np.float64)
               for k in ('weights', 'intensity', 'residual'))
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    self.assertTrue(np.all(s >= 0))
    self.assertGreater(np.abs(r).max(), 1e-4)
    palette = np.asarray(code['palette'], np.float64)
    want = np.stack([[s[i, j] * (w[i, j] @ palette[i]) + r[i, j]
                      for j in range(5)] for i in range(3)])
    np.testing.assert_allclose(rgb, want, rtol=1e-5, atol=1e-6)
    # The weights and intensity never read the code.
    other = {'appearance': 3.0 * code['appearance'],
             'palette': 1.0 - code['palette']}
    other_terms = head.apply(params, feature, directions, other, points,
                             method='terms')
    for key in ('weights', 'intensity'):
      np.testing.assert_array_equal(terms[key], other_terms[key])


class SolveTest(absltest.TestCase):

  def test_equals_weighted_lstsq(self):
    rng = np.random.default_rng(0)
    # Channel by channel (a shaded head lights each channel on its own).
    design = rng.uniform(0, 1, (40, 5, 3))
    offset = rng.normal(0, 0.1, (40, 3))
    target = rng.uniform(0, 1, (40, 3))
    weight = rng.uniform(0.5, 2.0, 40)
    weight[-3:] = 0.0  # padding rows.
    palette0 = rng.uniform(0, 1, (5, 3))
    got = linear.solve_palette(design, offset, target, weight, palette0,
                                 np.ones(5, bool), ridge=0.0)
    root = np.sqrt(weight)[:, None]
    want = np.stack([np.linalg.lstsq(
        design[..., c] * root, (target[:, c] - offset[:, c]) * root[:, 0],
        rcond=None)[0] for c in range(3)], -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Only entries 1 and 3 free: the others stay exactly.
    free = np.array([False, True, False, True, False])
    got = linear.solve_palette(design, offset, target, weight, palette0,
                                 free, ridge=0.0)
    np.testing.assert_array_equal(got[~free], palette0[~free].astype(
        np.float32))
    rest = offset + np.einsum('rkc,kc->rc', design[:, ~free],
                              palette0[~free])
    want = np.stack([np.linalg.lstsq(
        design[:, free, c] * root, (target[:, c] - rest[:, c]) * root[:, 0],
        rcond=None)[0] for c in range(3)], -1)
    np.testing.assert_allclose(got[free], want, rtol=1e-4, atol=1e-5)

  def test_selection(self):
    design = np.zeros((10, 4, 3))
    design[:, 2] = 0.9
    design[:, 0] = 0.05
    selected, share = linear.select_entries(design, np.ones(10))
    np.testing.assert_array_equal(selected, [False, False, True, False])
    self.assertAlmostEqual(share[2], 0.9 / 0.95)
    design[:, :] = 0.25  # spread over every entry: no clear part.
    with self.assertRaisesRegex(scribbles.EditError,
                                r'selects no palette entry clearly.*entry '
                                r'0: 25%'):
      linear.select_entries(design, np.ones(10), threshold=0.3)


class ParseTest(absltest.TestCase):

  def test_palette_entries(self):
    got = operations.parse_palette('2=#2f5cff; 0=0.1,0.2,0.9')
    self.assertEqual(sorted(got), [0, 2])
    np.testing.assert_allclose(got[0], [0.1, 0.2, 0.9], rtol=1e-6)
    for text, message in (('red', 'is not "entry=color"'),
                          ('x=#ffffff', 'is not "entry=color"'),
                          ('1=bluish', 'Cannot parse color'),
                          ('1=nan,0,0', "Color 'nan,0,0' is not finite"),
                          ('1=0.1,inf,0', 'is not finite'),
                          ('2=#ff0000;0=#00ff00;2=#0000ff',
                           'gives entry 2 twice'),
                          ('', 'edit.palette is empty')):
      with self.assertRaisesRegex(scribbles.EditError, message):
        operations.parse_palette(text)


class PaletteEditTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.exp, cls.state = methods_test.trained_tiny(head='palette', steps=200)
    cls.frames = cls.exp.scene.test

  def _scribble(self, color=(0.1, 0.25, 0.9), count=32):
    pixels = np.argwhere(self.frames.alphas[0] > 0.5)[:count]
    return scribbles.scribble_batch(self.frames, [0], [pixels], [color])

  def test_least_squares_beats_the_palette_optimizer(self):
    batch = self._scribble()
    solved = methods.run_edit(self.exp, self.state, batch, 'palette')
    start = codes_lib.mean_code(jax.device_get(self.state.codes))
    _, adam = optimize.recolor(self.exp, self.state, batch, start, steps=200,
                               learning_rate=0.1, entries=('palette',))
    self.assertLess(solved.info.loss_end, solved.info.loss_start)
    self.assertLessEqual(solved.info.loss_end, adam.loss_end + 1e-6)
    # Its own loss agrees with rendering the solved code.
    rendered = inference.render_with_code(self.exp, self.state.params,
                                          batch.rays, solved.code)['rgb']
    self.assertLess(float(np.mean((rendered - batch.target)**2)),
                    solved.info.loss_start)

  def test_palette_edit_keeps_geometry_and_other_codes(self):
    batch = self._scribble()
    result = methods.run_edit(self.exp, self.state, batch, 'palette')
    rays = scribbles.view_rays(self.frames, 1)
    original = methods.unedited(self.state)
    before, after = original.render(self.exp, rays), result.render(
        self.exp, rays)
    np.testing.assert_array_equal(before['acc'], after['acc'])
    np.testing.assert_array_equal(before['depth'], after['depth'])
    self.assertIs(result.params, self.state.params)
    np.testing.assert_array_equal(result.code['appearance'],
                                  original.code['appearance'])
    self.assertGreater(np.abs(after['rgb'] - before['rgb']).max(), 0.05)

  def test_part_edit_leaves_pixels_without_its_entries_unchanged(self):
    exp, state = self.exp, self.state
    code = codes_lib.mean_code(jax.device_get(state.codes))
    batch = self._scribble(count=400)
    placed, level = optimize.cache_geometry(exp, state.params, batch)
    design, _, weight = linear.palette_system(exp, state.params, code,
                                                placed, level)
    # A scribble on the rays that lean most on one entry selects it.
    design = design.mean(-1)  # an unshaded head: the same in every channel.
    entry = int(np.argmax(weight @ design))
    rows = np.argsort(-design[:len(batch.target), entry])[:16]
    part = batch.replace(rays=jax.tree.map(lambda x: x[rows], batch.rays),
                         target=batch.target[rows], weight=batch.weight[rows])
    # (A model trained this briefly need not have localized its entries, so
    # the entry is named rather than selected; selection is tested above.)
    result = methods.run_edit(exp, state, part, 'palette_part',
                              entries=[entry])
    edited = np.asarray(result.details['entries'])
    np.testing.assert_array_equal(edited, [entry])
    untouched = np.setdiff1d(np.arange(len(design[0])), edited)
    np.testing.assert_array_equal(result.code['palette'][untouched],
                                  np.asarray(code['palette'])[untouched])
    # Pixel by pixel, the change is bounded by the pixel's weight on the
    # edited entries: ~0 weight, ~0 change.
    rays = scribbles.view_rays(self.frames, 1)
    before = methods.unedited(state, code).render(exp, rays)['rgb']
    after = result.render(exp, rays)['rgb']
    flat = rays.reshape(-1)
    full = scribbles.EditBatch(rays=flat, target=np.zeros(
        (flat.shape[0], 3), np.float32), weight=np.ones(flat.shape[0],
                                                         np.float32))
    placed, level = optimize.cache_geometry(exp, state.params, full)
    design, _, _ = linear.palette_system(exp, state.params, code, placed,
                                           level)
    moved = np.abs(result.code['palette'] - np.asarray(code['palette'])).max()
    bound = design[:flat.shape[0]][:, edited].max(-1).sum(-1) * moved + 1e-5
    change = np.abs(after - before).reshape(-1, 3).max(-1)
    self.assertTrue(np.all(change <= bound), float(np.max(change - bound)))
    # And it is tight: a pixel moves by its weight times the palette's move,
    # so one that does not weigh on the entry does not move.
    self.assertLess(float(np.median(bound - change)), 0.02)

  def test_bad_palette_inputs(self):
    batch = self._scribble()
    with self.assertRaisesRegex(scribbles.EditError, 'keep pixels are also'):
      methods.run_edit(self.exp, self.state, batch, 'palette',
                       keep=self._scribble(count=4))
    mlp_exp, mlp_state = methods_test.trained_tiny(steps=1)
    with self.assertRaisesRegex(scribbles.EditError, 'need a palette head'):
      methods.run_edit(mlp_exp, mlp_state, batch, 'palette')
    like = codes_lib.row(jax.device_get(self.state.codes), 0)
    wrong = {**like, 'palette': np.zeros((2, 3), np.float32)}
    with self.assertRaisesRegex(codes_lib.CodeBankError,
                                'another code width or palette size'):
      codes_lib.check_like(wrong, like, 'wrong')


if __name__ == '__main__':
  absltest.main()
