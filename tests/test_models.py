"""Facts every registered architecture must satisfy: counts, shapes, FLOPs, compilation, dtypes.

Family-specific facts (end point shapes from the papers' tables, variants) live in
tests/test_<family>.py; numerical parity with the reference implementations in
tests/test_parity_<family>.py.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax import machine, models

# Trainable parameters with 1000 classes: (name, options, count), measured on the reference
# libraries (torchvision 0.29, timm 1.0, Keras 3, facenet-pytorch) with random weights; the
# paper's Table 1 for GoogLeNet's 'paper' variant.
PARAM_COUNTS = [
    ('inception_v1', dict(variant='bn', conventions='torch', aux_logits=False), 6_624_904),
    ('inception_v1', dict(variant='bn', conventions='torch', aux_logits=True), 13_004_888),
    ('inception_v1', dict(variant='bn', conventions='tf', aux_logits=False), 6_617_624),
    ('inception_v1', dict(variant='paper', aux_logits=False), 6_998_552),
    ('inception_v1', dict(variant='paper', aux_logits=True), 13_378_280),
    ('inception_v2', dict(), 11_295_240),
    ('inception_v3', dict(conventions='torch', aux_logits=False), 23_834_568),
    ('inception_v3', dict(conventions='torch', aux_logits=True), 27_161_264),
    ('inception_v3', dict(conventions='tf', aux_logits=False), 23_817_352),
    # Its own 1008 classes: pytorch-fid's fid_inception_v3() measured with random weights.
    ('inception_v3_fid', dict(), 23_850_960),
    ('inception_v4', dict(conventions='torch'), 42_679_816),
    ('inception_resnet_v1', dict(conventions='torch'), 24_357_096),
    ('inception_resnet_v2', dict(conventions='torch'), 55_843_464),
    ('inception_resnet_v2', dict(conventions='tf'), 55_813_192),
    ('xception', dict(conventions='torch'), 22_855_952),
    ('xception', dict(conventions='tf'), 22_855_952),
]

# Forward multiply-accumulates of one image at the native size (GMACs): (published by
# torchvision/timm, the README's table). The README's figures are XLA's count, which adds
# BatchNorm, activations and pooling to the convolutions and matmuls.
GMACS = {
    'inception_v1': (1.50, 1.51),
    'inception_v3': (5.71, 5.74),
    'inception_v4': (12.28, 12.31),
    'inception_resnet_v2': (13.18, 13.21),
    'xception': (8.40, 8.40),
}

NATIVE_SIZE = {
    'inception_v1': 224, 'inception_v2': 224, 'inception_v3': 299, 'inception_v3_fid': 299,
    'inception_v4': 299,
    'inception_resnet_v1': 299, 'inception_resnet_v2': 299, 'xception': 299,
}
# Width of the pooled pre-logits features (num_classes=0).
FEATURES = {
    'inception_v1': 1024, 'inception_v2': 1024, 'inception_v3': 2048, 'inception_v3_fid': 2048,
    'inception_v4': 1536,
    'inception_resnet_v1': 1792, 'inception_resnet_v2': 1536, 'xception': 2048,
}
# Architectures with auxiliary classifiers, and how many (the models' output contract).
AUX_HEADS = {'inception_v1': 2, 'inception_v3': 1}

ALL = list(NATIVE_SIZE)
RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}


def test_registry_lists_the_architectures_in_order():
  assert models.list_models() == ALL


def test_the_depthwise_models_are_those_with_depthwise_kernels():
  """machine.DEPTHWISE_MODELS (what picks XLA:CPU's convolution library for training) are the
  models with a depthwise kernel (HWIO, one input channel) among their parameters."""
  def depthwise(name):
    kernels = jax.tree.leaves(models.variable_shapes(name, models.info(name).min_size)['params'])
    return any(k.ndim == 4 and k.shape[2] == 1 and k.shape[3] > 1 for k in kernels)

  assert [n for n in models.list_models() if depthwise(n)] == sorted(machine.DEPTHWISE_MODELS)


def test_every_model_has_a_counted_row():
  assert {name for name, _, _ in PARAM_COUNTS} == set(models.list_models())


@pytest.mark.parametrize('name,options,count', PARAM_COUNTS,
                         ids=[f'{n}-{"-".join(f"{k}={v}" for k, v in o.items())}'
                              for n, o, _ in PARAM_COUNTS])
def test_param_count(name, options, count):
  assert models.param_count(name, **options) == count


@pytest.mark.parametrize('name', ALL)
def test_native_size_and_metadata(name):
  info = models.info(name)
  assert info.input_size == NATIVE_SIZE[name]
  assert 0 < info.min_size < info.input_size
  model = models.create(name, num_classes=10)
  x = jax.ShapeDtypeStruct((2, info.input_size, info.input_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, RNGS, x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert out.shape == (2, 10)


@pytest.mark.parametrize('name', ALL)
def test_the_bare_class_has_the_conventions_of_create(name):
  """One default per model: ``create(name)`` and the class built directly agree (BN-Inception
  is Caffe's 'torch' release; Xception keeps Keras's BatchNorm scale under 'tf')."""
  info = models.info(name)
  built = models.create(name)
  assert info.cls().conventions == built.conventions
  assert built.conventions.name == info.default_conventions
  assert info.default_conventions == ('torch' if name == 'inception_v2' else 'tf')
  if name == 'xception':
    assert built.conventions.bn_scale


@pytest.mark.parametrize('name', ALL)
def test_features_and_aux_structure(name):
  """num_classes=0 gives pooled features; train=True adds the aux logits where they exist."""
  size = NATIVE_SIZE[name]
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  feats = models.create(name, num_classes=0)
  v = jax.eval_shape(feats.init, RNGS, x)
  assert 'Logits' not in v['params']
  assert jax.eval_shape(lambda v, x: feats.apply(v, x), v, x).shape == (2, FEATURES[name])

  def train_apply(model):
    v = jax.eval_shape(model.init, RNGS, x)
    return jax.eval_shape(lambda v, x: model.apply(
        v, x, train=True, mutable=['batch_stats', 'intermediates'], rngs=RNGS), v, x)

  model = models.create(name, num_classes=7)
  logits, state = train_apply(model)
  assert logits.shape == (2, 7)  # one array whatever the model
  aux = state['intermediates'].get('aux_logits', ())
  assert isinstance(aux, tuple) and len(aux) == AUX_HEADS.get(name, 0)
  assert all(a.shape == (2, 7) for a in aux)
  if name in AUX_HEADS:
    assert models.param_count(name, num_classes=7, aux_logits=False) < \
        models.param_count(name, num_classes=7)
    logits, state = train_apply(models.create(name, num_classes=7, aux_logits=False))
    assert logits.shape == (2, 7) and 'aux_logits' not in state['intermediates']


@pytest.mark.parametrize('name', ALL)
@pytest.mark.parametrize('conventions', ['tf', 'torch'])
def test_below_min_size_is_a_clear_error(name, conventions):
  model = models.create(name, conventions=conventions)
  small = models.info(name).min_size - 1
  with pytest.raises(ValueError, match=f'at least {small + 1}x{small + 1}'):
    jax.eval_shape(model.init, RNGS, jax.ShapeDtypeStruct((1, small, small, 3), jnp.float32))


@pytest.mark.parametrize('name', ALL)
def test_min_size_eval_shape(name):
  size = models.info(name).min_size
  model = models.create(name, num_classes=5)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, RNGS, x)
  assert jax.eval_shape(lambda v, x: model.apply(v, x), variables, x).shape == (2, 5)


@pytest.mark.parametrize('name', ['inception_v1', 'xception'])
def test_bfloat16_train_step_at_min_size_compiles_once(name):
  """Real compute at the minimum size with bfloat16 activations and float32 parameters and
  BatchNorm statistics, in train mode (aux heads included); repeated calls reuse one compile.
  (Every other model's full bfloat16 train step runs in tests/test_train_configs.py.)"""
  size = models.info(name).min_size
  model = models.create(name, num_classes=5, dtype=jnp.bfloat16)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)), jnp.float32)
  variables = jax.jit(model.init)(RNGS, x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  traces = []

  @jax.jit
  def step(variables, x):
    traces.append(x.shape)  # runs only while tracing
    return model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                       rngs=RNGS)

  for i in range(3):
    logits, state = step(variables, x + i)
  assert len(traces) == 1
  aux = state['intermediates'].get('aux_logits', ())
  assert len(aux) == AUX_HEADS.get(name, 0)
  for y in (logits, *aux):
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 5)
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
  stats = jax.tree.leaves(state['batch_stats'])
  assert stats and {a.dtype for a in stats} == {jnp.dtype(jnp.float32)}
  # The statistics moved towards this batch's: train mode really updated them.
  assert any(not np.allclose(a, b) for a, b in
             zip(stats, jax.tree.leaves(variables['batch_stats'])))


@pytest.mark.parametrize('name', sorted(GMACS))
def test_flops_match_published_macs(name):
  """Scanned runs of blocks (the models' default where they have them) count every block."""
  published, readme = GMACS[name]
  macs = models.flops(name)['macs'] / 1e9
  assert macs == pytest.approx(published, rel=0.03)
  assert macs == pytest.approx(readme, rel=0.01)


def test_aliases_and_errors():
  assert models.info('googlenet').name == 'inception_v1'
  assert models.info('bn_inception').name == 'inception_v2'
  assert models.info('Inception-V3').name == 'inception_v3'
  with pytest.raises(ValueError, match='unknown model .*inception_v9.*known models: inception_v1'):
    models.create('inception_v9')
  with pytest.raises(TypeError, match="no option.*'widht'"):
    models.create('inception_v3', widht=2)
  with pytest.raises(ValueError, match='conventions must be one of'):
    models.create('inception_v3', conventions='caffe')
  m = models.create('inception_v3', conventions='torch', bn_momentum=0.99)
  assert m.conventions.bn_momentum == 0.99 and m.conventions.bn_scale


def test_endpoints_are_reachable():
  model = models.create('inception_v3', num_classes=3)
  x = jnp.zeros((1, 75, 75, 3))
  points = jax.eval_shape(
      lambda: models.endpoints(model, model.init(RNGS, x), x))
  for name in ('Conv2d_1a_3x3', 'Mixed_5b', 'Mixed_6e', 'Mixed_7c', 'PreLogits', 'Logits'):
    assert name in points, sorted(points)


def test_importing_models_imports_neither_tensorflow_nor_torch():
  code = ('import sys; from inception_jax import models; '
          '[models.create(n) for n in models.list_models()]; '
          'import inception_jax.convert; '
          'bad = [m for m in ("tensorflow", "torch", "keras") if m in sys.modules]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_compile_benchmark_refuses_a_scanned_layout_where_there_is_none():
  from inception_jax import compile_benchmark
  with pytest.raises(ValueError, match='inception_v1 has no scanned layout'):
    compile_benchmark.measure('inception_v1', scan=True, batch=1, size=65, repeats=1, steps=1)


def test_compile_benchmark_refuses_a_loaded_machine(monkeypatch, capsys):
  from inception_jax import compile_benchmark, machine
  monkeypatch.setattr(machine, 'load_average', lambda: 1.7)
  monkeypatch.setattr(compile_benchmark, 'measure', lambda *a, **k: pytest.fail('it compiled'))
  with pytest.raises(SystemExit) as exit_info:
    compile_benchmark.main(['--model', 'inception_v1', '--layouts', 'unrolled', '--idle_wait', '0'])
  assert exit_info.value.code == 2
  assert 'load average is 1.70, above --max_load 0.5' in capsys.readouterr().err
