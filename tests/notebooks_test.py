"""The notebooks: committed stripped, importing condnerf only, and runnable.

Each notebook is executed top to bottom with nbclient, in a kernel running
this interpreter, with `CONDNERF_NOTEBOOK_SMALL=1`: the notebooks then train
a tiny demo in a temporary folder, so no `runs/demo` is needed (a clean
clone passes). The kernels get 2 forced CPU devices, JAX's cheaper compiler
settings and one persistent compilation cache shared by the notebooks.
"""

import ast
import glob
import json
import os
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
from jupyter_client import kernelspec
from jupyter_client import manager
import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, 'notebooks')
NOTEBOOKS = ('palette', 'quickstart', 'recolor', 'relight', 'swap_codes')
BUDGET_S = 180  # per notebook, small configuration, on a 2-core CPU.
KERNEL = 'condnerf-test'
# Modules a notebook may import: the package, and `os` for the XLA_FLAGS
# line that must run before jax is imported.
ALLOWED_IMPORTS = ('condnerf', 'os')


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOK_DIR, f'{name}.ipynb'),
                       as_version=4)


def _imports(source):
  """Top-level module names imported by a cell's code."""
  names = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names += [alias.name.split('.')[0] for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      names.append((node.module or '').split('.')[0])
  return names


class CommittedNotebooksTest(parameterized.TestCase):

  def test_every_notebook_is_executed_here(self):
    found = sorted(os.path.splitext(os.path.basename(p))[0] for p in
                   glob.glob(os.path.join(NOTEBOOK_DIR, '*.ipynb')))
    self.assertEqual(found, sorted(NOTEBOOKS))

  @parameterized.parameters(*NOTEBOOKS)
  def test_outputs_are_stripped(self, name):
    for i, cell in enumerate(_read(name).cells):
      if cell.cell_type == 'code':
        self.assertEqual(cell.outputs, [], f'{name} cell {i} has outputs')
        self.assertIsNone(cell.execution_count,
                          f'{name} cell {i} has an execution count')
      self.assertNotIn('attachments', cell, f'{name} cell {i}')

  @parameterized.parameters(*NOTEBOOKS)
  def test_imports_condnerf_only(self, name):
    for i, cell in enumerate(_read(name).cells):
      if cell.cell_type == 'code':
        for module in _imports(cell.source):
          self.assertIn(module, ALLOWED_IMPORTS, f'{name} cell {i}')

  @parameterized.parameters(*NOTEBOOKS)
  def test_first_code_cell_reads_the_small_switch(self, name):
    first = next(c for c in _read(name).cells if c.cell_type == 'code')
    self.assertIn('SMALL = runs.small_requested()', first.source)


class ExecuteNotebooksTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    spec_dir = os.path.join(cls.tmp.name, 'kernels', KERNEL)
    os.makedirs(spec_dir)
    # A kernel spec of our own, so the kernel is this interpreter (the venv)
    # whatever kernels the machine has installed.
    with open(os.path.join(spec_dir, 'kernel.json'), 'w') as f:
      json.dump({'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
                          '{connection_file}'],
                 'display_name': 'condnerf tests', 'language': 'python'}, f)
    cls.spec_manager = kernelspec.KernelSpecManager(
        kernel_dirs=[os.path.dirname(spec_dir)])
    scratch = os.path.join(cls.tmp.name, 'scratch')
    os.makedirs(scratch)
    cls.env = dict(
        os.environ,
        CONDNERF_NOTEBOOK_SMALL='1',
        XLA_FLAGS='--xla_force_host_platform_device_count=2',
        JAX_PLATFORMS='cpu',
        JAX_DISABLE_MOST_OPTIMIZATIONS='1',
        JAX_COMPILATION_CACHE_DIR=os.path.join(cls.tmp.name, 'jax_cache'),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
        TMPDIR=scratch,  # the notebooks' temporary runs land here.
    )

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _execute(self, book):
    km = manager.AsyncKernelManager(kernel_name=KERNEL,
                                    kernel_spec_manager=self.spec_manager)
    client = nbclient.NotebookClient(
        book, km=km, kernel_name=KERNEL, timeout=BUDGET_S,
        resources={'metadata': {'path': NOTEBOOK_DIR}})
    start = time.monotonic()
    # cleanup_kc: shut the kernel down and close its channels afterwards
    # (nbclient keeps a kernel alive when it did not create the manager).
    client.execute(cleanup_kc=True, env=self.env)
    return time.monotonic() - start

  def test_kernel_is_this_interpreter(self):
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        'import sys, os; print(sys.executable); print(os.getcwd())')])
    self._execute(book)
    printed = book.cells[0].outputs[0]['text'].split()
    self.assertEqual(printed, [sys.executable, NOTEBOOK_DIR])

  @parameterized.named_parameters((name, name) for name in NOTEBOOKS)
  def test_runs_top_to_bottom(self, name):
    book = _read(name)
    seconds = self._execute(book)  # raises CellExecutionError on any error.
    print(f'{name}.ipynb executed in {seconds:.1f} s')
    self.assertLess(seconds, BUDGET_S)
    shown = warnings = 0
    for cell in book.cells:
      for output in cell.get('outputs', []):
        shown += 'image/png' in output.get('data', {})
        if output.get('name') == 'stderr':
          warnings += sum('Warning' in line
                          for line in output['text'].splitlines())
    self.assertGreater(shown, 0, f'{name} showed no image')
    self.assertEqual(warnings, 0, f'{name} printed warnings')


if __name__ == '__main__':
  absltest.main()
