"""Input encodings for positions and directions (pure functions, no parameters).

Owns positional encoding, the multiresolution hash-grid lookup (Instant-NGP,
Mueller et al. 2022) given its tables, and the bounded-scene normalisation
and contraction of positions. The tables themselves are linen parameters owned
by `fields.HashGrid`.

Symbols: `num_levels` hash-grid levels, each with `table_size` rows of
`num_features` features; positions `x` are world coordinates.
"""

import jax.numpy as jnp
import numpy as np

# Spatial-hash primes of Instant-NGP (Teschner et al. 2003); x's prime is 1.
_HASH_PRIMES = (1, 2654435761, 805459861)


def posenc(x, min_deg, max_deg, append_identity=True):
  """Sinusoidal positional encoding.

  Args:
    x: f32[..., dim], values to encode.
    min_deg: lowest frequency is 2**min_deg.
    max_deg: frequencies go up to 2**(max_deg - 1).
    append_identity: also return `x` itself.
  Returns:
    f32[..., dim * 2 * (max_deg - min_deg) (+ dim)], the encoding.
  """
  if max_deg <= min_deg:
    return x if append_identity else jnp.zeros(x.shape[:-1] + (0,), x.dtype)
  scales = 2.0**jnp.arange(min_deg, max_deg, dtype=x.dtype)
  xb = (x[..., None, :] * scales[:, None]).reshape(x.shape[:-1] + (-1,))
  # sin(x + pi/2) = cos(x): one sin call for both halves.
  four = jnp.sin(jnp.concatenate([xb, xb + 0.5 * jnp.pi], axis=-1))
  return jnp.concatenate([x, four], axis=-1) if append_identity else four


def posenc_dim(dim, min_deg, max_deg, append_identity=True):
  """Width of `posenc` output for an input of width `dim`."""
  return dim * 2 * max(max_deg - min_deg, 0) + (dim if append_identity else 0)


def contract(x):
  """mip-NeRF 360 scene contraction: identity inside the unit ball.

  Args:
    x: f32[..., 3], positions.
  Returns:
    f32[..., 3], positions inside the radius-2 ball.
  """
  norm_sq = jnp.maximum(jnp.sum(x**2, axis=-1, keepdims=True), 1e-10)
  norm = jnp.sqrt(norm_sq)
  return jnp.where(norm_sq <= 1.0, x, (2.0 - 1.0 / norm) * x / norm)


def normalize_positions(x, scene_bound, use_contraction=False):
  """Maps world positions into the unit cube [0, 1]^3 that grids index.

  Args:
    x: f32[..., 3], world positions.
    scene_bound: half-width of the box holding the scene.
    use_contraction: contract positions beyond `scene_bound` (unbounded
      scenes) instead of clipping them to the box.
  Returns:
    f32[..., 3] in [0, 1].
  """
  x = x / scene_bound
  if use_contraction:
    x = contract(x) / 2.0
  return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def hash_grid_resolutions(num_levels, base_resolution, max_resolution):
  """i32[num_levels] grid resolutions growing geometrically."""
  if num_levels == 1:
    return np.array([base_resolution], np.int64)
  growth = np.exp((np.log(max_resolution) - np.log(base_resolution)) /
                  (num_levels - 1))
  return np.floor(base_resolution * growth**np.arange(num_levels)).astype(
      np.int64)


def _corner_offsets():
  """i32[8, 3], the unit-cube corners in binary order."""
  return np.array([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)],
                  np.int32)


def hash_grid_indices(corners, resolutions, table_size):
  """Table rows of integer grid vertices, per level.

  Levels whose (resolution + 1)**3 vertices fit in the table are indexed
  densely (collision free); the others use the spatial hash.

  Args:
    corners: i32[..., num_levels, num_corners, 3], vertex coordinates.
    resolutions: static int sequence [num_levels].
    table_size: rows per level.
  Returns:
    i32[..., num_levels, num_corners], rows in [0, table_size).
  """
  resolutions = np.asarray(resolutions, np.int64)
  side = resolutions + 1
  dense = (side**3 <= table_size)[:, None]
  c = corners.astype(jnp.uint32)
  side_u = jnp.asarray(side, jnp.uint32)[:, None]
  dense_idx = c[..., 0] + side_u * (c[..., 1] + side_u * c[..., 2])
  hashed = (c[..., 0] * jnp.uint32(_HASH_PRIMES[0])) ^ (
      c[..., 1] * jnp.uint32(_HASH_PRIMES[1])) ^ (
          c[..., 2] * jnp.uint32(_HASH_PRIMES[2]))
  idx = jnp.where(dense, dense_idx, hashed) % jnp.uint32(table_size)
  return idx.astype(jnp.int32)


def hash_grid_encode(x, tables, resolutions):
  """Trilinearly interpolated features from multiresolution hash tables.

  Args:
    x: f32[..., 3], positions normalised to [0, 1]^3.
    tables: f32[num_levels, table_size, num_features], the learned tables.
    resolutions: static int sequence [num_levels], cells per axis per level.
  Returns:
    f32[..., num_levels * num_features], concatenated level features.
  """
  num_levels, table_size, num_features = tables.shape
  res = jnp.asarray(np.asarray(resolutions), x.dtype)
  scaled = x[..., None, :] * res[:, None]  # [..., L, 3]
  base = jnp.minimum(jnp.floor(scaled).astype(jnp.int32),
                     jnp.asarray(np.asarray(resolutions) - 1,
                                 jnp.int32)[:, None])
  frac = scaled - base.astype(x.dtype)  # in [0, 1] also on the far face.
  offsets = jnp.asarray(_corner_offsets())  # [8, 3]
  corners = base[..., None, :] + offsets  # [..., L, 8, 3]
  idx = hash_grid_indices(corners, resolutions, table_size)  # [..., L, 8]
  # Per-corner trilinear weights: prod_k (frac_k if bit else 1 - frac_k).
  w = jnp.where(offsets == 1, frac[..., None, :], 1.0 - frac[..., None, :])
  w = jnp.prod(w, axis=-1)  # [..., L, 8]
  flat_idx = idx + (jnp.arange(num_levels, dtype=jnp.int32) *
                    table_size)[:, None]
  feats = jnp.take(tables.reshape(num_levels * table_size, num_features),
                   flat_idx, axis=0)  # [..., L, 8, F]
  out = jnp.sum(w[..., None].astype(feats.dtype) * feats, axis=-2)
  return out.reshape(x.shape[:-1] + (num_levels * num_features,))


def direction_encoding(directions, degree):
  """Direction encoding used by the color head: posenc of unit vectors.

  Args:
    directions: f32[..., 3] unit view directions.
    degree: number of frequencies (0 gives the raw direction).
  Returns:
    f32[..., 3 + 6 * degree].
  """
  return posenc(directions, 0, degree, append_identity=True)

