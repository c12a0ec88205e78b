"""Photometric-redshift quality against spectroscopic redshifts, and an empirical baseline.

The survey statistics of ``dz = (z_phot - z_spec) / (1 + z_spec)``
(:func:`photoz_metrics`): sigma_NMAD = 1.4826 median(|dz - median(dz)|), the
outlier fraction (|dz| > 0.15), the bias (median dz); and, for codes that give
intervals, how often the 68% / 95% intervals contain the spec-z.

:func:`knn_photoz` is the empirical baseline survey photo-z teams compare
with: k nearest neighbours in colours and one magnitude, trained on other
rows of the same survey (k-fold, so no galaxy is its own neighbour).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["OUTLIER_DZ", "PhotozMetrics", "knn_photoz", "photoz_metrics"]

#: |dz| / (1 + z) above which a photo-z is an outlier (the survey convention).
OUTLIER_DZ = 0.15


@dataclass(frozen=True)
class PhotozMetrics:
    """Photo-z statistics of ``n`` galaxies (NaN where not defined).

    Attributes
    ----------
    n : int
        Galaxies with a finite photo-z and spec-z.
    sigma_nmad, outlier_fraction, bias : float
        Of ``dz = (z_phot - z_spec) / (1 + z_spec)``.
    coverage_68, coverage_95 : float
        Fraction of galaxies whose 68% / 95% interval contains the spec-z.
    """

    n: int
    sigma_nmad: float
    outlier_fraction: float
    bias: float
    coverage_68: float = float("nan")
    coverage_95: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def photoz_metrics(z_phot, z_spec, interval_68=None, interval_95=None) -> PhotozMetrics:
    """Statistics of point photo-z ``z_phot`` (n,) against ``z_spec`` (n,).

    Parameters
    ----------
    z_phot, z_spec : array_like, shape (n,)
        Rows where either is not finite are left out.
    interval_68, interval_95 : tuple of array_like, optional
        ``(low, high)`` per galaxy, e.g. the 16-84 and 2.5-97.5 percentiles.
    """
    z_phot = np.asarray(z_phot, dtype=np.float64)
    z_spec = np.asarray(z_spec, dtype=np.float64)
    ok = np.isfinite(z_phot) & np.isfinite(z_spec)
    if not ok.any():
        return PhotozMetrics(0, np.nan, np.nan, np.nan)
    dz = (z_phot[ok] - z_spec[ok]) / (1 + z_spec[ok])
    median = float(np.median(dz))

    def coverage(interval) -> float:
        if interval is None:
            return float("nan")
        low, high = (np.asarray(v, dtype=np.float64)[ok] for v in interval)
        return float(np.mean((low <= z_spec[ok]) & (z_spec[ok] <= high)))

    return PhotozMetrics(
        n=int(ok.sum()),
        sigma_nmad=float(1.4826 * np.median(np.abs(dz - median))),
        outlier_fraction=float(np.mean(np.abs(dz) > OUTLIER_DZ)),
        bias=median,
        coverage_68=coverage(interval_68),
        coverage_95=coverage(interval_95),
    )


def knn_photoz(features, z_spec, k: int = 10, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Empirical photo-z: the median spec-z of the ``k`` nearest neighbours in feature space.

    Each galaxy is predicted from the other ``folds - 1`` folds only.

    Parameters
    ----------
    features : array_like, shape (n, m)
        E.g. colours u-g, g-r, r-i, i-z and the r magnitude; rows with a
        non-finite feature or spec-z get NaN and train nothing.
    z_spec : array_like, shape (n,)
    k, folds, seed : int

    Returns
    -------
    ndarray, shape (n,)
    """
    from sklearn.neighbors import NearestNeighbors

    features = np.asarray(features, dtype=np.float64)
    z_spec = np.asarray(z_spec, dtype=np.float64)
    usable = np.isfinite(features).all(axis=1) & np.isfinite(z_spec)
    fold = np.random.default_rng(seed).integers(0, folds, z_spec.size)
    out = np.full(z_spec.size, np.nan)
    for f in range(folds):
        train, test = usable & (fold != f), usable & (fold == f)
        if not test.any() or train.sum() < k:
            continue
        scale = features[train].std(axis=0)
        scale[scale == 0] = 1.0
        nn = NearestNeighbors(n_neighbors=k).fit(features[train] / scale)
        _, idx = nn.kneighbors(features[test] / scale)
        out[test] = np.median(z_spec[train][idx], axis=1)
    return out
