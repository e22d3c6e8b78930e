"""Training steps of a recipe through the project's jitted train step (``train.build(...).train_step``,
the program ``experiments.train`` runs) against an independent trainer in PyTorch, from the same
converted weights on the same batches, dropout off: v1's recipe on torchvision ``googlenet`` with
both aux heads (0.3 each), SGD momentum 0.9, L2 4e-5 on kernels, a rate that changes every step
and the EMA, for three steps: from the second on an update carries momentum history
(``lr_2 * (g_2 + 0.9 g_1)``) at a new rate, so the slots, the schedule's index and the EMA's
``num_updates`` are all checked.

The reference's state is converted with ``convert.from_torch`` (the slots by putting them where
the weights were: the converters move and transpose tensors, nothing else) and compared array by
array: ``max |ours - ref| <= tol * max |ref|``.

Why float64 on both sides (``jax.enable_x64``, the model cloned with ``dtype=float64``, the torch
model ``.double()``). Measured 2026-12-02: in float32 the first losses agree to 5e-7 but each
side's second and third losses differ from the float64 ones by 0.1-0.5% (v1 at 224 px: 3.8162 /
3.8153 against 3.8356), with or without the tests' XLA flags, at rates 0.005 and 1e-4 alike, and
for Xception at 32 and 64 px: these randomly initialised networks on 4 images amplify rounding
about 1e4-fold per step (BatchNorm over few values), so float32 cannot tell a wrong step from
rounding. In float64 (the whole forward agrees to 1e-14) every array agrees after three steps to
6e-8, the float32 rounding of the converter that reads the reference's state; held to 1e-6,
16x that floor and 100x inside the 1e-4 (1e-5 for the EMA) asked of a float32 check, so that
even the L2 term (4e-5 x the weight in each kernel's gradient) is inside what is checked. Updates are
compared on differences taken in float64 on each side (after the converter's rounding they would
hide under the weights' scale).

v3's recipe runs on timm ``inception_v3`` with its aux head (299 px, the smallest at which timm's
aux head runs: Mixed_6e must be 17x17; batch 2) and timm's ``RMSpropTF`` set up as TF1's
RMSProp; clipping at 2.0 after the L2 term is checked to engage on every step. Both slots are
compared: the momentum (optax's ``trace`` is minus timm's buffer) and the mean square less its
initial ones' share. Xception's runs on timm ``legacy_xception`` at 64 px (batch 2): at 32 px the
exit flow is 1x1, where ``block13/residual/bn/bias`` only shifts what the next BatchNorm
removes, so its gradient is zero up to rounding; at 64 px (2x2) it is not, and every array,
that one included, agreed within 6e-8 (measured 2026-12-02).

BatchNorm's running variance: PyTorch averages the unbiased batch variance, flax's
``nn.BatchNorm`` the biased one; the 'torch' conventions set ``Conventions.bn_running_var`` to
'unbiased', which our BatchNorm layer follows, so the statistics are compared as PyTorch keeps them
(the biased convention would put the deepest statistics, 4 x 1 x 1 values, up to 4/3 apart).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from experiments.configs import v1, v3, xception
from inception_jax import data, mesh as mesh_lib, models, optim, train, train_state
from inception_jax.convert import from_torch
from reference_utils import images, randomize_torch, require

torch = require('torch')

BATCH = 4
V3_BATCH = 2
XCEPTION_BATCH, XCEPTION_SIZE = 2, 64
STEPS = 3
TOL = 1e-6  # module docstring: 6e-8 measured
EMA_TOL = 1e-6
NU_ATOL = 8 * np.finfo(np.float64).eps  # the RMSProp mean square's rounding, see _run64


def _config(module, batch):
  c = module.get_config()
  c.batch_size = batch
  c.optimizer.warmup_epochs = 0.0
  c.optimizer.decay_rate, c.optimizer.decay_epochs = 0.8, 1.0  # the rate changes every step
  # A small rate: three steps stay where the losses are smooth, so that rounding is not chaos.
  c.optimizer.lr, c.optimizer.lr_batch = 0.005, batch
  return c


def _our_steps(config, module, variables, batches):
  """``STEPS`` steps of the program's jitted train step from ``variables`` (one epoch per step);
  the final state on the host."""
  batch = len(batches[0][1])
  info = data.DatasetInfo(num_classes=10, num_examples={'train': batch, 'validation': batch})
  program = train.build(config, model=module, info=info, reuse=False)
  mesh, tx = program.mesh, program.tx
  params, stats = variables['params'], variables['batch_stats']
  state = train_state.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats, opt_state=tx.init(params),
      ema_params=params, ema_batch_stats=stats, rng=jnp.zeros((2,), jnp.uint32),
      skipped_updates=jnp.zeros((), jnp.int32))
  sharding = mesh_lib.replicated(mesh)
  state = jax.device_put(state, sharding)
  losses, compiled = [], None
  for x, y in batches:
    batch = {'image': jnp.asarray(x), 'label': jnp.asarray(y), 'mask': jnp.ones(len(y))}
    batch = jax.device_put(batch, mesh_lib.batch_sharded(mesh))
    if compiled is None:
      # float64 convolutions are plain loops in XLA:CPU, which at the tests' optimisation level 0
      # (conftest.py) run 8-25x slower on 299-px maps: v3's step is compiled at level 1, with
      # the fusion emitters that conftest.py turns off (measured 2026-12-05 for this program:
      # level 0 compiles in 23 s and runs a step in 28 s; level 1 without the emitters 38 s and
      # 3.4 s; with them 25 s and 3.6 s).
      options = ({'xla_backend_optimization_level': 1, 'xla_cpu_use_fusion_emitters': True}
                 if x.shape[1] >= 150 else None)
      compiled = program.train_step.lower(state, program.hparams, batch).compile(
          compiler_options=options)
    state, metrics = compiled(state, program.hparams, batch)
    losses.append(float(metrics['loss']))
  lrs = [float(program.schedule(i)) for i in range(STEPS)]
  return jax.device_get(state), losses, lrs


def _torch_optimizer(opt_cfg, params, lr):
  """The reference optimizer for ``opt_cfg``, and for each slot of ours (its optax field)
  ``(the reference's slot, its sign in ours, the slot's share from its initial value)``."""
  if opt_cfg.name == 'momentum':
    assert not opt_cfg.nesterov, opt_cfg
    # torch's buffer is TF's accumulator: ``buf = momentum * buf + g``, ``w -= lr * buf``.
    return (torch.optim.SGD(params, lr=lr, momentum=opt_cfg.momentum),
            {'trace': ('momentum_buffer', 1.0, 0.0)})
  assert opt_cfg.name == 'rmsprop', opt_cfg
  timm_optim = require('timm.optim')
  # TF1's RMSPropOptimizer from timm's RMSpropTF (timm/optim/rmsprop_tf.py): alpha is TF's
  # decay; eps is always inside the square root there; square_avg starts at ones, as TF's
  # ``ms`` slot; lr_in_momentum=True accumulates ``lr * g / sqrt(ms + eps)`` in the buffer, as
  # TF does (each step's rate scales only that step's term); centered=False (TF's default);
  # weight_decay=0, caution=False: the L2 term is added to the gradient by hand, before clipping.
  opt = timm_optim.RMSpropTF(params, lr=lr, alpha=opt_cfg.rms_decay, eps=opt_cfg.epsilon,
                             momentum=opt_cfg.momentum, centered=False, weight_decay=0.0,
                             lr_in_momentum=True, caution=False)
  # optax's trace comes after scale_by_learning_rate (a factor -lr): minus timm's buffer. The
  # mean square's ones leave ``decay ** STEPS`` in every entry after STEPS steps.
  return opt, {'nu': ('square_avg', 1.0, opt_cfg.rms_decay ** STEPS),
               'trace': ('momentum_buffer', -1.0, 0.0)}


def _reference_steps(config, ref, batches, lrs, outputs):
  """The recipe written with PyTorch's and timm's pieces: returns the losses, the gradient norms
  that were clipped, the initial shares of the slots, and the final ``{'params': state_dict,
  'slots': {our field: state_dict, less the initial share}, 'ema': state_dict}``."""
  opt_cfg = config.optimizer
  ref = copy.deepcopy(ref).train()
  for m in ref.modules():
    if isinstance(m, torch.nn.Dropout):
      m.p = 0.0
  named = dict(ref.named_parameters())
  kernels = [p for p in named.values() if p.ndim in (2, 4)]  # conv and dense weights
  opt, slot_spec = _torch_optimizer(opt_cfg, list(named.values()), lrs[0])
  ema_decay = optim.ema_step_decay(config)
  ema = {k: v.detach().clone() for k, v in ref.state_dict().items() if v.is_floating_point()}
  ce = torch.nn.CrossEntropyLoss(label_smoothing=config.loss.label_smoothing)
  losses, norms = [], []
  for t, ((x, y), lr) in enumerate(zip(batches, lrs)):
    out = outputs(ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))))
    labels = torch.from_numpy(np.asarray(y)).long()
    loss = ce(out[0], labels) + sum(config.loss.aux_weight * ce(a, labels) for a in out[1:])
    losses.append(float(loss.detach()))
    opt.zero_grad()
    loss.backward()
    with torch.no_grad():
      for p in kernels:  # TF-slim's l2_regularizer: wd * w on the gradient of kernels
        p.grad.add_(p, alpha=opt_cfg.weight_decay)
      if opt_cfg.clip_norm:  # after the L2 term, on the whole gradient
        # TF's clip_by_global_norm, ``g * clip / max(norm, clip)``; torch's clip_grad_norm_
        # divides by ``norm + 1e-6``, a relative 1e-6 / norm off.
        norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in named.values()))
        norms.append(float(norm))
        for p in named.values():
          p.grad.mul_(opt_cfg.clip_norm / max(float(norm), opt_cfg.clip_norm))
    for group in opt.param_groups:
      group['lr'] = lr
    opt.step()
    decay = min(ema_decay, (1.0 + t) / (10.0 + t))  # TF's ExponentialMovingAverage(num_updates)
    with torch.no_grad():
      for k, v in ref.state_dict().items():
        if k in ema:
          ema[k].mul_(decay).add_(v, alpha=1.0 - decay)
  state = ref.state_dict()
  by_param = {id(p): k for k, p in named.items()}
  slots = {}
  for field, (slot, sign, initial) in slot_spec.items():
    sd = {k: v.clone() for k, v in state.items()}
    for p, st in opt.state.items():
      sd[by_param[id(p)]] = sign * st[slot] - initial
    slots[field] = sd
  initials = {field: initial for field, (_, _, initial) in slot_spec.items()}
  return losses, norms, initials, {'params': state, 'slots': slots, 'ema': {**state, **ema}}


def _convert(name, state_dict, source, **options):
  return jax.device_get(from_torch(name, state_dict, source=source, **options)[1])


def _compare(ours, theirs, tol, what, atol=0.0):
  a, b = traverse_util.flatten_dict(ours), traverse_util.flatten_dict(theirs)
  assert set(a) == set(b), what
  errors = {}
  for key in a:
    x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
    errors['/'.join(key)] = max(np.max(np.abs(x - y)) - atol, 0.0) / max(np.max(np.abs(y)), 1e-12)
  worst = sorted(errors, key=errors.get, reverse=True)[:3]
  print(f'{what}: worst {[(k, f"{errors[k]:.2e}") for k in worst]} over {len(a)} arrays')
  assert errors[worst[0]] <= tol, (
      f'{what} {worst[0]}: max |ours - ref| = {errors[worst[0]]:.3g} x max |ref|')
  return errors[worst[0]]


def _slot(opt_state, field):
  """The optimizer's ``field`` slot (the last in the chain: the core optimizer's)."""
  found = [s for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda s: hasattr(s, '_fields') and field in s._fields)
      if hasattr(s, '_fields') and field in s._fields]
  assert found, field
  return getattr(found[-1], field)


def _run(name, config, ref, source, size, outputs, **options):
  """Both trainers in float64 (module docstring: in float32 the three steps amplify rounding)."""
  with jax.enable_x64(True):
    _run64(name, config, ref.double(), source, size, outputs, **options)


def _run64(name, config, ref, source, size, outputs, **options):
  rng = np.random.default_rng(0)
  batch = config.batch_size
  batches = [(images(batch, size, seed=10 + i).astype(np.float64), rng.integers(0, 10, batch))
             for i in range(STEPS)]
  before = ref.state_dict()
  variables = jax.tree.map(lambda a: np.asarray(a, np.float64),
                           _convert(name, before, source, **options))
  module = from_torch(name, before, source=source, **options)[0].clone(dtype=jnp.float64)
  before = {k: v.clone() for k, v in before.items()}
  ours, our_losses, lrs = _our_steps(config, module, variables, batches)
  assert jax.tree.leaves(ours.params)[0].dtype == np.float64
  # One thread: PyTorch runs float64 depthwise convs as one small conv per channel, and two
  # threads on these small ops took 10x longer than one (measured 2026-12-02, Xception at 64 px).
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    ref_losses, norms, initials, theirs = _reference_steps(config, ref, batches, lrs, outputs)
  finally:
    torch.set_num_threads(threads)
  np.testing.assert_allclose(our_losses, ref_losses, rtol=TOL)
  if config.optimizer.clip_norm:  # else the clipping would go unchecked
    assert min(norms) > config.optimizer.clip_norm, norms
  conv = lambda sd: _convert(name, sd, source, **options)  # noqa: E731
  final = conv(theirs['params'])
  _compare(ours.batch_stats, final['batch_stats'], TOL, 'batch_stats')
  _compare(ours.params, final['params'], TOL, 'params')
  # The updates themselves (the params' difference hides under the weights' scale), taken in
  # float64 on each side before the converter rounds to float32.
  moved = jax.tree.map(lambda a, b: a - b, ours.params, variables['params'])
  ref_moved = conv({k: theirs['params'][k] - v for k, v in before.items()})['params']
  _compare(moved, ref_moved, TOL, 'updates')
  for field, initial in initials.items():  # the slots, less their initial share, also in float64
    mine = jax.tree.map(lambda a: a - initial, _slot(ours.opt_state, field))
    # nu (about 0.73 to 1) is kept to its float64 ulp, 1.1e-16 per operation: where the
    # gradients' share is below ~1e-12 (timm's aux classifier starts at stddev 0.001, so its
    # head's BatchNorm gradients are ~1e-6) that rounding is what differs. NU_ATOL: 8 ulps.
    _compare(mine, conv(theirs['slots'][field])['params'], TOL, f'slot {field}',
             atol=NU_ATOL if initial else 0.0)
  ema = conv(theirs['ema'])
  _compare(ours.ema_params, ema['params'], EMA_TOL, 'ema params')
  _compare(ours.ema_batch_stats, ema['batch_stats'], EMA_TOL, 'ema batch_stats')
  assert models.info(name).name == name
  assert module.conventions.bn_running_var == 'unbiased'  # what PyTorch does; see docstring


def _init(ref, size):
  return randomize_torch(ref, images(2, size, seed=1))


def test_v1_recipe_equals_pytorch_sgd_on_googlenet():
  torchvision = require('torchvision')
  torch.manual_seed(0)
  size = models.info('inception_v1').min_size
  ref = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=False,
                                     init_weights=True, num_classes=10)
  _init(ref, size)
  config = _config(v1, BATCH)
  # torchvision returns (logits, aux2, aux1) in train mode.
  _run('inception_v1', config, ref, 'torchvision', size,
       lambda o: (o.logits, o.aux_logits2, o.aux_logits1), dropout_rate=0.0,
       aux_dropout_rate=0.0)


def test_v3_recipe_equals_timm_rmsproptf_on_inception_v3():
  timm = require('timm')
  torch.manual_seed(0)
  size = 299  # timm's aux head: a 5x5 pool with stride 3 and a 5x5 conv need Mixed_6e at 17x17
  ref = timm.create_model('inception_v3', pretrained=False, aux_logits=True, num_classes=10)
  _init(ref, size)
  config = _config(v3, V3_BATCH)
  assert (config.optimizer.name, config.optimizer.clip_norm, config.loss.label_smoothing,
          config.loss.aux_weight) == ('rmsprop', 2.0, 0.1, 0.4)
  # timm returns (logits, aux) in train mode with aux_logits=True.
  _run('inception_v3', config, ref, 'timm', size, lambda o: o, dropout_rate=0.0)


def test_xception_recipe_equals_pytorch_sgd_on_legacy_xception():
  timm = require('timm')
  torch.manual_seed(0)
  ref = timm.create_model('legacy_xception', pretrained=False, num_classes=10)
  _init(ref, XCEPTION_SIZE)
  config = _config(xception, XCEPTION_BATCH)
  assert (config.optimizer.name, config.optimizer.weight_decay) == ('momentum', 1e-5)
  # Unrolled: XLA:CPU ran the scanned middle flow's step 4.7x slower (384 s against 82 s).
  _run('xception', config, ref, 'timm', XCEPTION_SIZE, lambda o: (o,), dropout_rate=0.0,
       scan=False)
