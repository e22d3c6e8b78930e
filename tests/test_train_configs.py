"""Every experiment config trains a step and evaluates, at its model's smallest input size, with
bfloat16 compute: the full compiled train step (aux heads, optimizer, BatchNorm statistics, EMA)
of every model runs once here, and its state stays float32.

(v1, the main one, runs in float32 in test_train.py, beside the other runs that share its
programs.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from inception_jax import models, train
from train_utils import CONFIGS, check_run, final_state, read_metrics, tiny


# Longest first (XLA's compile time grows with the model's depth), for the workers' sake
# (conftest.py hands these out one by one).
BY_COMPILE_TIME = ('inception_resnet_v2', 'v4', 'inception_resnet_v1', 'v3', 'v2', 'xception')


def test_every_config_but_v1_is_here():
  assert set(BY_COMPILE_TIME) == set(CONFIGS) - {'v1'}


@pytest.mark.parametrize('name', BY_COMPILE_TIME)
def test_config_trains_and_evaluates_in_bfloat16(name, tmp_path):
  # One step runs every part of the step; each further one costs seconds at the tests' XLA
  # optimisation level (conftest.py) and tests nothing new.
  config = tiny(name, total_steps=1, dtype='bfloat16')
  results = train.train_and_evaluate(config, str(tmp_path))
  check_run(str(tmp_path), results, steps=1)
  state = final_state(str(tmp_path), config)
  leaves = jax.tree.leaves((state.params, state.batch_stats, state.ema_params, state.opt_state))
  # Floating state stays float32 (the optimizer's counters are integers) ...
  assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)} == {
      jnp.dtype(jnp.float32)}
  n = models.param_count(config.model.name, num_classes=10,
                         **{k: v for k, v in config.model.options.items() if v is not None})
  assert sum(x.size for x in jax.tree.leaves(state.ema_params)) >= n
  # ... and training moved it: the BatchNorm statistics and the weights changed.
  means = [v for k, v in traverse_util.flatten_dict(state.batch_stats).items() if k[-1] == 'mean']
  assert means and all(np.any(m != 0) for m in means)  # initialised at 0
  assert int(state.step) == 1 and int(state.skipped_updates) == 0
  assert all(np.isfinite(r['loss']) and r['grad_norm'] > 0 for r in read_metrics(str(tmp_path)))
