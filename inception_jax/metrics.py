"""Metrics to ``WORKDIR/metrics.jsonl`` (one JSON object per line) and to TensorBoard.

Only process 0 writes. TensorBoard event files go to ``WORKDIR/tensorboard/`` through tensorboardX
(no TensorFlow needed); ``tensorboard --logdir WORKDIR`` shows them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np


def _import_tensorboardx():
  # tensorboardX imports PyTorch, when installed, only to accept torch tensors; that costs
  # seconds and memory for nothing here, so it is hidden while tensorboardX loads.
  hide = 'torch' not in sys.modules
  if hide:
    sys.modules['torch'] = None  # makes `import torch` raise ImportError
  try:
    import tensorboardX
  finally:
    if hide:
      del sys.modules['torch']
  return tensorboardX


class MetricWriter:

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    if tensorboard:
      self._tb = _import_tensorboardx().SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    """Scalars ``metrics`` of ``split`` ('train', 'eval') at ``step``."""
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    record = {'step': int(step), 'split': split, 'time': time.time(), **values}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f'{split}/{k}', v, int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
