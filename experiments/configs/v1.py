r"""Inception v1 (GoogLeNet) on ImageNet: Szegedy et al. 2014, "Going deeper with convolutions".

Recipe, Section 6 ("Training Methodology"): SGD with momentum 0.9, the learning rate decreased by
4% at a fixed interval, Polyak averaging of the parameters for the final model (EMA 0.9999 per
update of 32 images, with the BatchNorm statistics); Section 5: the two auxiliary losses weighted
0.3 each. L2 4e-5 on kernels: TF-slim's ``inception_v1_arg_scope`` (the paper gives none). The
model is TF-slim's BatchNorm GoogLeNet (``variant='bn'``), the network of the published weights;
``--config.model.options.variant=paper`` trains Table 1's network instead.

Schedule: the paper's 4% every 8 epochs belongs to its very long asynchronous runs (Ioffe &
Szegedy 2015, Figure 3: Inception reached its accuracy after 31 million steps of 32, about 775
epochs); over 100 epochs it would end at 0.61 of the peak and never anneal. For this BatchNorm
GoogLeNet we take BN-Inception's acceleration of the same schedule (Ioffe & Szegedy 2015,
Section 4.2.1: decay 6x faster), 4% every 4/3 epochs: 100 epochs end at 0.96^71 = 0.055 of the
peak.

Rate: Goyal et al. 2017's SGD rule, ``0.1 * batch / 256`` after 5 epochs of linear warm-up: 0.4
at the default batch of 1024 (0.0125 at batch 32, near TF-slim's 0.01; experiments/configs/
common.py).

Published (single crop, ImageNet val): TF-slim 69.8 / 89.6 top-1/top-5; torchvision 69.78 /
89.53. The paper reports only its 7-model, 144-crop ensemble: 6.67% top-5 error.

    python -m experiments.train --config=v1.py --workdir=workdirs/v1

Quick version, digits on a CPU (the README's main job): 180 steps of 32 digits at 65x65 (4
epochs); its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=v1.py:quick --workdir=workdirs/v1_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v1', image_size=224)
  common.use_sgd(c)
  c.optimizer.decay_rate = 0.96
  c.optimizer.decay_epochs = 8.0 / 6.0
  c.optimizer.weight_decay = 4e-5
  c.loss.aux_weight = 0.3
  c.data.crop_area_min = 0.08  # Section 6: patches of 8% to 100% of the image area
  if common.parse_arg(arg):
    # 4 epochs fit in 5 minutes on 2 cores; batch 32 gives twice the updates of 64 for them.
    common.quick(c, image_size=65, num_epochs=4, lr=0.025, batch_size=32)
  return c


def sweep_recipe(add, arg=None):
  """The parts of the recipe, one at a time against it: the auxiliary heads (Section 5),
  v3's label smoothing (Szegedy et al. 2015, Section 7) and v3's RMSProp with clipping at 2.0
  (its Section 8; the ``:quick`` rate of v3.py) in place of SGD with momentum. The EMA's part is
  in every run: its raw and averaged weights are both evaluated."""
  del arg
  add(name='recipe', baseline=True)
  add({'loss.aux_weight': 0.0}, name='no aux heads')
  add({'loss.label_smoothing': 0.1}, name='label smoothing 0.1')
  add({'optimizer.name': 'rmsprop', 'optimizer.lr': 0.3, 'optimizer.clip_norm': 2.0},
      name='rmsprop (v3)')
