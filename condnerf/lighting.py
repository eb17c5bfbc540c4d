"""Light codes: order-2 spherical-harmonics (SH) shading and its edits.

A light code is `L` f32[9, 3]: for each color channel, the 9 real SH
coefficients (bands 0-2) of the *irradiance* a surface of unit normal `n`
receives, so the shading is `shading(n, L) = Y(n) @ L` f32[3] and a shaded
color head renders `albedo * max(0, shading)` (NeRF-OSR's model). Bands up
to 2 hold the irradiance of any distant light to within a few percent
(Ramamoorthi & Hanrahan, "An efficient representation for irradiance
environment maps", 2001), and the code is linear: the rendered color is
linear in `L` once geometry, normals and albedo are fixed.

Conventions: `Y` is the orthonormal real SH basis in the order
(0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1), (2,0), (2,1), (2,2) with
Y(1,-1) ~ y, Y(1,0) ~ z, Y(1,1) ~ x. A directional light of intensity `I`
towards the unit vector `d` (from the surface to the light) plus an ambient
term `a` has the irradiance `a + I max(0, n.d)`; its projection is
`a / Y00` on (0,0) plus `I * A_l * Y_lm(d)` with the clamped-cosine factors
A_l = (pi, 2 pi / 3, pi / 4) (`directional`). Evaluated on its own direction
the projection gives `a + 17/16 I` (the truncation overshoots by 1/16).

Owns the basis, directional lights, rotations of a code, and the two
least-squares fits of a light from pixels (`fit_linear`, `fit_directional`).
Pure numpy/jax functions; no module state.
"""

import numpy as np

import jax.numpy as jnp

NUM_COEFFS = 9
# Clamped-cosine (Lambertian) convolution factor of each band.
BAND_FACTORS = (np.pi, 2.0 * np.pi / 3.0, np.pi / 4.0)
_BAND_OF = (0, 1, 1, 1, 2, 2, 2, 2, 2)
_Y00 = 0.5 / np.sqrt(np.pi)


def sh_basis(normals, xp=jnp):
  """The 9 real SH functions at unit vectors.

  Args:
    normals: f32[..., 3] unit vectors (x, y, z).
    xp: `jax.numpy` (default) or `numpy`.
  Returns:
    f32[..., 9] in the module's order.
  """
  x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
  c1 = np.sqrt(3.0 / (4.0 * np.pi))
  c2 = 0.5 * np.sqrt(15.0 / np.pi)
  c20 = 0.25 * np.sqrt(5.0 / np.pi)
  c22 = 0.25 * np.sqrt(15.0 / np.pi)
  return xp.stack([
      xp.full_like(x, _Y00), c1 * y, c1 * z, c1 * x,
      c2 * x * y, c2 * y * z, c20 * (3.0 * z * z - 1.0), c2 * x * z,
      c22 * (x * x - y * y)], axis=-1)


def shading(normals, light, xp=jnp):
  """Unclamped irradiance `Y(n) @ L`.

  Args:
    normals: f32[..., 3] unit normals.
    light: f32[..., 9, 3] light codes (broadcast against the normals'
      leading axes after a sample axis: f32[num_rays, 9, 3] with normals
      f32[num_rays, num_samples, 3] is written `light[:, None]`).
    xp: `jax.numpy` or `numpy`.
  Returns:
    f32[..., 3].
  """
  return xp.einsum('...i,...ic->...c', sh_basis(normals, xp), light)


def check_light(light, what='light code'):
  """f32[9, 3] from anything array-like; ValueError naming a wrong shape,
  or the values that are not finite."""
  light = np.asarray(light, np.float32)
  if light.shape != (NUM_COEFFS, 3):
    raise ValueError(f'A {what} is f32[{NUM_COEFFS}, 3] finite SH '
                     f'coefficients (9 per color channel); got shape '
                     f'{light.shape}.')
  bad = ~np.isfinite(light)
  if bad.any():
    raise ValueError(f'The {what} is not finite: {int(bad.sum())} of its '
                     f'{light.size} SH coefficients are NaN or infinite; use '
                     'a code saved from a run that trained without '
                     'diverging.')
  return light


def unit(direction):
  """f64[3] unit vector; ValueError on a zero-length or non-finite one."""
  direction = np.asarray(direction, np.float64).reshape(-1)
  norm = np.linalg.norm(direction) if direction.shape == (3,) else 0.0
  if direction.shape != (3,) or not np.isfinite(norm) or norm < 1e-9:
    raise ValueError(f'A light direction is 3 finite numbers of non-zero '
                     f'length, e.g. 0,-1,1; got {direction.tolist()}.')
  return direction / norm


def directional(direction, intensity=1.0, ambient=0.0):
  """The SH code of a directional light plus an ambient term.

  Args:
    direction: 3 floats, from the surface towards the light (normalized
      here; zero length is refused).
    intensity: float or 3 floats (per channel) of the directional part.
    ambient: float or 3 floats of the constant part.
  Returns:
    f32[9, 3].
  """
  d = unit(direction)
  per_band = np.asarray([BAND_FACTORS[b] for b in _BAND_OF])
  lobe = per_band * sh_basis(d, np)  # f64[9]
  intensity = np.broadcast_to(np.asarray(intensity, np.float64), (3,))
  ambient = np.broadcast_to(np.asarray(ambient, np.float64), (3,))
  light = lobe[:, None] * intensity[None, :]
  light[0] += ambient / _Y00
  return light.astype(np.float32)


def from_material_light(light):
  """The SH code of a `procedural.Light` (or its json dict)."""
  if isinstance(light, dict):
    return directional(light['direction'], light['intensity'],
                       light['ambient'])
  return directional(light.direction, light.intensity, light.ambient)


def _sphere_points(num):
  """f64[num, 3] nearly uniform unit vectors (a Fibonacci sphere)."""
  i = np.arange(num) + 0.5
  z = 1.0 - 2.0 * i / num
  r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
  phi = np.pi * (3.0 - np.sqrt(5.0)) * i
  return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def rotation_matrix(axis, degrees):
  """f64[3, 3] rotation by `degrees` about `axis` (right-handed)."""
  k = unit(axis)
  t = np.radians(float(degrees))
  cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * cross @ cross


def rotate(light, rotation):
  """The code of a light turned by a rotation: shading'(R n) = shading(n).

  Bands 0-2 are closed under rotation, so the 9 x 9 matrix that maps the
  coefficients is found exactly by least squares on 64 directions.

  Args:
    light: f32[9, 3].
    rotation: f64[3, 3] rotation matrix.
  Returns:
    f32[9, 3].
  """
  light = check_light(light)
  points = _sphere_points(64)
  # shading'(n) = shading(R^T n): rows n^T R are (R^T n)^T.
  basis = sh_basis(points, np)
  turned = sh_basis(points @ np.asarray(rotation, np.float64), np)
  matrix, *_ = np.linalg.lstsq(basis, turned, rcond=None)
  return (matrix @ light.astype(np.float64)).astype(np.float32)


def rotate_about(light, degrees, up=(0.0, 0.0, 1.0)):
  """`rotate` by `degrees` about the scene's up axis."""
  return rotate(light, rotation_matrix(up, degrees))


def dominant_direction(light):
  """f64[3]: the unit direction of a code's band-1 (linear) term.

  For a directional light this is its direction; an ambient-only code has
  none (ValueError).
  """
  light = check_light(light)
  linear = light[1:4].mean(axis=1)  # (y, z, x) coefficients.
  return unit(np.array([linear[2], linear[0], linear[1]]))


def estimate(light):
  """The directional-plus-ambient light closest to a code.

  Compares the shading over the whole sphere (`fit_directional` on 1024
  directions), so the result is the physical light a learned code stands
  for, in the run's units.

  Returns:
    dict with `direction` f64[3], `intensity` f64[3], `ambient` f64[3] and
    the mean squared shading `error` of that approximation.
  """
  light = check_light(light).astype(np.float64)
  points = _sphere_points(1024)
  basis = sh_basis(points, np)
  design = np.repeat(basis[:, :, None], 3, axis=2)
  target = basis @ light
  _, info = fit_directional(design, np.zeros_like(target), target,
                            np.ones(len(points)), num_directions=1024)
  return info


def with_direction(light, direction, intensity=None, ambient=None):
  """A code lit from `direction`, keeping the rest of the light.

  Args:
    light: f32[9, 3], the code being edited.
    direction: 3 floats towards the light (zero length is refused).
    intensity: None (keep the code's estimated intensity, `estimate`) or a
      float / 3 floats.
    ambient: None (keep its estimated ambient term) or a float / 3 floats.
  Returns:
    f32[9, 3].
  """
  direction = unit(direction)
  if intensity is None or ambient is None:
    info = estimate(light)
    intensity = info['intensity'] if intensity is None else intensity
    ambient = info['ambient'] if ambient is None else ambient
  return directional(direction, intensity, ambient)


def fit_linear(design, offset, target, weight, prior, ridge=1e-3):
  """The least-squares light code of pixels, per color channel.

  With geometry, normals and albedo fixed, a shaded head renders
  `color_rc = design_rc @ L_c + offset_rc` (clamping aside). This
  minimizes `sum_r weight_r |color_r - target_r|^2 + lam |L - prior|^2`
  with `lam = ridge * mean(diag(D^T W D))` (scale-free; it decides the
  coefficients the pixels do not see, e.g. of faces no scribbled pixel
  shows).

  Args:
    design: f64[num_rays, 9, 3] (D).
    offset: f64[num_rays, 3].
    target: f32[num_rays, 3].
    weight: f64[num_rays] (0 = padding).
    prior: f32[9, 3].
    ridge: relative strength of the pull towards the prior.
  Returns:
    f32[9, 3].
  """
  prior = check_light(prior, 'prior light code').astype(np.float64)
  root = np.sqrt(np.asarray(weight, np.float64))
  out = np.empty((NUM_COEFFS, 3))
  for c in range(3):
    a = design[:, :, c] * root[:, None]
    b = (np.asarray(target, np.float64)[:, c] - offset[:, c]) * root
    gram = a.T @ a
    lam = ridge * max(float(np.mean(np.diag(gram))), 1e-12)
    out[:, c] = np.linalg.solve(gram + lam * np.eye(NUM_COEFFS),
                                a.T @ b + lam * prior[:, c])
  return out.astype(np.float32)


def fit_directional(design, offset, target, weight, num_directions=2048,
                    white=False):
  """The best directional-plus-ambient light for pixels.

  The family of `directional`: for each candidate direction the
  intensity and ambient (per channel, or with `white` one for all three)
  are a 2-unknown least squares; the
  direction with the smallest error wins, searched on `num_directions`
  directions over the sphere and then on as many within 5 degrees of the
  best. Unlike `fit_linear`, the answer is a physical light, so it also
  says what faces the pixels do not show look like.

  Args:
    design, offset, target, weight: as for `fit_linear`.
    num_directions: candidate directions per search (Fibonacci points).
    white: one intensity and one ambient for every channel (a white
      light): 4 unknowns instead of 8, and a channel the albedo leaves
      dark (the blue of a red chair) cannot take any value.
  Returns:
    (f32[9, 3] code, dict with `direction` f64[3], `intensity` f64[3],
    `ambient` f64[3] and the weighted mean squared `error`).
  """
  root = np.sqrt(np.asarray(weight, np.float64))
  residual = (np.asarray(target, np.float64) - offset) * root[:, None]
  ambient_col = design[:, 0, :] * root[:, None]  # the (0,0) coefficient.
  best = _best_direction(_sphere_points(num_directions), design, root,
                         ambient_col, residual, white)
  best = _best_direction(np.concatenate([best[0][None], _cap_points(
      best[0], 5.0, num_directions)]), design, root, ambient_col, residual,
                         white)
  direction, intensity, ambient, error = best
  code = directional(direction, intensity, 0.0)
  code[0] += ambient.astype(np.float32)
  total = max(float(np.sum(weight)), 1.0)
  return code, {'direction': direction.tolist(),
                'intensity': intensity.tolist(),
                'ambient': (ambient * _Y00).tolist(),
                'error': error / total / 3.0}


def fit_direction(design, offset, target, weight, intensity, ambient,
                  num_directions=2048):
  """The light direction that best fits pixels, the light's strength kept.

  A directional light of the given intensity and ambient (those of the code
  being edited, `estimate`); only its direction is searched, on
  `num_directions` directions over the sphere and then on as many within 5
  degrees of the best. With the strength fixed, a fit of a look's light
  cannot trade brightness with the albedo (the palette), which a fit of
  both from a few pixels otherwise does.

  Args:
    design, offset, target, weight: as for `fit_linear`.
    intensity, ambient: 3 floats each (`estimate`'s).
  Returns:
    (f32[9, 3] code, f64[3] direction).
  """
  intensity = np.asarray(intensity, np.float64)
  ambient = np.asarray(ambient, np.float64) / _Y00
  weight = np.asarray(weight, np.float64)
  # Colors without the directional part: the offset plus the ambient term.
  base = offset + design[:, 0, :] * ambient[None]
  per_band = np.asarray([BAND_FACTORS[b] for b in _BAND_OF])

  def best(candidates):
    lobes = per_band * sh_basis(candidates, np)  # [M, 9]
    shaded = np.einsum('ric,mi->mrc', design, lobes) * intensity
    error = np.einsum('r,mrc->m', weight,
                      (base[None] + shaded - np.asarray(target))**2)
    return candidates[int(np.argmin(error))]

  direction = best(_sphere_points(num_directions))
  direction = best(np.concatenate([direction[None], _cap_points(
      direction, 5.0, num_directions)]))
  return directional(direction, intensity, ambient * _Y00), direction


def _best_direction(candidates, design, root, ambient_col, residual,
                    white=False):
  """(direction, intensity f64[3], (0,0) coefficient f64[3], error)."""
  per_band = np.asarray([BAND_FACTORS[b] for b in _BAND_OF])
  lobes = per_band * sh_basis(candidates, np)  # [M, 9]
  lobe_col = np.einsum('ric,mi->mrc', design, lobes) * root[None, :, None]
  # Per direction m and channel c: [ambient, intensity] by normal equations.
  aa = np.sum(ambient_col**2, 0)  # [C]
  ll = np.sum(lobe_col**2, 1)  # [M, C]
  al = np.sum(ambient_col[None] * lobe_col, 1)  # [M, C]
  ay = np.sum(ambient_col * residual, 0)  # [C]
  ly = np.sum(lobe_col * residual[None], 1)  # [M, C]
  yy = np.sum(residual**2, 0)  # [C]
  if white:  # one system over all channels, its answer shared by them.
    channels = aa.shape[0]
    aa, ay, yy = (np.full(channels, x.sum()) for x in (aa, ay, yy))
    ll, al, ly = (np.repeat(x.sum(-1, keepdims=True), channels, -1)
                  for x in (ll, al, ly))
  det = np.maximum(aa[None] * ll - al**2, 1e-18)
  amb = (ll * ay[None] - al * ly) / det
  inten = (aa[None] * ly - al * ay[None]) / det
  error = (yy[None] - 2 * amb * ay[None] - 2 * inten * ly
           + amb**2 * aa[None] + 2 * amb * inten * al + inten**2 * ll)
  if white:  # every channel holds the pooled error: count it once.
    error = error / error.shape[-1]
  # A light shines towards the surface: negative intensities are refused.
  error = np.where(inten >= 0, error, np.inf).sum(-1)
  m = int(np.argmin(error))
  return candidates[m], inten[m], amb[m], float(error[m])


def _cap_points(center, degrees, num):
  """f64[num, 3] unit vectors spread over a cap around `center`."""
  i = np.arange(num) + 0.5
  z = 1.0 - (1.0 - np.cos(np.radians(degrees))) * i / num
  r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
  phi = np.pi * (3.0 - np.sqrt(5.0)) * i
  local = np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)
  # Turn +z onto the center.
  axis = np.cross([0.0, 0.0, 1.0], center)
  if np.linalg.norm(axis) < 1e-9:
    return local if center[2] > 0 else -local
  angle = np.degrees(np.arccos(np.clip(center[2], -1.0, 1.0)))
  return local @ rotation_matrix(axis, angle).T
