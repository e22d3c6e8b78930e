r"""Inception-ResNet-v2 on ImageNet: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections".

Recipe, Section 5, the same as Inception-v4's (see v4.py): RMSProp (TensorFlow's: decay 0.9,
momentum 0.9, epsilon 1.0 inside the square root), learning rate 0.045 decayed every two epochs
by 0.94, evaluation with a running average of the parameters (EMA 0.9999), gradient clipping 2.0
and label smoothing 0.1 (from Inception v3), L2 4e-5 on kernels (TF-slim). The residual scaling
(Section 3.3) is part of the model. Rate used: ``0.045 * batch_size / 32`` (linear scaling), 1.44
at the default batch of 1024.

Published (single crop, ImageNet val, ../shared/REFERENCE.md): TF-slim 80.4 / 95.3 top-1/top-5;
timm 80.43 / 95.31; Keras 80.3 / 95.3; paper Table 2, 19.9% / 4.9% error.

    python -m experiments.train --config=inception_resnet_v2.py --workdir=workdirs/irv2

Quick version, digits on a CPU: ``--config=inception_resnet_v2.py:quick``.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_resnet_v2', image_size=299)
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  if common.parse_arg(arg):
    common.quick(c, image_size=75, num_epochs=6, lr=0.09)
  return c
