"""Test-session settings.

Most of the suite's time is XLA compiling programs that then run for a step or two, so the tests
compile with XLA's backend optimisations off (measured: a v3 train-and-eval run 78 s -> 61 s);
the numbers are the same functions, and the parity tests' tolerances hold. The quickstart's
accuracy test runs the command line in a subprocess with the user's flags instead.
"""

import os

import pytest

FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()

# One persistent compilation cache for the whole session (set before JAX is imported, inherited
# by the xdist workers, the subprocesses and the notebook kernels): a program that several tests
# compile (the tiny GoogLeNet run of the training, reliability and cache tests) is compiled once.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(REPO, '.jax_test_cache'))


# The modules whose runs take minutes go first, longest first, then those of about a minute, so
# that the many short ones fill in around them at the end instead of leaving one worker alone
# with a long module (simulated on three runs' junit times: the second group's place saves 18-28
# s of the suite's wall time, which is then within 5 s of half its test time).
LONG_FIRST = ('test_reliability', 'test_train', 'test_step_parity', 'test_train_configs',
              'test_notebooks', 'test_models', 'test_parity_inception_resnet', 'test_xception',
              'test_benchmark', 'test_parity_fid', 'test_data_synthetic',
              'test_parity_inception_v3')
# Modules whose tests are each long and share nothing: each test may go to any worker.
SPREAD = ('test_train_configs.py', 'test_step_parity.py')


@pytest.hookimpl(optionalhook=True)  # without xdist (-p no:xdist) there is no such hook
def pytest_xdist_make_scheduler(config, log):
  """pytest-xdist's ``loadfile`` (a module's fixtures and shared compilation cache stay on one
  worker), but the tests of ``SPREAD`` modules are handed out one by one, and modules in the
  order of collection (``--no-loadscope-reorder`` in pyproject.toml)."""
  from xdist.scheduler import LoadScopeScheduling

  class ModuleScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
      module = nodeid.split('::', 1)[0]
      return nodeid if os.path.basename(module) in SPREAD else module

  return ModuleScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  def rank(item):
    name = item.module.__name__
    return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)
  items.sort(key=rank)  # stable: the order within a module stays
