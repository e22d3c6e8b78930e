"""What a run will do, in a few lines, before it compiles anything.

``experiments.train`` and ``experiments.evaluate`` print these lines on every launch, and with
``--dry_run`` print them and stop: the config's fields that differ from its file's own values,
then what training derives from them (model, data, devices and batch per device, steps and
epochs, peak learning rate, the EMA's decay per step, evaluation).

    config (differs from v1.py:quick): optimizer.lr=0.1, batch_size=64
    model: inception_v1, 10 classes at 65x65, float32
    ...
"""

from __future__ import annotations

from typing import Any, Mapping


def differences(config, defaults) -> list[tuple[str, Any]]:
  """``(dotted field, value)`` of every field of ``config`` whose value differs from
  ``defaults`` (or that ``defaults`` lacks), in the config's order."""
  def flat(tree: Mapping, prefix: str = '') -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
      if isinstance(value, Mapping):
        out.update(flat(value, f'{prefix}{key}.'))
      else:
        out[f'{prefix}{key}'] = value
    return out

  have = flat(config.to_dict())
  base = flat(defaults.to_dict()) if defaults is not None else {}
  missing = object()
  return [(k, v) for k, v in have.items() if base.get(k, missing) != v]


def lines(config, defaults=None, *, source: str = 'the config file', mode: str = 'train',
          setup=None) -> list[str]:
  """The summary of a run of ``config``: ``mode`` ``'train'`` or ``'evaluate'``.

  ``defaults``: the config its file gives before any ``--config.x`` override (None: no line of
  differences); ``source`` names that file in the first line. ``setup``: the
  :class:`inception_jax.train.Program` of ``config`` (built here when None; this validates
  the config and raises :class:`~inception_jax.errors.ConfigError` for one that cannot run,
  and compiles nothing).
  """
  import jax

  from inception_jax import optim, train
  s = train.build(config) if setup is None else setup
  out = []
  if defaults is not None:
    diff = differences(config, defaults)
    out.append(f'config (differs from {source}): ' +
               (', '.join(f'{k}={v!r}' for k, v in diff) if diff else 'nothing; as written'))
  size = config.data.image_size
  out.append(f'model: {config.model.name}, {s.num_classes} classes at {size}x{size}, '
             f'{config.dtype}' + (f', from {config.init_from}' if config.init_from else ''))
  devices = s.mesh.size
  out.append(f'devices: {devices} ({jax.devices()[0].platform}), {jax.process_count()} '
             f'process{"es" if jax.process_count() > 1 else ""}')
  out.append(f'data: {config.data.name}, {config.data.train_split} {s.num_train:,} images, '
             f'{config.data.eval_split} {s.num_eval:,} images')
  if mode == 'train':
    out.append(f'batch: {config.batch_size} global, {config.batch_size // devices} per device; '
               f'eval {config.eval_batch_size} global, {config.eval_batch_size // devices} per '
               'device')
    out.append(f'steps: {s.total_steps:,} ({optim.epoch(s.total_steps, s.steps_per_epoch):.2f} '
               f'epochs of {float(s.steps_per_epoch):.1f} steps), evaluated {len(s.eval_steps)} time'
               f'{"s" if len(s.eval_steps) > 1 else ""}')
    opt = config.optimizer
    ratio = optim.final_lr_ratio(opt, s.peak_lr, s.total_steps, s.steps_per_epoch)
    out.append(f'learning rate: {opt.name}, peak {s.peak_lr:.4g} (= {opt.lr:g} x '
               f'{config.batch_size} / {opt.lr_batch}) after {opt.warmup_epochs:g} warm-up '
               f'epochs; final / peak {ratio:.3g}')
    ema = optim.ema_step_decay(config)
    out.append(f'EMA: {ema:.6g} per step ({config.ema_decay:g} per {config.ema_batch} images)'
               if ema else 'EMA: none')
  else:
    out.append(f'batch: eval {config.eval_batch_size} global, '
               f'{config.eval_batch_size // devices} per device')
  return out
