"""The entry points' persistent compilation cache (``experiments/cli.py``): on by default in a
directory outside the workdir, reused by a second process, off with ``--compilation_cache=``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments import cli
from inception_jax import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A process as experiments.train starts one: flags parsed, the cache enabled from the flag; then
# one jitted program, and the cache events JAX recorded for it.
_SCRIPT = """
import json, sys
from absl import flags
import jax, jax.numpy as jnp
from experiments import cli
events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
flags.FLAGS(['train'] + sys.argv[1:])
directory = cli.enable_compilation_cache(cli.COMPILATION_CACHE.value)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
f(jnp.ones((64, 64))).block_until_ready()
print(json.dumps({'dir': directory, 'config_dir': jax.config.jax_compilation_cache_dir,
                  'hits': events.count('/jax/compilation_cache/cache_hits'),
                  'misses': events.count('/jax/compilation_cache/cache_misses')}))
"""


def _process(*argv: str, **env: str) -> dict:
  environ = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
  # The tiny program compiles in milliseconds: cache it anyway (the user's setting wins).
  environ.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PLATFORMS='cpu',
                 PYTHONPATH=REPO, **env)
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, *argv], cwd=REPO, env=environ,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_reuses_the_compiled_program(tmp_path):
  cache = tmp_path / 'cache'
  first = _process(f'--compilation_cache={cache}')
  assert first['dir'] == first['config_dir'] == str(cache)
  programs = first['misses']  # the jitted function and the array constructors before it
  assert first['hits'] == 0 and programs >= 1
  assert len(os.listdir(cache)) == programs
  second = _process(f'--compilation_cache={cache}')
  assert (second['hits'], second['misses']) == (programs, 0)
  assert len(os.listdir(cache)) == programs


def test_on_by_default_under_xdg_cache_home_and_off_with_an_empty_flag(tmp_path):
  default = _process(XDG_CACHE_HOME=str(tmp_path / 'xdg'))
  assert default['dir'] == str(tmp_path / 'xdg' / 'inception_jax' / 'jax_cache')
  assert os.listdir(default['dir'])
  off = _process('--compilation_cache=', XDG_CACHE_HOME=str(tmp_path / 'xdg2'))
  assert off['dir'] is None and off['config_dir'] is None
  assert (off['hits'], off['misses']) == (0, 0)
  assert not (tmp_path / 'xdg2').exists()


def test_default_directory(monkeypatch, tmp_path):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert cli.default_compilation_cache() == str(tmp_path / 'inception_jax' / 'jax_cache')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert cli.default_compilation_cache() == str(tmp_path / 'home' / '.cache' / 'inception_jax' /
                                                'jax_cache')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax'))  # JAX's own variable
  assert cli.default_compilation_cache() == str(tmp_path / 'jax')


def test_min_compile_time(monkeypatch, tmp_path):
  import jax
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  monkeypatch.delenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', raising=False)
  try:
    assert cli.enable_compilation_cache(str(tmp_path)) == str(tmp_path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == cli.MIN_COMPILE_SECS
    assert cli.enable_compilation_cache('') is None
  finally:
    jax.config.update('jax_compilation_cache_dir', before[0])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', before[1])



# experiments.train's order (inception_jax.machine.set_cpu_convolutions): JAX imported, flags
# parsed, then the convolution library chosen
# before the first computation; YNNPACK's convolutions show as '__ynn_fusion' in the program.
_CONV_SCRIPT = """
import sys
import jax, jax.numpy as jnp
from inception_jax import machine
used = machine.set_cpu_convolutions(sys.argv[1], int(sys.argv[2]),
                                    training=sys.argv[3] == 'train', model=sys.argv[4])
from inception_jax.kernels.conv import conv_general_dilated
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
x, w = jnp.ones((8, 32, 32, 32)), jnp.ones((3, 3, 32, 64))
text = conv.lower(x, w).compile().as_text()
kernel_grad = jax.jit(jax.grad(lambda w: conv_general_dilated(
    x, w, (1, 1), 'SAME', cpu_convolutions=machine.cpu_convolutions()).sum()))
grad_text = kernel_grad.lower(w).compile().as_text()
form = 'taps' if ' dot(' in grad_text else 'convolution' if 'convolution(' in grad_text else '?'
print(used, text.count('__ynn_fusion'), form)
"""


def _conv_library(choice: str, size: int, xla_flags: str = '', mode: str = 'infer',
                  model: str = 'inception_v3') -> list[str]:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags)
  proc = subprocess.run([sys.executable, '-c', _CONV_SCRIPT, choice, str(size), mode, model],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout.split()


def test_cpu_convolutions_follow_the_flag_and_the_input_size():
  """Which library a compiled convolution lands in, and the form of the filter gradient that
  goes with it (matrix products per tap under YNNPACK, a convolution under XLA's emitter)."""
  ynn, xla = ['ynnpack', '1', 'taps'], ['xla', '0', 'convolution']
  assert _conv_library('auto', 65) == ynn  # small maps: XLA's default, YNNPACK
  assert _conv_library('auto', 299) == xla  # inference on large maps: XLA's emitter
  # training at 299: XLA's emitter where the CPU has AVX-512, YNNPACK on AVX2 alone
  avx512 = 'AVX-512' in machine.vector_extensions()
  assert _conv_library('auto', 299, mode='train') == (xla if avx512 else ynn)
  assert _conv_library('auto', 299, mode='train', model='xception') == ynn  # depthwise
  assert _conv_library('auto', 224, mode='train') == ynn
  assert _conv_library('xla', 65) == xla
  assert _conv_library('ynnpack', 299) == ynn
  # The user's XLA_FLAGS win over the flag: YNNPACK's dots alone leave convolutions to XLA
  assert _conv_library('ynnpack', 299, '--xla_cpu_experimental_ynn_fusion_type=individual_dot'
                       ) == xla
  own = '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution'
  assert _conv_library('xla', 299, own) == ynn


@pytest.mark.parametrize('flags,ynnpack', [
    ('', True),
    ('--xla_cpu_experimental_ynn_fusion_type=', False),
    ('--xla_cpu_experimental_ynn_fusion_type=individual_dot', False),
    ('--xla_cpu_experimental_ynn_fusion_type=individual_dot,INDIVIDUAL_CONVOLUTION', True),
    ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution', False),
    ('--xla_cpu_experimental_ynn_fusion_type=+eltwise', True),
    ('--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION', False),
])
def test_which_library_runs_the_convolutions(flags, ynnpack):
  assert machine.ynnpack_convolutions(flags) is ynnpack
