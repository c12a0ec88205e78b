"""MOCK NSA-format catalogs with known truths, made with sedscale's own simulator.

A mock catalog lets a fresh machine run ``bin/run_catalog`` without any
download and lets tests check posteriors against the truth.  It is an NSA
FITS table (``NSAID``, ``Z``, ``NMGY[7]``, ``NMGY_IVAR[7]`` in nanomaggies,
bands FUV, NUV, u, g, r, i, z; ``MASS`` in Msun h^-2 with h = 1 like the
NSA), so it exercises exactly the code path of real NSA files.  It is
**not** NSA data: the header says ``MOCK = T`` and the file name should say
mock too.

* Galaxies are drawn from the model's prior, redshifts uniformly in
  ``z_range``, photometry and uncertainties from the NSA noise model, with
  the simulator's own rejection of draws outside the NSA flux range
  (:func:`sedscale.simulate.draw_valid`), i.e. from the training distribution.
* FUV and NUV are not simulated: flux 0 with inverse variance 0.
* Truth columns ``TRUE_<NAME>`` hold every sampling-space parameter and
  every derived property (``TRUE_LOG_MSTAR``, ...).
* ``n_defects`` rows are then damaged on purpose (NaN flux, zero ivar,
  missing or negative redshift, non-positive flux), each described in the
  ``MOCK_DEFECT`` column, to show the quality flags.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError

#: NSAIDs of mock galaxies start here (real NSAIDs are below 200,000).
MOCK_ID_OFFSET = 90_000_000
#: h of the cosmology used to express MASS in the NSA's h^-2 units.
NSA_LITTLE_H = 0.7
#: Defects applied in turn to the last ``n_defects`` rows: (label, function).
DEFECTS = ("nan_flux_g", "zero_ivar_r", "missing_z", "negative_z", "nonpositive_flux_u")


def _apply_defect(label: str, nmgy: np.ndarray, ivar: np.ndarray, z: np.ndarray, i: int) -> None:
    band = {"u": 2, "g": 3, "r": 4}
    if label == "nan_flux_g":
        nmgy[i, band["g"]] = np.nan
    elif label == "zero_ivar_r":
        ivar[i, band["r"]] = 0.0
    elif label == "missing_z":
        z[i] = np.nan
    elif label == "negative_z":
        z[i] = -0.01
    elif label == "nonpositive_flux_u":
        nmgy[i, band["u"]] = -abs(nmgy[i, band["u"]])


def make_mock_nsa(
    n: int,
    seed: int = 0,
    model: str = "dirichlet",
    z_range: tuple[float, float] = (0.01, 0.06),
    n_defects: int = 0,
    noise_model: str | None = None,
    model_options: dict | None = None,
) -> tuple[dict, dict]:
    """Simulate a mock NSA-format catalog.

    Parameters
    ----------
    n : int
        Galaxies (rows), defects included.
    seed : int
    model : str
        Forward-model name.
    z_range : (float, float)
        Uniform redshift range (use the flow's training range).
    n_defects : int
        Rows damaged on purpose (cycling through :data:`DEFECTS`).
    noise_model : str, optional
        Noise-model JSON (default: the shipped NSA model).
    model_options : dict, optional
        Forward-model options (e.g. ``{"prior": "physical"}``: the truths
        are drawn from that prior).

    Returns
    -------
    columns : dict of str to ndarray
        FITS columns (upper case).
    header : dict
        Keywords describing the mock.
    """
    from ..simulate import (
        UniformRedshift,
        draw_valid,
        load_model,
        load_noise_model,
        partition_streams,
    )

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if not 0 <= n_defects <= n:
        raise ConfigError(f"n_defects must be in [0, {n}], got {n_defects}")
    fm = load_model((model, tuple(sorted((model_options or {}).items()))))
    noise = load_noise_model(noise_model)
    draws = draw_valid(fm, noise, UniformRedshift(*z_range), n, partition_streams(seed, 0))
    derived = fm.derived(draws.theta, draws.z)
    nmgy = np.zeros((n, 7), dtype=np.float64)
    ivar = np.zeros((n, 7), dtype=np.float64)
    nmgy[:, 2:7] = draws.flux
    ivar[:, 2:7] = 1.0 / draws.flux_sigma**2
    z = draws.z.copy()
    defect = np.full(n, "", dtype=object)
    for k in range(n_defects):
        i = n - n_defects + k
        defect[i] = DEFECTS[k % len(DEFECTS)]
        _apply_defect(defect[i], nmgy, ivar, z, i)
    columns = {
        "NSAID": MOCK_ID_OFFSET + np.arange(n, dtype=np.int64),
        "Z": z.astype(np.float32),
        "NMGY": nmgy.astype(np.float32),
        "NMGY_IVAR": ivar.astype(np.float32),
        "MASS": (10.0 ** derived["log_mstar_total"] * NSA_LITTLE_H**2).astype(np.float32),
    }
    for j, name in enumerate(fm.param_names):
        columns[f"TRUE_{name.upper()}"] = draws.theta[:, j].astype(np.float32)
    for name in sorted(derived):
        key = f"TRUE_{name.upper()}"
        if key not in columns:
            columns[key] = np.asarray(derived[name], dtype=np.float32)
    columns["MOCK_DEFECT"] = np.asarray(defect.tolist(), dtype="U24")
    header = {
        "MOCK": (True, "simulated by sedscale: NOT real NSA data"),
        "OBJECT": "MOCK NSA-format catalog",
        "ORIGIN": "sedscale bin/make_mock_catalog",
        "MODEL": (model, "sedscale forward model"),
        "SEED": (seed, "simulation seed"),
        "NGAL": (n, "rows"),
        "NDEFECT": (n_defects, "rows damaged on purpose (MOCK_DEFECT)"),
        "ZMIN": (float(z_range[0]), "uniform redshift range, low"),
        "ZMAX": (float(z_range[1]), "uniform redshift range, high"),
        "MASSUNIT": ("Msun h^-2, h=1", f"MASS = M*(living+remnants, true) x {NSA_LITTLE_H}^2, as NSA"),
        "COSMO": (fm.cosmology, "cosmology of the forward model"),
        "PRIOR": json.dumps(fm.prior.to_dict(), sort_keys=True),
        "NOISE": (noise_model or "sedscale/data/nsa_noise.json", "photometric noise model"),
    }
    return columns, header


def write_mock_nsa(path: str | os.PathLike, **kwargs) -> Path:
    """Simulate (:func:`make_mock_nsa`) and write a mock NSA FITS file atomically.

    Returns
    -------
    Path
    """
    import warnings

    from astropy.io import fits

    from ..io.atomic import atomic_write

    columns, header = make_mock_nsa(**kwargs)
    cols = []
    for name, values in columns.items():
        if values.dtype.kind == "U":
            width = max(1, int(np.char.str_len(values).max(initial=1)))
            cols.append(fits.Column(name=name, format=f"{width}A", array=values.astype(f"S{width}")))
            continue
        code = {"f4": "E", "f8": "D", "i8": "K", "i4": "J"}[values.dtype.str[1:]]
        fmt = f"{values.shape[1]}{code}" if values.ndim == 2 else code
        cols.append(fits.Column(name=name, format=fmt, array=values))
    hdu = fits.BinTableHDU.from_columns(cols)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for key, value in header.items():
            hdu.header[key] = value
        for line in (
            "MOCK catalog simulated with sedscale's forward model and noise model.",
            "It is NOT NASA-Sloan Atlas data. TRUE_* columns hold the truths.",
            "NMGY, NMGY_IVAR: nanomaggies (^-2), bands FUV,NUV,u,g,r,i,z as NSA.",
        ):
            hdu.header.add_comment(line)
    primary = fits.PrimaryHDU()
    primary.header["MOCK"] = (True, "simulated by sedscale: NOT real NSA data")
    return atomic_write(path, lambda tmp: fits.HDUList([primary, hdu]).writeto(tmp, overwrite=True))
