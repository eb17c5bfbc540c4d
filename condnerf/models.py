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
  (the density field's, `_with_normals`: code-free like density).
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

  def setup(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f'Unknown sampler {self.sampler!r}; choose '
                       "'hierarchical' or 'proposal'.")
    num_levels = len(self.num_samples)
    field_args = dict(self.field or {})
    head_cls, head_args = HEADS[self.head_kind], dict(self.head or {})
    if self.sampler == 'hierarchical':
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
    if self.sampler == 'hierarchical':
      return tuple(range(num_levels))
    return (num_levels - 1,)

  def _scene_bound(self):
    return float(dict(self.field or {}).get('scene_bound', 1.5))

  def palette_size(self):
    """K, the palette entries each code needs; 0 without a palette head."""
    if self.head_kind != 'palette':
      return 0
    return int(dict(self.head or {}).get('palette_size', 6))

  def noise_dim(self):
    """Uniform numbers per ray that randomized sampling consumes (static)."""
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
    elif self.clip_to_bound:
      near, far = sampling.clip_to_box(
          origins, directions, near, far,
          float(dict(self.field or {})['scene_bound']))
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
        density, feature, normals = _with_normals(self.fields[i], points)
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
          terms = head.terms(level['feature'], directions, codes,
                             level['points'], level.get('normals'))
          rgb = fields.palette_colors(terms, codes['palette'])
          extras = _palette_extras(terms, level['weights'])
        else:
          rgb = head(level['feature'], directions, codes['appearance'])
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
      return head(level['feature'], directions, codes, level['points'],
                  level.get('normals'))
    return head(level['feature'], directions, codes['appearance'])

  def palette_terms(self, level, directions, codes):
    """The final palette head's `terms` on cached geometry (palette edits).

    Args:
      level: the last dict of `geometry`.
      directions: f32[num_rays, 3], unit ray directions.
      codes: per-ray codes (the residual reads the latent code).
    Returns:
      dict of `fields.PaletteHead.terms`.
    """
    return self.heads[-1].terms(level['feature'], directions,
                                codes_lib.as_code(codes), level['points'],
                                level.get('normals'))

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


def _with_normals(field, points):
  """A field's density and feature, and the unit normals of its density.

  The normal is the negative normalized gradient of density with respect to
  position (it points out of the surface). Like density it reads no code.
  Training differentiates through it, so shading also shapes the surface.

  Args:
    field: a bound `fields.GeometryField`.
    points: f32[num_rays, num_samples, 3] world positions.
  Returns:
    density f32[num_rays, num_samples], feature f32[..., feature_dim],
    normals f32[num_rays, num_samples, 3].
  """
  # Only the position is differentiated here (no gradient for the weights:
  # an outer jax.grad still trains them through the normals).
  (density, feature), pullback = nn.vjp(lambda mdl, x: mdl(x), field, points,
                                        vjp_variables=False)
  _, gradient = pullback((jnp.ones_like(density), jnp.zeros_like(feature)))
  norm = jnp.sqrt(jnp.sum(gradient**2, axis=-1, keepdims=True) + 1e-12)
  return density, feature, -gradient / norm


def _palette_extras(terms, weights):
  """Per-ray regularizer terms of a palette head (see `shade`)."""
  w = terms['weights']
  entropy = -jnp.sum(w * jnp.log(jnp.maximum(w, 1e-12)), axis=-1)
  residual = jnp.sum(terms['residual']**2, axis=-1)
  extras = {'residual': jnp.sum(weights * residual, axis=-1),
            'entropy': jnp.sum(weights * entropy, axis=-1),
            'usage': jnp.einsum('rs,rsk->rk', weights, w),
            'log_weights': terms['log_weights']}
  if 'density_normals' in terms:  # Ref-NeRF's predicted-normal loss.
    gap = jnp.sum((terms['normals'] - terms['density_normals'])**2, axis=-1)
    extras['normal_error'] = jnp.sum(weights * gap, axis=-1)
  return extras


HEADS = {'mlp': fields.ColorHead, 'palette': fields.PaletteHead}
MODELS = {'conditional_nerf': ConditionalNeRF}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


SAMPLERS = ('hierarchical', 'proposal')


def check_choices(cfg):
  """Raises ConfigError for a name no module knows, naming the setting.

  Linen modules only see their fields when traced, where a bad name would
  surface under a JAX note; this checks them when the model is built.

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
  return MODELS[model_name](
      num_samples=tuple(cfg['num_samples']), sampler=cfg['sampler'],
      lindisp=cfg['lindisp'], clip_to_bound=cfg['clip_to_bound'],
      ndc=tuple(float(v) for v in cfg.get('ndc', ())),
      resample_padding=cfg['resample_padding'],
      background=tuple(float(b) for b in background), field=field,
      proposal_field=proposal_field, head=head, head_kind=kind)
