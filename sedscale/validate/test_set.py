"""The test set of a validation: fresh simulations drawn as the checkpoint's training set was.

Independent random streams (a seed the training set never used), the
checkpoint's model, prior, noise (or band-masked survey noise, optionally
restricted to one survey's bands) and redshift distribution; the derived
properties calibrated beside the parameters and the strata.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..errors import ConfigError, SedscaleError
from ..observe.layout import (
    FLUX_COLUMNS,
    FLUX_SIGMA_COLUMNS,
    MAG_COLUMNS,
    MAG_SIGMA_COLUMNS,
    REDSHIFT_COLUMN,
)

#: Spawn key of the test-set random streams: far above any training partition index.
TEST_STREAM_KEY = 2**31 - 1
#: Band of the magnitude and S/N strata.
STRATA_BAND = "r"
#: Redshift strata of band-masked (survey) flows (extended to a training set's upper redshift).
Z_STRATA = np.array([0.002, 0.05, 0.15, 0.3, 0.6])


def z_strata(z_high: float) -> np.ndarray:
    """:data:`Z_STRATA` up to ``z_high``, ending at it when it lies beyond the last edge."""
    edges = Z_STRATA[Z_STRATA < z_high]
    return np.append(edges, z_high) if z_high > Z_STRATA[-1] else Z_STRATA


def validation_streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent (theta, z, noise, rank) generators of a test set."""
    children = np.random.SeedSequence(entropy=seed, spawn_key=(TEST_STREAM_KEY,)).spawn(4)
    return tuple(np.random.default_rng(c) for c in children)


def redshift_from_metadata(redshift: dict | None, z_max: float, z_range=None, log=print):
    """The training set's redshift distribution (or ``z_range`` when given).

    A catalog distribution whose file is no longer readable falls back to a
    uniform one over the catalog's redshift range, with a message.
    """
    from ..simulate.redshift import SurveyRedshift, UniformRedshift, redshift_from_catalog

    if z_range is not None:
        return UniformRedshift(float(z_range[0]), float(z_range[1]))
    if not redshift:
        raise ConfigError("the checkpoint does not record its training redshifts; give --z-range")
    if redshift.get("kind") == "uniform":
        return UniformRedshift(float(redshift["low"]), float(redshift["high"]))
    if redshift.get("kind") == "survey":
        return SurveyRedshift(float(redshift["low"]), float(redshift["high"]))
    if redshift.get("kind") == "catalog":
        try:
            dist = redshift_from_catalog(redshift["path"], redshift["column"], z_max=z_max)
        except SedscaleError as exc:
            log(f"training redshift catalog unusable ({exc}); drawing z ~ U[{redshift['low']}, {redshift['high']}]")
            return UniformRedshift(float(redshift["low"]), float(redshift["high"]))
        if dist.sha256 != redshift.get("sha256"):
            log(f"warning: {redshift['path']} changed since training (redshift checksum differs)")
        return dist
    raise ConfigError(f"unknown training redshift distribution {redshift!r}")


def noise_for_checkpoint(metadata: dict, path: str | None = None, log=print):
    """The noise model to simulate with, compared with the training set's."""
    import hashlib

    from ..simulate.config import load_noise_model

    noise = load_noise_model(path)
    want = (metadata.get("training_set") or {}).get("noise_model_sha256")
    have = hashlib.sha256(json.dumps(noise.to_dict(), sort_keys=True).encode()).hexdigest()
    if want and want != have:
        log("warning: the noise model differs from the one of the training set (sha256 mismatch)")
    return noise


def simulate_test_set(model, noise, redshift, n: int, streams) -> pd.DataFrame:
    """``n`` valid test simulations as a frame in the training-set column layout.

    Columns: ``sim_id``, the parameters, ``z``, ``flux_*``,
    ``flux_sigma_*`` (nanomaggies), ``mag_*``, ``sigma_*`` (mag).
    """
    from ..simulate.partition import draw_valid

    draws = draw_valid(model, noise, redshift, n, streams[:3])
    cols = {"sim_id": np.arange(n, dtype=np.int64)}
    cols.update({p: draws.theta[:, j] for j, p in enumerate(model.param_names)})
    cols[REDSHIFT_COLUMN] = draws.z
    for names, arr in (
        (FLUX_COLUMNS, draws.flux),
        (FLUX_SIGMA_COLUMNS, draws.flux_sigma),
        (MAG_COLUMNS, draws.mag),
        (MAG_SIGMA_COLUMNS, draws.mag_sigma),
    ):
        cols.update({c: arr[:, k] for k, c in enumerate(names)})
    return pd.DataFrame(cols)


def simulate_masked_test_set(model, noise, redshift, n: int, streams) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` test simulations of a band-masked flow, with the checkpoint's training noise.

    Draws as ``bin/run_simulate --noise-model none`` does, then uncertainties,
    noise and band masks as training does (rows outside the noise model's
    magnitude range or with fewer than three usable bands are replaced).

    Returns
    -------
    test : pandas.DataFrame
        ``sim_id``, the parameters, ``z``, and per band of the model's set
        ``flux_<b>`` and ``flux_sigma_<b>`` (nanomaggies; NaN sigma for
        masked bands), ``mag_<b>`` (NaN where masked), ``observed_<b>``
        (0/1); ``n_bands``.
    x : ndarray, shape (n, 3 n_band + 1), float32
    """
    from ..observe.layout import masked_photometry_x
    from ..simulate.partition import draw_photometry

    bands = model.bands
    parts, xs, have = [], [], 0
    while have < n:
        theta, z, flux_true = draw_photometry(model, redshift, 2 * (n - have) + 16, streams[:3])
        flux, sigma = noise.draw(flux_true, streams[2])
        x, used, valid = masked_photometry_x(flux, sigma, z, noise.error_floor)
        keep = np.flatnonzero(valid & noise.usable(flux_true))[: n - have]
        cols = {p: theta[keep, j] for j, p in enumerate(model.param_names)}
        cols[REDSHIFT_COLUMN] = z[keep]
        cols.update({c: flux[keep, k] for k, c in enumerate(bands.columns("flux_"))})
        cols.update({c: np.where(used[keep, k], sigma[keep, k], np.nan)
                     for k, c in enumerate(bands.columns("flux_sigma_"))})
        cols.update({c: np.where(used[keep, k], x[keep, k], np.nan) for k, c in enumerate(bands.columns("mag_"))})
        cols.update({c: used[keep, k].astype(np.int8) for k, c in enumerate(bands.columns("observed_"))})
        cols["n_bands"] = used[keep].sum(axis=1)
        parts.append(pd.DataFrame(cols))
        xs.append(x[keep])
        have += keep.size
    test = pd.concat(parts, ignore_index=True)
    test.insert(0, "sim_id", np.arange(n, dtype=np.int64))
    return test, np.concatenate(xs)


def observed_pattern(bands, observed) -> tuple[bool, ...]:
    """Presence per band of ``bands`` (a BandSet) of the labels ``observed``; a one-line error for unknown ones."""
    from ..observe.layout import MIN_BANDS

    unknown = sorted(set(observed) - set(bands.bands))
    if unknown:
        raise ConfigError(f"--observed-bands {unknown} not in band set {bands.name!r} {bands.bands}")
    if len(set(observed)) < MIN_BANDS:
        raise ConfigError(f"--observed-bands needs >= {MIN_BANDS} bands, got {list(observed)}")
    return tuple(b in observed for b in bands.bands)


def strata_band(test: pd.DataFrame, bands) -> str:
    """Band of the magnitude and S/N strata: :data:`STRATA_BAND` if the test set measured it, else the most measured."""
    counts = {b: int(np.isfinite(test[f"mag_{b}"]).sum()) for b in bands if f"mag_{b}" in test}
    if counts.get(STRATA_BAND, 0) >= len(test) // 2:
        return STRATA_BAND
    return max(counts, key=counts.__getitem__)


#: Derived properties calibrated beside the parameters: name, function of ``model.derived``, rank range.
DERIVED_CHECKS = (
    ("log_mstar_total", lambda d: d["log_mstar_total"], (4.0, 13.0)),
    ("log_sfr_100myr", lambda d: np.log10(np.maximum(d["sfr_100myr"], 1e-8)), (-8.0, 4.0)),
    ("log_sfr_1gyr", lambda d: np.log10(np.maximum(d["sfr_1gyr"], 1e-8)), (-8.0, 4.0)),
    ("log_z_mw", lambda d: np.log10(np.maximum(d["z_mw"], 1e-6)), (-6.0, -1.0)),
    ("age_mw", lambda d: d["age_mw"], (0.0, 14.0)),
)


def derived_for_calibration(model, samples, theta_true, z,
                            z_samples=None) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Derived quantities of the samples and of the truths (:data:`DERIVED_CHECKS`: log M* of living stars
    + remnants, log SFR over 100 Myr and 1 Gyr, mass-weighted log Z and age).

    ``samples`` (n, L, d) are the model's parameters, ``z`` (n,) the true
    redshifts and ``z_samples`` (n, L) each sample's redshift (default ``z``).

    Returns
    -------
    names : list of str
    samples_d : ndarray, shape (n, L, k)
    truth_d : ndarray, shape (n, k)
    low, high : ndarray, shape (k,)
        Ranges used for the TARP distance scale.
    """
    n, L, d = samples.shape
    theta = np.clip(samples.reshape(n * L, d), model.prior.low, model.prior.high)
    drawn = model.derived(theta, np.repeat(z, L) if z_samples is None else np.asarray(z_samples, float).reshape(n * L))
    truth = model.derived(np.asarray(theta_true, dtype=float), z)
    names = [c[0] for c in DERIVED_CHECKS]
    samples_d = np.stack([f(drawn).reshape(n, L) for _, f, _ in DERIVED_CHECKS], axis=-1)
    truth_d = np.stack([f(truth) for _, f, _ in DERIVED_CHECKS], axis=-1)
    low = np.array([r[0] for _, _, r in DERIVED_CHECKS])
    high = np.array([r[1] for _, _, r in DERIVED_CHECKS])
    return names, samples_d, truth_d, low, high
