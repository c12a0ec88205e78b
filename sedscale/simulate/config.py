"""Configuration of a simulation run and its identity (the config hash).

The config hash covers everything that determines the *content* of the
dataset: model and prior, cosmology, filters, noise model, redshift
distribution, number of rows, seed and partition size.  It is stored in the
manifest and in every Parquet file; an output directory holding another
hash is never written to.  Paths (of the noise model, redshift catalog or
NMF tables) are not part of it: contents are, through checksums.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..observe.layout import OBSERVABLES
from .redshift import CatalogRedshift, SurveyRedshift, UniformRedshift, redshift_from_catalog

#: Bump when the dataset layout or the drawing algorithm (partition.py) changes:
#: either changes the content of a run with the same options.
SCHEMA_VERSION = 1
DEFAULT_Z_RANGE = (0.01, 0.06)
DEFAULT_PARTITION_SIZE = 10_000
#: ``noise_model`` value of noiseless photometric training sets.
NOISELESS = "none"


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate and where to write it.

    Parameters
    ----------
    model : str
        Forward-model registry name (:func:`sedscale.models.get_model`).
    n : int
        Rows to write (valid simulations).  Invalid draws (rejected by the
        noise model) are replaced by further draws, so ``n`` rows are
        written whatever the rejection rate.
    out : str or Path
        Output directory (created).
    seed : int
        Run seed; partition ``i`` uses ``SeedSequence(seed, spawn_key=(i,))``.
    partition_size : int
        Rows per Parquet file (the last one may be smaller).
    noise_model : str or None
        Path of a noise-model JSON (:mod:`sedscale.observe.noise`); None for
        the NSA model shipped with sedscale; ``"none"`` (:data:`NOISELESS`)
        for noiseless photometry, whose uncertainties, noise and band masks
        are drawn at training (:mod:`sedscale.observe.survey_noise`).
    z_range : (float, float) or None
        Redshift range; used when ``z_catalog`` is None.
    z_spacing : {"uniform", "survey"}
        ``uniform``: z ~ U(z_range); ``survey``: half the draws uniform in z,
        half uniform in log z (:class:`~sedscale.simulate.redshift.SurveyRedshift`).
    z_catalog : str or None
        FITS/Parquet catalog whose redshifts are resampled.
    z_column : str
        Redshift column of ``z_catalog`` (case-insensitive).
    model_options : dict
        Extra :func:`get_model` arguments (e.g. ``nmf_dir`` for provabgs).
    observable : {"photometry", "spectrum"}
        ``photometry``: noisy SDSS ugriz (the noise model rejects draws
        outside the reference catalog, as SEDflow).  ``spectrum``: noiseless
        DIGS rest-frame spectra in a list column; noise is drawn when the
        training set is read (:mod:`sedscale.observe.spectral_noise`).
    sigma_star_max : float or None
        Spectra only: stellar velocity dispersion drawn per galaxy,
        U(0, sigma_star_max) km/s, broadening the spectrum to
        ``hypot(350, sigma_star)`` (:class:`~sedscale.observe.spectra.BroadenedSpectrumOperator`;
        stored as column ``sigma_star``, marginalised by the flow).  None: the
        DIGS 350 km/s for every galaxy.
    """

    model: str
    n: int
    out: str | Path
    seed: int = 0
    partition_size: int = DEFAULT_PARTITION_SIZE
    noise_model: str | None = None
    z_range: tuple[float, float] | None = DEFAULT_Z_RANGE
    z_spacing: str = "uniform"
    z_catalog: str | None = None
    z_column: str = "z"
    model_options: dict = field(default_factory=dict)
    observable: str = "photometry"
    sigma_star_max: float | None = None

    def __post_init__(self):
        if self.observable not in OBSERVABLES:
            raise ConfigError(f"observable must be one of {OBSERVABLES}, got {self.observable!r}")
        for name in ("n", "partition_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.z_catalog is None and self.z_range is None:
            raise ConfigError("give a redshift range or a redshift catalog")
        if self.z_spacing not in ("uniform", "survey"):
            raise ConfigError(f"z_spacing must be 'uniform' or 'survey', got {self.z_spacing!r}")
        if self.noise_model == NOISELESS and self.observable != "photometry":
            raise ConfigError("noise_model 'none' applies to photometry (spectra are always stored noiseless)")
        if self.sigma_star_max is not None:
            if self.observable != "spectrum":
                raise ConfigError("a velocity dispersion applies to spectra (--observable spectrum)")
            from ..observe.spectra import SIGMA_STAR_NODES_KMS

            top = float(SIGMA_STAR_NODES_KMS[-1])
            if not (np.isfinite(self.sigma_star_max) and 0 < self.sigma_star_max <= top):
                raise ConfigError(f"sigma_star_max must be in (0, {top:g}] km/s, got {self.sigma_star_max!r}")
        object.__setattr__(self, "out", Path(self.out))

    @property
    def n_partitions(self) -> int:
        return -(-self.n // self.partition_size)

    @property
    def model_key(self) -> tuple:
        """Hashable (name, options) key of the per-process model cache."""
        return (self.model, tuple(sorted(self.model_options.items())))

    def redshift_distribution(self, z_max: float) -> UniformRedshift | CatalogRedshift:
        """The configured redshift distribution, checked against ``z_max``.

        Raises
        ------
        ConfigError
            Range outside (0, z_max] or unusable catalog.
        """
        if self.z_catalog is not None:
            return redshift_from_catalog(self.z_catalog, self.z_column, z_max=z_max)
        assert self.z_range is not None  # __post_init__ requires one of z_range and z_catalog
        low, high = (float(v) for v in self.z_range)
        dist = UniformRedshift(low, high) if self.z_spacing == "uniform" else SurveyRedshift(low, high)
        if high > z_max:
            raise ConfigError(f"redshift range [{low}, {high}] exceeds the model's limit z <= {z_max}")
        return dist

    def describe(self) -> dict[str, Any]:
        """JSON-serializable record of the options (stored in the manifest)."""
        return {
            "model": self.model,
            "n": self.n,
            "out": str(self.out),
            "seed": self.seed,
            "partition_size": self.partition_size,
            "noise_model": self.noise_model,
            "z_range": list(self.z_range) if self.z_catalog is None and self.z_range is not None else None,
            **({"z_spacing": self.z_spacing} if self.z_spacing != "uniform" else {}),
            "z_catalog": self.z_catalog,
            "z_column": self.z_column,
            "model_options": {k: str(v) for k, v in sorted(self.model_options.items())},
            "observable": self.observable,
            **({"sigma_star_max": self.sigma_star_max} if self.sigma_star_max is not None else {}),
        }


def identity(
    config: SimulationConfig, prior: dict, cosmology: str, filters, noise: dict, redshift: dict
) -> dict[str, Any]:
    """The dataset-defining content that :func:`config_hash` digests.

    Spectral runs add ``observable`` and nebular emission its
    ``nebular_log_u``; other photometric identities keep the keys (and
    hashes) they had before these existed.  (Noiseless photometry differs
    from noisy through the noise model's hash.)
    """
    ident = {
        "schema_version": SCHEMA_VERSION,
        "model": config.model,
        "prior": prior,
        "cosmology": cosmology,
        "filters": list(filters),
        "noise_model_sha256": _json_sha256(noise),
        "redshift": {k: v for k, v in redshift.items() if k != "path"},
        "n": config.n,
        "seed": config.seed,
        "partition_size": config.partition_size,
    }
    if config.observable != "photometry":
        ident["observable"] = config.observable
    if config.sigma_star_max is not None:
        ident["sigma_star_kms"] = [0.0, float(config.sigma_star_max)]
    if config.model_options.get("nebular_log_u") is not None:
        # Nebular emission changes every spectrum; other options are paths (their content is in the prior).
        ident["nebular_log_u"] = float(config.model_options["nebular_log_u"])
    return ident


def config_hash(identity_dict: dict) -> str:
    """sha256 (hex) of the canonical JSON of :func:`identity`."""
    return _json_sha256(identity_dict)


def _json_sha256(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1)
def load_spectrum_operator():
    """The DIGS :class:`~sedscale.observe.spectra.SpectrumOperator`, built once per process."""
    from ..observe.spectra import SpectrumOperator

    return SpectrumOperator()


@lru_cache(maxsize=1)
def load_broadened_operator():
    """The :class:`~sedscale.observe.spectra.BroadenedSpectrumOperator` (sigma_star nodes), built once per process."""
    from ..observe.spectra import BroadenedSpectrumOperator

    return BroadenedSpectrumOperator()


def model_spectra(model, theta, z, sigma_star=None, dtype=np.float32) -> np.ndarray:
    """Noiseless DIGS spectra (n, 138) in Lsun/A: the DIGS 350 km/s, or broadened by ``sigma_star`` (n,) km/s.

    The one forward model of spectra shared by simulation, test sets and
    the likelihood of spectral catalogs.
    """
    if sigma_star is None:
        return load_spectrum_operator().model_spectra(model, theta, z, dtype=dtype)
    return load_broadened_operator().model_spectra(model, theta, z, sigma_star, dtype=dtype)


@lru_cache(maxsize=4)
def load_noise_model(path: str | None = None):
    """The noise model at ``path`` (None: the shipped NSA one), cached per process."""
    from ..observe.noise import PhotometricNoiseModel, load_default_noise_model

    if path is None:
        return load_default_noise_model()
    if path == NOISELESS:
        return None
    return PhotometricNoiseModel.from_json(os.fspath(path))


@lru_cache(maxsize=4)
def load_model(model_key: tuple):
    """The forward model for :attr:`SimulationConfig.model_key`, cached per process.

    Built once per worker process: the SSP grid and the model's cell library
    are loaded on first use and then reused by every partition, so they are
    never pickled into tasks.

    Raises
    ------
    ConfigError
        Options the model does not accept.
    """
    from ..models import get_model

    name, options = model_key
    try:
        return get_model(name, **dict(options))
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept options {dict(options)}: {exc}") from None
