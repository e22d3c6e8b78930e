"""FID, KID and the Inception Score on features and logits (host-side, float64).

* FID: Heusel et al. 2017, the Fréchet distance of two Gaussians,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
  pytorch-fid (``fid_score.py``: ``calculate_frechet_distance``) takes ``scipy.linalg.sqrtm`` of
  the non-symmetric product ``S1 S2``; with fewer samples than dimensions, or near-singular
  covariances, that square root has spurious imaginary parts or is wrong. Here the trace comes from
  the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)``, which has the same eigenvalues as ``S1 S2``
  (similar matrices): ``tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))``, with two
  symmetric eigen-decompositions (real by construction).
* KID: Binkowski et al. 2018, "Demystifying MMD GANs": the unbiased
  MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3``, averaged over random subsets drawn as
  torch-fidelity draws them (``metric_kid.py``), so that the same seed gives the same subsets.
* IS: Salimans et al. 2016, "Improved Techniques for Training GANs", Section 4:
  ``exp E_x KL(p(y|x) || p(y))`` over splits; shuffling and splits as torch-fidelity
  (``metric_isc.py``), which feeds the logits without the classifier bias as the original TF code
  (``logits_unbiased``).
"""

from __future__ import annotations

import numpy as np


def _rounding_level(values: np.ndarray) -> float:
  """Eigenvalues below this are rounding noise of a symmetric eigen-decomposition (LAPACK's
  backward error, d * eps * |A|); their square roots (~1e-8 |A|^1/2 each) would otherwise add up
  over a null space of hundreds of dimensions (fewer samples than dims)."""
  return len(values) * np.finfo(np.float64).eps * max(np.abs(values).max(), 1e-300)


def _sqrt_psd(matrix: np.ndarray, name: str) -> np.ndarray:
  """Square root of a symmetric PSD matrix; eigenvalues at rounding level count as zero, and a
  clearly negative one is an error (not a covariance), not a silent NaN."""
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  noise = _rounding_level(values)
  if values.min() < -1e3 * noise:
    raise ValueError(f'{name} is not positive semi-definite (eigenvalue {values.min():.3g}; '
                     f'largest {values.max():.3g}): not a covariance matrix')
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def sqrt_psd(sigma) -> np.ndarray:
  """``S^(1/2)`` of a covariance, to pass as ``sqrt_sigma1`` when one side is compared many times
  (a training run's reference statistics): it is half of each distance's cost."""
  return _sqrt_psd(np.asarray(sigma, np.float64), 'sigma1')


def trace_sqrt_product(sigma1, sigma2, sqrt_sigma1=None) -> float:
  """``tr (S1 S2)^(1/2)`` for symmetric PSD ``S1``, ``S2`` (see the module docstring);
  ``sqrt_sigma1``: :func:`sqrt_psd` of ``S1``, if known."""
  root = sqrt_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
  inner = root @ np.asarray(sigma2, np.float64) @ root
  values = np.linalg.eigvalsh((inner + inner.T) / 2)
  return float(np.sqrt(np.where(values > _rounding_level(values), values, 0)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, *, sqrt_sigma1=None) -> float:
  """FID between two Gaussians (Heusel et al. 2017), in float64; ``sqrt_sigma1``:
  :func:`sqrt_psd` of ``sigma1``, if known."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.ndim != 1 or mu2.shape != mu1.shape:
    raise ValueError(f'mu1 and mu2 must be vectors of one length, got {mu1.shape} and {mu2.shape}')
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f'sigma1 and sigma2 must be ({d}, {d}), got {sigma1.shape} and '
                     f'{sigma2.shape}')
  for name, a in (('mu1', mu1), ('mu2', mu2), ('sigma1', sigma1), ('sigma2', sigma2)):
    if not np.isfinite(a).all():
      raise ValueError(f'{name} has non-finite values')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2 * trace_sqrt_product(sigma1, sigma2, sqrt_sigma1))


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
  m = k_xx.shape[0]
  off_xx = k_xx.sum() - np.trace(k_xx)
  off_yy = k_yy.sum() - np.trace(k_yy)
  return float((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(features1, features2, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 2020, degree: int = 3,
                              gamma: float | None = None, coef0: float = 1.0
                              ) -> tuple[float, float]:
  """KID mean and standard deviation over ``subsets`` (torch-fidelity's defaults and draws)."""
  f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f'features must be (n, d) with one d, got {f1.shape} and {f2.shape}')
  if min(len(f1), len(f2)) < subset_size or subset_size < 2:
    raise ValueError(f'KID subset_size={subset_size} needs at least that many samples on each '
                     f'side (have {len(f1)} and {len(f2)}) and at least 2')
  gamma = 1.0 / f1.shape[1] if gamma is None else gamma
  kernel = lambda a, b: (a @ b.T * gamma + coef0) ** degree
  rng = np.random.RandomState(seed)
  mmds = np.empty(subsets)
  for i in range(subsets):
    x = f1[rng.choice(len(f1), subset_size, replace=False)]
    y = f2[rng.choice(len(f2), subset_size, replace=False)]
    mmds[i] = _mmd2_unbiased(kernel(x, x), kernel(x, y), kernel(y, y))
  return float(mmds.mean()), float(mmds.std())


def inception_score(logits, *, splits: int = 10, shuffle: bool = True,
                    seed: int = 2020) -> tuple[float, float]:
  """Inception Score mean and standard deviation over ``splits`` (torch-fidelity's defaults)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2:
    raise ValueError(f'logits must be (n, classes), got shape {logits.shape}')
  n = logits.shape[0]
  if n < splits:
    raise ValueError(f'the Inception Score over {splits} splits needs at least {splits} samples, '
                     f'have {n}')
  if shuffle:
    logits = logits[np.random.RandomState(seed).permutation(n)]
  log_p = logits - logits.max(axis=1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    rows = slice(i * n // splits, (i + 1) * n // splits)
    part, log_part = p[rows], log_p[rows]
    log_marginal = np.log(part.mean(axis=0, keepdims=True))
    scores.append(np.exp((part * (log_part - log_marginal)).sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))


__all__ = ['frechet_distance', 'inception_score', 'kernel_inception_distance',
           'trace_sqrt_product']
