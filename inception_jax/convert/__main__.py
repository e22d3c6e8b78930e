"""Convert reference weights into a converted-weights directory (orbax checkpoint + model.json).

    # published weights by name (downloads when online; offline, says which file to put where)
    python -m inception_jax.convert --known timm/inception_v3.tf_in1k --out weights/v3_tf
    # a file you have
    python -m inception_jax.convert --model inception_v3 --source timm \\
        --weights model.safetensors --out weights/v3_tf
    python -m inception_jax.convert --model xception --source keras --weights xception.h5 \\
        --out weights/xception_keras

The directory is what ``python -m inception_jax.predict --weights DIR`` and training's
``--config.init_from=DIR`` read.
"""

from __future__ import annotations

import logging
import sys

from inception_jax import entry, normalization, pretrained
from inception_jax.convert import known

PREPROCESS = {name: normalization.NORMALIZATIONS[name]
              for name in normalization.CONFIG_NAMES}


def main(argv=None) -> int:
  from inception_jax import convert
  parser = entry.ArgumentParser(prog='python -m inception_jax.convert', description=__doc__)
  parser.add_argument('--known', metavar='NAME',
                      help='published weights by their library name, one of: '
                           + ', '.join(sorted(known.KNOWN)))
  parser.add_argument('--model', help='our model name (with --weights; python -m '
                                      'inception_jax.models lists them)')
  parser.add_argument('--source', choices=[*convert.TORCH_SOURCES, 'keras'],
                      help='the library whose weights --weights holds (with --weights)')
  parser.add_argument('--weights', help='.pth/.bin/.safetensors state dict, or Keras .h5 file')
  parser.add_argument('--num_classes', '--num-classes', type=int, default=None,
                      help="classes of the converted model (default: the checkpoint's; 0: no "
                           'classifier; another number: a new, freshly initialised one)')
  parser.add_argument('--drop_background', '--drop-background', action='store_true',
                      help='1001-class TF checkpoints: drop class 0 (background)')
  parser.add_argument('--preprocess', choices=sorted(PREPROCESS),
                      help='input normalisation the weights expect (default: by source)')
  parser.add_argument('--out', required=True, help='new directory to write')
  args = parser.parse_args(argv)
  entry.progress_logging(args.verbose, logging.INFO if args.verbose else logging.WARNING)
  out = pretrained.check_new_directory(args.out)  # before any download or conversion

  kw = dict(num_classes=args.num_classes, drop_background=args.drop_background)
  if args.known:
    module, variables, preprocess = known.convert(args.known, **kw)
    name, source = known.KNOWN[args.known]['model'], known.KNOWN[args.known]['source']
  else:
    if not (args.model and args.source and args.weights):
      parser.error('give --known NAME, or --model, --source and --weights')
    name, source = args.model, args.source
    if source == 'keras':
      module, variables = convert.from_keras(name, args.weights, **kw)
    else:
      module, variables = convert.from_torch(name, args.weights, source=source, **kw)
    default = {'pretrainedmodels': 'caffe_bgr', 'facenet': 'facenet'}.get(source, 'inception')
    preprocess = PREPROCESS[args.preprocess or default]
  out = pretrained.save(out, name, module, variables, preprocess=preprocess, source=source)
  from inception_jax import models
  classes = module.num_classes or 'no'
  print(f'wrote {models.info(name).name} ({source} weights, {classes} classes) to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(entry.run(main))
