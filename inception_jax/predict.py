"""Classify images with converted weights or a training run's checkpoint; print the top 5.

    python -m inception_jax.predict --model inception_v3 --weights DIR IMAGE [IMAGE ...]
    python -m inception_jax.predict --workdir WORKDIR [--step N|best] IMAGE [IMAGE ...]

``--weights``: a converted-weights directory written by ``python -m inception_jax.convert`` (or
``inception_jax.pretrained.save``); its ``model.json`` names the model, its conventions and the
preprocessing its weights expect. ``--workdir``: a training workdir; its latest checkpoint (or
``--step``), the model and preprocessing of its recorded config, the EMA weights when the run kept
them; classes are ImageNet's names for a 1000-class model, else numbers. A workdir, a step or
weights that are not there is one line, with exit status 1.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from inception_jax import errors, models, pretrained


def classify(module, variables, images: np.ndarray, k: int = 5):
  """Top-k (indices, probabilities) of a batch of preprocessed NHWC images."""
  logits = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, images)
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))
  top = np.argsort(-probs, axis=-1)[:, :k]
  return top, np.take_along_axis(probs, top, axis=-1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--weights', help='converted-weights directory')
  source.add_argument('--workdir', help='training workdir, to classify with its checkpoint')
  parser.add_argument('--step', help="with --workdir: checkpoint step or 'best' (default: latest)")
  parser.add_argument('--model', help='expected model name (checked against the weights)')
  parser.add_argument('--top', type=int, default=5)
  parser.add_argument('images', nargs='+')
  args = parser.parse_args(argv)

  try:
    if args.workdir:
      module, variables, meta = _from_workdir(args.workdir, args.step)
    else:
      module, variables, meta = pretrained.load(args.weights)
  except errors.UserError as err:  # a workdir, step or weights that are not there: one line
    print(f'FATAL: {err}', file=sys.stderr)
    return 1
  source = args.weights or args.workdir
  if args.model and models.info(args.model).name != meta['model']:
    parser.error(f'--model {args.model} but {source} holds {meta["model"]} weights')
  if args.weights and module.num_classes != 1000:
    parser.error(f'{args.weights} has {module.num_classes} classes; predict prints ImageNet-1k '
                 'class names and needs a 1000-class model')
  from PIL import Image
  size = meta.get('input_size') or models.info(meta['model']).input_size
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
  classes = (pretrained.imagenet_classes() if module.num_classes == 1000 else
             [str(i) for i in range(module.num_classes)])
  top, probs = classify(module, variables, np.stack(batch), k=args.top)
  for path, idx, p in zip(names, top, probs):
    print(f'{path}: {meta["model"]}')
    for rank, (i, q) in enumerate(zip(idx, p), 1):
      print(f'  {rank}. {classes[i]:<30s} {q:7.2%}  (class {i})')
  return 0


def _from_workdir(workdir: str, step: str | None):
  """``(module, variables, meta)`` of a training workdir's checkpoint: the model and input of its
  latest recorded config, the EMA pair when the run kept one."""
  import ml_collections
  from inception_jax import checkpoint, resume, train
  checkpoint.Checkpointer.existing(workdir).close()  # one line when there is nothing to read
  config = ml_collections.ConfigDict(resume.saved_config(workdir))
  if step not in (None, 'best') and not step.isdigit():
    raise errors.UserError(f"--step {step}: give a step number or 'best'")
  which = step if step in (None, 'best') else int(step)
  try:
    s, state = train.restore_state(config, workdir, which)
  except checkpoint.CheckpointError as err:  # storage: the step, the path and the cause
    raise errors.UserError(str(err)) from err
  ema = bool(config.get('ema_decay'))
  variables = {'params': state.ema_params if ema else state.params,
               'batch_stats': state.ema_batch_stats if ema else state.batch_stats}
  preprocess = dict(pretrained.NORMALIZATIONS[config.data.get('normalization', 'inception')],
                    crop_pct=config.data.get('eval_crop_fraction', 0.875))
  return s.model, variables, {'model': models.info(config.model.name).name,
                              'preprocess': preprocess, 'input_size': config.data.image_size}


if __name__ == '__main__':
  sys.exit(main())
