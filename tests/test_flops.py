"""models.flops counts every tap of a padded convolution, inside every sub-program, and a scanned
run of blocks as many times as it runs (the published tables' convention)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from inception_jax.models.flops import count, explicit_conv_padding

X = jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32)


class Block(nn.Module):
  """A 3x3 SAME conv, 8 -> 8 channels, no bias: on a 4x4 map 16 * 9 * 8 * 8 = 9216 MACs when
  every tap counts, 10 * 10 / 16 of that (5760) when the taps on the padding are skipped."""

  @nn.compact
  def __call__(self, x, _=None):
    return nn.relu(nn.Conv(8, (3, 3), padding='SAME', use_bias=False)(x)), None


class Unrolled(nn.Module):
  depth: int

  @nn.compact
  def __call__(self, x, train=False):
    for _ in range(self.depth):
      x, _ = Block()(x)
    return x


class Scanned(nn.Module):
  depth: int

  @nn.compact
  def __call__(self, x, train=False):
    stack = nn.scan(nn.remat(Block), variable_axes={'params': 0}, split_rngs={'params': True},
                    length=self.depth)
    return jax.jit(lambda y: y)(stack()(x, None)[0])


def _macs(module):
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), X)
  return count(module, variables, X)['macs']


def test_every_tap_of_a_padded_conv_counts():
  conv = 16 * 9 * 8 * 8
  relu = 16 * 8 / 2  # XLA counts one FLOP per ReLU output
  assert _macs(Unrolled(1)) == conv + relu


def test_a_scanned_stack_counts_as_its_unrolled_twin():
  one = _macs(Unrolled(1))
  assert _macs(Scanned(3)) == _macs(Unrolled(3)) == 3 * one


def test_cond_branches_are_rewritten():
  def fn(x, k):
    return jax.lax.cond(x.sum() > 0, lambda y: jax.lax.conv_general_dilated(
        y, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')), lambda y: y, x)
  jaxpr = jax.make_jaxpr(explicit_conv_padding(fn))(X, jnp.zeros((3, 3, 8, 8)))
  text = str(jaxpr)
  assert 'pad' in text and 'padding=((1, 1), (1, 1))' not in text


def test_an_unknown_higher_order_primitive_is_refused():
  def fn(x):
    return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2), (0, x))[1]
  with pytest.raises(NotImplementedError, match="higher-order primitive 'while'"):
    jax.make_jaxpr(explicit_conv_padding(fn))(X)
