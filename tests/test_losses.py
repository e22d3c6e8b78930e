"""The loss and accuracy counts of the train and eval steps (inception_jax.losses)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax import losses

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(4, 5)).astype(np.float32) * 3
AUX = [RNG.normal(size=(4, 5)).astype(np.float32) for _ in range(2)]
LABELS = np.asarray([0, 3, 1, 4])


def _reference_ce(logits, labels, smoothing):
  """TF's softmax_cross_entropy(label_smoothing=s), written out in float64: targets
  (1 - s) * onehot + s / K against log-softmax."""
  logits = logits.astype(np.float64)
  k = logits.shape[-1]
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  targets = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
  return -(targets * logp).sum(-1)


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_cross_entropy_with_label_smoothing_is_tfs(smoothing):
  got = losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS), smoothing)
  np.testing.assert_allclose(got, _reference_ce(LOGITS, LABELS, smoothing), rtol=1e-5)


def test_cross_entropy_matches_torch_label_smoothing():
  # PyTorch's CrossEntropyLoss(label_smoothing=s) uses the same smoothed targets.
  import torch
  want = torch.nn.functional.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS),
                                           label_smoothing=0.1, reduction='none')
  got = losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS), 0.1)
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)


def test_total_is_main_plus_weight_times_each_aux_smoothed_alike():
  mask = jnp.ones(4)
  total, parts = losses.classification_loss(jnp.asarray(LOGITS), [jnp.asarray(a) for a in AUX],
                                            jnp.asarray(LABELS), mask, label_smoothing=0.1,
                                            aux_weight=0.3)
  main = _reference_ce(LOGITS, LABELS, 0.1).mean()
  aux = [_reference_ce(a, LABELS, 0.1).mean() for a in AUX]
  assert float(parts['loss_main']) == pytest.approx(main, rel=1e-5)
  assert float(parts['loss_aux']) == pytest.approx(np.mean(aux), rel=1e-5)
  assert float(total) == pytest.approx(main + 0.3 * sum(aux), rel=1e-5)
  # Without aux heads: the main loss alone, loss_aux reported as 0.
  alone, parts = losses.classification_loss(jnp.asarray(LOGITS), [], jnp.asarray(LABELS), mask,
                                            label_smoothing=0.0, aux_weight=0.4)
  assert float(alone) == pytest.approx(_reference_ce(LOGITS, LABELS, 0.0).mean(), rel=1e-5)
  assert float(parts['loss_aux']) == 0.0


def test_padding_does_not_count():
  # The last two rows are padding (mask 0) with garbage logits: the loss is that of the first two.
  logits = LOGITS.copy()
  logits[2:] = 1e4 * np.sign(RNG.normal(size=(2, 5)))
  mask = jnp.asarray([1.0, 1.0, 0.0, 0.0])
  total, _ = losses.classification_loss(jnp.asarray(logits), [], jnp.asarray(LABELS), mask,
                                        label_smoothing=0.0, aux_weight=0.0)
  assert float(total) == pytest.approx(_reference_ce(LOGITS[:2], LABELS[:2], 0.0).mean(),
                                       rel=1e-5)
  assert float(losses.masked_mean(jnp.asarray([1.0, 3.0, 100.0]), jnp.asarray([1.0, 1.0, 0.0]))
               ) == 2.0
  # An all-padding batch (the last eval batch of a process) gives 0, not NaN.
  assert float(losses.masked_mean(jnp.ones(3), jnp.zeros(3))) == 0.0


def test_topk_counts_a_tie_as_correct():
  logits = jnp.asarray([[1.0, 1.0, 0.0, 0.0],   # true class 1 ties the top: top-1 correct
                        [2.0, 1.0, 1.0, 1.0],   # true class 3 ties for second: top-2 correct
                        [0.0, 3.0, 2.0, 1.0]])  # true class 0 is last: top-3 wrong
  labels = jnp.asarray([1, 3, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 1), [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 2), [1.0, 1.0, 0.0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 3), [1.0, 1.0, 0.0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 4), [1.0, 1.0, 1.0])


def test_cross_entropy_keeps_float64_and_lifts_bfloat16():
  """At least float32: bfloat16 logits are lifted, float64 ones stay (the float64 step-parity
  check, tests/test_step_parity.py, needs the loss's gradient in float64)."""
  import jax
  labels = jnp.array([0, 1])
  assert losses.cross_entropy(jnp.zeros((2, 3), jnp.bfloat16), labels).dtype == jnp.float32
  with jax.enable_x64(True):
    logits = jnp.asarray(np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]), jnp.float64)
    out = losses.cross_entropy(logits, labels, 0.1)
    assert out.dtype == jnp.float64
    expected = losses.cross_entropy(logits.astype(jnp.float32), labels, 0.1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
