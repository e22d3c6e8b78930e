"""Classify images with converted weights and print the top-5 ImageNet classes.

    python -m inception_jax.predict --model inception_v3 --weights DIR IMAGE [IMAGE ...]

``DIR`` is a converted-weights directory written by ``python -m inception_jax.convert`` (or
``inception_jax.pretrained.save``); its ``model.json`` names the model, its conventions and the
preprocessing its weights expect.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from inception_jax import models, pretrained


def classify(module, variables, images: np.ndarray, k: int = 5):
  """Top-k (indices, probabilities) of a batch of preprocessed NHWC images."""
  logits = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, images)
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))
  top = np.argsort(-probs, axis=-1)[:, :k]
  return top, np.take_along_axis(probs, top, axis=-1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--weights', required=True, help='converted-weights directory')
  parser.add_argument('--model', help='expected model name (checked against the weights)')
  parser.add_argument('--top', type=int, default=5)
  parser.add_argument('images', nargs='+')
  args = parser.parse_args(argv)

  module, variables, meta = pretrained.load(args.weights)
  if args.model and models.info(args.model).name != meta['model']:
    parser.error(f'--model {args.model} but {args.weights} holds {meta["model"]} weights')
  if module.num_classes != 1000:
    parser.error(f'{args.weights} has {module.num_classes} classes; predict prints ImageNet-1k '
                 'class names and needs a 1000-class model')
  from PIL import Image
  size = models.info(meta['model']).input_size
  batch, names = [], []
  for path in args.images:
    try:
      with Image.open(path) as img:
        batch.append(pretrained.preprocess_image(np.asarray(img.convert('RGB')), size,
                                                 meta['preprocess']))
      names.append(path)
    except OSError as err:
      print(f'{path}: cannot read image ({err}); skipped', file=sys.stderr)
  if not batch:
    print('no readable image', file=sys.stderr)
    return 1
  classes = pretrained.imagenet_classes()
  top, probs = classify(module, variables, np.stack(batch), k=args.top)
  for path, idx, p in zip(names, top, probs):
    print(f'{path}: {meta["model"]}')
    for rank, (i, q) in enumerate(zip(idx, p), 1):
      print(f'  {rank}. {classes[i]:<30s} {q:7.2%}  (class {i})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
