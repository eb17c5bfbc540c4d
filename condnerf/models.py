"""The conditional NeRF: sampling -> fields -> volume rendering.

Owns `ConditionalNeRF`, the `MODELS` registry and `build_model(model_cfg)`,
the only place where a model config section becomes module arguments.

The model is split into two code paths so editing can cache geometry:
  `geometry(rays, key)`  samples every level and evaluates density and
                         features. It never receives an appearance code.
  `shade(levels, rays, codes)`  runs only the color heads and compositing.
`__call__` is `shade(geometry(...))`. Codes arrive per ray as a pytree
(`codes.py`): the MLP head (`head.kind='mlp'`) reads `codes['appearance']`;
the palette head (`'palette'`) also `codes['palette']` f32[num_rays, K, 3],
and with `shading='sh'` `codes['light']` f32[num_rays, 9, 3] (`lighting`).
A level is a dict with
  tdist f32[num_rays, n + 1], density f32[num_rays, n],
  weights f32[num_rays, n], feature f32[num_rays, n, f] or None, and
  points f32[num_rays, n, 3] (sample positions / the field's scene bound:
  code-free, what a palette head's weights read besides the feature), and
  with a shaded head `normals` f32[num_rays, n, 3] on the colored levels
  (the density field's, `fields.with_normals`: code-free like density).
With `clip_to_bound`, every ray's [near, far] is first cut to the field's
scene box (`field['scene_bound']`), for bounded fields (no contraction).
With `ndc` (sx, sy, near: a forward-facing scene's `ndc.Projection`), rays
are mapped to NDC and sampled over t' in [0, 1] (near plane to infinity),
the fields read NDC positions, `tdist` is in t', and levels carry
`world_tdist` f32[num_rays, n + 1], the interval edges' world distances,
from which depth is reported in world units.
Sampling modes:
  'hierarchical'  coarse/fine NeRF: every level has its own field and head and
                  is supervised by the photometric loss.
  'proposal'      mip-NeRF 360: the leading levels are small density-only
                  proposal fields trained by the interlevel loss; only the
                  last level has a color head.
  'occupancy'     Instant-NGP: one level of fixed steps through the cells
                  a density grid marks occupied (the parameter
                  `occupancy_grid`, updated by `train_step`, not the
                  optimizer), the field evaluated on a fixed budget of
                  packed samples (`occupancy.sample_level`): `feature`,
                  `points` and `normals` are f32[B, 1, ...], `pack` says
                  where they go, `complete` f32[num_rays] which rays fit.
"""

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import fields
from condnerf import ndc as ndc_lib
from condnerf import occupancy as occupancy_lib
from condnerf import rendering
from condnerf import sampling
from condnerf import structs


class ConditionalNeRF(nn.Module):
  """NeRF whose color branch is conditioned on a per-ray appearance code."""
  num_samples: Sequence[int] = (64, 128)  # intervals per level, coarse first.
  sampler: str = 'hierarchical'  # 'hierarchical' or 'proposal'.
  lindisp: bool = False  # first-level samples linear in disparity.
  clip_to_bound: bool = False  # sample only inside the field's scene box.
  resample_padding: float = 0.01  # uniform PDF mass when resampling.
  background: Sequence[float] = (1.0, 1.0, 1.0)  # rgb behind the scene.
  field: Any = None  # dict of `fields.GeometryField` args (color levels).
  proposal_field: Any = None  # dict of GeometryField args (proposal levels).
  head: Any = None  # dict of `fields.ColorHead` / `PaletteHead` args.
  head_kind: str = 'mlp'  # 'mlp' (ColorHead) or 'palette' (PaletteHead).
  ndc: Sequence[float] = ()  # (sx, sy, near): sample in NDC; () = world.
  occupancy: Any = None  # dict of `OCCUPANCY` settings (sampler occupancy).

  def setup(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f'Unknown sampler {self.sampler!r}; choose one of '
                       f'{list(SAMPLERS)}.')
    num_levels = len(self.num_samples)
    field_args = dict(self.field or {})
    head_cls, head_args = HEADS[self.head_kind], dict(self.head or {})
    if self.sampler == 'occupancy':
      self.fields = [fields.GeometryField(**field_args)]
      self.heads = [head_cls(**head_args)]
      resolution = self.occupancy_settings()['resolution']
      self.grid = self.param(GRID,
                             lambda _: occupancy_lib.init_grid(resolution))
    elif self.sampler == 'hierarchical':
      self.fields = [fields.GeometryField(**field_args)
                     for _ in range(num_levels)]
      self.heads = [head_cls(**head_args) for _ in range(num_levels)]
    else:
      proposal_args = dict(self.proposal_field or {}, feature_dim=0)
      self.fields = [fields.GeometryField(**proposal_args)
                     for _ in range(num_levels - 1)] + [
                         fields.GeometryField(**field_args)]
      self.heads = [head_cls(**head_args)]

  def colored_levels(self):
    """Indices of the levels that have a color head (static)."""
    num_levels = len(self.num_samples)
    if self.sampler == 'occupancy':
      return (0,)
    if self.sampler == 'hierarchical':
      return tuple(range(num_levels))
    return (num_levels - 1,)

  def occupancy_settings(self):
    """`OCCUPANCY` updated by the model's `occupancy` dict."""
    return dict(OCCUPANCY, **dict(self.occupancy or {}))

  def _scene_bound(self):
    return float(dict(self.field or {}).get('scene_bound', 1.5))

  def palette_size(self):
    """K, the palette entries each code needs; 0 without a palette head."""
    if self.head_kind != 'palette':
      return 0
    return int(dict(self.head or {}).get('palette_size', 6))

  def noise_dim(self):
    """Uniform numbers per ray that randomized sampling consumes (static)."""
    if self.sampler == 'occupancy':
      return 1  # the offset of the ray's marching steps.
    return sum(n + 1 for n in self.num_samples)

  def geometry(self, rays, noise=None):
    """Samples all levels and evaluates the (code-free) geometry fields.

    Randomness arrives as per-ray uniform numbers rather than a key, so a
    ray's samples do not depend on how the batch is split over devices.

    Args:
      rays: `structs.Rays` with leading shape [num_rays].
      noise: None for deterministic sampling (evaluation, editing), or
        f32[num_rays, noise_dim()] uniform numbers in [0, 1).
    Returns:
      list with one dict per level (see module docstring).
    """
    chex.assert_rank([rays.origins, rays.near], 2)
    if noise is not None:
      chex.assert_shape(noise, (rays.origins.shape[0], self.noise_dim()))
    origins, directions, near, far = (rays.origins, rays.directions,
                                      rays.near, rays.far)
    if self.ndc:
      projection = ndc_lib.Projection(*self.ndc)
      origins, directions = ndc_lib.rays_to_ndc(origins, directions,
                                                projection)
      near, far = jnp.zeros_like(near), jnp.ones_like(far)
    elif self.clip_to_bound or self.sampler == 'occupancy':
      near, far = sampling.clip_to_box(
          origins, directions, near, far,
          float(dict(self.field or {})['scene_bound']))
    if self.sampler == 'occupancy':
      return [self._occupancy_level(origins, directions, near, far, noise)]
    levels = []
    offset = 0
    for i, num in enumerate(self.num_samples):
      jitter = None if noise is None else noise[:, offset:offset + num + 1]
      offset += num + 1
      if i == 0:
        tdist = sampling.stratified(near, far, num, self.lindisp, jitter)
      else:
        tdist = sampling.sample_pdf(levels[-1]['tdist'],
                                    levels[-1]['weights'], num,
                                    self.resample_padding, jitter)
      points = sampling.positions(origins, directions, tdist)
      if self.needs_normals() and i in self.colored_levels():
        density, feature, normals = fields.with_normals(self.fields[i],
                                                        points)
      else:
        (density, feature), normals = self.fields[i](points), None
      weights = rendering.compute_alpha_weights(density, tdist)[0]
      levels.append(dict(tdist=tdist, density=density, weights=weights,
                         feature=feature,
                         # Positions are inputs, not trained through: with
                         # a gradient, sample placement would be trained by
                         # color (and the hash grid's position gradient,
                         # which XLA otherwise drops, would run).
                         points=jax.lax.stop_gradient(
                             points / self._scene_bound())))
      if normals is not None:
        levels[-1]['normals'] = normals
      if self.ndc:
        levels[-1]['world_tdist'] = jax.lax.stop_gradient(
            ndc_lib.world_distance(tdist, origins[:, None], directions[:, None],
                                   rays.origins[:, None], projection))
    return levels

  def _occupancy_level(self, origins, directions, near, far, noise):
    """The one level of the occupancy sampler (`occupancy.sample_level`)."""
    settings, field = self.occupancy_settings(), self.fields[0]
    per_ray = settings['samples_per_ray' if noise is not None
                       else 'render_samples_per_ray']
    num_rays = origins.shape[0]

    def evaluate(points):
      return (fields.with_normals(field, points) if self.needs_normals()
              else (*field(points), None))

    budget = num_rays * per_ray  # In a render one ray always fits.
    budget = max(budget, settings['max_steps']) if noise is None else budget
    level = occupancy_lib.sample_level(
        evaluate, lambda x: field(x)[0], origins, directions, near, far,
        self.grid, self._scene_bound(), settings['max_steps'], budget,
        settings['prune_samples_per_ray'],
        settings['min_alpha'], None if noise is None else noise[:, :1])
    level['points'] = jax.lax.stop_gradient(level['points'] /
                                            self._scene_bound())
    return level

  def _head(self, fn, level, directions, codes):
    """`fn(feature, directions, codes, points, normals)` on a level's
    samples (on a packed level each is a ray of one sample, and the outputs
    are put back in place): f32[num_rays, num_samples, ...]."""
    pack = level.get('pack')
    if pack is None:
      return fn(level['feature'], directions, codes, level['points'],
                level.get('normals'))
    ray = pack['ray']
    out = fn(level['feature'], directions[ray],
             jax.tree.map(lambda c: c[ray], codes), level['points'],
             level.get('normals'))
    return jax.tree.map(lambda v: occupancy_lib.scatter(
        v[:, 0], pack['index'], level['weights'].shape), out)

  def needs_normals(self):
    """Whether the color heads shade with normals (static)."""
    return dict(self.head or {}).get('shading', 'none') == 'sh'

  def shade(self, levels, directions, codes):
    """Colors and composites the levels that have a color head.

    Args:
      levels: output of `geometry`.
      directions: f32[num_rays, 3], unit ray directions.
      codes: the code of each ray: {'appearance': f32[num_rays, code_dim]}
        (+ 'palette': f32[num_rays, K, 3] for a palette head); a bare
        f32[num_rays, code_dim] is taken as the latent entry.
    Returns:
      list of `structs.RenderOutput`, one per level; proposal levels have
      `rgb=None`. With a palette head, colored levels carry `extras`:
      f32[num_rays] `residual` (sum of weights * |r|^2) and `entropy`
      (sum of weights * entropy of w), what training keeps small (and
      with predicted normals `normal_error`, the weighted squared gap to
      the density field's normals), and
      f32[num_rays, K] `usage` (sum of weights * w: how much each entry
      paints the ray), and f32[num_rays, num_samples, K] `log_weights`
      (log w of every sample, for `losses.palette_assignment`).
    """
    codes = codes_lib.as_code(codes)
    chex.assert_rank(codes['appearance'], 2)
    background = jnp.asarray(self.background, jnp.float32)
    colored = self.colored_levels()
    outputs = []
    for i, level in enumerate(levels):
      if i in colored:
        head = self.heads[colored.index(i)]
        extras = None
        if self.head_kind == 'palette':
          terms = self._head(head.terms, level, directions, codes)
          rgb = fields.palette_colors(terms, codes['palette'])
          extras = fields.palette_extras(terms, level['weights'])
        else:
          rgb = self._head(lambda f, d, c, *_: head(f, d, c['appearance']),
                           level, directions, codes)
        if 'complete' in level:
          extras = dict(extras or {}, complete=level['complete'],
                        samples=level['samples'], needed=level['needed'])
        out = rendering.composite_level(rgb, level, background)
        outputs.append(out.replace(extras=extras))
      else:
        outputs.append(structs.RenderOutput(
            rgb=None, depth=None, acc=jnp.sum(level['weights'], axis=-1),
            weights=level['weights'], tdist=level['tdist']))
    return outputs

  def final_colors(self, level, directions, codes):
    """Per-sample colors of the final level's head on cached geometry.

    Editing computes `geometry(rays)` once and calls this every step, so an
    edit step costs one small MLP, not the whole field.

    Args:
      level: the last dict of `geometry`.
      directions: f32[num_rays, 3], unit ray directions.
      codes: per-ray codes (see `shade`).
    Returns:
      f32[num_rays, num_samples, 3] colors (in [0, 1] for the MLP head).
    """
    head, codes = self.heads[-1], codes_lib.as_code(codes)
    if self.head_kind == 'palette':
      return self._head(head, level, directions, codes)
    return self._head(lambda f, d, c, *_: head(f, d, c['appearance']),
                      level, directions, codes)

  def palette_terms(self, level, directions, codes):
    """The final palette head's `terms` on cached geometry (palette edits).

    Args:
      level: the last dict of `geometry`.
      directions: f32[num_rays, 3], unit ray directions.
      codes: per-ray codes (the residual reads the latent code).
    Returns:
      dict of `fields.PaletteHead.terms`.
    """
    return self._head(self.heads[-1].terms, level, directions,
                      codes_lib.as_code(codes))

  def density_at(self, points):
    """f32[...] density of the final field at world points f32[..., 3]
    (the occupancy grid's updates)."""
    return self.fields[-1](points)[0]

  def __call__(self, rays, codes, noise=None):
    """Renders rays.

    Args:
      rays: `structs.Rays` with leading shape [num_rays].
      codes: per-ray codes (see `shade`).
      noise: None (deterministic) or f32[num_rays, noise_dim()] uniforms.
    Returns:
      list of `structs.RenderOutput`, coarse first; the last is the final.
    """
    return self.shade(self.geometry(rays, noise), rays.directions, codes)


HEADS = {'mlp': fields.ColorHead, 'palette': fields.PaletteHead}
MODELS = {'conditional_nerf': ConditionalNeRF}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


SAMPLERS = ('hierarchical', 'proposal', 'occupancy')
GRID = occupancy_lib.PARAM  # the occupancy sampler's grid, a parameter.
OCCUPANCY = occupancy_lib.DEFAULTS  # `config.model.occupancy`.


def check_choices(cfg):
  """Raises ConfigError for a name no module knows, naming the setting
  (checked when built: inside a trace it would surface under a JAX note).

  Args:
    cfg: the `config.model` section as a dict.
  """
  choices = [
      ('model.sampler', cfg['sampler'], SAMPLERS),
      ('model.dtype', cfg['dtype'], tuple(_DTYPES)),
      ('model.head.kind', cfg['head']['kind'], tuple(HEADS)),
      ('model.head.shading', cfg['head'].get('shading', 'none'),
       fields.SHADINGS),
      ('model.head.normals', cfg['head'].get('normals', 'density'),
       fields.NORMALS),
      ('model.head.conditioning', cfg['head']['conditioning'],
       fields.CONDITIONINGS if cfg['head']['kind'] == 'mlp' else
       ('concat', 'none')),
  ]
  for section in ('field', 'proposal_field'):
    choices += [
        (f'model.{section}.encoding', cfg[section]['encoding'],
         fields.ENCODINGS),
        (f'model.{section}.density_activation',
         cfg[section]['density_activation'],
         tuple(fields.DENSITY_ACTIVATIONS)),
    ]
  for name, value, valid in choices:
    if value not in valid:
      raise errors.ConfigError(f'Unknown {name} {value!r}; choose one of '
                               f'{list(valid)}.')


def check_occupancy(cfg):
  """The occupancy sampler's settings from `config.model` (a dict), or
  ConfigError for a scene it cannot march or a setting out of range."""
  if cfg.get('ndc') or cfg['field']['use_contraction']:
    raise errors.ConfigError(
        "model.sampler='occupancy' marches a bounded box; this scene is "
        + ('in NDC' if cfg.get('ndc') else 'contracted') +
        ". Use model.sampler='proposal' for NDC and contracted scenes.")
  settings = dict(OCCUPANCY, **dict(cfg.get('occupancy') or {}))
  unknown = sorted(set(settings) - set(OCCUPANCY))
  if unknown:
    raise errors.ConfigError(f'Unknown model.occupancy keys {unknown}; '
                             f'valid: {sorted(OCCUPANCY)}.')
  alpha = settings['min_alpha']
  if not (isinstance(alpha, (int, float)) and 0.0 <= alpha < 1.0):
    raise errors.ConfigError(f'model.occupancy.min_alpha={alpha!r} must be '
                             'in [0, 1).')
  for name, value in settings.items():
    least = 0 if name in ('prune_samples_per_ray', 'warmup_steps') else 1
    if name != 'min_alpha' and (isinstance(value, bool) or
                                not isinstance(value, int) or value < least):
      raise errors.ConfigError(
          f'model.occupancy.{name}={value!r} must be an integer >= {least}.')
  return settings


def build_model(model_name, model_cfg, background):
  """Builds a model from its config section.

  Args:
    model_name: key of `MODELS`.
    model_cfg: the `config.model` ConfigDict (or a dict).
    background: f32[3] scene background color.
  Returns:
    An unbound linen module.
  Raises:
    errors.ConfigError: for an unknown model name, sampler, encoding,
      conditioning, density activation or compute dtype.
  """
  if model_name not in MODELS:
    raise errors.ConfigError(f'Unknown model_name {model_name!r}; valid '
                             f'names: {sorted(MODELS)}.')
  cfg = (model_cfg.to_dict() if isinstance(model_cfg, ml_collections.ConfigDict)
         else dict(model_cfg))
  check_choices(cfg)
  dtype = _DTYPES[cfg['dtype']]
  field = dict(cfg['field'], dtype=dtype)
  proposal_field = dict(cfg['proposal_field'], dtype=dtype)
  head = dict(cfg['head'], dtype=dtype)
  kind = head.pop('kind')
  palette_size = head.pop('palette_size')
  logit_scale = head.pop('weight_logit_scale', 1.0)
  shading = head.pop('shading', 'none')
  normals = head.pop('normals', 'density')
  if shading != 'none' and kind != 'palette':
    raise errors.ConfigError(
        f"model.head.shading={shading!r} shades the palette head's albedo; "
        f"set model.head.kind='palette' (it is {kind!r}) or shading='none'.")
  if kind == 'palette':
    head.update(shading=shading, normals=normals)
    if palette_size < 1:
      raise errors.ConfigError(f'model.head.palette_size={palette_size} must '
                               'be >= 1 for a palette head.')
    if not logit_scale > 0:
      raise errors.ConfigError(
          f'model.head.weight_logit_scale={logit_scale} must be > 0.')
    head.update(palette_size=palette_size, logit_scale=float(logit_scale))
  occupancy = None
  if cfg['sampler'] == 'occupancy':
    occupancy = check_occupancy(cfg)
  return MODELS[model_name](
      occupancy=occupancy,
      num_samples=tuple(cfg['num_samples']), sampler=cfg['sampler'],
      lindisp=cfg['lindisp'], clip_to_bound=cfg['clip_to_bound'],
      ndc=tuple(float(v) for v in cfg.get('ndc', ())),
      resample_padding=cfg['resample_padding'],
      background=tuple(float(b) for b in background), field=field,
      proposal_field=proposal_field, head=head, head_kind=kind)
