"""The train step finds the auxiliary heads through the models' one output contract: the logits
returned, the aux logits sown into 'intermediates' (layers.aux_logits), as inception_v1/v3 do."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inception_jax import losses, steps, train_state
from inception_jax.models import layers


class Toy(nn.Module):
  heads: int

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape(x.shape[0], -1)
    for i in range(self.heads):
      if layers.wants_aux(self):
        layers.aux_logits(self, nn.Dense(5, name=f'Aux_{i}')(x))
      x = nn.relu(nn.Dense(16, name=f'Hidden_{i}')(x))
    return nn.Dense(5, name='Logits')(x)


@pytest.mark.parametrize('heads', [2, 0])
def test_train_step_adds_every_aux_head(heads):
  model = Toy(heads)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 3, 3, 2)), jnp.float32)
  batch = {'image': x, 'label': jnp.array([0, 1, 2, 3]), 'mask': jnp.ones(4)}
  tx = optax.sgd(0.0)
  state = train_state.create(lambda r: model.init(r, x), tx, jax.random.PRNGKey(0))
  _, metrics = jax.jit(lambda s, b: steps.train_step(
      s, b, apply_fn=model.apply, tx=tx, schedule=optax.constant_schedule(0.0),
      aux_weight=0.3))(state, batch)

  _, out = model.apply({'params': state.params}, x, mutable=['intermediates'])
  aux = out.get('intermediates', {}).get('aux_logits', ())
  assert len(aux) == heads
  want = [float(losses.cross_entropy(a, batch['label']).mean()) for a in aux]
  assert float(metrics['loss_aux']) == pytest.approx(np.mean(want) if heads else 0.0, rel=1e-5)
  assert float(metrics['loss']) == pytest.approx(
      float(metrics['loss_main']) + 0.3 * sum(want), rel=1e-5)
  if heads:  # the heads' share is large enough that leaving it out would fail above
    assert sum(want) > 0.1
