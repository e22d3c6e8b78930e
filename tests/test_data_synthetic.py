"""The synthetic dataset and what must not import TensorFlow; device prefetch; the cached train
order; a smoke run of the input benchmark."""

import json
import os
import statistics
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from inception_jax import data, machine, mesh as mesh_lib
from inception_jax.data import order, prefetch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**kw):
  c = ml_collections.ConfigDict({'name': 'synthetic', 'image_size': 16, 'train_split': 'train',
                                 'eval_split': 'validation', 'synthetic_classes': 5,
                                 'synthetic_train_examples': 10, 'synthetic_eval_examples': 7})
  c.update(kw)
  return c


NO_TF = """
import sys
import ml_collections
from inception_jax import data, models, steps, train_state
from inception_jax.data import order, prefetch
cfg = ml_collections.ConfigDict({'name': 'synthetic', 'image_size': 16})
info = data.info(cfg)
assert info.num_classes == 1000 and info.num_examples['train'] == 1281167, info
batch = next(data.batches(cfg, 'train', batch_size=4, train=True))
assert batch['image'].shape == (4, 16, 16, 3), batch['image'].shape
heavy = sorted(m for m in ('tensorflow', 'tensorflow_datasets', 'torch') if m in sys.modules)
assert not heavy, heavy
print('ok')
"""


def test_synthetic_models_and_steps_import_no_tensorflow():
  out = subprocess.run([sys.executable, '-c', NO_TF], cwd=ROOT, capture_output=True, text=True,
                       check=False)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]


def test_synthetic_batches():
  cfg = _config()
  assert data.info(cfg).num_examples == {'train': 10, 'validation': 7}
  a = next(data.batches(cfg, 'train', batch_size=4, train=True, seed=0, start_step=2))
  b = data.batches(cfg, 'train', batch_size=4, train=True, seed=0)
  b = [next(b) for _ in range(3)][2]
  np.testing.assert_array_equal(a['label'], b['label'])
  assert a['image'].dtype == np.float32 and np.abs(a['image']).max() <= 1.0
  assert a['label'].max() < 5 and a['mask'].tolist() == [1.0] * 4


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_synthetic_eval_sees_every_example_once(process_count):
  masks = [np.concatenate([b['mask'] for b in data.batches(
      _config(), 'validation', batch_size=2, train=False, process_index=p,
      process_count=process_count)]) for p in range(process_count)]
  assert len({len(m) for m in masks}) == 1
  assert sum(m.sum() for m in masks) == 7


@pytest.mark.parametrize('n,batch', [(10, 4), (7, 32), (1000, 64)])
def test_cached_train_order_is_the_shared_order(n, batch):
  cached = order.TrainOrder(n, seed=3)
  for step in [0, 1, 2, 5, 17, 3, 40]:
    np.testing.assert_array_equal(cached(batch, step),
                                  data.train_indices(n, batch, step, seed=3))


def test_prefetch_to_device_keeps_order_and_shards():
  mesh = mesh_lib.make_mesh()
  local = [{'image': np.full((2, 3), i, np.float32), 'label': np.array([i, i], np.int32)}
           for i in range(5)]
  out = list(prefetch.to_device(iter(local), mesh, size=2))
  assert len(out) == 5
  for i, batch in enumerate(out):
    assert isinstance(batch['image'], jax.Array)
    assert batch['image'].sharding == mesh_lib.batch_sharded(mesh)
    np.testing.assert_array_equal(batch['label'], [i, i])


def test_benchmark_runs_and_reports(tmp_path):
  cmd = [sys.executable, '-m', 'inception_jax.data.benchmark', '--dir', str(tmp_path),
         '--num_images', '12', '--image_size', '48', '--batch_size', '4', '--batches', '2',
         '--warmup', '1', '--pipelines', 'train', '--allow_load', '--json']
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout)
  for key in ('date', 'machine', 'command', 'images', 'results', 'load_average_before_after'):
    assert key in report
  assert report['vector_extensions'] == machine.vector_extensions()
  assert report['loaded'] == (report['load_average_before_after'][0] > 0.5)
  train = report['results']['train']
  assert len(train['per_core_runs']) == len(train['total_runs']) == report['repeats'] == 3
  assert train['per_core_images_per_s'] == statistics.median(train['per_core_runs'])
  assert train['total_images_per_s'] == statistics.median(train['total_runs'])
  assert train['spec'].startswith('inception_crop(')
  assert 280 <= report['images']['mean_pixels'] ** 0.5 <= 560  # photograph-sized
