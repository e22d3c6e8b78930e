"""What every experiment config shares: the fields, their defaults, and the ``:quick`` shrink.

Fields (each can be overridden on the command line, ``--config.optimizer.lr=0.1``; a field that
does not exist is an error):

* ``model.name``; ``model.options``: ``models.create`` options (``dropout_rate``, ``aux_logits``,
  ``variant``, a Conventions field such as ``bn_momentum``; unset ones keep the model's default);
  ``bn_running_var='unbiased'`` in every recipe (TF-slim's trainer; :func:`base`).
* ``dtype``: compute dtype, ``'float32'`` or ``'bfloat16'`` (parameters, BatchNorm statistics,
  losses and the optimizer stay in float32).
* ``data``: ``name`` (``'imagenet2012'``, any TFDS name, ``'imagefolder:PATH'``, ``'digits'``,
  ``'synthetic'``), ``image_size``, ``train_split``, ``eval_split``, and the preprocessing
  (:func:`data_fields`).
* ``batch_size`` (global, over all devices and hosts), ``eval_batch_size``.
* ``num_epochs``, or ``total_steps`` > 0 to give the length in steps instead.
* ``optimizer``: ``name`` ('rmsprop' or 'momentum'), ``lr`` at batch ``lr_batch`` (the rate used
  is ``lr * batch_size / lr_batch``, linear scaling at every batch), ``momentum``, ``nesterov``,
  ``rms_decay``, ``epsilon``, ``decay_rate`` every ``decay_epochs`` (staircase), ``warmup_epochs``
  (linear, from ``peak / warmup steps``), ``min_lr`` (absolute floor), ``weight_decay`` (L2 on
  kernels), ``clip_norm`` (global norm; 0 = none).
* ``loss``: ``label_smoothing``, ``aux_weight`` (of each auxiliary head).
* ``ema_decay`` per update of ``ema_batch`` images: Polyak averaging of the weights and of the
  BatchNorm statistics (TF's warm-up-aware decay); the decay per step is
  ``ema_decay ** (batch_size / ema_batch)``, so the average spans the same number of images at
  every batch (``optim.ema_step_decay``); 0 = none.
* ``nonfinite``: at a non-finite loss or gradient, ``'stop'`` the run (nothing written after
  the last good step) or ``'skip'`` that update and count it.
* ``seed``; ``init_seed`` and ``data_seed`` when the initial draw and the data order (with its
  augmentation) should have seeds of their own (each defaults to ``seed``).
* ``log_every_steps``, ``eval_every_epochs``, ``checkpoint_every_steps``,
  ``keep_checkpoints``, ``keep_best_checkpoints``, ``tensorboard``, ``init_from`` (a converted-
  weights directory to fine-tune from, ``python -m inception_jax.convert``).
* ``restart_if_unrestorable``: when checkpoints exist and none can be read (every one corrupt),
  move them to ``checkpoints_unreadable/`` and start over from step 0, instead of stopping.
* ``allow_config_change``: let a relaunch change what makes the resumed run differ from the one
  it continues (the seed, the rates, the schedule); listed in the log (:mod:`inception_jax.resume`).

Where a paper is silent, the configs follow TF-slim's ``train_image_classifier.py`` and its
``nets/*`` arg scopes, and say so.

Rates at the default batch (1024). The papers trained replicas of 32 images per update (v3:
50 replicas, v4: 20; Google's released v3 trainer ran synchronous replicas at an effective batch
of about 1,600, tensorflow/models issue 119; Xception trained synchronously on 60 GPUs) and their
0.045 is not a rate per 32 images that scales linearly to 1024 (that gives 1.44, with no
reproduction behind it). So every config takes its rate from a published large-batch
reproduction and anchors the linear rule there (``lr_batch``):

* RMSProp recipes (v3, v4, Inception-ResNet): the Cloud TPU Inception-v3 reference
  (tensorflow/tpu, ``models/experimental/inception/inception_v3.py``): ``0.165 * batch / 256``,
  0.66 at 1024, with TF's RMSProp 0.9 / 0.9 / 1.0.
* SGD-momentum recipes (v1, v2, Xception): Goyal et al. 2017 (Section 2.1-2.2):
  ``0.1 * batch / 256``, 0.4 at 1024, after a 5-epoch linear warm-up.

Both get :data:`WARMUP_EPOCHS` of linear warm-up (Goyal et al.'s gradual warm-up; the TPU
reference has one as an option). Small batches follow the same linear rule: at batch 32 the
RMSProp rate is 0.0206 and the SGD rate 0.0125 (TF-slim's GoogLeNet default is 0.01 at 32), not
the papers' 0.045, which was the rate of one asynchronous replica among 50. The warm-up runs at
every batch (5 of 100 epochs).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from inception_jax import errors
from inception_jax.data import defaults

# ImageNet-1k (ILSVRC-2012): the papers' dataset. The input pipeline for it is registered in
# inception_jax.data under this name.
IMAGENET = 'imagenet2012'

# The published large-batch rates (module docstring): (lr, at this batch).
RMSPROP_LR = (0.165, 256)  # Cloud TPU Inception-v3 reference
SGD_LR = (0.1, 256)  # Goyal et al. 2017
WARMUP_EPOCHS = 5.0  # Goyal et al. 2017, Section 2.2


def base(model: str, image_size: int) -> ml_collections.ConfigDict:
  """Defaults shared by the paper configs; each config then sets its recipe."""
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict()
  c.model.name = model
  c.model.options = ml_collections.ConfigDict()
  c.model.options.dropout_rate = config_dict.placeholder(float)
  c.model.options.bn_momentum = config_dict.placeholder(float)
  # BatchNorm's running variance averages the unbiased batch variance, n / (n - 1) times the
  # biased one, as the trainer of the published TF-slim checkpoints did (TF1's fused batch norm,
  # tensorflow/core/kernels/fused_batch_norm_op.cc, under TF-slim's train_image_classifier.py)
  # and Algorithm 2 of the BatchNorm paper (Ioffe & Szegedy 2015); 'biased' is Keras 3's choice
  # (models.conventions.Conventions.bn_running_var), for reproducing a Keras run.
  c.model.options.bn_running_var = 'unbiased'
  c.dtype = 'bfloat16'

  c.data = data_fields(IMAGENET, image_size)

  # 1024: the Cloud TPU v3 reference's default, 8 accelerators of 128.
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.num_epochs = 100.0
  c.total_steps = 0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'rmsprop'
  c.optimizer.lr, c.optimizer.lr_batch = RMSPROP_LR
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.rms_decay = 0.9
  c.optimizer.epsilon = 1.0
  c.optimizer.decay_rate = 0.94
  c.optimizer.decay_epochs = 2.0
  c.optimizer.warmup_epochs = WARMUP_EPOCHS
  c.optimizer.min_lr = 0.0
  c.optimizer.weight_decay = 4e-5
  c.optimizer.clip_norm = 0.0

  c.loss = ml_collections.ConfigDict()
  c.loss.label_smoothing = 0.0
  c.loss.aux_weight = 0.4  # TF-slim's weight of the v3 aux head

  # The papers' 0.9999 per update of 32 images: a horizon of about 320,000 images at any batch.
  c.ema_decay = 0.9999
  c.ema_batch = 32
  c.nonfinite = 'stop'  # at a NaN/Inf loss or gradient: 'stop', or 'skip' the update (counted)
  c.seed = 0
  # Unset: ``seed``. Set one to vary the other alone (a sweep's seeds then move only that one).
  c.init_seed = config_dict.placeholder(int)  # the initial weights' draw
  c.data_seed = config_dict.placeholder(int)  # the data order and augmentation
  c.log_every_steps = 100
  c.eval_every_epochs = 1.0
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.keep_best_checkpoints = 1
  c.tensorboard = True
  c.init_from = ''
  # Checkpoints exist and every one is corrupt: stop (False), or set them aside and start over.
  c.restart_if_unrestorable = False
  # A relaunch that changes the seed, the rates or their schedule (anything that makes the resumed
  # run differ from the one it continues) is refused unless this is set (inception_jax.resume);
  # never itself counted as a change.
  c.allow_config_change = False
  return c


def data_fields(name: str, image_size: int) -> ml_collections.ConfigDict:
  """``config.data``: the dataset and TF-slim's ``inception_preprocessing``, knob by knob.

  Preprocessing (TFDS datasets and image folders; :mod:`inception_jax.data.preprocess`):

  * train: a distorted bounding-box crop (``crop_*``: area fraction ``crop_area_min`` to
    ``crop_area_max``, aspect ``crop_aspect_min`` to ``crop_aspect_max``, covering at least
    ``crop_min_object_covered`` of the dataset's boxes when ``use_bboxes`` and it has them,
    ``crop_max_attempts`` tries, else the whole image), decoded from the JPEG window alone;
    a resize to ``image_size`` (``train_interpolation``, or a random method with
    ``random_interpolation``); a random left-right ``flip``; ``color_distortion`` ``'none'``,
    ``'fast'`` (TF-slim's default: brightness and saturation) or ``'full'`` (also hue and
    contrast, in random order);
  * eval: ``eval_resize='crop_then_resize'`` (TF-slim: the central ``eval_crop_fraction``, then
    a resize to ``image_size``) or ``'resize_then_crop'`` (timm and torchvision: the shorter side
    to ``eval_resize_size``, default ``image_size / eval_crop_fraction``, then the central
    square), with ``eval_interpolation`` and ``eval_antialias``;
  * both: ``normalization`` ``'inception'`` ([-1, 1]) or the input convention of converted
    weights (``'imagenet'``, ``'caffe_bgr'``, ``'facenet'``); ``pp_train``/``pp_eval`` replace the
    whole pipeline by an op string (``'inception_crop|resize(299)|flip_lr|value_range(-1, 1)'``).

  Sources: ``data_dir`` (TFDS's data dir, empty: ``~/tensorflow_datasets``), ``manual_dir``
  (empty: ``DATA_DIR/downloads/manual``, where ImageNet's tars go), ``download`` (let TFDS
  download and prepare a dataset that allows it), ``holdout_fraction`` (an image folder without
  ``val/``), ``threads`` (tf.data threads, 0 = automatic), ``augment`` (digits only: random
  shifts, in 8x8 pixels), ``synthetic_*`` (the synthetic dataset's sizes).
  """
  d = ml_collections.ConfigDict()
  d.name = name
  d.image_size = image_size
  d.train_split = 'train'
  d.eval_split = 'validation'
  d.data_dir = ''
  d.manual_dir = ''
  d.download = False
  d.holdout_fraction = 0.1
  d.threads = 0
  d.update(defaults.PREPROCESS)  # TF-slim's inception_preprocessing
  d.augment = 0.0
  d.update(defaults.SYNTHETIC)  # ImageNet-1k's sizes
  return d


def use_sgd(c: ml_collections.ConfigDict) -> None:
  """SGD with momentum 0.9 at Goyal et al.'s rate (module docstring)."""
  c.optimizer.name = 'momentum'
  c.optimizer.lr, c.optimizer.lr_batch = SGD_LR


def quick(c: ml_collections.ConfigDict, *, image_size: int, num_epochs: float, lr: float,
          batch_size: int = 64) -> ml_collections.ConfigDict:
  """The same model and recipe on scikit-learn's digits, for a CPU in minutes.

  Kept: the optimizer and its hyper-parameters, label smoothing, aux weights, the EMA, and the
  shape of the schedule: warm-up and decay period shrink with the length, so the quick run
  anneals to the same final/peak ratio as the full recipe (a run that ends at its peak rate
  ends with weights that jump from step to step and BatchNorm statistics that lag them).
  Changed: the data (10 classes, 1,438 training images upsampled to ``image_size``), the
  length, the batch and the learning rate (``lr`` at this batch; the RMSProp recipes'
  gradients, norm 5-450 on the digits at these sizes, are clipped to 2.0 at every step, so an
  update's size is the clip times the rate whatever the batch: they train at batch 32, the
  updates of batch 64 for half the CPU time, and at a higher rate than the SGD recipes),
  float32 compute (bfloat16 is slow on CPUs), and BatchNorm's running averages, which decay at
  0.9 so that they settle within the few hundred steps of the run (TF-slim's 0.9997 needs
  thousands).
  """
  shrink = num_epochs / c.num_epochs
  c.optimizer.decay_epochs *= shrink
  c.optimizer.warmup_epochs *= shrink
  c.dtype = 'float32'
  c.data.name = 'digits'
  c.data.image_size = image_size
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.augment = 1.0  # random shifts of up to one 8x8 pixel
  c.batch_size = batch_size
  c.eval_batch_size = 128
  c.num_epochs = num_epochs
  c.optimizer.lr = lr
  c.optimizer.lr_batch = batch_size
  c.model.options.bn_momentum = 0.9
  c.log_every_steps = 20
  c.eval_every_epochs = 5.0
  c.checkpoint_every_steps = 200
  return c


class ConfigArgumentError(errors.UserError, ValueError):
  """A ``get_config`` argument the configs do not take (``--config=v1.py:quik``)."""


def parse_arg(arg: str | None) -> bool:
  """``get_config``'s argument: None for the paper recipe, ``'quick'`` for the CPU version."""
  if arg in (None, ''):
    return False
  if arg == 'quick':
    return True
  raise ConfigArgumentError(f'unknown config argument {arg!r}; the configs take none (the paper '
                            'recipe) or ":quick" (the CPU version)')
