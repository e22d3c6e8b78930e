r"""Xception on ImageNet: Chollet 2017, "Xception: Deep Learning with Depthwise Separable
Convolutions".

Recipe, Section 4.2 ("Optimization configuration", tuned for Inception v3 and reused unchanged):
SGD with momentum 0.9, the rate decayed by 0.94 every 2 epochs; evaluation with Polyak averaging
of the parameters (EMA 0.9999 per update of 32 images, with the BatchNorm statistics). Section
4.3: L2 weight decay 1e-5, dropout 0.5 before the classifier (the model's default), no auxiliary
tower. Length: not given; 100 epochs, which end at 0.94^47 = 0.055 of the peak rate.

Rate: the paper's 0.045 comes with synchronous SGD on 60 GPUs (its "Training infrastructure"
paragraph) and no stated batch; we take Goyal et al. 2017's SGD rule, ``0.1 * batch / 256`` after
5 epochs of linear warm-up: 0.4 at the default batch of 1024 (experiments/configs/common.py).

Published (single crop, ImageNet val): paper 79.0 / 94.5 top-1/top-5 (Table 1); Keras 79.0 /
94.5; timm 79.06 / 94.40.

    python -m experiments.train --config=xception.py --workdir=workdirs/xception

Quick version, digits on a CPU: 225 steps of 32 digits at 48x48 (5 epochs), SGD at 0.045 per
batch of 32, annealed as above; its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=xception.py:quick --workdir=workdirs/xception_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('xception', image_size=299)
  common.use_sgd(c)
  c.optimizer.weight_decay = 1e-5
  c.model.options.scan = True  # runs of identical blocks as one nn.scan (models/repeat.py)
  if common.parse_arg(arg):
    # Batch 32 at the same rate per update: the mean gradient does not grow with the batch, so
    # 225 updates of 32 move the weights as 225 of 64 (with more noise) in half the CPU time.
    common.quick(c, image_size=48, num_epochs=5, lr=0.045, batch_size=32)
    # XLA:CPU runs a scan's weight gradients several times slower than unrolled blocks
    # (BENCHMARKS.md, Compile time of scanned blocks): the CPU version trains unrolled.
    c.model.options.scan = False
  return c
