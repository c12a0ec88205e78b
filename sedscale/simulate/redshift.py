"""Redshift distributions of simulated galaxies.

Two kinds, both small picklable values shipped to the workers with every
task:

* :class:`UniformRedshift` -- z ~ U[low, high];
* :class:`SurveyRedshift` -- half uniform in z, half uniform in log z, so
  that one training set serves nearby (z ~ 0.002-0.02) and distant galaxies;
* :class:`CatalogRedshift` -- z drawn with replacement from the redshifts of
  a user catalog (FITS or Parquet).  Tasks carry only the path and a
  checksum; each worker process reads the column once (cached).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MissingDataError


@dataclass(frozen=True)
class UniformRedshift:
    """z ~ U[low, high].

    Parameters
    ----------
    low, high : float
        Redshift range, ``0 < low < high``.
    """

    low: float
    high: float

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high) and 0 < self.low < self.high):
            raise ConfigError(f"redshift range must satisfy 0 < low < high, got [{self.low}, {self.high}]")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` redshifts (float64)."""
        return rng.uniform(self.low, self.high, n)

    def log_prob(self, z) -> np.ndarray:
        """Log density of ``z`` (-inf outside ``[low, high]``)."""
        z = np.asarray(z, dtype=np.float64)
        inside = (z >= self.low) & (z <= self.high)
        return np.where(inside, -np.log(self.high - self.low), -np.inf)

    def to_dict(self) -> dict:
        return {"kind": "uniform", "low": float(self.low), "high": float(self.high)}


@dataclass(frozen=True)
class SurveyRedshift(UniformRedshift):
    """Half the draws z ~ U[low, high], half log z ~ U[log low, log high].

    A uniform z over 0.002-0.6 puts 0.3% of the draws below z = 0.004 (the
    NSA Virgo galaxies); log-uniform puts 12%, uniform keeps the distant
    galaxies (8% between 0.55 and 0.6).  The mixture serves both.
    """

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` redshifts (float64): each draw picks its half with probability 1/2."""
        lin = rng.uniform(self.low, self.high, n)
        log = np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))
        return np.where(rng.random(n) < 0.5, lin, log)

    def log_prob(self, z) -> np.ndarray:
        """Log density of the mixture, ``log(1/(2 (high - low)) + 1/(2 z ln(high/low)))``; -inf outside."""
        z = np.asarray(z, dtype=np.float64)
        inside = (z >= self.low) & (z <= self.high)
        zz = np.where(inside, z, self.low)
        density = 0.5 / (self.high - self.low) + 0.5 / (zz * np.log(self.high / self.low))
        return np.where(inside, np.log(density), -np.inf)

    def to_dict(self) -> dict:
        return {"kind": "survey", "low": float(self.low), "high": float(self.high)}


def redshift_distribution_from_dict(d: object) -> UniformRedshift | SurveyRedshift:
    """Inverse of ``to_dict`` for the closed-form distributions (a catalog's redshifts have no density).

    Raises
    ------
    ConfigError
        Not a ``uniform`` or ``survey`` description.
    """
    kinds = {"uniform": UniformRedshift, "survey": SurveyRedshift}
    if not isinstance(d, dict) or d.get("kind") not in kinds:
        raise ConfigError(f"redshift distribution must be one of {sorted(kinds)} with low and high; got {str(d)[:200]}")
    try:
        return kinds[d["kind"]](float(d["low"]), float(d["high"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed redshift distribution ({exc!r})") from None


@dataclass(frozen=True)
class CatalogRedshift:
    """z drawn with replacement from a catalog's redshifts.

    Build it with :func:`redshift_from_catalog`, which validates the file.

    Parameters
    ----------
    path : str
        FITS (first table HDU) or Parquet file; must be readable by the workers.
    column : str
        Redshift column (matched case-insensitively).
    sha256 : str
        Checksum of the usable redshifts (float64 bytes); a worker that reads
        different values refuses to simulate.
    count : int
        Number of usable redshifts.
    low, high : float
        Their range.
    """

    path: str
    column: str
    sha256: str
    count: int
    low: float
    high: float

    def values(self) -> np.ndarray:
        """The usable catalog redshifts (cached per process)."""
        z = _cached_catalog_redshifts(self.path, self.column)
        if _checksum(z) != self.sha256:
            raise ConfigError(f"redshift catalog {self.path} changed since the run was configured (checksum differs)")
        return z

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` redshifts drawn uniformly with replacement from the catalog."""
        z = self.values()
        return z[rng.integers(0, z.size, n)]

    def to_dict(self) -> dict:
        # The path is provenance only: the checksum identifies the distribution,
        # so a moved catalog still resumes the same run.
        return {
            "kind": "catalog",
            "path": self.path,
            "column": self.column,
            "sha256": self.sha256,
            "count": int(self.count),
            "low": float(self.low),
            "high": float(self.high),
        }


def read_catalog_column(path: str | os.PathLike, column: str) -> np.ndarray:
    """One numeric column of a FITS or Parquet catalog as float64.

    Raises
    ------
    MissingDataError
        The file does not exist.
    ConfigError
        Unsupported format or no such column.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"redshift catalog {path} does not exist")
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".fits", ".fit", ".fits.gz", ".fz")):
        import fitsio

        with fitsio.FITS(str(path)) as fits:
            hdu = next((h for h in fits if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")), None)
            if hdu is None:
                raise ConfigError(f"{path}: no table HDU")
            name = _match_column(hdu.get_colnames(), column, path)
            values = hdu.read_column(name)
    elif suffixes.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        name = _match_column(pq.read_schema(path).names, column, path)
        values = pq.read_table(path, columns=[name]).column(name).to_numpy()
    else:
        raise ConfigError(f"{path}: redshift catalogs must be FITS (.fits) or Parquet (.parquet)")
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        raise ConfigError(f"{path}: column {column!r} is not a numeric scalar column")
    return values.astype(np.float64)


def _match_column(names, column: str, path) -> str:
    for name in names:
        if name.lower() == column.lower():
            return name
    raise ConfigError(f"{path}: no column {column!r} (columns: {', '.join(names)})")


def usable_redshifts(z: np.ndarray) -> np.ndarray:
    """The finite, positive redshifts of ``z`` (others are blanks or flags in catalogs)."""
    z = np.asarray(z, dtype=np.float64)
    return z[np.isfinite(z) & (z > 0)]


def _checksum(z: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(z, dtype=np.float64).tobytes()).hexdigest()


@lru_cache(maxsize=4)
def _cached_catalog_redshifts(path: str, column: str) -> np.ndarray:
    z = usable_redshifts(read_catalog_column(path, column))
    z.setflags(write=False)
    return z


def redshift_from_catalog(path: str | os.PathLike, column: str = "z", z_max: float = np.inf) -> CatalogRedshift:
    """Build a :class:`CatalogRedshift` from a FITS or Parquet catalog.

    Parameters
    ----------
    path : str or PathLike
    column : str
        Redshift column, case-insensitive (NSA: ``Z``).
    z_max : float
        Largest redshift the forward model supports.

    Raises
    ------
    ConfigError
        No usable (finite, positive) redshift, or one above ``z_max``.
    """
    path = str(Path(path).resolve())
    z = usable_redshifts(read_catalog_column(path, column))
    if z.size == 0:
        raise ConfigError(f"{path}: column {column!r} holds no finite redshift > 0")
    if z.max() > z_max:
        raise ConfigError(
            f"{path}: {int(np.sum(z > z_max))} redshift(s) above the model's limit z <= {z_max} "
            f"(max {z.max():.4g}); cut the catalog first"
        )
    return CatalogRedshift(
        path=path, column=column, sha256=_checksum(z), count=int(z.size), low=float(z.min()), high=float(z.max())
    )
