"""The train state and the data-parallel train step.

Owns `TrainState` (what a step updates), `create_train_state` and
`make_train_step`: a per-device function, the gradient of one device's
share of the objective (`losses.make_loss_fn`), mapped with `jax.shard_map`
over the ('data',) mesh, reduced with one `lax.pmean` and wrapped in
`jax.jit`. `experiment` builds these from a config; the loop that calls the
step is `train_lib`.
"""

from typing import Any

from flax import struct
import jax
from jax import lax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import optax

from condnerf import codes as codes_lib
from condnerf import metrics as metrics_lib
from condnerf import occupancy
from condnerf import parallel
from condnerf import structs


@struct.dataclass
class TrainState:
  """Everything a step updates.

  Attributes:
    step: i32[], number of steps taken.
    params: the field's linen 'params' collection.
    codes: the code table, {'appearance': f32[num_codes, code_dim]} (+
      'palette' f32[num_codes, K, 3] with a palette head).
    opt_state: optax state over {'params': ..., 'codes': ...}.
  """
  step: jnp.ndarray
  params: Any
  codes: Any
  opt_state: Any

  def as_dict(self):
    return {'step': self.step, 'params': self.params, 'codes': self.codes,
            'opt_state': self.opt_state}


def create_train_state(model, optimizer, key, num_codes, code_dim,
                       code_init_scale, palette_center=None, light=None):
  """Initialises params, codes and optimizer state.

  Args:
    model: unbound `models.ConditionalNeRF`.
    optimizer: optax transform over {'params', 'codes'}.
    key: jax random key.
    num_codes: rows of the appearance-code table.
    code_dim: width of each code.
    code_init_scale: std of the initial code entries.
    palette_center: palette head: None, or f32[num_codes, 3] the color each
      code's palette starts near (see `codes.init_codes`).
    light: shaded head: f32[num_codes, 9, 3] the light codes' start.
  Returns:
    `TrainState` at step 0.
  """
  init_key, code_key = jax.random.split(key)
  rays = structs.dummy_rays(1, jnp)
  codes = codes_lib.init_codes(code_key, num_codes, code_dim, code_init_scale,
                               model.palette_size(), palette_center,
                               light=light)
  params = model.init(init_key, rays,
                      codes_lib.lookup(codes, jnp.zeros((1,), jnp.int32))
                      )['params']
  opt_state = optimizer.init({'params': params, 'codes': codes})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, codes=codes,
                    opt_state=opt_state)


def make_train_step(model, optimizer, mesh, loss_fn, randomized=True,
                    random_background=False, steps_per_call=1):
  """Jitted `train_step(state, batch, key, progress=None) -> (state, metrics)`.

  The batch is split over the mesh; each device computes gradients of its
  share, which one `lax.pmean` averages. Sampling noise is drawn for the
  global batch before the split, so results do not depend on the number of
  devices. The state argument is donated.

  Args:
    model: unbound `models.ConditionalNeRF`.
    optimizer: optax transform over {'params', 'codes'}.
    mesh: the data mesh.
    loss_fn: from `make_loss_fn`.
    randomized: jitter the samples (training); False is deterministic.
    random_background: compare each ray on a uniformly random background
      color (needs `batch.alpha`; see `make_loss_fn`).
    steps_per_call: K > 1 gives `train_steps(state, batches, keys,
      progress=None)` instead: K steps unrolled in one program, `batches`
      and `keys` tuples of K (and `progress` one of K or None), the same
      updates as K calls of the one-step function, and metrics averaged
      over the K steps.
  Returns:
    The jitted step. `progress` is None (the learning rate follows the step
    count) or f32[], the fraction of a wall-clock budget used (see
    `optim.make_schedule`). `metrics` holds f32[] loss, mse, psnr and
    grad_norm.
  """
  noise_dim = model.noise_dim()

  def per_device(state, batch, noise, background, progress):
    trainable = {'params': state.params, 'codes': state.codes}
    # Mark the replicated weights as per-device values, so each device's
    # gradient stays its own (pmap semantics) until the one explicit pmean;
    # otherwise shard_map's transpose would already psum them.
    local = lax.pcast(trainable, parallel.AXIS, to='varying')
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        local, batch, noise, background, state.step, progress)
    grads, metrics = lax.pmean((grads, metrics), parallel.AXIS)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable,
                                          progress=progress)
    trainable = optax.apply_updates(trainable, updates)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics['psnr'] = metrics_lib.mse_to_psnr(metrics['mse'])
    new_state = state.replace(step=state.step + 1, params=trainable['params'],
                              codes=trainable['codes'], opt_state=opt_state)
    return new_state, metrics

  mapped = jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(parallel.AXIS), P(parallel.AXIS), P(parallel.AXIS),
                P()),
      out_specs=(P(), P()))

  def train_step(state, batch, key, progress=None):
    if model.sampler == 'occupancy':
      state = state.replace(params=update_grid(
          model, state.params, jax.random.fold_in(key, 2), state.step))
    noise = background = None
    if randomized:
      noise = _draw(key, (batch.rgb.shape[0], noise_dim), mesh)
    if random_background:
      background = _draw(jax.random.fold_in(key, 1), batch.rgb.shape, mesh)
    if progress is not None:
      progress = jnp.asarray(progress, jnp.float32)
    return mapped(state, batch, noise, background, progress)

  if steps_per_call == 1:
    return jax.jit(train_step, donate_argnums=0)

  def train_steps(state, batches, keys, progress=None):
    every = []
    for i in range(steps_per_call):
      state, metrics = train_step(state, batches[i], keys[i],
                                  None if progress is None else progress[i])
      every.append(metrics)
    return state, jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *every)

  return jax.jit(train_steps, donate_argnums=0)


def update_grid(model, params, key, step):
  """`params` with the occupancy grid updated when step `step` is due.

  Every `update_every` steps (`occupancy.DEFAULTS`) the grid is updated
  before the step's gradient: from every cell until `warmup_steps`, then
  from `update_cells` cells, half of them occupied. The update reads
  replicated params and a key every device and process shares, so the grid
  stays the same everywhere; the optimizer leaves it alone
  (`optim.make_labels`).

  Args:
    model: unbound `models.ConditionalNeRF` with `sampler='occupancy'`.
    params: its parameters, with `occupancy.PARAM`.
    key: the step's key.
    step: i32[], the step about to be taken.
  Returns:
    params with a new `occupancy.PARAM`.
  """
  settings = model.occupancy_settings()
  half_width = float(dict(model.field)['scene_bound'])
  step_size = occupancy.step_size(half_width, settings['max_steps'])
  grid = params[occupancy.PARAM]

  def density(points):
    return model.apply({'params': params}, points, method='density_at')

  def refresh(warmup, cells):
    return lambda g: occupancy.update(g, density, key, step_size, half_width,
                                      cells, warmup)

  due = step % settings['update_every'] == 0
  branch = jnp.where(due, jnp.where(step < settings['warmup_steps'], 1, 2), 0)
  grid = lax.switch(branch, [lambda g: g, refresh(True, grid.size),
                             refresh(False, settings['update_cells'])], grid)
  return {**params, occupancy.PARAM: grid}


def _draw(key, shape, mesh):
  """f32[shape] uniform in [0, 1), drawn whole and split over the mesh."""
  return lax.with_sharding_constraint(jax.random.uniform(key, shape),
                                      parallel.data_sharding(mesh))
