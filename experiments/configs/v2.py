r"""Inception v2 (BN-Inception) on ImageNet: Ioffe & Szegedy 2015, "Batch Normalization".

Recipe, Section 4.2.1 ("Accelerating BN Networks"), the BN-x30 network: SGD with momentum (0.9;
the momentum value is not given), dropout removed, the L2 weight decay reduced 5x, the
learning-rate decay made 6x faster, LRN removed. The paper gives neither Inception's L2 weight nor
its decay schedule: we take TF-slim's 4e-5 (so 8e-6 here) and GoogLeNet's 4% every 8 epochs (so
4% every 4/3 epochs). No weight averaging (none is mentioned; TF-slim's default has none).

Rate: BN-x30's 0.045 was per update of 32 on asynchronous replicas (Section 4.2); at large batches
we take Goyal et al. 2017's SGD rule, ``0.1 * batch / 256`` after 5 epochs of linear warm-up:
0.4 at the default batch of 1024 (experiments/configs/common.py). Length: not given; 100 epochs,
which end at 0.96^71 = 0.055 of the peak rate.

Published (single crop, ImageNet val): paper, single network, 74.8 / 92.2 top-1/top-5; TF-slim's
inception_v2 73.9 / 91.8.

    python -m experiments.train --config=v2.py --workdir=workdirs/v2

Quick version, digits on a CPU: 225 steps of 64 digits at 64x64 (10 epochs), SGD at 0.09 per
batch of 64, annealed as above (the recipe keeps no average); its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=v2.py:quick --workdir=workdirs/v2_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v2', image_size=224)
  common.use_sgd(c)
  c.optimizer.decay_rate = 0.96
  c.optimizer.decay_epochs = 8.0 / 6.0
  c.optimizer.weight_decay = 4e-5 / 5
  c.ema_decay = 0.0
  c.data.crop_area_min = 0.08  # GoogLeNet's augmentation, which BN-Inception keeps
  if common.parse_arg(arg):
    common.quick(c, image_size=64, num_epochs=10, lr=0.09)
  return c
