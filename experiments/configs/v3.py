r"""Inception v3 on ImageNet: Szegedy et al. 2015, "Rethinking the Inception Architecture".

Recipe, Section 8 ("Training Methodology"): RMSProp with decay 0.9 and epsilon 1.0 (TensorFlow's:
inside the square root; momentum 0.9 as TF-slim's ``rmsprop_momentum``), the rate decayed every
two epochs by 0.94, gradient clipping at 2.0, evaluation with a running average of the parameters
(EMA 0.9999 per update of 32 images, here of the BatchNorm statistics too, as the TPU reference);
100 epochs. Section 7: label smoothing 0.1. The auxiliary head's loss weighs 0.4 and the L2
weight decay is 4e-5 on kernels (TF-slim's ``train_image_classifier.py`` and
``inception_v3_arg_scope``; the paper gives neither).

Rate: the paper's 0.045 was per asynchronous replica of 32 (50 replicas). The Cloud TPU reference
(tensorflow/tpu, ``models/experimental/inception/inception_v3.py``) trains this recipe at batch
1024 with ``0.165 * batch / 256``: 0.66 at the default batch, after 5 epochs of linear warm-up
(experiments/configs/common.py). Length 100 epochs; the rate ends at 0.94^47 = 0.055 of its peak.

Published (single crop, ImageNet val): paper 78.8 / 94.4 top-1/top-5 (Table 3, 21.2% / 5.6%
error); TF-slim 78.0 / 93.9; Keras 77.9 / 93.7.

    python -m experiments.train --config=v3.py --workdir=workdirs/v3

Quick version, digits on a CPU: 315 steps of 32 digits at 75x75 (7 epochs), RMSProp at 0.3,
annealed as above; fewer updates (225 or 180 steps) left it still learning at the end.
Its held-out accuracy and time are in the README's quick table (how they were
measured: BENCHMARKS.md, "Every recipe learns").

    python -m experiments.train --config=v3.py:quick --workdir=workdirs/v3_quick
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.base('inception_v3', image_size=299)
  c.model.options.aux_logits = True
  c.optimizer.clip_norm = 2.0
  c.loss.label_smoothing = 0.1
  c.loss.aux_weight = 0.4
  if common.parse_arg(arg):
    # Batch 32: the update is clipped (the digits' gradients, norm 5-450, to 2.0), so its size
    # does not grow with the batch; 315 updates of 32 cost half the CPU time of 315 of 64.
    common.quick(c, image_size=75, num_epochs=7, lr=0.3, batch_size=32)
  return c
