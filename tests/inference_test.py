"""Chunked, padded, data-parallel rendering equals one-shot rendering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condnerf import cameras
from condnerf import codes as codes_lib
from condnerf import inference
from condnerf import models
from condnerf import parallel
from condnerf import structs
from condnerf.configs import base
from tests import scenes

_HEIGHT, _WIDTH = 5, 7  # 35 rays: no chunk size below divides it.


def _tiny_model(sampler):
  config = base.get_config('runlocal')
  config.model.sampler = sampler
  cfg = config.model.to_dict()
  cfg['field']['scene_bound'] = cfg['proposal_field']['scene_bound'] = 1.5
  return models.build_model('conditional_nerf', cfg, (1.0, 1.0, 1.0)), config


def _image_rays():
  """Rays [H, W] of a camera looking at the origin, three code ids + -1."""
  pose = cameras.look_at((0.5, -4.0, 1.0), (0.0, 0.0, 0.0))
  focal = cameras.focal_from_fov(_WIDTH, 0.6)
  intrinsics = np.array([focal, focal, _WIDTH / 2, _HEIGHT / 2], np.float32)
  origins, directions = cameras.image_rays(pose, intrinsics, _HEIGHT, _WIDTH)
  ids = (np.arange(_HEIGHT * _WIDTH) % 4 - 1).reshape(_HEIGHT, _WIDTH)
  return structs.Rays(
      origins=origins, directions=directions,
      near=np.full((_HEIGHT, _WIDTH, 1), 2.0, np.float32),
      far=np.full((_HEIGHT, _WIDTH, 1), 6.0, np.float32),
      code_ids=ids.astype(np.int32))


def _setup(sampler):
  model, config = _tiny_model(sampler)
  flat = _image_rays().reshape(_HEIGHT * _WIDTH)
  params = model.init(jax.random.key(0), jax.tree.map(jnp.asarray, flat),
                      jnp.zeros((flat.shape[0], config.codes.dim)))['params']
  # Codes far apart, so a ray rendered with another ray's code shows.
  table = codes_lib.init_codes(jax.random.key(1), 3, config.codes.dim,
                               scale=3.0)
  return model, params, table


def _direct_render(model):
  """The final level of one jitted `model.apply` on all rays, on one device.

  Jitted like the render step: an eager apply fuses differently, and the
  resampled levels carry that rounding on (~1e-5 here).
  """

  @jax.jit
  def apply(params, table, rays):
    final = model.apply({'params': params}, rays,
                        codes_lib.lookup(table, rays.code_ids))[-1]
    return {'rgb': jnp.clip(final.rgb, 0.0, 1.0), 'depth': final.depth,
            'acc': final.acc}

  def render(params, table, rays):
    return jax.tree.map(np.asarray, apply(params, table,
                                          jax.tree.map(jnp.asarray, rays)))

  return render


def _rows(rays, stop):
  return jax.tree.map(lambda x: x[:stop], rays)


def _assert_renders_close(a, b):
  """Equal up to float rounding (rgb, acc in [0, 1]; depth in [2, 6]).

  A batch of another size may tile the matmuls differently (1 ulp apart),
  and the fine level's inverse-CDF resampling passes that on: in one run of
  `make test` the hierarchical model's acc differed by 1.7e-6 on one ray of
  35. A wrong ray, code or padding moves values by 1e-2 or more.
  """
  assert set(a) == set(b) == {'rgb', 'depth', 'acc'}
  for name in a:
    assert a[name].shape == b[name].shape, name
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize('sampler', ['hierarchical', 'proposal'])
def test_chunked_render_equals_one_shot_render(sampler):
  model, params, table = _setup(sampler)
  mesh = scenes.small_mesh()
  render_step = inference.make_render_step(model, mesh)
  rays = _image_rays()
  placed_params = parallel.replicate(params, mesh)
  placed_table = parallel.replicate(table, mesh)
  # 35 rays in chunks of 8 (4 full + 3 rays padded to 8), and in chunks of 3
  # (rounded up to 4 for the 2 devices: 8 full + 3 padded to 4).
  by_8, by_3 = (inference.render_image(render_step, placed_params,
                                       placed_table, rays, chunk, mesh)
                for chunk in (8, 3))
  assert by_8['rgb'].shape == (_HEIGHT, _WIDTH, 3)
  assert by_8['depth'].shape == by_8['acc'].shape == (_HEIGHT, _WIDTH)
  # The same rays on each device, only batched differently: bit for bit
  # on CPU.
  for name in by_8:
    scenes.assert_same_batched(by_8[name], by_3[name], err_msg=name)
  direct_render = _direct_render(model)
  direct = direct_render(params, table, rays.reshape(_HEIGHT * _WIDTH))
  _assert_renders_close(
      jax.tree.map(lambda x: x.reshape((_HEIGHT * _WIDTH,) + x.shape[2:]),
                   by_8), direct)
  # Not vacuous: the rays differ from each other, and the codes matter.
  assert np.ptp(direct['rgb']) > 1e-2
  assert np.ptp(direct['depth']) > 1e-2
  same_code = direct_render(params, table,
                      rays.reshape(_HEIGHT * _WIDTH).replace(
                          code_ids=np.zeros(_HEIGHT * _WIDTH, np.int32)))
  assert np.max(np.abs(same_code['rgb'] - direct['rgb'])) > 1e-3


def test_render_rays_with_one_padded_chunk_equals_one_shot_render():
  model, params, table = _setup('hierarchical')
  mesh = parallel.create_mesh(jax.devices()[:4])
  render_step = inference.make_render_step(model, mesh)
  rays = _rows(_image_rays().reshape(_HEIGHT * _WIDTH), 10)
  out = inference.render_rays(render_step, parallel.replicate(params, mesh),
                              parallel.replicate(table, mesh), rays, 64, mesh)
  assert out['rgb'].shape == (10, 3)
  _assert_renders_close(out, _direct_render(model)(params, table, rays))


def test_render_step_applies_the_color_fn_before_compositing():
  model, params, table = _setup('hierarchical')
  mesh = scenes.small_mesh()
  rays = _rows(_image_rays().reshape(_HEIGHT * _WIDTH), 8)
  placed = (parallel.replicate(params, mesh), parallel.replicate(table, mesh))
  # Black everywhere: only the (white) background shows, through 1 - acc.
  black = inference.make_render_step(
      model, mesh, color_fn=lambda scale, rgb: scale * rgb)
  out = inference.render_rays(black, *placed, rays, 8, mesh,
                              color_params=jnp.float32(0.0))
  plain = _direct_render(model)(params, table, rays)
  np.testing.assert_allclose(
      out['rgb'], np.repeat(1.0 - plain['acc'][:, None], 3, axis=1),
      rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['acc'], plain['acc'], rtol=1e-5, atol=1e-6)
  assert np.max(plain['acc']) > 1e-2


def test_render_rays_refuses_zero_rays():
  model, params, table = _setup('hierarchical')
  mesh = parallel.create_mesh(jax.devices()[:2])
  rays = _rows(_image_rays().reshape(_HEIGHT * _WIDTH), 0)
  with pytest.raises(ValueError, match='0 rays'):
    inference.render_rays(inference.make_render_step(model, mesh),
                          parallel.replicate(params, mesh),
                          parallel.replicate(table, mesh), rays, 8, mesh)
