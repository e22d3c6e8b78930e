"""The PyTorch side of the comparison: the reference model of each of ours (torchvision, timm,
pretrainedmodels, facenet-pytorch) and a PyTorch copy of its paper recipe, timed as
:mod:`benchmarks.jax_timing` times ours (same batch, size, dtype; median of ``repeats`` runs).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from benchmarks import jax_timing
from inception_jax import machine


def _torchvision_googlenet(train: bool):
  import torchvision
  return torchvision.models.googlenet(weights=None, aux_logits=train, transform_input=False,
                                      init_weights=False)


def _bninception(train: bool):
  import pretrainedmodels
  return pretrainedmodels.bninception(num_classes=1000, pretrained=None)


def _facenet_inception_resnet_v1(train: bool):
  from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1
  return InceptionResnetV1(pretrained=None, classify=True, num_classes=1000)


def _timm(name: str, **kw):
  def build(train: bool):
    import timm
    return timm.create_model(name, pretrained=False, **{k: v(train) for k, v in kw.items()})
  return build


# Model name -> (what is compared, builder(train) -> torch module). The aux heads are built for
# training where the JAX recipe trains them (v1: both of torchvision's, v3: timm's).
TORCH_MODELS: dict[str, tuple[str, Callable[[bool], Any]]] = {
    'inception_v1': ('torchvision googlenet', _torchvision_googlenet),
    'inception_v2': ('pretrainedmodels bninception', _bninception),
    'inception_v3': ('timm inception_v3', _timm('inception_v3', aux_logits=lambda train: train)),
    'inception_v4': ('timm inception_v4', _timm('inception_v4')),
    'inception_resnet_v1': ('facenet-pytorch InceptionResnetV1', _facenet_inception_resnet_v1),
    'inception_resnet_v2': ('timm inception_resnet_v2', _timm('inception_resnet_v2')),
    'xception': ('timm legacy_xception', _timm('legacy_xception')),
}


def _outputs(out):
  """(logits, aux list) of a torch model's output: a tensor, timm's (logits, aux) or
  torchvision's GoogLeNetOutputs(logits, aux2, aux1)."""
  if isinstance(out, (tuple, list)):
    return out[0], [a for a in out[1:] if a is not None]
  return out, []


def _train_step(net, runner, config, batch: int, x, labels, autocast):
  """One step of the recipe in PyTorch: optimizer, clipping, label smoothing, aux loss, EMA."""
  import torch
  opt, params = config.optimizer, [p for p in net.parameters() if p.requires_grad]
  lr = opt.lr * batch / opt.lr_batch
  if opt.name == 'rmsprop':
    optimizer = torch.optim.RMSprop(params, lr=lr, alpha=opt.rms_decay, eps=opt.epsilon,
                                    momentum=opt.momentum, weight_decay=opt.weight_decay)
  else:
    optimizer = torch.optim.SGD(params, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                weight_decay=opt.weight_decay)
  criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.loss.label_smoothing)
  ema = [p.detach().clone() for p in params] if config.ema_decay else None

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      logits, aux = _outputs(runner(x))
      loss = criterion(logits.float(), labels)
      for a in aux:
        loss = loss + config.loss.aux_weight * criterion(a.float(), labels)
    loss.backward()
    if opt.clip_norm:
      torch.nn.utils.clip_grad_norm_(params, opt.clip_norm)
    optimizer.step()
    if ema is not None:
      with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - config.ema_decay)
  return step


def benchmark_torch(model: str, mode: str, batch: int, dtype: str = 'float32',
                    image_size: int | None = None, steps: int = 10, warmup: int = 2,
                    repeats: int = 3, compile: bool = False,
                    device: str | None = None) -> dict[str, Any]:
  """The PyTorch counterpart of :func:`benchmarks.jax_timing.benchmark_jax`.

  ``device`` defaults to CUDA when available. channels_last always; bfloat16 by autocast;
  ``compile`` wraps the model in ``torch.compile`` (its compilation happens in the first step,
  reported as ``first_step_s``). On a GPU cuDNN autotuning is on and float32 may use TF32, as
  XLA does at JAX's default precision; on a CPU every core is used.
  """
  import torch

  name = jax_timing.model_name(model)
  config = jax_timing.paper_config(name, batch=batch, image_size=image_size, dtype=dtype)
  size = config.data.image_size
  device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
  if device == 'cpu':
    torch.set_num_threads(os.cpu_count())
  else:  # as timm's benchmark script
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision('high')
  train = mode == 'train'
  what, build = TORCH_MODELS[name]
  torch.manual_seed(0)
  net = build(train).to(device=device, memory_format=torch.channels_last)
  net.train(train)
  runner = torch.compile(net) if compile else net
  gen = torch.Generator(device='cpu').manual_seed(0)
  x = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(
      device=device, memory_format=torch.channels_last)
  labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)
  autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                            enabled=dtype == 'bfloat16')
  if train:
    step = _train_step(net, runner, config, batch, x, labels, autocast)
  else:
    def step():
      with torch.inference_mode(), autocast:
        runner(x)

  def run(n):
    for _ in range(n):
      step()
    if device == 'cuda':
      torch.cuda.synchronize()

  with machine.RssSampler() as rss:
    if device == 'cuda':
      torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run(1)
    first_step_s = time.perf_counter() - t0
    run(max(warmup, 1) - 1)
    cpu0 = machine.cpu_seconds()
    seconds = jax_timing.timed_runs(run, steps, repeats)
    cpu_s = machine.cpu_seconds() - cpu0
  if device == 'cuda':
    memory, memory_kind = torch.cuda.max_memory_allocated(), 'torch.cuda.max_memory_allocated'
  else:
    memory, memory_kind = rss.peak, 'process RSS, largest sampled during the torch run'
  variant = ('torch.compile' if compile else 'eager') + ', channels_last' + (
      ', bf16 autocast' if dtype == 'bfloat16' else '')
  return {
      'framework': 'torch', 'model': name, 'reference': what, 'variant': variant,
      'compiled': compile, 'mode': mode, 'batch': batch, 'image_size': size, 'dtype': dtype,
      'steps': steps, 'warmup': max(warmup, 1), **jax_timing.summarise(batch, steps, seconds),
      'first_step_s': first_step_s, 'peak_memory_bytes': int(memory),
      'peak_memory_kind': memory_kind, 'process_cpu_s': cpu_s,
      'images_per_cpu_s': batch * steps * repeats / cpu_s if cpu_s > 0 else float('nan'),
      'load_avg_1m_after': machine.load_average(),
      'device': {'type': device, 'torch_version': torch.__version__,
                 'threads': torch.get_num_threads(),
                 'name': torch.cuda.get_device_name() if device == 'cuda' else machine.cpu_name()},
  }
