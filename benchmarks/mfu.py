"""Model FLOPs utilisation: ``images/s x FLOPs per image / peak FLOP/s``.

FLOPs per image are the eval forward pass counted by :func:`inception_jax.models.flops` (2 per
multiply-add); a train step counts 3x that (the forward, and a backward twice as costly:
gradients of activations and of weights), the usual convention (Kaplan et al. 2020, Sec. 2.1);
the aux heads, BatchNorm's statistics and the optimizer are not counted.
"""

from __future__ import annotations

MODES = ('train', 'infer')
TRAIN_FLOPS_FACTOR = 3

# Dense (no 2:4 sparsity) peak FLOP/s per device, by a substring of JAX's ``device_kind`` (first
# match wins) and compute dtype. float32 on NVIDIA GPUs is the TF32 tensor-core peak: XLA runs
# float32 convolutions in TF32 at JAX's default precision. Sources: NVIDIA's H100 and A100
# datasheets (their tables give the sparse figure, twice these; H200 has H100 SXM's compute),
# Cloud TPU system-architecture pages (bf16 per chip).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ('H100 PCIe', {'bfloat16': 756.5e12, 'float32': 378e12}),
    ('H100', {'bfloat16': 989.4e12, 'float32': 494.7e12}),  # SXM
    ('H200', {'bfloat16': 989.4e12, 'float32': 494.7e12}),
    ('A100', {'bfloat16': 312e12, 'float32': 156e12}),
    ('TPU v4', {'bfloat16': 275e12}),
    ('TPU v5 lite', {'bfloat16': 197e12}),  # v5e
    ('TPU v5e', {'bfloat16': 197e12}),
    ('TPU v5', {'bfloat16': 459e12}),  # v5p
    ('TPU v6', {'bfloat16': 918e12}),  # v6e (Trillium)
]


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The :data:`PEAK_FLOPS` entry for this device and dtype, or None when unknown."""
  for key, peaks in PEAK_FLOPS:
    if key.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def model_flops_per_s(flops_per_image_fwd: float, images_per_s: float, mode: str) -> float:
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  return (TRAIN_FLOPS_FACTOR if mode == 'train' else 1) * flops_per_image_fwd * images_per_s


def mfu(flops_per_image_fwd: float, images_per_s: float, mode: str,
        peak: float | None) -> float | None:
  """Achieved model FLOP/s over ``peak`` (None when the peak is unknown)."""
  achieved = model_flops_per_s(flops_per_image_fwd, images_per_s, mode)
  return achieved / peak if peak else None
