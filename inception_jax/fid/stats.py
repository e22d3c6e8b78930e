"""Feature statistics streamed in float64, and the ``.npz`` files that carry them.

FID (Heusel et al. 2017, Eq. 6) compares the mean and covariance of pool3 features. Accumulating
them in float32 over 50k images loses digits that the distance then magnifies (pytorch-fid and
torchmetrics issues on float32 covariances), and holding all features costs 400 MB at 50k x 2048.
:class:`RunningStats` keeps only the float64 mean and centred scatter, merged batch by batch with
Chan et al.'s pairwise update (1979, "Updating formulae and a pairwise algorithm for computing
sample variances").

Files: ``np.savez`` with ``mu`` (d,) and ``sigma`` (d, d), the format of TTUR's precomputed
statistics, pytorch-fid (``fid_score.py``: ``save_fid_stats``) and clean-fid
(``cleanfid/fid.py``: ``make_custom_stats``), so each reads the others' files.
"""

from __future__ import annotations

import os

import numpy as np


class StatsError(ValueError):
  """A statistics file or feature batch that cannot be used; the message names the problem."""


class RunningStats:
  """Mean and covariance (``np.cov``'s unbiased ``n - 1`` normalisation, as pytorch-fid) of
  feature rows added in batches, in float64, without keeping the rows."""

  def __init__(self, dim: int | None = None):
    self.dim = dim
    self.count = 0
    self._mean = None if dim is None else np.zeros(dim)
    self._scatter = None if dim is None else np.zeros((dim, dim))

  def update(self, features) -> 'RunningStats':
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
      raise StatsError(f'features must be (batch, dim), got shape {x.shape}')
    if self.dim is None:
      self.__init__(x.shape[1])
    if x.shape[1] != self.dim:
      raise StatsError(f'features have {x.shape[1]} dims, the statistics {self.dim}')
    m = x.shape[0]
    if not m:
      return self
    mean = x.mean(axis=0)
    centred = x - mean
    scatter = centred.T @ centred
    n = self.count
    delta = mean - self._mean
    total = n + m
    self._mean = self._mean + delta * (m / total)
    self._scatter = self._scatter + scatter + np.outer(delta, delta) * (n * m / total)
    self.count = total
    return self

  @property
  def mu(self) -> np.ndarray:
    self._require(1)
    return self._mean.copy()

  @property
  def sigma(self) -> np.ndarray:
    self._require(2)
    return self._scatter / (self.count - 1)

  def _require(self, n: int) -> None:
    if self.count < n:
      raise StatsError(f'statistics need at least {n} feature rows, have {self.count}')

  def save(self, path: str | os.PathLike) -> str:
    return save_stats(path, self.mu, self.sigma, count=self.count)


def save_stats(path: str | os.PathLike, mu, sigma, count: int | None = None) -> str:
  """Write ``mu`` and ``sigma`` (and ``count``, which pytorch-fid and clean-fid ignore)."""
  mu, sigma = _checked(np.asarray(mu), np.asarray(sigma), os.fspath(path))
  extra = {} if count is None else {'count': np.asarray(count)}
  path = os.fspath(path)
  np.savez_compressed(path, mu=mu, sigma=sigma, **extra)
  return path if path.endswith('.npz') else path + '.npz'


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """``(mu, sigma)`` of a TTUR / pytorch-fid / clean-fid / our ``.npz`` (no pickles)."""
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as f:
      if 'mu' not in f or 'sigma' not in f:
        raise StatsError(f'{path}: a statistics file needs arrays "mu" and "sigma", '
                         f'has {sorted(f.files)}')
      mu, sigma = f['mu'], f['sigma']
  except (OSError, ValueError) as err:
    if isinstance(err, StatsError):
      raise
    raise StatsError(f'{path}: not a readable .npz statistics file ({err})') from None
  return _checked(mu, sigma, path)


def _checked(mu: np.ndarray, sigma: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
  if mu.ndim != 1 or sigma.shape != (mu.shape[0],) * 2:
    raise StatsError(f'{where}: mu must be (d,) and sigma (d, d), got {mu.shape} and '
                     f'{sigma.shape}')
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
    raise StatsError(f'{where}: mu or sigma has non-finite values')
  return mu.astype(np.float64), sigma.astype(np.float64)


__all__ = ['RunningStats', 'StatsError', 'load_stats', 'save_stats']
