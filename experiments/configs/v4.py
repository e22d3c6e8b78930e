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

Quick version, digits on a CPU: ``--config=v4.py:quick``.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v4', image_size=299)
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  c.model.options.scan = True  # runs of identical blocks as one nn.scan (models/runs.py)
  if common.parse_arg(arg):
    common.quick(c, image_size=75, num_epochs=6, lr=0.2)
    # XLA:CPU runs a scan's weight gradients several times slower than unrolled blocks
    # (BENCHMARKS.md, Compile time of scanned blocks): the CPU version trains unrolled.
    c.model.options.scan = False
  return c
