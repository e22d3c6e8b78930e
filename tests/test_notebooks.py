"""The Colab notebooks of colab/: stored without outputs, and each runs top to bottom.

Each notebook is executed with nbclient in a fresh kernel of this interpreter, in a temporary
directory, with ``INCEPTION_JAX_SMOKE=1`` (its parameter cell then shrinks the run to a few steps);
an error in any cell fails its test. Executed, a notebook must show what a user opens it for: its
plots (PNG images from matplotlib's inline backend) and its results table (Markdown).

Compiling, not running, dominates a run of a few steps. To keep the three notebooks to a few
minutes on two CPU cores, their kernels compile with XLA's CPU optimisations off (for Inception v1's
train step: 6 s of CPU instead of 37, for steps about 3x slower) and share a JAX compilation cache
(the quickstart's run and the ablation's baseline compile to the same programs; the notebooks run in
file order, in one pytest process, since xdist's --dist loadfile keeps a file on one worker).
"""

from __future__ import annotations

import json
import os
import sys
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(REPO, 'colab')
KERNEL = 'inception-jax-tests'
CELL_TIMEOUT_S = 300
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'

# notebook -> the results table it must display (a Markdown header row it contains).
NOTEBOOKS = {
    'quickstart.ipynb': '| weights | top-1 | top-5 | loss |',
    'ablation.ipynb': '| variant | n | mean [CI] |',
    'pretrained.ipynb': '| split | images | top-1 | top-5 |',
    'fid.ipynb': '| step | FID |',
}


def test_every_notebook_is_tested():
  assert sorted(f for f in os.listdir(COLAB) if f.endswith('.ipynb')) == sorted(NOTEBOOKS)


@pytest.mark.parametrize('name', list(NOTEBOOKS))
def test_stored_without_outputs(name):
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == 'python3'
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code, name
  for i, cell in enumerate(code):
    assert cell.outputs == [] and cell.execution_count is None, f'{name}: code cell {i} has output'
  # The first code cell installs the package and reports the backend; a parameter cell reads the
  # smoke switch.
  assert 'pip_install' in code[0].source and 'jax.devices()' in code[0].source
  assert any("os.environ.get('INCEPTION_JAX_SMOKE') == '1'" in c.source for c in code)


@pytest.mark.parametrize('name', ['quickstart.ipynb', 'ablation.ipynb'])
def test_training_notebooks_say_how_to_train_on_imagenet_on_a_tpu(name):
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  text = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
  for what in ('TPU', "'imagenet2012'", 'config.data.data_dir', 'config.data.manual_dir',
               'config.batch_size', 'config.optimizer.lr * config.batch_size / '
               'config.optimizer.lr_batch'):
    assert what in text, f'{name} does not mention {what}'


@pytest.fixture(scope='module')
def kernel_spec_manager(tmp_path_factory):
  """A kernel spec that starts this interpreter, whatever kernels the machine has installed."""
  root = tmp_path_factory.mktemp('kernels')
  os.makedirs(root / KERNEL)
  env = {
      'INCEPTION_JAX_SMOKE': '1',
      # the checkout, importable in the kernel without installing it
      'PYTHONPATH': os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
      # plots as PNG outputs (ipykernel's default, unless the environment names another backend)
      'MPLBACKEND': 'module://matplotlib_inline.backend_inline',
      'JAX_PLATFORMS': 'cpu',
      'JAX_COMPILATION_CACHE_DIR': os.environ['JAX_COMPILATION_CACHE_DIR'],  # conftest.py's
      'XLA_FLAGS': ' '.join([os.environ.get('XLA_FLAGS', ''), FAST_COMPILE]).strip(),
  }
  spec = {'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
          'display_name': 'inception_jax tests', 'language': 'python', 'env': env}
  (root / KERNEL / 'kernel.json').write_text(json.dumps(spec))
  return KernelSpecManager(kernel_dirs=[str(root)])


def _outputs(nb, output_type=None):
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if output_type is None or out.output_type == output_type:
        yield out


@pytest.mark.parametrize('name', list(NOTEBOOKS))
def test_runs_top_to_bottom(name, kernel_spec_manager, tmp_path):
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell('import sys; print(sys.executable)'))
  km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_spec_manager)
  client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                          resources={'metadata': {'path': str(tmp_path)}})
  start = time.time()
  try:
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error
  finally:
    nbformat.write(nb, str(tmp_path / name))  # the executed notebook, to look at after a failure
    if km.has_kernel:  # a kernel manager we own: nbclient leaves its kernel running
      km.shutdown_kernel(now=True)
  print(f'{name} executed in {time.time() - start:.0f} s')

  assert os.path.realpath(nb.cells[-1].outputs[0]['text'].strip()) == os.path.realpath(
      sys.executable)
  images = [o for o in _outputs(nb, 'display_data') if 'image/png' in o.data]
  assert images, f'{name} displayed no plot'
  tables = [o.data['text/markdown'] for o in _outputs(nb, 'display_data')
            if 'text/markdown' in o.data]
  assert any(NOTEBOOKS[name] in t for t in tables), f'{name} displayed no results table'
  assert not list(_outputs(nb, 'error'))
