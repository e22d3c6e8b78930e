r"""Xception on ImageNet: Chollet 2017, "Xception: Deep Learning with Depthwise Separable
Convolutions".

Recipe, Section 4.2 ("Optimization configuration", tuned for Inception v3 and reused unchanged):
SGD with momentum 0.9, learning rate 0.045 decayed by 0.94 every 2 epochs; evaluation with
Polyak averaging of the parameters (EMA 0.9999). Section 4.3: L2 weight decay 1e-5, dropout 0.5
before the classifier (the model's default), no auxiliary tower. The batch is not given
(TF-slim's 32 per update); length: 100 epochs (our choice). Rate used: ``0.045 * batch_size / 32``
(linear scaling), 1.44 at the default batch of 1024; warm up with
``--config.optimizer.warmup_epochs`` if that is unstable.

Published (single crop, ImageNet val, ../shared/REFERENCE.md): paper 79.0 / 94.5 top-1/top-5
(Table 1); Keras 79.0 / 94.5; timm 79.06 / 94.40.

    python -m experiments.train --config=xception.py --workdir=workdirs/xception

Quick version, digits on a CPU: ``--config=xception.py:quick``.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('xception', image_size=299)
  c.optimizer.name = 'momentum'
  c.optimizer.weight_decay = 1e-5
  if common.parse_arg(arg):
    common.quick(c, image_size=48, num_epochs=10, lr=0.045)
  return c
