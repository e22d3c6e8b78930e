"""The benchmark tool, :mod:`inception_jax.benchmark`: it runs one model on the CPU at tiny sizes,
prints and records its fields, computes the ratio to PyTorch and the MFU, and imports neither
TensorFlow nor (without ``--compare``) PyTorch. Figures belong in BENCHMARKS.md, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inception_jax import benchmark, models
from reference_utils import require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL, SIZE = 'inception_v1', 65  # the smallest input of the family
TINY = ['--model', MODEL, '--image_size', str(SIZE), '--batch', '2', '--steps', '2',
        '--warmup', '1']

# Both runs in one fresh process (one import of JAX): inference first, before anything could
# have imported PyTorch, then training beside PyTorch.
_SCRIPT = f"""
import sys
from inception_jax import benchmark
benchmark.main({TINY!r} + ['--mode', 'infer', '--peak_tflops', '1', '--json', sys.argv[1]])
print('MODULES after infer:', 'torch' in sys.modules, 'tensorflow' in sys.modules)
benchmark.main({TINY!r} + ['--mode', 'train', '--compare', 'torch', '--json', sys.argv[2]])
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
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(infer_json) as f, open(train_json) as g:
    return {'stdout': proc.stdout, 'infer': json.load(f), 'train': json.load(g)}


def test_no_tensorflow_and_torch_only_with_compare(runs):
  assert 'MODULES after infer: False False' in runs['stdout']
  assert 'MODULES after train: True False' in runs['stdout']


def test_printed_fields(runs):
  out = runs['stdout']
  for field in ('images/s', 'per CPU-second', 'step', 'compile', 'peak memory',
                'MFU n/a', 'TFLOP/s model FLOPs', 'torchvision googlenet (eager, channels_last',
                'ratio jax / torch eager:', 'load average'):
    assert field in out, field
  assert f'{MODEL} infer | batch 2 at {SIZE}x{SIZE} float32' in out
  assert f'{MODEL} train | batch 2 at {SIZE}x{SIZE} float32' in out


def test_recorded_fields_and_ratio(runs):
  r = runs['train']
  j, t = r['jax'], r['torch']['eager']
  assert (j['model'], j['mode'], j['batch'], j['image_size'], j['dtype'], j['steps']) == \
      (MODEL, 'train', 2, SIZE, 'float32', 2)
  assert (t['batch'], t['image_size'], t['dtype'], t['compiled']) == (2, SIZE, 'float32', False)
  for x in (j, t):
    assert x['images_per_s'] > 0 and x['step_time_s'] > 0 and x['peak_memory_bytes'] > 0
    assert x['images_per_s'] == pytest.approx(x['batch'] / x['step_time_s'])
  assert j['compile_s'] > 0
  assert t['device']['threads'] == os.cpu_count()
  assert r['ratio']['eager'] == pytest.approx(j['images_per_s'] / t['images_per_s'], rel=1e-12)
  assert j['recipe'] == {'optimizer': 'momentum', 'clip_norm': 0.0, 'label_smoothing': 0.0,
                         'aux_weight': 0.3, 'ema_decay': 0.9999}  # experiments/configs/v1.py


def test_flops_and_mfu_fields(runs):
  fwd = models.flops(MODEL, SIZE)['flops']
  j = runs['train']['jax']
  assert j['flops_per_image_fwd'] == pytest.approx(fwd)
  assert j['model_flops_per_s'] == pytest.approx(3 * fwd * j['images_per_s'])
  assert j['peak_flops'] is None and j['mfu'] is None  # a CPU: no known peak
  i = runs['infer']['jax']  # --peak_tflops 1
  assert i['peak_flops'] == 1e12
  assert i['mfu'] == pytest.approx(fwd * i['images_per_s'] / 1e12)
  assert 'torch' not in runs['infer']


def test_markdown_row(runs):
  table = benchmark.markdown_table([runs['train']])
  row = table.splitlines()[2]
  r = runs['train']
  for cell in (MODEL, 'train', '| 2 |', 'float32', r['date'], benchmark.cpu_name(),
               f'`{r["command"]}`', f'{r["ratio"]["eager"]:.2f}'):
    assert cell in row, cell
  assert r['command'].startswith(f'python -m inception_jax.benchmark --model {MODEL} --mode train')


@pytest.mark.parametrize('mode, expected', [('train', 0.3), ('infer', 0.1)])
def test_mfu_by_hand(mode, expected):
  # 1 GFLOP per image forward at 100 images/s on a 1 TFLOP/s device: 0.1 TFLOP/s forward,
  # 3x that for a train step (forward + backward at twice the forward).
  assert benchmark.mfu(1e9, 100.0, mode, 1e12) == pytest.approx(expected)


def test_mfu_without_peak_and_peak_table():
  assert benchmark.mfu(1e9, 100.0, 'train', None) is None
  assert benchmark.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4e12
  assert benchmark.peak_flops('NVIDIA H100 PCIe', 'bfloat16') == 756.5e12
  assert benchmark.peak_flops('NVIDIA H200', 'bfloat16') == 989.4e12
  assert benchmark.peak_flops('TPU v5 lite', 'bfloat16') == 197e12
  assert benchmark.peak_flops('TPU v5', 'bfloat16') == 459e12
  assert benchmark.peak_flops('cpu', 'float32') is None


@pytest.mark.parametrize('argv, message', [
    (['--model', 'resnet50'], "unknown model 'resnet50'; known models: inception_v1"),
    (['--model', 'inception_v3', '--image_size', '64'], 'below the minimum input size'),
    ([], 'give --model NAME or --all'),
])
def test_bad_arguments_fail_with_one_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
