"""Per-image quality metrics: PSNR, SSIM and the NeRF-W half-image mask.

Owns pure functions that compare a rendered image with its reference. They
accept numpy or jax arrays (jax if any input is a `jax.Array`, so they also
work under `jit`) and reduce over the last three axes `[H, W, 3]`, keeping any
leading batch axes. Images are linear-range floats in [0, 1].

It does not own learned metrics (LPIPS needs network weights; an evaluator
can pass its own callable), averaging over a dataset (the evaluators do that),
or image I/O (`images.py`).
"""

import jax
import jax.numpy as jnp
import numpy as np

# Window and constants of the usual Gaussian SSIM (Wang et al. 2004).
_SSIM_FILTER_SIZE = 11
_SSIM_FILTER_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _xnp(*arrays):
  """Returns jnp if any argument is a jax array (or tracer), else np."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def mse_to_psnr(mse):
  """Converts mean squared error to PSNR for images with peak value 1.

  Args:
    mse: f32[...], mean squared error, > 0.

  Returns:
    f32[...], PSNR in dB, `-10 log10(mse)`.
  """
  xnp = _xnp(mse)
  return -10.0 * xnp.log10(mse)


def psnr(img, ref, mask=None):
  """Peak signal-to-noise ratio between two images with values in [0, 1].

  Args:
    img: f32[..., H, W, 3], rendered image.
    ref: f32[..., H, W, 3], reference image.
    mask: optional f32[..., H, W] (or bool) pixel weights; only pixels with
      non-zero weight count, e.g. one half of the image for the NeRF-W
      protocol (see `masked_region`).

  Returns:
    f32[...], PSNR in dB per image.
  """
  xnp = _xnp(img, ref, mask)
  img = xnp.asarray(img)
  ref = xnp.asarray(ref)
  _check_images(img, ref)
  sq_err = (img - ref)**2
  if mask is None:
    mse = sq_err.mean(axis=(-3, -2, -1))
  else:
    mask = xnp.asarray(mask, dtype=sq_err.dtype)
    if mask.shape[-2:] != img.shape[-3:-1]:
      raise ValueError(f'mask shape {mask.shape} does not match image shape '
                       f'{img.shape}.')
    num = (sq_err * mask[..., None]).sum(axis=(-3, -2, -1))
    den = mask.sum(axis=(-2, -1)) * img.shape[-1]
    mse = num / den
  return mse_to_psnr(mse)


def _ssim_filter(dtype):
  """Returns the normalised 1D Gaussian taps f[11] of the SSIM window."""
  half = _SSIM_FILTER_SIZE // 2
  x = (np.arange(_SSIM_FILTER_SIZE) - half) / _SSIM_FILTER_SIGMA
  taps = np.exp(-0.5 * x**2)
  return (taps / taps.sum()).astype(dtype)


def _blur_valid(x, taps):
  """Separable 'valid' Gaussian filter over axes -3 (H) and -2 (W).

  Args:
    x: f[..., H, W, C].
    taps: f[K], 1D filter.

  Returns:
    f[..., H - K + 1, W - K + 1, C].
  """
  k = taps.shape[0]
  h, w = x.shape[-3], x.shape[-2]
  rows = sum(taps[i] * x[..., i:i + h - k + 1, :, :] for i in range(k))
  return sum(taps[i] * rows[..., :, i:i + w - k + 1, :] for i in range(k))


def ssim(img, ref, max_val=1.0):
  """Structural similarity with the usual 11x11 Gaussian window.

  This is the standard definition (Wang et al. 2004) with a Gaussian window of
  size 11 and sigma 1.5, K1 = 0.01 and K2 = 0.03, population (not sample)
  statistics, computed per channel and averaged over the pixels whose window
  lies fully inside the image. It matches multinerf's `compute_ssim` and
  `skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=max_val,
  channel_axis=-1)`, the number NeRF papers report. Variances are clamped at
  0 and the covariance at `sqrt(var_x var_y)` to absorb rounding, as
  multinerf does.

  Args:
    img: f32[..., H, W, C], rendered image, H and W >= 11.
    ref: f32[..., H, W, C], reference image.
    max_val: dynamic range of the images (1 for [0, 1] images).

  Returns:
    f32[...], mean SSIM per image, at most 1.
  """
  xnp = _xnp(img, ref)
  img = xnp.asarray(img)
  ref = xnp.asarray(ref)
  _check_images(img, ref, check_channels=False)
  if min(img.shape[-3:-1]) < _SSIM_FILTER_SIZE:
    raise ValueError(f'SSIM needs images of at least {_SSIM_FILTER_SIZE}x'
                     f'{_SSIM_FILTER_SIZE} pixels, got {img.shape}.')
  dtype = xnp.result_type(img.dtype, ref.dtype, xnp.float32)
  img = img.astype(dtype)
  ref = ref.astype(dtype)
  taps = xnp.asarray(_ssim_filter(dtype))
  mu0 = _blur_valid(img, taps)
  mu1 = _blur_valid(ref, taps)
  sigma00 = xnp.maximum(0.0, _blur_valid(img**2, taps) - mu0**2)
  sigma11 = xnp.maximum(0.0, _blur_valid(ref**2, taps) - mu1**2)
  sigma01 = _blur_valid(img * ref, taps) - mu0 * mu1
  sigma01 = xnp.sign(sigma01) * xnp.minimum(
      xnp.sqrt(sigma00 * sigma11), xnp.abs(sigma01))
  c1 = (_SSIM_K1 * max_val)**2
  c2 = (_SSIM_K2 * max_val)**2
  numer = (2 * mu0 * mu1 + c1) * (2 * sigma01 + c2)
  denom = (mu0**2 + mu1**2 + c1) * (sigma00 + sigma11 + c2)
  return (numer / denom).mean(axis=(-3, -2, -1))


def masked_region(height, width, half='left'):
  """Boolean mask of one vertical half of an image (NeRF-W protocol).

  NeRF-W optimizes a test image's appearance code on its left half and
  reports metrics on its right half. Column `width // 2` and those after it
  form the right half, so for odd widths the right half is one column wider.

  Args:
    height: image height H in pixels.
    width: image width W in pixels.
    half: 'left' or 'right'.

  Returns:
    bool[H, W], True inside the requested half.
  """
  if half not in ('left', 'right'):
    raise ValueError(f'half must be "left" or "right", got {half!r}.')
  right = np.arange(width) >= width // 2
  columns = right if half == 'right' else ~right
  return np.broadcast_to(columns, (height, width)).copy()


def _check_images(img, ref, check_channels=True):
  if img.shape != ref.shape:
    raise ValueError(f'image shapes differ: {img.shape} vs {ref.shape}.')
  if img.ndim < 3 or (check_channels and img.shape[-1] != 3):
    raise ValueError(f'expected images of shape [..., H, W, 3], got '
                     f'{img.shape}.')
