"""Reader of DESI coadded spectra that puts them on the DIGS model grid.

A DESI ``coadd-*.fits`` file holds the spectra of many targets, one row per
target in every HDU:

``FIBERMAP``
    ``TARGETID`` (and the targeting columns) of each row.
``{B,R,Z}_WAVELENGTH``
    Vacuum wavelengths (Angstrom) of the three spectrograph arms, 3600-5800,
    5760-7620 and 7520-9824 A, on one 0.8 A lattice (the overlaps share
    pixels).
``{B,R,Z}_FLUX``, ``_IVAR``, ``_MASK``
    (n_targets, n_pixels) f_lambda in 1e-17 erg/s/cm^2/A (the SDSS unit),
    inverse variance and pixel-mask bits.
``{B,R,Z}_RESOLUTION``
    (n_targets, 11, n_pixels) band-diagonal resolution matrix; its second
    moment gives the line-spread function's sigma, 25-60 km/s.

The redshift is not in the coadd: it comes from the matching
``redrock-*.fits`` (``REDSHIFTS``: ``TARGETID``, ``Z``, ``ZWARN``,
``SPECTYPE``), found next to the coadd by name (``coadd-X.fits`` ->
``redrock-X.fits``) or given explicitly.

Each target becomes an :class:`~sedscale.io.sdss.SDSSSpectrum` through the
SDSS path (:func:`~sedscale.io.sdss.spectrum_from_raw`): vacuum to air, rest
frame, smoothing to 350 km/s on top of the instrument, resampling with
inverse-variance propagation, the same flags (``ZWARN != 0``, not a galaxy,
too few good elements).  The arms are merged first: pixels where two arms
overlap are averaged with inverse-variance weights, so the merged spectrum
is one strictly increasing grid.  The resolution matrix enters only through
its width (its median over good pixels, like SDSS ``wdisp``): at 350 km/s
the shape of a 25-60 km/s line-spread function is irrelevant.

DESI spectra are also fiber spectra (1.5 arcsec diameter), calibrated to the
fiber flux: masses inferred from their amplitude are fiber masses.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

from ..errors import ParameterError
from ..units import C_KMS
from .sdss import MIN_GOOD_FRACTION, SDSSSpectrum, SpectrumFormatError, spectrum_from_raw

#: The three DESI spectrograph arms.
ARMS = ("B", "R", "Z")
#: Wavelength lattice step of DESI coadds (Angstrom); overlapping arm pixels coincide on it.
DESI_PIXEL_AA = 0.8
REDSHIFT_COLUMNS = ("TARGETID", "Z", "ZWARN", "SPECTYPE")
#: Observed-frame telluric absorption bands masked by default (vacuum Angstrom): O2 B band, O2 A band and the
#: 0.94-micron water band (9300-9800 A).  The pipeline's flux calibration divides out an average atmosphere; what is
#: left there (a few per cent, varying with airmass and humidity) is larger than a 2% error floor allows.
TELLURIC_BANDS_AA = ((6860.0, 6960.0), (7590.0, 7710.0), (9300.0, 9800.0))

__all__ = ["ARMS", "TELLURIC_BANDS_AA", "read_desi_coadd", "is_desi_coadd", "redrock_path_for",
           "resolution_sigma_pixels"]


def is_desi_coadd(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a FITS file with DESI coadd HDUs (``FIBERMAP`` and ``B_FLUX``)."""
    try:
        with fitsio.FITS(str(path)) as fits:
            return "FIBERMAP" in fits and "B_FLUX" in fits
    except OSError:
        return False


def redrock_path_for(coadd: str | os.PathLike) -> Path:
    """The redrock file the DESI pipeline writes beside ``coadd-X.fits``: ``redrock-X.fits``."""
    coadd = Path(coadd)
    if not coadd.name.startswith("coadd"):
        raise ParameterError(f"{coadd}: not named coadd-*.fits; give the redrock file explicitly")
    return coadd.with_name("redrock" + coadd.name[len("coadd"):])


def resolution_sigma_pixels(resolution: np.ndarray) -> np.ndarray:
    """Gaussian-equivalent sigma (pixels) of a DESI band-diagonal resolution matrix.

    Parameters
    ----------
    resolution : ndarray, shape (..., n_diag, n_pixels)
        Diagonals at offsets ``n_diag // 2 ... -n_diag // 2`` (DESI's
        ``RESOLUTION`` layout).

    Returns
    -------
    ndarray, shape (..., n_pixels)
        sqrt of the second moment of each pixel's kernel (NaN where the
        kernel has no positive weight).
    """
    resolution = np.asarray(resolution, dtype=float)
    n_diag = resolution.shape[-2]
    offsets = (np.arange(n_diag) - n_diag // 2)[::-1].astype(float)
    weights = np.clip(resolution, 0.0, None)
    total = weights.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights * offsets[:, None]).sum(axis=-2) / total
        var = (weights * offsets[:, None] ** 2).sum(axis=-2) / total - mean**2
    return np.where(total > 0, np.sqrt(np.clip(var, 0.0, None)), np.nan)


def _read_image(fits: fitsio.FITS, path: Path, extname: str) -> np.ndarray:
    if extname not in fits:
        raise SpectrumFormatError(f"{path}: no {extname} HDU (not a DESI coadd file?)")
    return np.asarray(fits[extname].read())


def _read_arms(path: Path) -> tuple[np.ndarray, dict]:
    """Target ids and per-arm arrays of a coadd file."""
    with fitsio.FITS(str(path)) as fits:
        if "FIBERMAP" not in fits:
            raise SpectrumFormatError(f"{path}: no FIBERMAP HDU (not a DESI coadd file?)")
        ids = np.asarray(fits["FIBERMAP"].read(columns=["TARGETID"])["TARGETID"], dtype=np.int64)
        arms: dict[str, dict[str, Any]] = {}
        for arm in ARMS:
            arms[arm] = {
                "wave": _read_image(fits, path, f"{arm}_WAVELENGTH").astype(np.float64),
                "flux": np.atleast_2d(_read_image(fits, path, f"{arm}_FLUX")).astype(np.float64),
                "ivar": np.atleast_2d(_read_image(fits, path, f"{arm}_IVAR")).astype(np.float64),
                "mask": np.atleast_2d(_read_image(fits, path, f"{arm}_MASK")).astype(np.int64),
                "sigma_kms": None,
            }
            if f"{arm}_RESOLUTION" in fits:
                res = np.asarray(fits[f"{arm}_RESOLUTION"].read(), dtype=np.float64)
                res = res[None] if res.ndim == 2 else res
                arms[arm]["sigma_kms"] = (resolution_sigma_pixels(res) * DESI_PIXEL_AA
                                          / arms[arm]["wave"][None, :] * C_KMS)
    for arm, a in arms.items():
        shape = (ids.size, a["wave"].size)
        for key in ("flux", "ivar", "mask"):
            if a[key].shape != shape:
                raise SpectrumFormatError(f"{path}: {arm}_{key.upper()} has shape {a[key].shape}, expected {shape}")
    return ids, arms


def _merge_arms(arms: dict, row: int, masked_bands=()) -> dict:
    """One target's arms on a single increasing grid; overlapping pixels averaged with ivar weights."""
    wave = np.concatenate([a["wave"] for a in arms.values()])
    key = np.round(wave / DESI_PIXEL_AA * 1000).astype(np.int64)
    grid, inverse = np.unique(key, return_inverse=True)
    flux = np.concatenate([a["flux"][row] for a in arms.values()])
    ivar = np.concatenate([a["ivar"][row] for a in arms.values()])
    mask = np.concatenate([a["mask"][row] for a in arms.values()])
    usable = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & (mask == 0)
    for lo, hi in masked_bands:
        usable &= ~((wave >= lo) & (wave <= hi))
    w = np.where(usable, ivar, 0.0)
    sum_w = np.bincount(inverse, w, grid.size)
    sum_wf = np.bincount(inverse, w * np.where(usable, flux, 0.0), grid.size)
    merged_wave = np.bincount(inverse, wave, grid.size) / np.bincount(inverse, None, grid.size)
    good = sum_w > 0
    sigma = np.concatenate([a["sigma_kms"][row] if a["sigma_kms"] is not None else np.full(a["wave"].size, np.nan)
                            for a in arms.values()])
    # The broader arm's line-spread function where two overlap (a conservative kernel).
    sigma_kms = np.full(grid.size, -np.inf)
    np.maximum.at(sigma_kms, inverse, np.where(usable & np.isfinite(sigma), sigma, -np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "loglam": np.log10(merged_wave),
            "flux": np.where(good, sum_wf / np.where(good, sum_w, 1.0), 0.0),
            "ivar": sum_w,
            "and_mask": np.where(good, 0, 1).astype(np.int64),
            "sigma_inst_kms": np.where(sigma_kms > 0, sigma_kms, np.nan),
        }


def _read_redshifts(path: Path) -> dict[int, tuple[float, int, str]]:
    """TARGETID -> (Z, ZWARN, SPECTYPE) of a redrock file."""
    if not path.is_file():
        raise SpectrumFormatError(f"{path}: no such redrock file (the coadd's redshifts)")
    try:
        with fitsio.FITS(str(path)) as fits:
            if "REDSHIFTS" not in fits:
                raise SpectrumFormatError(f"{path}: no REDSHIFTS HDU (not a redrock file?)")
            names = {c.upper(): c for c in fits["REDSHIFTS"].get_colnames()}
            missing = [c for c in REDSHIFT_COLUMNS if c not in names]
            if missing:
                raise SpectrumFormatError(f"{path}: REDSHIFTS lacks column(s) {', '.join(missing)}")
            table = fits["REDSHIFTS"].read(columns=[names[c] for c in REDSHIFT_COLUMNS])
    except OSError as exc:
        raise SpectrumFormatError(f"{path}: unreadable FITS file: {str(exc).strip().splitlines()[0]}") from exc
    cols = {c.upper(): table[c] for c in table.dtype.names}
    return {int(t): (float(z), int(w), str(s).strip().upper())
            for t, z, w, s in zip(cols["TARGETID"], cols["Z"], cols["ZWARN"], cols["SPECTYPE"])}


def read_desi_coadd(
    path: str | os.PathLike,
    redrock: str | os.PathLike | None = None,
    *,
    wavelengths: str = "air",
    min_good_fraction: float = MIN_GOOD_FRACTION,
    telluric_bands=TELLURIC_BANDS_AA,
) -> list[SDSSSpectrum]:
    """Read every target of a DESI coadd file onto the DIGS rest-frame grid.

    Parameters
    ----------
    path : str or PathLike
        A ``coadd-*.fits`` file.
    redrock : str or PathLike, optional
        Its redrock file (default: ``redrock-*.fits`` beside it).
    wavelengths : {"air", "vacuum"}
        Wavelength convention of the models (BC03/MILES: air).
    min_good_fraction : float
        Flag a spectrum with fewer good elements.
    telluric_bands : sequence of (float, float)
        Observed vacuum wavelength ranges (Angstrom) whose pixels are masked
        (default :data:`TELLURIC_BANDS_AA`; ``()`` keeps them).

    Returns
    -------
    list of SDSSSpectrum
        One per target, in file order, id ``"desi-<TARGETID>"``; a target
        without a redrock redshift, with ``ZWARN != 0`` or not a ``GALAXY``
        comes back flagged, as unusable SDSS spectra do.

    Raises
    ------
    SpectrumFormatError
        The coadd or redrock file is missing, unreadable or lacks an HDU.
    """
    path = Path(path)
    if not path.is_file():
        raise SpectrumFormatError(f"{path}: no such file")
    try:
        ids, arms = _read_arms(path)
    except OSError as exc:
        raise SpectrumFormatError(f"{path}: unreadable FITS file: {str(exc).strip().splitlines()[0]}") from exc
    redshifts = _read_redshifts(Path(redrock) if redrock is not None else redrock_path_for(path))
    out = []
    for row, target in enumerate(ids.tolist()):
        z, zwarn, spectype = redshifts.get(target, (np.nan, -1, ""))
        raw = {"id": f"desi-{target}", "z": z, "zwarning": zwarn, "spec_class": spectype, "vdisp": np.nan,
               "wdisp": np.array([]), **_merge_arms(arms, row, telluric_bands)}
        spec = spectrum_from_raw(raw, str(path), wavelengths=wavelengths, min_good_fraction=min_good_fraction)
        if target not in redshifts:
            spec.flag = True
            spec.reason = "; ".join(filter(None, [f"TARGETID {target} not in the redrock file", spec.reason]))
        out.append(spec)
    return out
