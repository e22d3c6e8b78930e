"""Facts of GoogLeNet (Szegedy et al. 2014) in both variants: Table 1 shapes and counts, Figure 3's
LRN placement, Section 5's auxiliary heads and dropout, the input-size limits.

Generic facts (jit, bf16, FLOPs, native-size shapes of every model) are in tests/test_models.py;
parity with torchvision in tests/test_parity_inception_v1.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax import models
from inception_jax.convert.core import flatten
from inception_jax.models import inception_v1 as v1
from inception_jax.models import layers

RNGS = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
COMBOS = [(variant, conv) for variant in ('paper', 'bn') for conv in ('tf', 'torch')]

# Table 1 at 224 (H, W, C), under TF-slim's end point names (paper's "3a" = Mixed_3b, ...).
ENDPOINTS_224 = {
    'Conv2d_1a_7x7': (112, 112, 64),
    'MaxPool_2a_3x3': (56, 56, 64),
    'Conv2d_2b_1x1': (56, 56, 64),
    'Conv2d_2c_3x3': (56, 56, 192),
    'MaxPool_3a_3x3': (28, 28, 192),
    'Mixed_3b': (28, 28, 256),
    'Mixed_3c': (28, 28, 480),
    'MaxPool_4a_3x3': (14, 14, 480),
    'Mixed_4b': (14, 14, 512),
    'Mixed_4c': (14, 14, 512),
    'Mixed_4d': (14, 14, 512),
    'Mixed_4e': (14, 14, 528),
    'Mixed_4f': (14, 14, 832),
    'MaxPool_5a_2x2': (7, 7, 832),
    'Mixed_5b': (7, 7, 832),
    'Mixed_5c': (7, 7, 1024),
    'PreLogits': (1024,),
}

# Away from 224 the conventions differ: TF's SAME pools round up via padding, torchvision's
# unpadded ceil-mode pools drop the last window where it would start in the padding.
# (conventions, input size) -> spatial size of (Conv2d_1a, MaxPool_2a, MaxPool_3a, Mixed_4b, Mixed_5c).
GRIDS = {
    ('tf', 177): (89, 45, 23, 12, 6),
    ('torch', 177): (89, 44, 22, 11, 6),
    ('tf', 65): (33, 17, 9, 5, 3),
    ('torch', 65): (33, 16, 8, 4, 2),
}

# Trainable parameters, 1000 classes: (options, count).
PARAM_COUNTS = [
    # Table 1 with conv biases, 5x5 branch, no BN (computed from the table); no BN, so the
    # conventions do not matter.
    (dict(variant='paper', conventions='tf', aux_logits=False), 6_998_552),
    (dict(variant='paper', conventions='torch', aux_logits=False), 6_998_552),
    (dict(variant='paper', conventions='tf', aux_logits=True), 13_378_280),
    # torchvision googlenet (measured), TF-slim inception_v1 (BN without scale).
    (dict(variant='bn', conventions='torch', aux_logits=False), 6_624_904),
    (dict(variant='bn', conventions='torch', aux_logits=True), 13_004_888),
    (dict(variant='bn', conventions='tf', aux_logits=False), 6_617_624),
    # = 6,617,624 + torchvision's aux heads (6,379,984) less their two 128-wide BN scales.
    (dict(variant='bn', conventions='tf', aux_logits=True), 12_997_352),
    # Pooled features: no classifier, no aux heads (6,617,624 - 1024 x 1000 - 1000).
    (dict(variant='bn', conventions='tf', aux_logits=True, num_classes=0), 5_592_624),
]

# Parameter shapes that tell the variants apart (Mixed_3b: #5x5 reduce 16, #5x5 32).
VARIANT_PARAMS = {
    'paper': {
        ('Mixed_3b', 'Branch_2', 'Conv2d_0b_5x5', 'conv', 'kernel'): (5, 5, 16, 32),
        ('Mixed_3b', 'Branch_2', 'Conv2d_0b_5x5', 'conv', 'bias'): (32,),
        ('AuxLogits_4b', 'Conv2d_1b_1x1', 'conv', 'bias'): (128,),
    },
    'bn': {
        ('Mixed_3b', 'Branch_2', 'Conv2d_0b_3x3', 'conv', 'kernel'): (3, 3, 16, 32),
        ('Mixed_3b', 'Branch_2', 'Conv2d_0b_3x3', 'bn', 'bias'): (32,),
        ('AuxLogits_4b', 'Conv2d_1b_1x1', 'bn', 'bias'): (128,),
    },
}

# The aux heads read the outputs of Mixed_4b (512 channels) and Mixed_4e (528).
AUX_INPUT_CHANNELS = {'AuxLogits_4b': 512, 'AuxLogits_4e': 528}

# Width of the aux FC's input, (conventions, size): 4x4x128 at 224 with either pool; the paper's
# fixed 5x5/3 pool gives 3x3 on the 12x12 map at 177, torchvision's adaptive pool always 4x4.
AUX_FC_INPUT = {('tf', 224): 2048, ('torch', 224): 2048, ('tf', 177): 1152, ('torch', 177): 2048}

# Dropout before each classifier, train mode: variant -> {Dropout module path: rate}.
DROPOUT = {
    'paper': {'Dropout_0': 0.4, 'AuxLogits_4b/Dropout_0': 0.7, 'AuxLogits_4e/Dropout_0': 0.7},
    'bn': {'Dropout_0': 0.2, 'AuxLogits_4b/Dropout_0': 0.7, 'AuxLogits_4e/Dropout_0': 0.7},
}


def _spec(size, batch=2):
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


def _endpoint_shapes(model, size):
  def run(x):
    return models.endpoints(model, model.init(RNGS, x, train=False), x)
  return {k: v.shape for k, v in jax.eval_shape(run, _spec(size)).items()}


def _shapes(**options):
  size = options.pop('size', 224)
  model = models.create('inception_v1', **options)
  return jax.eval_shape(lambda x: model.init(RNGS, x, train=False), _spec(size, 1))


@pytest.mark.parametrize('variant,conventions', COMBOS)
def test_table1_endpoint_shapes_at_224(variant, conventions):
  model = models.create('inception_v1', variant=variant, conventions=conventions)
  shapes = _endpoint_shapes(model, 224)
  want = {k: (2, *v) for k, v in ENDPOINTS_224.items()}
  assert {k: shapes[k] for k in want} == want
  assert shapes['Logits'] == (2, 1000)


@pytest.mark.parametrize('conventions,size', sorted(GRIDS))
def test_grid_sizes_follow_the_conventions(conventions, size):
  shapes = _endpoint_shapes(models.create('inception_v1', conventions=conventions), size)
  names = ('Conv2d_1a_7x7', 'MaxPool_2a_3x3', 'MaxPool_3a_3x3', 'Mixed_4b', 'Mixed_5c')
  assert tuple(shapes[n][1] for n in names) == GRIDS[(conventions, size)]


@pytest.mark.parametrize('options,count', PARAM_COUNTS,
                         ids=['-'.join(f'{k}={v}' for k, v in o.items()) for o, _ in PARAM_COUNTS])
def test_param_count(options, count):
  assert models.param_count('inception_v1', **options) == count


@pytest.mark.parametrize('variant', sorted(VARIANT_PARAMS))
def test_variant_structure(variant):
  shapes = _shapes(variant=variant, conventions='torch')
  flat = {k: tuple(v.shape) for k, v in flatten(shapes['params']).items()}
  for path, shape in VARIANT_PARAMS[variant].items():
    assert flat.get(path) == shape, path
  has_bn = any('bn' in p for p in flat)
  assert has_bn == (variant == 'bn')
  assert ('batch_stats' in shapes) == (variant == 'bn')


def test_aux_heads_read_mixed_4b_and_4e():
  flat = flatten(_shapes()['params'])
  for scope, channels in AUX_INPUT_CHANNELS.items():
    assert flat[(scope, 'Conv2d_1b_1x1', 'conv', 'kernel')].shape == (1, 1, channels, 128)


@pytest.mark.parametrize('conventions,size', sorted(AUX_FC_INPUT))
def test_aux_pool(conventions, size):
  params = _shapes(conventions=conventions, size=size)['params']
  for scope in AUX_INPUT_CHANNELS:
    assert params[scope]['Fc_2a']['kernel'].shape == (AUX_FC_INPUT[(conventions, size)], 1024)


@pytest.mark.parametrize('variant', ['paper', 'bn'])
def test_aux_logits_are_sown_shallow_to_deep(variant):
  model = models.create('inception_v1', variant=variant, num_classes=7)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 65, 65, 3)), jnp.float32)
  variables = jax.jit(model.init)(RNGS, x)
  logits, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats', 'intermediates'], rngs=RNGS))(variables, x)
  assert logits.shape == (2, 7)
  aux, points = state['intermediates']['aux_logits'], state['intermediates']['endpoints']
  assert isinstance(aux, tuple) and len(aux) == 2
  np.testing.assert_array_equal(aux[0], points['AuxLogits_4b'])
  np.testing.assert_array_equal(aux[1], points['AuxLogits_4e'])
  assert not np.allclose(aux[0], aux[1])
  # Without 'intermediates' to write to, the heads do not run: the logits alone.
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'],
                                                rngs=RNGS)[0], variables, x)
  assert out.shape == (2, 7)


@pytest.mark.parametrize('options', [dict(aux_logits=False), dict(num_classes=0)])
def test_no_aux_output_without_aux_heads(options):
  model = models.create('inception_v1', **options)
  v = jax.eval_shape(lambda x: model.init(RNGS, x), _spec(224))
  assert not any(k.startswith('AuxLogits') for k in v['params'])
  out = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'], rngs=RNGS)[0],
      v, _spec(224))
  assert out.shape == (2, options.get('num_classes', 1000) or 1024)


@pytest.mark.parametrize('variant', sorted(DROPOUT))
def test_dropout_rates(variant):
  assert _dropout_rates(models.create('inception_v1', variant=variant)) == DROPOUT[variant]
  override = models.create('inception_v1', variant=variant, dropout_rate=0.5, aux_dropout_rate=0.)
  assert _dropout_rates(override) == {k: 0.5 if k == 'Dropout_0' else 0.
                                      for k in DROPOUT[variant]}


def _dropout_rates(model):
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout):
      seen['/'.join(context.module.path)] = context.module.rate
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(RNGS, x, train=True), _spec(224))
  return seen


def test_unknown_variant_is_a_clear_error():
  with pytest.raises(ValueError, match=r"variant must be one of \('paper', 'bn'\), got 'v2'"):
    models.create('inception_v1', variant='v2')


@pytest.mark.parametrize('variant,conventions', COMBOS)
def test_min_size(variant, conventions):
  """Defaults (aux heads on) run at min_size in train and eval mode; one pixel less is refused."""
  model = models.create('inception_v1', variant=variant, conventions=conventions)
  size = models.info('inception_v1').min_size
  assert size == 65
  v = jax.eval_shape(lambda x: model.init(RNGS, x), _spec(size))
  assert jax.eval_shape(lambda v, x: model.apply(v, x), v, _spec(size)).shape == (2, 1000)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats', 'intermediates'],
                               rngs=RNGS), v, _spec(size))
  assert logits.shape == (2, 1000) and len(state['intermediates']['aux_logits']) == 2
  with pytest.raises(ValueError, match='inception_v1 needs inputs of at least 65x65'):
    jax.eval_shape(lambda x: model.init(RNGS, x), _spec(size - 1))


def test_min_size_is_tight():
  """At 64 the TF Mixed_4b map is 4x4 (GRIDS gives 5x5 at 65), below the aux heads' 5x5 pool."""
  head = v1.AuxHead(10, models.resolve('inception_v1', 'tf'), 'bn')
  x = jax.ShapeDtypeStruct((2, 4, 4, 512), jnp.float32)
  with pytest.raises(ValueError, match='pooling window 5 does not fit an input of size 4'):
    jax.eval_shape(lambda x: head.init(RNGS, x), x)


def test_local_response_norm_formula():
  """y_c = x_c / (1 + 1e-4 / 5 * sum_{|c'-c|<=2} x_c'^2) ** 0.75, channels outside are zero."""
  x = np.random.default_rng(0).normal(0, 100, (1, 2, 3, 7)).astype(np.float32)
  want = np.empty_like(x)
  for c in range(7):
    s = np.sum(x[..., max(0, c - 2):c + 3] ** 2, axis=-1)
    want[..., c] = x[..., c] / (1 + 1e-4 / 5 * s) ** 0.75
  got = np.asarray(v1.local_response_norm(jnp.asarray(x)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert np.max(np.abs(got - x) / np.abs(x)) > 0.1  # the inputs are large enough to matter


class _StemDone(Exception):
  pass


def _stem_activations(model, x):
  """Outputs of Conv2d_1a_7x7 and Conv2d_2c_3x3 and the inputs of Conv2d_2b_1x1 and Mixed_3b,
  captured while ``model`` initialises; initialisation stops at Mixed_3b (the stem is enough)."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    name = context.module.name
    if name == 'Mixed_3b':
      seen['Mixed_3b_in'] = args[0]
      raise _StemDone
    out = next_fun(*args, **kwargs)
    if name in ('Conv2d_1a_7x7', 'Conv2d_2b_1x1', 'Conv2d_2c_3x3'):
      seen[name + '_in'], seen[name] = args[0], out
    return out

  with nn.intercept_methods(record), pytest.raises(_StemDone):
    model.init(RNGS, x)
  return {k: np.asarray(v) for k, v in seen.items()}


@pytest.mark.parametrize('variant', ['paper', 'bn'])
def test_lrn_placement_in_the_stem(variant):
  """Figure 3: LRN after the first max pool and after the 3x3 conv ('paper' only)."""
  model = models.create('inception_v1', variant=variant, conventions='tf')
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 65, 65, 3)) * 100, jnp.float32)
  act = _stem_activations(model, x)
  lrn = v1.local_response_norm if variant == 'paper' else (lambda t: t)
  pool = lambda t: layers.max_pool(jnp.asarray(t), 3, 2, 'SAME', model.conventions)
  np.testing.assert_allclose(act['Conv2d_2b_1x1_in'], lrn(pool(act['Conv2d_1a_7x7'])),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(act['Mixed_3b_in'], pool(lrn(act['Conv2d_2c_3x3'])),
                             rtol=1e-6, atol=1e-6)
  # The check can tell: LRN changes these activations by more than the tolerance.
  for t in (pool(act['Conv2d_1a_7x7']), act['Conv2d_2c_3x3']):
    assert np.max(np.abs(v1.local_response_norm(t) - t)) > 1e-3 * np.max(np.abs(t))
