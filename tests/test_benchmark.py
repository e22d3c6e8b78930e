"""The benchmark tool (:mod:`benchmarks.throughput`): it runs one model on the CPU at tiny sizes,
records what the figures depend on (CPU, vector extensions, load before the run), reports the
median of its runs, refuses a loaded machine unless told, and imports neither TensorFlow nor
(without ``--compare``) PyTorch. Figures belong in BENCHMARKS.md, not here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from benchmarks import jax_timing, mfu, report, throughput
from inception_jax import machine, models
from reference_utils import require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL, SIZE = 'inception_v1', 65  # the smallest input of the family
TINY = ['--model', MODEL, '--image_size', str(SIZE), '--batch', '2', '--steps', '2',
        '--warmup', '1', '--repeats', '3', '--allow_load']

# Both runs in one fresh process (one import of JAX): inference first, before anything could
# have imported PyTorch, then training beside PyTorch.
_SCRIPT = f"""
import sys
from benchmarks import throughput
throughput.main({TINY!r} + ['--mode', 'infer', '--peak_tflops', '1', '--json', sys.argv[1]])
print('MODULES after infer:', 'torch' in sys.modules, 'tensorflow' in sys.modules)
throughput.main({TINY!r} + ['--mode', 'train', '--compare', 'torch', '--json', sys.argv[2]])
print('MODULES after train:', 'torch' in sys.modules, 'tensorflow' in sys.modules)
"""


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  require('torch')
  require('torchvision')
  tmp = tmp_path_factory.mktemp('benchmark')
  infer_json, train_json = str(tmp / 'infer.json'), str(tmp / 'train.json')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, infer_json, train_json], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(infer_json) as f, open(train_json) as g:
    return {'stdout': proc.stdout, 'infer': json.load(f), 'train': json.load(g)}


def test_no_tensorflow_and_torch_only_with_compare(runs):
  assert 'MODULES after infer: False False' in runs['stdout']
  assert 'MODULES after train: True False' in runs['stdout']


def test_every_row_records_the_cpu_and_the_load_before(runs):
  for r in (runs['infer'], runs['train']):
    dev = r['jax']['device']
    assert dev['cpu'] == machine.cpu_name()
    assert dev['vector_extensions'] == machine.vector_extensions()
    assert r['loaded'] == (r['load_avg_1m_before'] > 0.5)
  row = report.markdown_table([runs['train']]).splitlines()[2]
  assert machine.cpu_label(runs['train']['jax']['device']) in row
  assert f'{runs["train"]["load_avg_1m_before"]:.2f}' in row
  assert ('(loaded)' in row) == runs['train']['loaded']


def test_figures_are_medians_of_three_runs(runs):
  r = runs['train']
  for x in (r['jax'], r['torch']['eager']):
    assert x['repeats'] == len(x['runs_images_per_s']) == 3
    assert x['images_per_s'] == statistics.median(x['runs_images_per_s'])
  assert r['ratio']['eager'] == pytest.approx(
      r['jax']['images_per_s'] / r['torch']['eager']['images_per_s'], rel=1e-12)


def test_recorded_fields(runs):
  r = runs['train']
  j, t = r['jax'], r['torch']['eager']
  assert (j['model'], j['mode'], j['batch'], j['image_size'], j['dtype'], j['steps']) == \
      (MODEL, 'train', 2, SIZE, 'float32', 2)
  assert (t['batch'], t['image_size'], t['dtype'], t['compiled']) == (2, SIZE, 'float32', False)
  assert j['compile_s'] > 0 and j['peak_memory_bytes'] > 0 and t['peak_memory_bytes'] > 0
  assert t['device']['threads'] == os.cpu_count()
  assert j['recipe'] == {'optimizer': 'momentum', 'clip_norm': 0.0, 'label_smoothing': 0.0,
                         'aux_weight': 0.3, 'ema_decay': 0.9999}  # experiments/configs/v1.py
  assert r['command'].startswith(
      f'python -m benchmarks.throughput --model {MODEL} --mode train')
  assert 'torch' not in runs['infer']


def test_flops_and_mfu_fields(runs):
  fwd = models.flops(MODEL, SIZE)['flops']
  j = runs['train']['jax']
  assert j['flops_per_image_fwd'] == pytest.approx(fwd)
  assert j['model_flops_per_s'] == pytest.approx(3 * fwd * j['images_per_s'])
  assert j['peak_flops'] is None and j['mfu'] is None  # a CPU: no known peak
  i = runs['infer']['jax']  # --peak_tflops 1
  assert i['peak_flops'] == 1e12
  assert i['mfu'] == pytest.approx(fwd * i['images_per_s'] / 1e12)


@pytest.mark.parametrize('mode, expected', [('train', 0.3), ('infer', 0.1)])
def test_mfu_by_hand(mode, expected):
  # 1 GFLOP per image forward at 100 images/s on a 1 TFLOP/s device: 0.1 TFLOP/s forward,
  # 3x that for a train step (forward + backward at twice the forward).
  assert mfu.mfu(1e9, 100.0, mode, 1e12) == pytest.approx(expected)


def test_mfu_without_peak_and_peak_table():
  assert mfu.mfu(1e9, 100.0, 'train', None) is None
  assert mfu.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4e12
  assert mfu.peak_flops('NVIDIA H100 PCIe', 'bfloat16') == 756.5e12
  assert mfu.peak_flops('NVIDIA H200', 'bfloat16') == 989.4e12
  assert mfu.peak_flops('TPU v5 lite', 'bfloat16') == 197e12
  assert mfu.peak_flops('TPU v5', 'bfloat16') == 459e12
  assert mfu.peak_flops('cpu', 'float32') is None


def test_median_of_runs_not_mean_nor_best():
  # 2 images a step, 1 step: runs of 1 s, 4 s and 2 s are 2, 0.5 and 1 images/s.
  timing = jax_timing.summarise(2, 1, [1.0, 4.0, 2.0])
  assert timing['images_per_s'] == 1.0 and timing['runs_images_per_s'] == [2.0, 0.5, 1.0]
  assert timing['step_time_s'] == 2.0


_CPUINFO_EPYC = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512_vnni
"""
_CPUINFO_AVX2 = 'model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx fma avx2 avx512_vnni_like\n'


def test_cpu_and_vector_extensions_from_cpuinfo():
  assert machine.cpu_name(_CPUINFO_EPYC) == 'AMD EPYC 9B14'
  assert machine.vector_extensions(_CPUINFO_EPYC) == ['AVX2', 'FMA', 'AVX-512', 'AVX512-VNNI',
                                                       'AVX512-BF16']
  # whole flags only: 'avx512_vnni_like' is not VNNI, and AVX2 alone is no AVX-512
  assert machine.vector_extensions(_CPUINFO_AVX2) == ['AVX2', 'FMA']
  assert machine.vector_extensions('') == []


def test_a_loaded_machine_is_refused_before_compiling(monkeypatch, capsys):
  monkeypatch.setattr(machine, 'load_average', lambda: 1.7)
  monkeypatch.setattr(jax_timing, 'benchmark_jax', lambda *a, **k: pytest.fail('it ran'))
  with pytest.raises(SystemExit) as exit_info:
    throughput.main(['--model', MODEL, '--idle_wait', '0'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert 'load average is 1.70, above --max_load 0.5' in err and '--allow_load' in err


def test_waits_for_the_load_to_settle(monkeypatch):
  readings = iter([0.9, 0.7, 0.4, 0.3])
  monkeypatch.setattr(machine, 'load_average', lambda: next(readings))
  monkeypatch.setattr(machine.time, 'sleep', lambda s: None)
  assert machine.wait_for_idle(0.5, timeout=60) == 0.4


@pytest.mark.parametrize('argv, message', [
    (['--model', 'resnet50'], "unknown model 'resnet50'; known models: inception_v1"),
    (['--model', 'inception_v3', '--image_size', '64', '--allow_load'],
     'config.data.image_size=64 is below the minimum input size'),
    ([], 'give --model NAME or --all'),
    (['--model', MODEL, '--repeats', '2'], '--repeats must be at least 3'),
])
def test_bad_arguments_fail_with_one_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    throughput.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
