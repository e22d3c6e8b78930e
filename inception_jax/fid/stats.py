"""Feature statistics streamed in float64, and the ``.npz`` files that carry them.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule") compares the mean and
covariance of pool3 features. Accumulating them in float32 over 50k images loses digits that the
distance then magnifies (pytorch-fid and torchmetrics issues on float32 covariances), and holding
all features costs 400 MB at 50k x 2048. :class:`RunningStats` keeps only float64 sums about a shift
(see its docstring).

Files: ``np.savez`` with ``mu`` (d,) and ``sigma`` (d, d), the format of TTUR's precomputed
statistics, pytorch-fid (``fid_score.py``: ``save_fid_stats``) and clean-fid (``cleanfid/fid.py``:
``make_custom_stats``), so each reads the others' files."""

from __future__ import annotations

import os

import numpy as np

from inception_jax.errors import UserError


class StatsError(UserError, ValueError):
  """A statistics file or feature batch that cannot be used; the message names the problem."""


class RunningStats:
  """Mean and covariance (``np.cov``'s unbiased ``n - 1`` normalisation, as pytorch-fid) of
  feature rows added in batches, in float64, without keeping the rows.

  Sums of the rows and of their outer products are taken about a shift, the first batch's mean
  (the shifted-data algorithm: Chan, Golub & LeVeque 1983, "Algorithms for computing the sample
  variance"), so that a large common offset does not cancel the covariance's digits. Rows are
  gathered to ``chunk`` before each d x d product, so that small batches do not each pay a pass
  over the d x d sum (32 MB at d = 2048)."""

  def __init__(self, dim: int | None = None, chunk: int = 1024):
    self.dim, self.chunk = dim, chunk
    self.count = 0
    self._shift = self._sum = self._outer = None
    self._pending: list[np.ndarray] = []
    self._pending_rows = 0

  def update(self, features) -> 'RunningStats':
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
      raise StatsError(f'features must be (batch, dim), got shape {x.shape}')
    if self.dim is None:
      self.dim = x.shape[1]
    if x.shape[1] != self.dim:
      raise StatsError(f'features have {x.shape[1]} dims, the statistics {self.dim}')
    if not x.shape[0]:
      return self
    if self._shift is None:
      self._shift = x.mean(axis=0)
      self._sum = np.zeros(self.dim)
      self._outer = np.zeros((self.dim, self.dim))
    self._pending.append(x - self._shift)
    self._pending_rows += x.shape[0]
    self.count += x.shape[0]
    if self._pending_rows >= self.chunk:
      self._flush()
    return self

  def _flush(self) -> None:
    if self._pending:
      centred = np.concatenate(self._pending)
      self._sum += centred.sum(axis=0)
      self._outer += centred.T @ centred
      self._pending, self._pending_rows = [], 0

  @property
  def mu(self) -> np.ndarray:
    self._require(1)
    self._flush()
    return self._shift + self._sum / self.count

  @property
  def sigma(self) -> np.ndarray:
    self._require(2)
    self._flush()
    mean = self._sum / self.count
    sigma = (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)
    return (sigma + sigma.T) / 2

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
