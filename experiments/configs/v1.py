r"""Inception v1 (GoogLeNet) on ImageNet: Szegedy et al. 2014, "Going deeper with convolutions".

Recipe, Section 6 ("Training Methodology"): SGD with momentum 0.9, the learning rate decreased by
4% every 8 epochs, Polyak averaging of the parameters for the final model; Section 5: the two
auxiliary losses weighted 0.3 each. The paper is silent on the initial rate, batch, weight decay
and length; those follow TF-slim (``train_image_classifier.py``: lr 0.01 at batch 32;
``inception_v1_arg_scope``: L2 4e-5) and 100 epochs (our choice). EMA decay 0.9999 (the paper
gives none). The model is TF-slim's BatchNorm GoogLeNet (``variant='bn'``), the network of the
published weights; ``--config.model.options.variant=paper`` trains Table 1's network instead.
Rate used: ``0.01 * batch_size / 32`` (linear scaling), 0.32 at the default batch of 1024.

Published (single crop, ImageNet val, ../shared/REFERENCE.md): TF-slim 69.8 / 89.6 top-1/top-5;
torchvision 69.78 / 89.53. The paper reports only its 7-model, 144-crop ensemble: 6.67% top-5
error.

    python -m experiments.train --config=v1.py --workdir=workdirs/v1

Quick version, digits on a CPU (the README's main job): 180 steps of 32 digits at 65x65 (4
epochs), about 5 minutes on an idle 2-core CPU (estimated from the step count), 98.6% EMA top-1
on the 359 held-out digits (BENCHMARKS.md).

    python -m experiments.train --config=v1.py:quick --workdir=workdirs/v1_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v1', image_size=224)
  c.optimizer.name = 'momentum'
  c.optimizer.lr = 0.01
  c.optimizer.lr_batch = 32
  c.optimizer.decay_rate = 0.96
  c.optimizer.decay_epochs = 8.0
  c.optimizer.weight_decay = 4e-5
  c.loss.aux_weight = 0.3
  c.ema_decay = 0.9999
  c.data.crop_area_min = 0.08  # Section 6: patches of 8% to 100% of the image area
  if common.parse_arg(arg):
    # 4 epochs fit in 5 minutes on 2 cores; batch 32 gives twice the updates of 64 for them.
    common.quick(c, image_size=65, num_epochs=4, lr=0.025, batch_size=32)
  return c
