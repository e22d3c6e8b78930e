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

Quick version, digits on a CPU: 270 steps of 32 digits at 75x75 (6 epochs), RMSProp at 0.3,
annealed as above. Measured 2026-12-02: **77.44% raw, 70.75% EMA** on the 359 held-out digits,
7 min 25 s on the 2-core CPU (load average 2.0-2.4); 180 steps: 62.67% / 66.57%. Below the bar.
The gradient's global norm starts at about 7,000 (v3's 450), and the training loss spikes above
chance while the top-1 rises (confident mistakes), as Inception-ResNet-v1's did at 0.3, whose
fix was 0.2; 0.2 here is not yet measured (BENCHMARKS.md, Every recipe learns).

    python -m experiments.train --config=v4.py:quick --workdir=workdirs/v4_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v4', image_size=299)
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  c.model.options.scan = True  # runs of identical blocks as one nn.scan (models/runs.py)
  if common.parse_arg(arg):
    # Batch 32: the update is clipped (the digits' gradients, norm 4-6,400, to 2.0), so its
    # size does not grow with the batch; 270 updates of 32 cost half the CPU time of 64's.
    common.quick(c, image_size=75, num_epochs=6, lr=0.3, batch_size=32)
    # XLA:CPU runs a scan's weight gradients several times slower than unrolled blocks
    # (BENCHMARKS.md, Compile time of scanned blocks): the CPU version trains unrolled.
    c.model.options.scan = False
  return c
