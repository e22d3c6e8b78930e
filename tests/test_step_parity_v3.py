"""v3's recipe under its own default 'tf' conventions, through the project's jitted train step
(``train.build``'s step: ``steps.train_step`` with the optimizer, schedule and EMA built from the
run's numbers passed as data, ``train.hparams``, as the loop builds it), against a trainer written here from the TF1 definitions, in float64, three steps
at a time:

* RMSProp, ``tensorflow/python/training/rmsprop.py`` (the ``ApplyRMSProp`` kernel): ``ms``
  starts at ones, ``ms += (g^2 - ms) * (1 - rho)``, ``mom = momentum * mom + lr * g /
  sqrt(ms + epsilon)``, ``w -= mom``;
* the loss: softmax cross-entropy against ``(1 - s) * onehot + s / K`` (``softmax_cross_entropy``
  with ``label_smoothing``, Inception v3 Section 7) on the main head, plus 0.4 times the same on
  the aux head; L2 ``wd * sum(w^2) / 2`` on conv and dense kernels (TF-slim's
  ``l2_regularizer``); then ``clip_by_global_norm`` (``g * clip / max(norm, clip)``) of the whole
  gradient, L2 term included;
* the rate: linear warm-up ``peak * (t + 1) / W``, then ``exponential_decay(staircase=True)``
  (``learning_rate_decay.py``): ``peak * 0.94 ** ((t - W) // D)``, with ``W`` and ``D`` rounded
  from ImageNet's 1,281,167 images at the batch, in integers;
* ``ExponentialMovingAverage(decay, num_updates=t)`` (``moving_averages.py``): ``d = min(decay,
  (1 + t) / (10 + t))``, ``avg -= (avg - new) * (1 - d)``, on the weights and on the BatchNorm
  statistics;
* BatchNorm's statistics as TF1's fused batch norm keeps them (``fused_batch_norm_op.cc``): the
  batch mean and the unbiased (Bessel-corrected) batch variance of each BatchNorm's input,
  averaged with decay 0.9997 (``inception_v3_arg_scope``).

Only the network's forward pass and its gradient come from the project's model (the loss above
is differentiated by ``jax.grad``; each BatchNorm's input is read with ``nn.intercept_methods``):
this is parity of the update, not of the network (tests/test_parity_inception_v3.py).

The batch size is 4 (75 px, the model's smallest input): ImageNet at batch 4 has ``W =
round(1601458.75) = 1601459`` warm-up steps and ``D = round(640583.5) = 640584`` (a tie, to even)
steps between decays, whose float32 reciprocal made the old schedule decay one step late. Two
scenarios: a fresh start (steps 0-2: warm-up, the EMA's first weights 0.9, 9/11, 9/12), and a
run resumed at ``W + D - 1`` with random optimizer slots, EMA and BatchNorm statistics, whose
second step is the first at 0.94 of the peak.

Tolerance: ``max |ours - ref| <= 1e-9 * max |ref|`` per array, on the updates (the changes of
weights, slots, statistics and averages, taken in float64 on each side), with an allowance of 4
float64 ulps of the array's values for the rounding of the sum that applies a change. Measured:
1.7e-12 at worst (RMSProp's momentum), 2e-11 before the allowance. In the fresh scenario the
warm-up's first rates (the peak / 1.6 million) move the weights, and so their average, by about
1e-9 of their size, under that allowance: there the weights and their average are held to their
ulps, the slots, statistics and the statistics' average to 1e-9; resumed, every array is held to
1e-9.

Cost: the two float64 programs (the step, the reference's gradient) compile at level 1 in about
2 CPU minutes from a cold cache; the six steps and the reference take about 20 s more.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from experiments.configs import v3
from inception_jax import models, optim, train, train_state
from inception_jax.models import layers
from reference_utils import images

IMAGENET_TRAIN = 1_281_167
BATCH, SIZE, CLASSES, STEPS = 4, 75, 10, 3
TOL = 1e-9
ULPS = 4 * np.finfo(np.float64).eps
BN_DECAY = 0.9997  # TF-slim's inception_v3_arg_scope batch_norm_decay
# float64 convolutions are plain loops in XLA:CPU at the tests' optimisation level 0
# (conftest.py): both programs are compiled at level 1 with the fusion emitters, as
# tests/test_step_parity.py compiles v3's.
COMPILER_OPTIONS = {'xla_backend_optimization_level': 1, 'xla_cpu_use_fusion_emitters': True}
_COMPILED = {}


def _compiled(name, fn, *args):
  """``fn`` (jitted) compiled for ``args`` with COMPILER_OPTIONS, once per module."""
  if name not in _COMPILED:
    _COMPILED[name] = fn.lower(*args).compile(compiler_options=COMPILER_OPTIONS)
  return _COMPILED[name]


@pytest.fixture(scope='module')
def program():
  """In float64: the config, the model, and the loop's optimizer, schedule and jitted step."""
  with jax.enable_x64(True):
    config = _config()
    model = _model(config)
    spe = optim.steps_per_epoch(IMAGENET_TRAIN, config.batch_size)
    tx, schedule = optim.make(config.optimizer, optim.learning_rate(config), spe)
    # What the loop runs: train.build's step, the run's numbers passed as data (train.hparams).
    numbers = {k: np.asarray(v, np.int32 if isinstance(v, int) else np.float64)
               for k, v in train.hparams(config, spe).items()}
    jitted = jax.jit(functools.partial(train._train_step, apply_fn=model.apply,
                                       switch=optim.switches(config.optimizer)))
    step = _WithNumbers(jitted, numbers)
    yield config, model, tx, schedule, step


class _WithNumbers:
  """``step(state, batch)`` of a jitted ``(state, numbers, batch)`` step."""

  def __init__(self, jitted, numbers):
    self.jitted, self.numbers = jitted, numbers

  def lower(self, state, batch):
    lowered = self.jitted.lower(state, self.numbers, batch)
    numbers = self.numbers

    class _Lowered:
      def compile(self, compiler_options=None):
        compiled = lowered.compile(compiler_options=compiler_options)
        return lambda st, b: compiled(st, numbers, b)
    return _Lowered()


def _config():
  c = v3.get_config()
  c.batch_size = BATCH
  return c


def _model(config):
  options = {k: v for k, v in config.model.options.items() if v is not None}
  options['dropout_rate'] = 0.0
  return models.create(config.model.name, num_classes=CLASSES, dtype=jnp.float64, **options)


def _round_half_even(num: int, den: int) -> int:
  q, r = divmod(num, den)
  return q + (2 * r > den or (2 * r == den and q % 2 == 1))


# ------------------------------------------------------------------------------ reference

def _ref_rate(config, t: int) -> float:
  opt = config.optimizer
  peak = opt.lr * config.batch_size / opt.lr_batch
  warmup = _round_half_even(5 * IMAGENET_TRAIN, BATCH)  # 5 epochs
  decay = _round_half_even(2 * IMAGENET_TRAIN, BATCH)  # 2 epochs
  assert (opt.warmup_epochs, opt.decay_epochs, opt.decay_rate) == (5.0, 2.0, 0.94)
  return peak * (t + 1) / warmup if t < warmup else peak * 0.94 ** ((t - warmup) // decay)


def _is_kernel(path) -> bool:
  return path[-1] == 'kernel'


@functools.lru_cache(maxsize=None)
def _ref_grad(model, smoothing: float, aux_weight: float, wd: float):
  """``(params, batch_stats, x, y) -> ((loss without L2, {BatchNorm path: its input}), grad)``
  of the loss (module docstring) plus the L2 term."""

  def cross_entropy(z, y):
    target = (1 - smoothing) * jax.nn.one_hot(y, CLASSES, dtype=z.dtype) + smoothing / CLASSES
    return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(z), axis=-1))

  def loss_fn(params, batch_stats, x, y):
    inputs = {}

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, layers.BatchNorm) and context.method_name == '__call__':
        inputs[tuple(context.module.path)] = args[0]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                    train=True, mutable=['batch_stats', 'intermediates'])
    aux = updates['intermediates']['aux_logits']
    assert len(aux) == 1
    loss = cross_entropy(logits, y) + aux_weight * cross_entropy(aux[0], y)
    flat = traverse_util.flatten_dict(params)
    l2 = 0.5 * wd * sum(jnp.sum(w ** 2) for k, w in flat.items() if _is_kernel(k))
    return loss + l2, (loss, inputs)

  return jax.jit(jax.grad(loss_fn, has_aux=True))


def _reference_steps(config, model, start, batches, t0):
  """TF1's trainer for ``len(batches)`` steps from ``start`` (numpy float64 dicts, flattened):
  returns the final ``start``-like dict, the losses and the gradient norms before clipping."""
  opt, loss_cfg = config.optimizer, config.loss
  grad_fn = _ref_grad(model, loss_cfg.label_smoothing, loss_cfg.aux_weight, opt.weight_decay)
  ema_decay = config.ema_decay ** (config.batch_size / config.ema_batch)
  s = {k: dict(v) for k, v in start.items()}
  losses, norms = [], []
  for i, (x, y) in enumerate(batches):
    t = t0 + i
    args = (traverse_util.unflatten_dict(s['params']),
            traverse_util.unflatten_dict(s['batch_stats']), x, y)
    grads, (loss, inputs) = _compiled('reference', grad_fn, *args)(*args)
    losses.append(float(loss))
    g = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(grads).items()}
    norm = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
    norms.append(norm)
    g = {k: v * opt.clip_norm / max(norm, opt.clip_norm) for k, v in g.items()}
    lr = _ref_rate(config, t)
    for k, gk in g.items():
      s['ms'][k] = s['ms'][k] + (gk ** 2 - s['ms'][k]) * (1 - opt.rms_decay)
      s['mom'][k] = opt.momentum * s['mom'][k] + lr * gk / np.sqrt(s['ms'][k] + opt.epsilon)
      s['params'][k] = s['params'][k] - s['mom'][k]
    assert {k[:-1] for k in s['batch_stats']} == set(inputs)
    for path, x_bn in inputs.items():
      x_bn = np.asarray(x_bn)
      axes = tuple(range(x_bn.ndim - 1))
      n = int(np.prod(x_bn.shape[:-1]))
      mean = x_bn.mean(axes)
      var = np.sum((x_bn - mean) ** 2, axes) / (n - 1)  # Bessel's correction
      for name, value in (('mean', mean), ('var', var)):
        k = path + (name,)
        s['batch_stats'][k] = s['batch_stats'][k] - (s['batch_stats'][k] - value) * (1 - BN_DECAY)
    d = min(ema_decay, (1 + t) / (10 + t))
    for avg, new in (('ema_params', 'params'), ('ema_batch_stats', 'batch_stats')):
      for k in s[avg]:
        s[avg][k] = s[avg][k] - (s[avg][k] - s[new][k]) * (1 - d)
  return s, losses, norms


# --------------------------------------------------------------------------------- ours

def _find(opt_state, field):
  found = [s for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda s: hasattr(s, '_fields') and field in s._fields)
      if hasattr(s, '_fields') and field in s._fields]
  assert len(found) == 1, field
  return getattr(found[0], field)


def _with_slots(opt_state, **fields):
  """``opt_state`` with the optax state fields ``fields`` (``nu``, ``trace``, ``count``)
  replaced wherever they occur."""
  if isinstance(opt_state, tuple):
    parts = [_with_slots(s, **fields) for s in opt_state]
    if hasattr(opt_state, '_fields'):
      return type(opt_state)(*parts)._replace(
          **{k: v for k, v in fields.items() if k in opt_state._fields})
    return tuple(parts)
  return opt_state


def _flat(tree):
  return {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(tree).items()}


# -------------------------------------------------------------------------------- setup

def _start(model, resumed: bool, seed: int) -> dict[str, dict]:
  """A starting point, flattened float64: random weights (kernels at fan-in scale), the
  BatchNorm statistics, RMSProp's ``ms`` (ones) and ``mom`` (zeros) and the averages equal to
  them; ``resumed``: slots, statistics and averages drawn at random, as after a long run."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                          jnp.zeros((1, SIZE, SIZE, 3), jnp.float64))
  params, stats = {}, {}
  for k, v in traverse_util.flatten_dict(shapes['params']).items():
    if k[-1] == 'kernel':
      params[k] = rng.normal(size=v.shape) * np.sqrt(2.0 / np.prod(v.shape[:-1]))
    elif k[-1] == 'scale':
      params[k] = rng.uniform(0.6, 1.4, v.shape)
    else:
      params[k] = 0.1 * rng.normal(size=v.shape)
  for k, v in traverse_util.flatten_dict(shapes['batch_stats']).items():
    stats[k] = 0.2 * rng.normal(size=v.shape) if k[-1] == 'mean' else rng.uniform(0.5, 1.5,
                                                                                  v.shape)
  s = {'params': params, 'batch_stats': stats,
       'ms': {k: np.ones_like(v) for k, v in params.items()},
       'mom': {k: np.zeros_like(v) for k, v in params.items()},
       'ema_params': dict(params), 'ema_batch_stats': dict(stats)}
  if resumed:
    s['ms'] = {k: rng.uniform(0.3, 1.0, v.shape) for k, v in params.items()}
    s['mom'] = {k: 1e-3 * rng.normal(size=v.shape) for k, v in params.items()}
    s['ema_params'] = {k: v + 0.1 * np.std(v) * rng.normal(size=v.shape) + 1e-3
                       for k, v in params.items()}
    s['ema_batch_stats'] = {k: v * rng.uniform(0.8, 1.2, v.shape)
                            for k, v in stats.items()}
  return s


def _state(tx, s, t0: int) -> train_state.TrainState:
  tree = lambda d: jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(d))  # noqa: E731
  params = tree(s['params'])
  opt_state = _with_slots(tx.init(params), nu=tree(s['ms']),
                          trace=jax.tree.map(lambda m: -m, tree(s['mom'])),
                          count=jnp.asarray(t0, jnp.int32))
  return train_state.TrainState(
      step=jnp.asarray(t0, jnp.int32), params=params, batch_stats=tree(s['batch_stats']),
      opt_state=opt_state, ema_params=tree(s['ema_params']),
      ema_batch_stats=tree(s['ema_batch_stats']), rng=jnp.zeros((2,), jnp.uint32),
      skipped_updates=jnp.zeros((), jnp.int32))


def _compare(what, ours, ref, start):
  """Per array: the change from ``start`` within ``TOL`` of the reference's largest change,
  plus ``ULPS`` of the array's largest value."""
  assert set(ours) == set(ref), what
  worst, worst_key, raw = 0.0, None, 0.0
  for k in ref:
    change, ref_change = ours[k] - start[k], ref[k] - start[k]
    scale = np.max(np.abs(ref_change))
    assert scale > 0, (what, k)
    diff = np.max(np.abs(change - ref_change))
    raw = max(raw, diff / scale)
    err = max(diff - ULPS * np.max(np.abs(ref[k])), 0.0) / scale
    if err >= worst:
      worst, worst_key = err, k
  print(f'{what}: worst {worst:.2e} at {"/".join(worst_key)} over {len(ref)} arrays '
        f'({raw:.2e} before the ulp allowance)')
  assert worst <= TOL, (what, '/'.join(worst_key), worst)


@pytest.mark.parametrize('resumed', [False, True], ids=['fresh', 'resumed_across_a_decay'])
def test_v3_step_equals_tf1_trainer_in_float64(program, resumed):
  config, model, tx, schedule, step = program
  conventions = model.conventions
  assert (conventions.name, conventions.bn_running_var, conventions.bn_momentum) == (
      'tf', 'unbiased', BN_DECAY)
  assert (config.optimizer.name, config.optimizer.clip_norm, config.loss.label_smoothing,
          config.loss.aux_weight, config.optimizer.weight_decay) == ('rmsprop', 2.0, 0.1, 0.4,
                                                                     4e-5)
  warmup, decay = 1601459, 640584
  t0 = warmup + decay - 1 if resumed else 0
  rates = [_ref_rate(config, t0 + i) for i in range(STEPS)]
  if resumed:
    assert rates[1] == rates[2] == rates[0] * 0.94  # the first decay at the second step
  rng = np.random.default_rng(1)
  batches = [(images(BATCH, SIZE, seed=20 + i).astype(np.float64),
              rng.integers(0, CLASSES, BATCH)) for i in range(STEPS)]
  start = _start(model, resumed, seed=2 + resumed)

  state = _state(tx, start, t0)
  losses, logged = [], []
  for x, y in batches:
    batch = {'image': jnp.asarray(x), 'label': jnp.asarray(y), 'mask': jnp.ones(BATCH, jnp.float64)}
    state, metrics = _compiled('ours', step, state, batch)(state, batch)
    losses.append(float(metrics['loss']))
    logged.append(float(metrics['lr']))
  state = jax.device_get(state)
  assert int(state.step) == t0 + STEPS and jax.tree.leaves(state.params)[0].dtype == np.float64
  ours = {'params': _flat(state.params), 'batch_stats': _flat(state.batch_stats),
          'ms': _flat(_find(state.opt_state, 'nu')),
          'mom': {k: -v for k, v in _flat(_find(state.opt_state, 'trace')).items()},
          'ema_params': _flat(state.ema_params), 'ema_batch_stats': _flat(state.ema_batch_stats)}

  ref, ref_losses, norms = _reference_steps(config, model, start, batches, t0)
  assert min(norms) > config.optimizer.clip_norm, norms  # clipping engages at every step
  # The compiled step's rate (logged in float32), the losses, then every array.
  np.testing.assert_allclose(logged, rates, rtol=1e-7)
  np.testing.assert_allclose(losses, ref_losses, rtol=TOL)
  for what in ('mom', 'ms', 'params', 'batch_stats', 'ema_params', 'ema_batch_stats'):
    _compare(what, ours[what], ref[what], start[what])
  # The schedule itself, to the float64 ulp.
  np.testing.assert_allclose([float(schedule(jnp.int32(t0 + i))) for i in range(STEPS)], rates,
                             rtol=ULPS, atol=0)
