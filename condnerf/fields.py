"""Linen modules of the radiance field: encodings with parameters, MLPs, heads.

This file and `models.py` are the only homes of `nn.Module`s, so a later
move to NNX (via `nnx.bridge`) touches two files. Owns:
  `MLP`            a ReLU multilayer perceptron with an optional skip.
  `HashGrid`       learned multiresolution hash tables (lookup in `encoding`).
  `GeometryField`  position -> (density, feature). It has **no code input**:
                   appearance edits cannot change geometry.
  `ColorHead`      (feature, encoded view direction, appearance code) -> rgb,
                   conditioned by concatenation, FiLM or not at all.
Shapes: `num_points` stands for any leading shape `...`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from condnerf import encoding
from condnerf import lighting

ENCODINGS = ('posenc', 'hashgrid')
CONDITIONINGS = ('concat', 'film', 'none')
SHADINGS = ('none', 'sh')
NORMALS = ('density', 'predicted')
DENSITY_ACTIVATIONS = {
    'softplus': jax.nn.softplus,
    'relu': jax.nn.relu,
    # Instant-NGP's exp, with the gradient clamped (trunc_exp) for stability.
    'exp': lambda x: _trunc_exp(x),  # pylint: disable=unnecessary-lambda
}


@jax.custom_jvp
def _trunc_exp(x):
  return jnp.exp(x)


@_trunc_exp.defjvp
def _trunc_exp_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return jnp.exp(x), t * jnp.exp(jnp.clip(x, -15.0, 15.0))


class BroadcastDense(nn.Module):
  """Dense layer over `concat([x, broadcast(ray_x)])`, without the concat.

  The parameters are exactly those of `nn.Dense` on the concatenation
  (kernel rows of `x` first), but the per-ray rows are applied once per ray
  and broadcast over its samples: for a color head whose input is 15
  feature channels per sample plus a 59-wide view-and-code vector per ray,
  this does a fifth of the multiply-adds.
  """
  features: int  # output width.
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32.

  @nn.compact
  def __call__(self, x, ray_x):
    """Applies the layer.

    Args:
      x: f32[..., num_samples, d_x], per-sample inputs.
      ray_x: f32[..., d_ray], per-ray inputs shared by the samples.
    Returns:
      f32[..., num_samples, features].
    """
    d_x = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (d_x + ray_x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    kernel = kernel.astype(self.dtype)
    per_ray = ray_x.astype(self.dtype) @ kernel[d_x:] + bias.astype(self.dtype)
    return x.astype(self.dtype) @ kernel[:d_x] + per_ray[..., None, :]


class MLP(nn.Module):
  """ReLU MLP; the input is concatenated back in after layer `skip`."""
  width: int  # hidden units per layer.
  depth: int  # hidden layers.
  out_dim: int = 0  # width of a final linear layer; 0 = none.
  skip: int = -1  # layer index after which the input is re-injected; -1 = no.
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32.

  @nn.compact
  def __call__(self, x, ray_x=None):
    """Applies the MLP.

    Args:
      x: f32[..., d_in], or f32[..., num_samples, d_in] with `ray_x`.
      ray_x: None, or f32[..., d_ray] per-ray inputs that act as if they
        were concatenated to every sample's `x` (see `BroadcastDense`).
    Returns:
      f32[..., out_dim or width] (with the sample axis when `ray_x` is set).
    """
    if ray_x is not None and self.depth == 0:
      x = jnp.concatenate([x, _broadcast_samples(ray_x, x)], axis=-1)
      ray_x = None
    inputs = x
    # Explicit names: the same parameter tree with or without `ray_x`.
    for i in range(self.depth):
      if i == 0 and ray_x is not None:
        x = BroadcastDense(self.width, self.dtype, name='Dense_0')(x, ray_x)
      else:
        x = nn.Dense(self.width, dtype=self.dtype, name=f'Dense_{i}')(x)
      x = jax.nn.relu(x)
      if i == self.skip and i < self.depth - 1:
        x = jnp.concatenate([x, inputs.astype(x.dtype)], axis=-1)
        if ray_x is not None:
          x = jnp.concatenate(
              [x, _broadcast_samples(ray_x, x).astype(x.dtype)], axis=-1)
    if self.out_dim:
      x = nn.Dense(self.out_dim, dtype=self.dtype,
                   name=f'Dense_{self.depth}')(x)
    return x


def _broadcast_samples(ray_x, x):
  """f32[..., d] -> f32[..., num_samples, d], the sample axis of `x`."""
  return jnp.broadcast_to(ray_x[..., None, :],
                          x.shape[:-1] + (ray_x.shape[-1],))


class HashGrid(nn.Module):
  """Multiresolution hash encoding with learned tables (Instant-NGP)."""
  num_levels: int = 16  # resolution levels.
  log2_table_size: int = 19  # rows per level = 2**log2_table_size.
  num_features: int = 2  # features per row.
  base_resolution: int = 16  # cells per axis at the coarsest level.
  max_resolution: int = 2048  # cells per axis at the finest level.

  @nn.compact
  def __call__(self, x):
    """f32[..., 3] in [0, 1]^3 -> f32[..., num_levels * num_features]."""
    tables = self.param(
        'tables', nn.initializers.uniform(scale=2e-4),
        (self.num_levels, 2**self.log2_table_size, self.num_features))
    tables = tables - 1e-4  # uniform in [-1e-4, 1e-4] as in Instant-NGP.
    resolutions = tuple(int(r) for r in encoding.hash_grid_resolutions(
        self.num_levels, self.base_resolution, self.max_resolution))
    return encoding.hash_grid_encode(x, tables, resolutions)


class GeometryField(nn.Module):
  """Position -> density and a feature vector. Never sees appearance codes."""
  encoding: str = 'posenc'  # 'posenc' or 'hashgrid'.
  min_deg: int = 0  # posenc: lowest frequency exponent.
  max_deg: int = 10  # posenc: frequencies up to 2**(max_deg - 1).
  hash_levels: int = 16  # hashgrid: see `HashGrid`.
  hash_log2_table_size: int = 19  # hashgrid: log2 rows per level.
  hash_features: int = 2  # hashgrid: features per row.
  hash_base_resolution: int = 16  # hashgrid: coarsest cells per axis.
  hash_max_resolution: int = 2048  # hashgrid: finest cells per axis.
  scene_bound: float = 1.5  # half-width of the scene box, world units.
  use_contraction: bool = False  # contract space beyond scene_bound.
  width: int = 256  # trunk hidden units.
  depth: int = 8  # trunk hidden layers.
  skip: int = 4  # trunk skip-connection layer; -1 = none.
  feature_dim: int = 256  # output feature width; 0 = density only.
  density_activation: str = 'softplus'  # key of DENSITY_ACTIVATIONS.
  density_bias: float = -1.0  # added before the activation (pre-activation).
  dtype: Any = jnp.float32  # compute dtype of the trunk matmuls.

  @nn.compact
  def __call__(self, x):
    """Evaluates the field.

    Args:
      x: f32[..., 3], world positions.
    Returns:
      density: f32[...], non-negative volume density (per world unit).
      feature: f32[..., feature_dim], or None when feature_dim == 0.
    """
    if self.encoding == 'posenc':
      h = encoding.posenc(x / self.scene_bound, self.min_deg, self.max_deg)
    elif self.encoding == 'hashgrid':
      u = encoding.normalize_positions(x, self.scene_bound,
                                       self.use_contraction)
      h = HashGrid(self.hash_levels, self.hash_log2_table_size,
                   self.hash_features, self.hash_base_resolution,
                   self.hash_max_resolution)(u)
    else:
      raise ValueError(f'Unknown encoding {self.encoding!r}; choose '
                       "'posenc' or 'hashgrid'.")
    h = MLP(self.width, self.depth, skip=self.skip, dtype=self.dtype)(
        h.astype(self.dtype))
    raw = nn.Dense(1, dtype=self.dtype)(h)[..., 0].astype(jnp.float32)
    density = DENSITY_ACTIVATIONS[self.density_activation](
        raw + self.density_bias)
    feature = None
    if self.feature_dim:
      feature = nn.Dense(self.feature_dim, dtype=self.dtype)(h)
    return density, feature


class ColorHead(nn.Module):
  """(feature, view direction, appearance code) -> rgb in [0, 1]."""
  conditioning: str = 'concat'  # 'concat', 'film' or 'none' (ignore code).
  width: int = 128  # hidden units.
  depth: int = 1  # hidden layers.
  dir_deg: int = 4  # frequencies of the view-direction encoding.
  dtype: Any = jnp.float32  # compute dtype of the matmuls.

  @nn.compact
  def __call__(self, feature, directions, code):
    """Colors of samples.

    Args:
      feature: f32[..., num_samples, feature_dim], geometry features.
      directions: f32[..., 3], unit view directions of the rays.
      code: f32[..., code_dim], one appearance code per ray.
    Returns:
      f32[..., num_samples, 3] colors in [0, 1].
    """
    dir_enc = encoding.direction_encoding(directions, self.dir_deg)
    feature = feature.astype(self.dtype)
    code = code.astype(self.dtype)
    # View direction and code are per ray: the first layer applies their
    # kernel rows once per ray (`BroadcastDense`), not once per sample.
    if self.conditioning == 'concat':
      ray_x = jnp.concatenate([dir_enc.astype(self.dtype), code], axis=-1)
      h = MLP(self.width, self.depth, dtype=self.dtype)(feature, ray_x)
      last = 0
    elif self.conditioning == 'film':
      h = feature
      for i in range(self.depth):
        if i == 0:
          h = BroadcastDense(self.width, self.dtype, name='Dense_0')(
              h, dir_enc)
        else:
          h = nn.Dense(self.width, dtype=self.dtype, name=f'Dense_{2 * i}')(h)
        scale_shift = nn.Dense(
            2 * self.width, dtype=self.dtype,
            kernel_init=nn.initializers.zeros, name=f'Dense_{2 * i + 1}')(code)
        scale, shift = jnp.split(scale_shift[..., None, :], 2, axis=-1)
        h = jax.nn.relu(h * (1.0 + scale) + shift)
      if not self.depth:
        h = jnp.concatenate([h, _broadcast_samples(dir_enc, h).astype(
            h.dtype)], axis=-1)
      last = 2 * self.depth
    elif self.conditioning == 'none':
      h = MLP(self.width, self.depth, dtype=self.dtype)(
          feature, dir_enc.astype(self.dtype))
      last = 0
    else:
      raise ValueError(f'Unknown conditioning {self.conditioning!r}; choose '
                       "'concat', 'film' or 'none'.")
    rgb = nn.Dense(3, dtype=self.dtype, name=f'Dense_{last}')(h)
    return jax.nn.sigmoid(rgb.astype(jnp.float32))


class PaletteHead(nn.Module):
  """Colors from a palette: `s(x) * sum_k w_k(x) P_k + r`.

  The weights `w(x)` (a softmax over the K palette entries) and the
  intensity `s(x) >= 0` come from the geometry feature and the position
  alone, so like density they cannot depend on any code (the position's
  encoding lets the weights differ between parts from the first step,
  before the feature has learned to tell them apart); the palette `P` f32[K, 3] is part of the
  code (one per ray). Given the geometry, a rendered color is linear in `P`,
  which is what makes closed-form palette edits possible. `r` is a residual
  from the feature, the view direction and (with `conditioning='concat'`)
  the latent code, for what a palette cannot express (view-dependent
  effects); training keeps it small (`train.residual_weight`) so that color
  cannot hide in it.

  With `shading='sh'` the intensity is not learned: it is the light code's
  spherical-harmonics irradiance at the sample's normal (`lighting`),
  `max(0, Y(n) @ L)` f32[..., 3] with `L = code['light']` f32[9, 3] and the
  normal `n` the density field's (`models.ConditionalNeRF.geometry`) or
  predicted from the feature (`normals`), code-free either way, so the
  color is `albedo * shading + r` with the palette mixture as the albedo:
  color and light are two codes over one geometry.
  """
  palette_size: int = 6  # K, entries of the palette.
  # Multiplies the weight logits: above 1 the softmax starts sharper and
  # the logits move faster (Adam steps are scale-free), so the parts claim
  # entries of their own before a few entries take every point.
  logit_scale: float = 1.0
  width: int = 64  # hidden units of the weight and residual MLPs.
  depth: int = 1  # hidden layers of each.
  dir_deg: int = 4  # frequencies of the view-direction encoding.
  pos_deg: int = 4  # frequencies of the position encoding of the weights.
  conditioning: str = 'concat'  # residual: 'concat' (code) or 'none'.
  shading: str = 'none'  # 'none' (learned intensity) or 'sh' (light code).
  # Shading 'sh': the normals it shades with. 'density': the density
  # field's (negative normalized gradient); 'predicted': an MLP of the
  # feature and position (code-free), which training pulls towards them
  # (Ref-NeRF): smooth where the gradient of a hash grid is noisy.
  normals: str = 'density'
  dtype: Any = jnp.float32  # compute dtype of the matmuls.

  def setup(self):
    if self.conditioning not in ('concat', 'none'):
      raise ValueError(f'A palette head conditions its residual by '
                       f"'concat' or 'none', not {self.conditioning!r}.")
    if self.shading not in SHADINGS:
      raise ValueError(f'Unknown shading {self.shading!r}; choose one of '
                       f'{list(SHADINGS)}.')
    self.weight_mlp = MLP(self.width, self.depth,
                          out_dim=self.palette_size + (
                              self.shading == 'none'), dtype=self.dtype)
    if self.normals not in NORMALS:
      raise ValueError(f'Unknown normals {self.normals!r}; choose one of '
                       f'{list(NORMALS)}.')
    if self.shading == 'sh' and self.normals == 'predicted':
      self.normal_mlp = MLP(self.width, self.depth, out_dim=3,
                            dtype=self.dtype)
    self.residual_mlp = MLP(self.width, self.depth, dtype=self.dtype)
    self.residual_out = nn.Dense(3, dtype=self.dtype,
                                 kernel_init=nn.initializers.zeros)

  def terms(self, feature, directions, code, points, normals=None):
    """The code-free weights, the shading and the residual of samples.

    Args:
      feature: f32[..., num_samples, feature_dim], geometry features.
      directions: f32[..., 3], unit view directions of the rays.
      code: one code per ray: {'appearance': f32[..., code_dim], ...}
        (+ 'light' f32[..., 9, 3] with `shading='sh'`).
      points: f32[..., num_samples, 3], sample positions scaled to the
        scene box (about [-1, 1]).
      normals: f32[..., num_samples, 3] unit normals (`shading='sh'`).
    Returns:
      dict: `weights` f32[..., num_samples, K] (the softmax w) and
      `log_weights` (its logarithm, finite where w underflows to 0),
      `shading` f32[..., num_samples, C] (the factor of the albedo: C = 1,
      the learned intensity s, or C = 3, the light code's irradiance),
      `intensity` f32[..., num_samples] (its mean over channels), and
      `residual` f32[..., num_samples, 3] (r); with `shading='sh'` also
      `normals` f32[..., num_samples, 3] (those it shaded with) and, when
      predicted, `density_normals` (the field's, what they are pulled to).
    """
    where = jnp.concatenate(
        [feature, encoding.posenc(points, 0, self.pos_deg)], axis=-1)
    out = self.weight_mlp(where.astype(self.dtype)).astype(jnp.float32)
    extra = {}
    if self.shading == 'sh':
      if self.normals == 'predicted':
        raw = self.normal_mlp(where.astype(self.dtype)).astype(jnp.float32)
        predicted = raw / jnp.sqrt(jnp.sum(raw**2, -1, keepdims=True) + 1e-12)
        extra['density_normals'], normals = normals, predicted
      extra['normals'] = normals
      logits = self.logit_scale * out
      shade = jax.nn.relu(lighting.shading(
          normals, code['light'][..., None, :, :]))
    else:
      logits = self.logit_scale * out[..., :-1]
      shade = jax.nn.softplus(out[..., -1:] + 1.0)
    weights = jax.nn.softmax(logits, axis=-1)
    dir_enc = encoding.direction_encoding(directions, self.dir_deg)
    ray_x = dir_enc.astype(self.dtype)
    if self.conditioning == 'concat':
      ray_x = jnp.concatenate(
          [ray_x, code['appearance'].astype(self.dtype)], axis=-1)
    h = self.residual_mlp(feature.astype(self.dtype), ray_x)
    residual = self.residual_out(h).astype(jnp.float32)
    return {'weights': weights, 'log_weights': jax.nn.log_softmax(logits),
            'shading': shade, 'intensity': jnp.mean(shade, axis=-1),
            'residual': residual, **extra}

  def __call__(self, feature, directions, code, points, normals=None):
    """Colors f32[..., num_samples, 3] of samples (see `terms` for args)."""
    return palette_colors(
        self.terms(feature, directions, code, points, normals),
        code['palette'])


def palette_colors(terms, palette):
  """`s * (w @ P) + r`: the colors of `PaletteHead.terms` under a palette.

  Args:
    terms: dict from `PaletteHead.terms`.
    palette: f32[..., K, 3], one palette per ray.
  Returns:
    f32[..., num_samples, 3] colors (not clipped: linear in the palette).
  """
  mixed = jnp.einsum('...sk,...kc->...sc', terms['weights'], palette)
  return terms['shading'] * mixed + terms['residual']


def with_normals(field, points):
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


def palette_extras(terms, weights):
  """Per-ray regularizer terms of a palette head's `terms` under a level's
  compositing `weights` (see `models.ConditionalNeRF.shade`)."""
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
