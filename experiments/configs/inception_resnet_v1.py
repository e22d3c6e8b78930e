r"""Inception-ResNet-v1 on ImageNet: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections".

Recipe, Section 5, the same as Inception-v4's (see v4.py): RMSProp (TensorFlow's: decay 0.9,
momentum 0.9, epsilon 1.0 inside the square root), the rate decayed every two epochs by 0.94,
evaluation with a running average of the parameters (EMA 0.9999 per update of 32 images, with the
BatchNorm statistics), gradient clipping 2.0 and label smoothing 0.1 (from Inception v3), L2 4e-5
on kernels (TF-slim). Dropout before the classifier: keep probability 0.8 (Figure 15), i.e. rate
0.2 (facenet-pytorch's model defaults to 0.6). The residual scales 0.17 / 0.10 / 0.20 of the
35x35 / 17x17 / 8x8 blocks are TF-slim's choice within Section 3.3's 0.1 to 0.3.

Rate: v3's large-batch rate (see v3.py), the Cloud TPU reference's ``0.165 * batch / 256``: 0.66 at
the default batch of 1024, after 5 epochs of linear warm-up. Length 100 epochs; the rate ends at
0.94^47 = 0.055 of its peak.

Published: paper only (no public ImageNet weights): Table 2, single crop, 21.3% / 5.5% top-1/top-5
error (78.7 / 94.5).

    python -m experiments.train --config=inception_resnet_v1.py --workdir=workdirs/irv1

Quick version, digits on a CPU: 225 steps of 32 digits at 75x75 (5 epochs), RMSProp at 0.2,
annealed as above, scanned (faster to compile, as fast per step); at 0.3 the first steps' logits
blew up (training loss 7.2 against chance's 2.3) and the raw weights ended far below their
average. Its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=inception_resnet_v1.py:quick --workdir=workdirs/irv1_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_resnet_v1', image_size=299)
  c.model.options.dropout_rate = 0.2  # Figure 15: keep 0.8
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  c.model.options.scan = True  # runs of identical blocks as one nn.scan (models/repeat.py)
  if common.parse_arg(arg):
    # Batch 32: the update is clipped (the digits' gradients, norm 5-450, to 2.0), so its
    # size does not grow with the batch; 225 updates of 32 cost half the CPU time of 64's.
    common.quick(c, image_size=75, num_epochs=5, lr=0.2, batch_size=32)
  return c
