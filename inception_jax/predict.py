"""Classify images with converted weights and print each one's top classes.

    python -m inception_jax.predict --weights DIR IMAGE [IMAGE ...]
    python -m inception_jax.predict --weights DIR --json --top 3 photos/*.jpg > top3.json
    python -m inception_jax.predict --workdir WORKDIR [--step N|best] IMAGE [IMAGE ...]

``DIR`` is a converted-weights directory written by ``python -m inception_jax.convert`` (or
``inception_jax.pretrained.save``); its ``model.json`` names the model, its conventions, the
preprocessing its weights expect and, when recorded, the class names. Without recorded names, a
1000-class model's classes are ImageNet-1k's and any other model's are numbered. Images go through
the model ``--batch_size`` at a time. An image that cannot be read is reported on stderr after the
others are printed, and the exit status is then 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import numpy as np

from inception_jax import entry, errors, normalization


class PredictError(errors.UserError):
  """Weights that cannot classify (no classifier), or the wrong model for ``--model``."""


def load_weights(args) -> tuple[Any, Any, dict[str, Any]]:
  """``(module, variables, meta)`` of what the command line names (``--weights DIR``, or a
  training ``--workdir`` with ``--step``: :func:`_from_workdir`); ``meta``
  has the ``model`` name, the ``preprocess`` dict and, if known, ``classes``."""
  from inception_jax import pretrained
  if getattr(args, 'workdir', None):
    return _from_workdir(args.workdir, args.step)
  return pretrained.load(args.weights)


def _from_workdir(workdir: str, step: str | None):
  """``(module, variables, meta)`` of a training workdir's checkpoint: the model and input of its
  latest recorded config, the EMA pair when the run kept one."""
  import ml_collections
  from inception_jax import checkpoint, evaluate, models, resume
  checkpoint.Checkpointer.existing(workdir).close()  # one line when there is nothing to read
  config = ml_collections.ConfigDict(resume.saved_config(workdir))
  if step not in (None, 'best') and not str(step).isdigit():
    raise errors.UserError(f"--step={step}: give a step number or 'best'")
  which = step if step in (None, 'best') else int(step)
  try:
    program, state = evaluate.restore_state(config, workdir, which)
  except checkpoint.CheckpointError as err:  # storage: the step, the path and the cause
    raise errors.UserError(str(err)) from err
  ema = bool(config.get('ema_decay'))
  variables = {'params': state.ema_params if ema else state.params,
               'batch_stats': state.ema_batch_stats if ema else state.batch_stats}
  preprocess = dict(normalization.NORMALIZATIONS[config.data.get('normalization', 'inception')],
                    crop_pct=config.data.get('eval_crop_fraction', 0.875))
  return program.model, variables, {'model': models.info(config.model.name).name,
                                    'preprocess': preprocess,
                                    'input_size': config.data.image_size}


def class_names(meta: dict[str, Any], num_classes: int) -> list[str]:
  """The weights' recorded class names; else ImageNet-1k's for 1000 classes; else the indices."""
  names = meta.get('classes')
  if names and len(names) == num_classes:
    return [str(n) for n in names]
  if num_classes == 1000:
    from inception_jax import pretrained
    return pretrained.imagenet_classes()
  return [str(i) for i in range(num_classes)]


def classifier(module, variables):
  """``images -> (top-k indices, probabilities)`` for batches of preprocessed NHWC images; one
  compilation per batch shape."""
  import jax

  @jax.jit
  def probabilities(v, x):
    logits = module.apply(v, x, train=False)
    return jax.nn.softmax(logits.astype(np.float32), axis=-1)

  def classify(images: np.ndarray, k: int = 5):
    probs = np.asarray(probabilities(variables, images))
    top = np.argsort(-probs, axis=-1)[:, :k]
    return top, np.take_along_axis(probs, top, axis=-1)
  return classify


def classify(module, variables, images: np.ndarray, k: int = 5):
  """Top-k (indices, probabilities) of a batch of preprocessed NHWC images."""
  return classifier(module, variables)(images, k)


def _read(path: str, size: int, preprocess: dict[str, Any]) -> np.ndarray:
  from PIL import Image

  from inception_jax import pretrained
  with Image.open(path) as img:
    return pretrained.preprocess_image(np.asarray(img.convert('RGB')), size, preprocess)


def main(argv: Sequence[str] | None = None) -> int:
  parser = entry.ArgumentParser(prog='python -m inception_jax.predict', description=__doc__)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--weights',
                      help='converted-weights directory (python -m inception_jax.convert --out)')
  source.add_argument('--workdir', help="a training workdir: classify with its checkpoint's "
                      'weights (the EMA pair when the run kept one)')
  parser.add_argument('--step', help="with --workdir: a checkpoint step or 'best' (default: the "
                      'latest)')
  parser.add_argument('--model', help='expected model name (checked against the weights)')
  parser.add_argument('--top', type=int, default=5, help='classes printed per image (default 5)')
  parser.add_argument('--batch_size', '--batch-size', type=int, default=32,
                      help='images per forward pass (default 32)')
  parser.add_argument('--json', action='store_true',
                      help='print one JSON object: {"model", "images": [{"image", "top": '
                           '[{"class", "name", "probability"}]}], "unreadable": [...]}')
  parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files to classify')
  args = parser.parse_args(argv)
  if args.top < 1 or args.batch_size < 1:
    parser.error('--top and --batch_size must be at least 1')
  entry.quiet(args.verbose)

  module, variables, meta = load_weights(args)
  from inception_jax import models
  if args.model:
    try:
      expected = models.info(args.model).name
    except ValueError as err:
      raise PredictError(f'--model {args.model}: {err}') from None
    if expected != meta['model']:
      raise PredictError(f'--model {args.model} but {args.weights or args.workdir} holds '
                         f'{meta["model"]} '
                         f'weights; drop --model or give weights of {expected}')
  if not module.num_classes:
    raise PredictError(f'{args.weights} has no classifier (0 classes: a feature extractor); '
                       'convert the weights with their classifier to classify images')
  names = class_names(meta, module.num_classes)
  size = meta.get('input_size') or models.info(meta['model']).input_size
  classify_batch = classifier(module, variables)
  k = min(args.top, module.num_classes)
  # One batch shape for all but, at most, the last batch: min(batch_size, number of images).
  batch_size = min(args.batch_size, len(args.images))

  results, unreadable = [], []

  def flush(paths, batch):
    if not batch:
      return
    images = np.stack(batch)
    if len(images) < batch_size:  # the last batch, padded: no second compilation
      images = np.concatenate([images, np.zeros((batch_size - len(images), *images.shape[1:]),
                                                images.dtype)])
    top, probs = classify_batch(images, k)
    for path, idx, p in zip(paths, top, probs):
      row = {'image': path, 'top': [{'class': int(i), 'name': names[i], 'probability': float(q)}
                                    for i, q in zip(idx, p)]}
      results.append(row)
      if not args.json:
        print(f'{path}: {meta["model"]}')
        for rank, c in enumerate(row['top'], 1):
          print(f'  {rank}. {c["name"]:<30s} {c["probability"]:7.2%}  (class {c["class"]})')
        sys.stdout.flush()

  paths, batch = [], []
  for path in args.images:
    try:
      batch.append(_read(path, size, meta['preprocess']))
      paths.append(path)
    except (OSError, ValueError) as err:  # missing, unreadable, or not an image PIL knows
      unreadable.append({'image': path, 'error': str(err)})
    if len(batch) == batch_size:
      flush(paths, batch)
      paths, batch = [], []
  flush(paths, batch)

  if args.json:
    print(json.dumps({'model': meta['model'], 'images': results, 'unreadable': unreadable},
                     indent=2))
  for bad in unreadable:
    print(f'{bad["image"]}: cannot read image ({bad["error"]}); skipped', file=sys.stderr)
  return 1 if unreadable else 0


if __name__ == '__main__':
  sys.exit(entry.run(main))
