"""FSPS SSP grids through python-fsps (an optional engine).

FSPS (Conroy, Gunn & White 2009) is the engine of DIGS and PROVABGS.  It needs
two things that are not on every machine: the python bindings (PyPI ``fsps``)
and the FSPS data directory (isochrones, stellar libraries), found through the
``SPS_HOME`` environment variable.  :func:`load_fsps` checks both and raises
:class:`~sedscale.errors.MissingDataError` naming what is missing; nothing is
ever downloaded.  BC03 (:mod:`sedscale.sps.bc03`) is the default engine.

FSPS conventions used here (python-fsps ``StellarPopulation``):

* ``sfh=0`` is a simple stellar population normalized to 1 Msun formed;
  ``get_spectrum(tage=0)`` returns all SSP ages at once, shape
  (n_age, n_wave), in Lsun/Hz (``peraa=True`` converts with c = 3e18 A/s;
  we convert with the exact c instead, a 0.07% difference).
* ``log_age`` is log10(age/yr); ``stellar_mass`` is the surviving mass per
  Msun formed, remnants included unless ``add_stellar_remnants=False`` (we
  set it, to match the living-stars convention of :class:`SSPGrid`).
* ``zlegend`` holds the absolute metallicities of the isochrone set and
  ``solar_metallicity`` its Z_sun (0.0142 for MIST, 0.019 for Padova).
* ``imf_type``: 0 Salpeter, 1 Chabrier, 2 Kroupa.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MissingDataError, ParameterError
from ..units import C_AA_S
from .grid import SSPGrid

#: python-fsps ``imf_type`` codes.
FSPS_IMF_TYPES = {"salpeter": 0, "chabrier": 1, "kroupa": 2}
#: File python-fsps itself checks for to accept an FSPS data directory.
FSPS_DATA_SENTINEL = Path("data") / "emlines_info.dat"
FSPS_REPOSITORY = "https://github.com/cconroy20/fsps"


def fsps_problems() -> list[str]:
    """What prevents FSPS from running here, one entry per problem (empty if nothing).

    ``SPS_HOME`` is checked first and without importing fsps, because
    ``import fsps`` itself fails when ``SPS_HOME`` is unset.
    """
    problems = []
    sps_home = os.environ.get("SPS_HOME")
    how = f"clone {FSPS_REPOSITORY} (it includes the data files) and export SPS_HOME=/path/to/fsps"
    if not sps_home:
        problems.append(f"the environment variable SPS_HOME is not set: {how}")
    elif not Path(sps_home).is_dir():
        problems.append(f"SPS_HOME={sps_home} is not a directory: {how}")
    elif not (Path(sps_home) / FSPS_DATA_SENTINEL).is_file():
        problems.append(
            f"SPS_HOME={sps_home} does not hold the FSPS data files ({FSPS_DATA_SENTINEL} is missing): {how}"
        )
    if importlib.util.find_spec("fsps") is None:
        problems.append("the python package 'fsps' (python-fsps) is not installed: pip install fsps")
    return problems


def _import_fsps():
    """Import python-fsps or raise :class:`MissingDataError` listing every missing piece."""
    problems = fsps_problems()
    if problems:
        raise MissingDataError("the FSPS engine is unavailable: " + "; ".join(problems))
    try:
        return importlib.import_module("fsps")
    except (ImportError, RuntimeError) as exc:
        # RuntimeError: python-fsps rejected SPS_HOME; ImportError: a broken build.
        raise MissingDataError(f"the FSPS engine is unavailable: import fsps failed: {exc}") from exc


def load_fsps(imf: str = "chabrier", zcontinuous: int = 0, logzsol=None) -> SSPGrid:
    """Tabulate FSPS SSPs as an :class:`SSPGrid` (cached per process).

    Parameters
    ----------
    imf : {"salpeter", "chabrier", "kroupa"}
        Initial mass function.
    zcontinuous : {0, 1}
        0: the native metallicities of the isochrone set (``zlegend``).
        1: SSPs interpolated by FSPS to the metallicities ``logzsol``.
    logzsol : sequence of float, optional
        log10(Z/Zsun) values, required (and only allowed) with
        ``zcontinuous=1``.

    Returns
    -------
    SSPGrid
        L_lambda in Lsun/A per Msun formed on the FSPS wavelength grid, ages
        in yr with an age-0 entry copied from the youngest SSP (FSPS starts
        at 10^5-10^5.5 yr), living-star mass fractions.

    Raises
    ------
    MissingDataError
        If python-fsps or the FSPS data (``SPS_HOME``) is missing.
    ParameterError
        For an unknown IMF or inconsistent metallicity options.
    """
    if imf not in FSPS_IMF_TYPES:
        raise ParameterError(f"unknown IMF {imf!r} for FSPS; choose one of {sorted(FSPS_IMF_TYPES)}")
    if zcontinuous not in (0, 1):
        raise ParameterError(f"zcontinuous must be 0 or 1 for an SSP grid, got {zcontinuous!r}")
    if (zcontinuous == 1) != (logzsol is not None):
        raise ParameterError("logzsol must be given with zcontinuous=1 and only then")
    if logzsol is not None:
        logzsol = tuple(sorted(float(v) for v in np.atleast_1d(logzsol)))
        if len(logzsol) < 2 or len(set(logzsol)) != len(logzsol):
            raise ParameterError("logzsol needs at least two distinct values")
    return _load_fsps(imf, zcontinuous, logzsol)


@lru_cache(maxsize=4)
def _load_fsps(imf: str, zcontinuous: int, logzsol: tuple | None) -> SSPGrid:
    fsps = _import_fsps()
    sp = fsps.StellarPopulation(
        zcontinuous=zcontinuous,
        imf_type=FSPS_IMF_TYPES[imf],
        sfh=0,
        add_neb_emission=False,
        add_dust_emission=False,
        add_stellar_remnants=False,
    )
    zsun = getattr(sp, "solar_metallicity", None)
    if zsun is None:
        raise MissingDataError(
            "this python-fsps is too old (no StellarPopulation.solar_metallicity): pip install -U fsps"
        )
    zsun = float(zsun)
    if zcontinuous == 0:
        metallicities = np.asarray(sp.zlegend, dtype=float)
        settings = [("zmet", k + 1) for k in range(metallicities.size)]
    else:
        assert logzsol is not None  # load_fsps passes logzsol exactly when zcontinuous == 1
        metallicities = zsun * 10.0 ** np.asarray(logzsol)
        settings = [("logzsol", v) for v in logzsol]
    spectra, masses, log_age = [], [], None
    for key, value in settings:
        sp.params[key] = value
        wave, spec_hz = sp.get_spectrum(tage=0.0, peraa=False)
        spectra.append(np.asarray(spec_hz, dtype=np.float64) * (C_AA_S / wave**2))
        masses.append(np.asarray(sp.stellar_mass, dtype=np.float64))
        log_age = np.asarray(sp.log_age, dtype=np.float64)
    assert log_age is not None  # settings holds at least two metallicities
    lum, surviving = np.stack(spectra), np.stack(masses)
    order = np.argsort(metallicities)
    isoc, speclib = (_decode(name) for name in sp.libraries[:2])
    return SSPGrid(
        name=f"fsps_{isoc}_{speclib}",
        ages=np.concatenate([[0.0], 10.0**log_age]),
        metallicities=metallicities[order],
        zsun=zsun,
        wavelength=np.asarray(wave, dtype=np.float64),
        lum=np.concatenate([lum[:, :1], lum], axis=1)[order],
        surviving_mass_fraction=np.concatenate([surviving[:, :1], surviving], axis=1)[order],
        imf=imf,
    )


def _decode(name) -> str:
    return (name.decode("utf-8") if isinstance(name, bytes) else str(name)).strip().lower()
