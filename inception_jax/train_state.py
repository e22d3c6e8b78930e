"""The training state: parameters, BatchNorm statistics, optimizer state, EMA, step and rng.

The EMA is a pair, weights and BatchNorm statistics, averaged alike (the Cloud TPU Inception-v3
reference averages ``tf.moving_average_variables()`` with the trainable ones): averaged weights
evaluated with the raw weights' statistics would see activations of another network.

A plain pytree of arrays (no functions), so that it is jitted, sharded, donated and checkpointed
as it is; the model's ``apply`` and the optax transformation are given to the steps separately.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  ema_params: PyTree  # exponential moving average of params (Polyak averaging)
  ema_batch_stats: PyTree  # the same average of the BatchNorm statistics, evaluated with it
  rng: jax.Array  # a raw uint32 key; each step folds in its step number
  # Steps whose loss or gradient was not finite: their update was not applied (the loop stops at
  # the first one unless config.nonfinite='skip').
  skipped_updates: jax.Array

  @classmethod
  def from_weights(cls, params: PyTree, batch_stats: PyTree) -> 'TrainState':
    """A state holding weights alone (converted ones, to evaluate): no optimizer state, the EMA
    pair equal to the weights, step 0."""
    return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
               opt_state=(), ema_params=params, ema_batch_stats=batch_stats,
               rng=jax.random.PRNGKey(0), skipped_updates=jnp.zeros((), jnp.int32))


def variables(params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
  """The ``variables`` argument of ``module.apply``."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def create(init_fn: Callable[[jax.Array], dict[str, PyTree]], tx: optax.GradientTransformation,
           rng: jax.Array) -> TrainState:
  """A fresh state from ``init_fn(rng) -> {'params', 'batch_stats'?}`` (call under ``jax.jit``
  with ``out_shardings`` to build it straight into its sharding)."""
  init_rng, state_rng = jax.random.split(rng)
  model_vars = init_fn(init_rng)
  params = model_vars['params']
  batch_stats = model_vars.get('batch_stats', {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema_params=params, ema_batch_stats=batch_stats,
                    rng=state_rng, skipped_updates=jnp.zeros((), jnp.int32))


def with_weights(state: TrainState, params: PyTree, batch_stats: PyTree,
                 tx: optax.GradientTransformation) -> TrainState:
  """``state`` restarted from other weights (fine-tuning): fresh optimizer state and EMA."""
  return state.replace(params=params, batch_stats=batch_stats, opt_state=tx.init(params),
                       ema_params=params, ema_batch_stats=batch_stats)
