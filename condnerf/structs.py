"""Pytree containers passed between data, model and rendering.

Owns `Rays`, `Batch` and `RenderOutput`; it does no computation of its own beyond
the `dummy_rays` helper used to initialise models. Conventions:
  num_rays: any leading batch shape, written `...`.
  directions are unit vectors, so `t` (distance along the ray) is in world units
  and `depth` is the distance from the ray origin, not the camera z coordinate.
"""

from typing import Any

from flax import struct
import jax.numpy as jnp
import numpy as np


@struct.dataclass
class Rays:
  """A bundle of rays.

  Attributes:
    origins: f32[..., 3], ray origins in world coordinates.
    directions: f32[..., 3], unit ray directions in world coordinates.
    near: f32[..., 1], distance where sampling starts.
    far: f32[..., 1], distance where sampling stops.
    code_ids: i32[...], row of the appearance-code table for each ray; -1 means
      "use the mean code" (a frame that was never given a code of its own).
  """
  origins: jnp.ndarray
  directions: jnp.ndarray
  near: jnp.ndarray
  far: jnp.ndarray
  code_ids: jnp.ndarray

  @property
  def shape(self):
    return self.code_ids.shape

  def reshape(self, *shape):
    """Returns the same rays with leading shape `shape`."""
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(
        shape[0], int) else tuple(shape)
    return Rays(
        origins=self.origins.reshape(shape + (3,)),
        directions=self.directions.reshape(shape + (3,)),
        near=self.near.reshape(shape + (1,)),
        far=self.far.reshape(shape + (1,)),
        code_ids=self.code_ids.reshape(shape))


@struct.dataclass
class Batch:
  """Rays with their ground truth.

  Attributes:
    rays: `Rays` with leading shape [num_rays].
    rgb: f32[num_rays, 3], target colors in [0, 1].
    weight: f32[num_rays], per-ray loss weight; 0 marks padding rays.
    alpha: f32[num_rays], foreground opacity of each target pixel (1 where
      the images have no alpha channel); `rgb` is already composited on the
      scene background with it.
  """
  rays: Rays
  rgb: jnp.ndarray
  weight: jnp.ndarray
  alpha: jnp.ndarray


@struct.dataclass
class RenderOutput:
  """What volume rendering returns for one sampling level.

  Attributes:
    rgb: f32[..., 3], composited color including the background.
    depth: f32[..., ], expected distance along the ray (weights-normalised).
    acc: f32[..., ], accumulated opacity in [0, 1].
    weights: f32[..., num_samples], compositing weights.
    tdist: f32[..., num_samples + 1], sample interval edges along the ray.
    extras: None, or a dict of f32[...] per-ray terms a head adds (the
      palette head's regularizers, see `models.ConditionalNeRF.shade`).
  """
  rgb: jnp.ndarray
  depth: jnp.ndarray
  acc: jnp.ndarray
  weights: jnp.ndarray
  tdist: jnp.ndarray
  extras: Any = None


def dummy_rays(num_rays=1, xnp=np):
  """Returns `num_rays` valid rays pointing down -z, for model initialisation."""
  zeros = xnp.zeros((num_rays, 3), xnp.float32)
  directions = xnp.broadcast_to(
      xnp.array([0.0, 0.0, -1.0], xnp.float32), (num_rays, 3))
  return Rays(
      origins=zeros,
      directions=directions,
      near=xnp.full((num_rays, 1), 2.0, xnp.float32),
      far=xnp.full((num_rays, 1), 6.0, xnp.float32),
      code_ids=xnp.zeros((num_rays,), xnp.int32))
