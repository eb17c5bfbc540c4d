"""condnerf: a conditional NeRF whose color branch reads a latent appearance code."""

__version__ = '0.1.0'
