r"""Inception-ResNet-v1 on ImageNet: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections".

Recipe, Section 5, the same as Inception-v4's (see v4.py): RMSProp (TensorFlow's: decay 0.9,
momentum 0.9, epsilon 1.0 inside the square root), learning rate 0.045 decayed every two epochs
by 0.94, evaluation with a running average of the parameters (EMA 0.9999), gradient clipping 2.0
and label smoothing 0.1 (from Inception v3), L2 4e-5 on kernels (TF-slim). Rate used:
``0.045 * batch_size / 32`` (linear scaling), 1.44 at the default batch of 1024.

Published: paper only (no public ImageNet weights): Table 2, single crop, 21.3% / 5.5% top-1/top-5
error (78.7 / 94.5).

    python -m experiments.train --config=inception_resnet_v1.py --workdir=workdirs/irv1

Quick version, digits on a CPU: ``--config=inception_resnet_v1.py:quick``.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_resnet_v1', image_size=299)
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  if common.parse_arg(arg):
    common.quick(c, image_size=75, num_epochs=6, lr=0.09)
  return c
