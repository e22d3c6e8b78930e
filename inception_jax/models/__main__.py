"""Print the model table of the README, computed from the code.

    python -m inception_jax.models            # markdown table of every registered model

Parameters are those of the inference network (no auxiliary heads, the default classes: 1000, the
FID network's 1008) in the model's
default conventions and, in brackets, in PyTorch's (BatchNorm with a scale); GMACs are XLA's
cost analysis of one image at the native size, halved.
"""

from __future__ import annotations

import sys
import time

from inception_jax import entry, models


def rows():
  for name in models.list_models():
    info = models.info(name)
    opts = {'aux_logits': False} if 'aux_logits' in info.cls.__dataclass_fields__ else {}
    yield {
        'name': name,
        'paper': info.paper,
        'input': info.input_size,
        'min': info.min_size,
        'params': models.param_count(name, **opts),
        'params_torch': models.param_count(name, conventions='torch', **opts),
        'gmacs': models.flops(name)['macs'] / 1e9,
        'conventions': info.default_conventions,
    }


def markdown(table) -> str:
  lines = ['| model | paper | input | min input | params | params (PyTorch conv.) | GMACs |',
           '|---|---|---|---|---|---|---|']
  for r in table:
    lines.append(f"| {r['name']} | {r['paper']} | {r['input']} | {r['min']} | "
                 f"{r['params']:,} | {r['params_torch']:,} | {r['gmacs']:.2f} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = entry.ArgumentParser(prog='python -m inception_jax.models',
                              description=__doc__).parse_args(argv)
  entry.quiet(args.verbose)
  start = time.time()
  print(markdown(rows()))
  print(f'\n{len(models.list_models())} models built and measured in {time.time() - start:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(entry.run(main))
