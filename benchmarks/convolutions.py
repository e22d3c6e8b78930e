"""Each convolution of a model's train step timed alone: XLA:CPU against PyTorch (oneDNN).

    python -m benchmarks.convolutions --model inception_v3 --batch 8 --compare torch
    python -m benchmarks.convolutions --model inception_v3 --batch 8 --cpu_convolutions xla

The convolutions are read from the jaxpr of the train-mode forward pass of the model the paper
recipe trains (aux heads included). For each distinct one (input shape, kernel, strides, padding,
groups) three jitted programs are timed: the forward, the input gradient and the kernel gradient,
each as :func:`inception_jax.kernels.conv.conv_general_dilated` and its gradient rule run them
(the form the train step compiles; a convolution of the image takes no input gradient).
``--compare torch`` times the same three in PyTorch, channels_last, on every core: ``conv2d``
and ``aten.convolution_backward`` for each gradient alone, the calls autograd makes.

The sum over the step's convolutions is a floor under the train step: whatever the rest of the
step costs, a step whose convolutions alone take longer than PyTorch's whole step cannot match
it. Each figure is the median of ``--repeats`` calls after ``--warmup``; the load check is that
of the other benchmarks.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import sys
import time
from typing import Any, NamedTuple

from benchmarks import jax_timing
from inception_jax import entry, machine


class ConvShape(NamedTuple):
  """One convolution of the step: NHWC input, HWIO kernel, strides, explicit pads, groups."""
  input: tuple[int, int, int, int]
  kernel: tuple[int, int, int, int]
  strides: tuple[int, int]
  pads: tuple[tuple[int, int], tuple[int, int]]
  groups: int

  def label(self) -> str:
    (kh, kw, cin, cout), (_, h, w, _) = self.kernel, self.input
    pads = 'x'.join(f'{lo}_{hi}' for lo, hi in self.pads)
    group = f' g{self.groups}' if self.groups > 1 else ''
    return (f'{kh}x{kw} {cin * self.groups}->{cout} at {h}x{w} /{self.strides[0]}'
            f' pad {pads}{group}')


def step_convolutions(model: str, batch: int, image_size: int | None = None,
                      **options: Any) -> list[tuple[ConvShape, int]]:
  """``(shape, count)`` of every distinct convolution of the train-mode forward pass of
  ``model``'s paper recipe (``options`` override its model options), in order of first
  appearance; ``count`` is how many times one step runs it (a convolution in the body of a
  scanned run of blocks counts once per block)."""
  import jax
  import jax.numpy as jnp
  from inception_jax import train

  config = jax_timing.paper_config(model, batch=batch, image_size=image_size)
  config.model.options.update(options)
  module = train.build_model(config, num_classes=1000)
  size = config.data.image_size
  variables = jax.eval_shape(train.init_fn(module, size), jax.ShapeDtypeStruct((2,), jnp.uint32))
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def forward(variables, images):
    return module.apply(variables, images, train=True, mutable=['batch_stats', 'intermediates'],
                        rngs={'dropout': jax.random.PRNGKey(0)})

  counts: collections.Counter = collections.Counter()
  _collect(jax.make_jaxpr(forward)(variables, images).jaxpr, 1, counts)
  return list(counts.items())


def needs_input_gradient(shape: ConvShape) -> bool:
  """Whether the train step computes the input gradient: not for a convolution of the RGB image
  (in these models the only convolutions with 3 input channels)."""
  return shape.kernel[2] * shape.groups != 3


def _sub_jaxprs(eqn):
  import jax.extend.core as jex_core
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jex_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jex_core.Jaxpr):
        yield v


def _collect(jaxpr, times: int, counts: collections.Counter) -> None:
  """Count each ``conv_general_dilated`` of ``jaxpr`` and its sub-jaxprs ``times`` times (a
  ``scan`` body, ``length`` times more). Of a ``cond`` (``lax.platform_dependent``: the CPU and
  default forms of one convolution) only the first branch with a convolution counts."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      lhs, rhs, p = eqn.invars[0].aval, eqn.invars[1].aval, eqn.params
      counts[ConvShape(tuple(lhs.shape), tuple(rhs.shape), tuple(p['window_strides']),
                       tuple(tuple(int(x) for x in pad) for pad in p['padding']),
                       int(p['feature_group_count']))] += times
      continue
    inner = times * (eqn.params['length'] if eqn.primitive.name == 'scan' else 1)
    for sub in _sub_jaxprs(eqn):
      before = sum(counts.values())
      _collect(sub, inner, counts)
      if eqn.primitive.name == 'cond' and sum(counts.values()) > before:
        break


PASSES = ('forward', 'input_grad', 'kernel_grad')


def _time_passes(functions, operands, needs_dx: bool, warmup: int, repeats: int,
                 wait=lambda out: out) -> dict[str, float]:
  """Median milliseconds of each pass (``functions`` in PASSES order) on ``operands``; the
  input gradient counts 0 where the step does not compute it. ``wait`` blocks on a result."""
  out = {}
  for name, fn in zip(PASSES, functions):
    if name == 'input_grad' and not needs_dx:
      out[name] = 0.0
      continue
    for _ in range(warmup):
      wait(fn(*operands))
    runs = jax_timing.timed_runs(lambda _, fn=fn: wait(fn(*operands)), 1, repeats)
    out[name] = 1e3 * statistics.median(runs)
  return out


def jax_convolution(shape: ConvShape):
  """``(forward, input_grad, kernel_grad)``: jitted functions of ``(x, w, g)`` (NHWC, HWIO and
  the output's gradient) computing the convolution and each of its gradients as the train step
  does, with :func:`inception_jax.kernels.conv.conv_general_dilated` and its gradient rule for
  the library this process runs convolutions with."""
  import jax
  from inception_jax.kernels import conv as kernels

  def conv(x, w):
    return kernels.conv_general_dilated(x, w, shape.strides, shape.pads,
                                        feature_group_count=shape.groups,
                                        cpu_convolutions=machine.cpu_convolutions())

  return (jax.jit(lambda x, w, g: conv(x, w)),
          jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
          jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]))


def jax_operands(shape: ConvShape):
  """Random ``(x, w, g)`` for :func:`jax_convolution`."""
  import jax
  import jax.numpy as jnp
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], shape.input, jnp.float32)
  w = jax.random.normal(keys[1], shape.kernel, jnp.float32) * 0.05
  y = jax.eval_shape(jax_convolution(shape)[0], x, w, None)
  return x, w, jax.random.normal(keys[2], y.shape, jnp.float32)


def time_jax(shape: ConvShape, needs_dx: bool, warmup: int, repeats: int) -> dict[str, float]:
  """Milliseconds of the forward, input gradient and kernel gradient of one convolution."""
  import jax
  return _time_passes(jax_convolution(shape), jax_operands(shape), needs_dx, warmup, repeats,
                      wait=jax.block_until_ready)


def torch_convolution(shape: ConvShape):
  """``(forward, input_grad, kernel_grad)``: callables of ``(x, w, g)`` computing the
  convolution and its gradients in PyTorch, with its operands in channels_last. Asymmetric
  padding (TF's 'SAME' at stride 2) pads the input first, as timm's ``Conv2dSame`` does."""
  import torch
  import torch.nn.functional as F

  (top, bottom), (left, right) = shape.pads
  symmetric = top == bottom and left == right
  padding = [top, left] if symmetric else [0, 0]

  def prepare(x):
    return x if symmetric else F.pad(x, (left, right, top, bottom))

  def forward(x, w, g):
    return F.conv2d(prepare(x), w, stride=list(shape.strides), padding=padding,
                    groups=shape.groups)

  def gradient(mask):
    def run(x, w, g):
      dx, dw, _ = torch.ops.aten.convolution_backward(
          g, prepare(x), w, None, list(shape.strides), padding, [1, 1], False, [0, 0],
          shape.groups, mask)
      if dx is not None and not symmetric:  # the gradient of the unpadded input: a view
        dx = dx[:, :, top:dx.shape[2] - bottom, left:dx.shape[3] - right]
      return dx, dw
    return run

  return forward, gradient([True, False, False]), gradient([False, True, False])


def torch_operands(shape: ConvShape):
  """Random NCHW operands in channels_last for :func:`torch_convolution`."""
  import torch
  gen = torch.Generator().manual_seed(0)
  n, h, w, c = shape.input
  kh, kw, cin, cout = shape.kernel
  x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
  weight = (torch.randn(cout, cin, kh, kw, generator=gen) * 0.05).contiguous(
      memory_format=torch.channels_last)
  with torch.no_grad():
    y = torch_convolution(shape)[0](x, weight, None)
  g = torch.randn(y.shape, generator=gen).contiguous(memory_format=torch.channels_last)
  return x, weight, g


def time_torch(shape: ConvShape, needs_dx: bool, warmup: int, repeats: int) -> dict[str, float]:
  """The same in PyTorch (eager: each call returns when its result is computed)."""
  import torch
  with torch.no_grad():
    return _time_passes(torch_convolution(shape), torch_operands(shape), needs_dx, warmup,
                        repeats)


def run(model: str, batch: int, image_size: int | None, warmup: int, repeats: int,
        compare: bool) -> dict[str, Any]:
  """Per-convolution milliseconds and their totals over the train step (each convolution's
  figures times the number of times the step runs it)."""
  if compare:
    import torch
    torch.set_num_threads(os.cpu_count())
  rows = []
  for shape, count in step_convolutions(model, batch, image_size):
    needs_dx = needs_input_gradient(shape)
    row = {'convolution': shape.label(), 'shape': shape._asdict(), 'count': count,
           'input_grad': needs_dx, 'jax': time_jax(shape, needs_dx, warmup, repeats)}
    if compare:
      row['torch'] = time_torch(shape, needs_dx, warmup, repeats)
    rows.append(row)
    print(json.dumps(row), flush=True)
  totals = {side: {p: sum(r['count'] * r[side][p] for r in rows) for p in PASSES}
            for side in (('jax', 'torch') if compare else ('jax',))}
  return {'model': model, 'batch': batch, 'convolutions': sum(r['count'] for r in rows),
          'distinct': len(rows), 'rows': rows,
          'total_ms': {side: {**t, 'all': sum(t.values())} for side, t in totals.items()}}


def markdown(result: dict[str, Any]) -> str:
  sides = list(result['total_ms'])
  head = ['convolution', 'count'] + [f'{s} {p} ms' for s in sides for p in PASSES]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in result['rows']:
    cells = [r['convolution'], str(r['count'])] + [
        f"{r[s][p]:.1f}" if (p != 'input_grad' or r['input_grad']) else '-'
        for s in sides for p in PASSES]
    lines.append('| ' + ' | '.join(cells) + ' |')
  cells = ['**all, times count**', str(result['convolutions'])] + [
      f"**{result['total_ms'][s][p]:.0f}**" for s in sides for p in PASSES]
  lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = entry.ArgumentParser(prog='python -m benchmarks.convolutions',
                              description=__doc__.split('\n\n')[0])
  p.add_argument('--model', default='inception_v3', help='model name or alias')
  p.add_argument('--batch', type=int, default=8, help='images per timed call')
  p.add_argument('--image_size', type=int, default=0, help="default: the model's native size")
  p.add_argument('--warmup', type=int, default=2, help='untimed calls first')
  p.add_argument('--repeats', type=int, default=5, help='timed calls; the median is reported')
  p.add_argument('--compare', choices=['torch'], default=None,
                 help='also time the PyTorch counterpart')
  p.add_argument('--cpu_convolutions', choices=['ynnpack', 'xla'], default='ynnpack',
                 help="XLA:CPU's convolutions (inception_jax.machine.set_cpu_convolutions)")
  p.add_argument('--json', default='', help='write the results here as JSON')
  p.add_argument('--markdown', default='', help='write the table here as markdown')
  machine.add_idle_flags(p)
  args = p.parse_args(argv)
  entry.quiet(args.verbose)
  if args.repeats < 3:
    p.error(f'--repeats must be at least 3 (a median of three calls or more), got {args.repeats}')
  used = machine.set_cpu_convolutions(args.cpu_convolutions, 0, training=True)  # before JAX starts
  try:
    model = jax_timing.model_name(args.model)
  except ValueError as err:
    p.error(str(err))
  load = machine.require_idle(p, args)
  result = run(model, args.batch, args.image_size or None, args.warmup, args.repeats,
               args.compare == 'torch')
  result.update(machine=machine.describe(), cpu_convolutions=used, load_avg_1m_before=load,
                loaded=load > args.max_load, load_avg_1m_after=machine.load_average(),
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                command=' '.join(['python -m benchmarks.convolutions',
                                  *(sys.argv[1:] if argv is None else argv)]))
  table = markdown(result)
  print(table)
  print(json.dumps({'total_ms': result['total_ms']}))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write(table + '\n')
  return result


if __name__ == '__main__':
  sys.exit(entry.run(main))
