"""The GPU script's CPU-side logic (:mod:`benchmarks.gpu`): its priority order, rows written as
they come, the time budget, and a dry run on the CPU through the same code path, without
TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plan_puts_v3_bfloat16_training_first():
  plan = gpu.jobs(list(gpu.ORDER), list(gpu.MODES), list(gpu.VARIANTS))
  assert plan[:6] == [('inception_v3', 'train', 'jax'), ('inception_v3', 'train', 'torch_eager'),
                      ('inception_v3', 'train', 'torch_compile'),
                      ('inception_v3', 'infer', 'jax'), ('inception_v3', 'infer', 'torch_eager'),
                      ('inception_v3', 'infer', 'torch_compile')]
  assert len(plan) == 7 * 2 * 3


def test_what_does_not_fit_the_budget_is_skipped_and_recorded(tmp_path):
  rows = gpu.main(['--out', str(tmp_path), '--budget', '1', '--models', 'inception_v3,xception'])
  assert [r['status'] for r in rows] == ['skipped'] * 15
  # The sweep and FID measurements come right after Inception-v3's six rows.
  assert [(r['model'], r['mode']) for r in rows[6:9]] == [
      ('sweep_vmap', 'extra'), ('fid_evaluator', 'extra'), ('fid_folders', 'extra')]
  assert [r['model'] for r in rows[9:]] == ['xception'] * 6
  lines = (tmp_path / 'results.jsonl').read_text().splitlines()
  assert [json.loads(x)['variant_key'] for x in lines] == [r['variant_key'] for r in rows]
  assert 'needs about 75 s' in rows[0]['reason']  # estimate('inception_v3', 'train', 'jax')
  assert 'needs about 120 s' in rows[6]['reason']  # the sweep step's estimate
  md = (tmp_path / 'results.md').read_text()
  assert md.count('| skipped: ') == 15


def test_dry_run_on_cpu_writes_rows_without_tensorflow(tmp_path):
  # Looked up, not imported: PyTorch runs in the script's processes only (importing it here,
  # after another test module imported TensorFlow, can crash this one).
  missing = [m for m in ('torch', 'torchvision') if importlib.util.find_spec(m) is None]
  if missing and os.environ.get('CI', '').lower() not in ('1', 'true', 'yes'):
    pytest.skip(f'{missing} not installed')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'OUT': str(tmp_path)}
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.gpu', '--dry_run', '--modes', 'infer',
                         '--budget', '900', '--extras', ''], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(x) for x in (tmp_path / 'results.jsonl').read_text().splitlines()]
  assert [(r['model'], r['mode'], r['variant_key'], r['status']) for r in rows] == [
      ('inception_v1', 'infer', 'jax', 'ok'), ('inception_v1', 'infer', 'torch_eager', 'ok')]
  for r in rows:
    assert r['tensorflow_imported'] is False
    assert r['repeats'] == 3 and r['images_per_s'] > 0
    assert r['flops_per_image_fwd'] > 0 and r['mfu'] is None  # no known peak for a CPU
  md = (tmp_path / 'results.md').read_text()
  assert '- inception_v1 infer: JAX / torch_eager = ' in md
