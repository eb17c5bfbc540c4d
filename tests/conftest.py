"""Test-wide setup, set before jax is imported: 8 forced CPU devices, and
a persistent compilation cache shared by every test process.

The suite compiles the same small programs many times over (each whole run
through the CLI is a fresh process compiling the same train step), so the
cache saves about a fifth of a cold suite's time. It reuses XLA's own
executables keyed by the program and its flags, so no result changes.
Set JAX_COMPILATION_CACHE_DIR to move it; delete the folder to start cold.
"""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(tempfile.gettempdir(),
                 f'condnerf-test-jax-cache-{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
