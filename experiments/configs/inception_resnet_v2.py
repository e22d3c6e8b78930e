r"""Inception-ResNet-v2 on ImageNet: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections".

Recipe, Section 5, the same as Inception-v4's (see v4.py): RMSProp (TensorFlow's: decay 0.9,
momentum 0.9, epsilon 1.0 inside the square root), the rate decayed every two epochs by 0.94,
evaluation with a running average of the parameters (EMA 0.9999 per update of 32 images, with the
BatchNorm statistics), gradient clipping 2.0 and label smoothing 0.1 (from Inception v3), L2 4e-5
on kernels (TF-slim); dropout 0.2 before the classifier (TF-slim's keep 0.8, the model's
default). The residual scales 0.17 / 0.10 / 0.20 of the 35x35 / 17x17 / 8x8 blocks are TF-slim's
choice within Section 3.3's 0.1 to 0.3; without scaling, training dies early (Section 3.3).

Rate: v3's large-batch rate (see v3.py), the Cloud TPU reference's ``0.165 * batch / 256``: 0.66 at
the default batch of 1024, after 5 epochs of linear warm-up. Length 100 epochs; the rate ends at
0.94^47 = 0.055 of its peak.

Published (single crop, ImageNet val): TF-slim 80.4 / 95.3 top-1/top-5; timm 80.43 / 95.31; Keras
80.3 / 95.3; paper Table 2, 19.9% / 4.9% error.

    python -m experiments.train --config=inception_resnet_v2.py --workdir=workdirs/irv2

Quick version, digits on a CPU: 225 steps of 32 digits at 75x75 (5 epochs), RMSProp at 0.2,
Inception-ResNet-v1's quick settings, scanned; its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=inception_resnet_v2.py:quick --workdir=workdirs/irv2_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_resnet_v2', image_size=299)
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  c.model.options.scan = True  # runs of identical blocks as one nn.scan (models/repeat.py)
  if common.parse_arg(arg):
    # Batch 32: the update is clipped (the digits' gradients, norm 5-450, to 2.0), so its
    # size does not grow with the batch; 225 updates of 32 cost half the CPU time of 64's.
    # Inception-ResNet-v1's quick settings (0.3 blew its logits up; see its config).
    common.quick(c, image_size=75, num_epochs=5, lr=0.2, batch_size=32)
  return c
