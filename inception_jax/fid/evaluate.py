"""FID (and KID, IS) inside a JAX training loop: reference statistics once, then a call every N
steps on generated images."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from inception_jax.fid import metrics
from inception_jax.fid.extract import Extractor, extract, extract_folder
from inception_jax.fid.stats import load_stats


class Evaluator:
  """``evaluator(images) -> {'fid': ..., ['kid', 'kid_std', 'is', 'is_std']}``.

  Args:
    extractor: an :class:`Extractor` (its ``features`` need not be set; the evaluator asks for
      what it computes).
    reference: a ``.npz`` statistics file, a folder of images, an array of images, or
      ``(mu, sigma)``. KID needs reference images (a folder or an array).
    kid, isc: also compute KID (against the reference) and the Inception Score of the images.
    feature: what FID and KID compare: 'pool3' (2048-d, the standard), or pytorch-fid's
      '64' / '192' / '768' (cheaper: XLA drops the layers above them).
    kid_subset_size, kid_subsets, splits, seed: as torch-fidelity (its defaults).
  """

  def __init__(self, extractor: Extractor, reference, *, kid: bool = False, isc: bool = False,
               kid_subset_size: int = 1000, kid_subsets: int = 100, splits: int = 10,
               seed: int = 2020, feature: str = 'pool3'):
    if feature not in ('pool3', '64', '192', '768'):
      raise ValueError(f"feature must be 'pool3', '64', '192' or '768', got {feature!r}")
    self.feature = feature
    features = [feature] + (['logits_unbiased'] if isc else [])
    self.extractor = Extractor(extractor.module, extractor.variables, mode=extractor.mode,
                               batch_size=extractor.batch_size, mesh=extractor.mesh,
                               features=features)
    self.kid, self.isc = kid, isc
    self.kid_options = dict(subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    self.is_options = dict(splits=splits, seed=seed)
    self.reference_features = None
    if isinstance(reference, tuple):
      self.mu, self.sigma = (np.asarray(a, np.float64) for a in reference)
    elif isinstance(reference, str) and reference.endswith('.npz'):
      self.mu, self.sigma = load_stats(reference)
    else:
      keep = (feature,) if kid else ()
      ref_extractor = Extractor(extractor.module, extractor.variables, mode=extractor.mode,
                                batch_size=extractor.batch_size, mesh=extractor.mesh,
                                features=(feature,))
      if isinstance(reference, str):
        result = extract_folder(ref_extractor, reference, keep=keep, stats=(feature,))
      else:
        result = extract(ref_extractor, [np.asarray(reference)], keep=keep, stats=(feature,))
      self.mu, self.sigma = result.stats[feature].mu, result.stats[feature].sigma
      self.reference_features = result.kept.get(feature)
    if kid and self.reference_features is None:
      raise ValueError('KID needs reference images (a folder or an array), not statistics')
    self._sqrt_sigma = None  # the reference's S^1/2, computed at the first call, then reused

  def __call__(self, images: np.ndarray | Iterable[np.ndarray]) -> dict[str, float]:
    """Metrics of ``images``: one array (n, H, W, 3) or an iterable of such batches, 0-255."""
    batches = [images] if hasattr(images, 'shape') else images
    f = self.feature
    keep = ([f] if self.kid else []) + (['logits_unbiased'] if self.isc else [])
    result = extract(self.extractor, batches, keep=keep, stats=(f,))
    stats = result.stats[f]
    if self._sqrt_sigma is None:
      self._sqrt_sigma = metrics.sqrt_psd(self.sigma)
    out = {'fid': metrics.frechet_distance(self.mu, self.sigma, stats.mu, stats.sigma,
                                           sqrt_sigma1=self._sqrt_sigma)}
    if self.kid:
      out['kid'], out['kid_std'] = metrics.kernel_inception_distance(
          result.kept[f], self.reference_features, **self.kid_options)
    if self.isc:
      out['is'], out['is_std'] = metrics.inception_score(result.kept['logits_unbiased'],
                                                         **self.is_options)
    return out


__all__ = ['Evaluator']
