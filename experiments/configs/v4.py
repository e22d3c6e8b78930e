r"""Inception-v4 on ImageNet: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact
of Residual Connections".

Recipe, Section 5 ("Training Methodology"): RMSProp with decay 0.9 and epsilon 1.0 (TensorFlow's,
momentum 0.9), the rate decayed every two epochs by 0.94, evaluation with a running average of the
parameters (EMA 0.9999 per update of 32 images, with the BatchNorm statistics); 20 replicas. From
Inception v3's recipe, which the paper builds on: gradient clipping at 2.0 and label smoothing
0.1. The paper is silent on the weight decay (TF-slim's 4e-5 on kernels) and the length (100
epochs, as v3). No auxiliary head.

Rate: v3's large-batch rate (see v3.py), the Cloud TPU reference's ``0.165 * batch / 256``: 0.66 at
the default batch of 1024, after 5 epochs of linear warm-up. Length 100 epochs; the rate ends at
0.94^47 = 0.055 of its peak.

Published (single crop, ImageNet val): TF-slim 80.2 / 95.2 top-1/top-5; timm 80.14 / 94.98; paper
Table 2, 20.0% / 5.0% error.

    python -m experiments.train --config=v4.py --workdir=workdirs/v4

Quick version, digits on a CPU: 629 steps of 32 digits at 75x75 (14 epochs), RMSProp at 0.1,
annealed as above. Inception-v4 starts with a gradient of global norm about 7,000 (v3's 450), in
its stem (a deep BatchNorm network without shortcuts, exploding towards its input at
initialisation); clipped to 2.0, the first ~100 updates go to those layers and learning starts
late, so it needs more updates than the others, and at 0.2 the result depended on rounding.
Its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=v4.py:quick --workdir=workdirs/v4_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v4', image_size=299)
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  c.model.options.scan = True  # runs of identical blocks as one nn.scan (models/repeat.py)
  if common.parse_arg(arg):
    # Batch 32: the update is clipped (the digits' gradients, norm 4-7,000, to 2.0), so its
    # size does not grow with the batch; 629 updates of 32 cost half the CPU time of 64's.
    common.quick(c, image_size=75, num_epochs=14, lr=0.1, batch_size=32)
  return c
