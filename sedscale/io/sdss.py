"""Reader of SDSS spectra that puts them on the DIGS model grid.

An SDSS ``spec-PLATE-MJD-FIBER.fits`` file holds the coadded fiber spectrum
in the ``COADD`` table and the pipeline redshift in ``SPECOBJ``:

``COADD``: ``loglam``
    log10 of the *vacuum* observed wavelength (Angstrom), uniform with a step
    of 1e-4 dex (69.03 km/s per pixel).
``flux``, ``ivar``
    Observed f_lambda in 1e-17 erg/s/cm^2/A and its inverse variance.
``and_mask``
    Pixel-mask bits set in *all* exposures (``SPPIXMASK``).
``wdisp``
    Gaussian sigma of the line-spread function, in pixels of 1e-4 dex.
``SPECOBJ``: ``Z``, ``ZWARNING``, ``CLASS``, ``PLATE``, ``MJD``, ``FIBERID``
    Pipeline redshift, its warning bits, the spectral class and the
    identifiers.

:func:`read_sdss_spectrum` turns one file into a :class:`SDSSSpectrum`
sampled like the model's data vector (:class:`sedscale.observe.spectra.SpectrumOperator`:
rest-frame spectrum smoothed by a Gaussian of sigma_v = 350 km/s, point-sampled
at the 138 log-spaced :data:`~sedscale.observe.spectra.DIGS_WAVELENGTH` points):

1. **Pixel mask.** A pixel is used only if ``ivar > 0``, ``flux``/``ivar``
   are finite and ``and_mask & mask_bits == 0`` (by default every bit: the
   conservative choice; pass ``mask_bits`` to keep pixels that only carry
   warnings such as ``MANYBADCOLUMNS``, which SDSS sets over a whole arm).
2. **Air wavelengths.** SDSS wavelengths are in vacuum, the BC03/MILES grids
   of the default SPS engine in air (Ca K at 3933.8 A, not 3934.8 A): a
   ~85 km/s offset.  By default the observed wavelengths are converted to air
   (:func:`vacuum_to_air`); pass ``wavelengths="vacuum"`` for vacuum models.
3. **Rest frame.** ``lambda_rest = lambda_obs / (1 + z)`` and
   ``f_rest = (1 + z) f_obs`` (ivar divided by (1 + z)^2).  ``f_rest`` is the
   flux per *rest-frame* Angstrom, i.e. ``L_lambda(lambda_rest) / (4 pi d_L^2)``,
   still in 1e-17 erg/s/cm^2/A: it is proportional to the model's rest-frame
   L_lambda with a galaxy-independent shape; :func:`rest_luminosity` converts
   it to L_lambda in Lsun/A.
4. **Resolution matching.** The data already carry the instrumental
   line-spread function, sigma_inst = ``wdisp`` x 69 km/s (~60 km/s for
   SDSS-I, 45-85 km/s across the spectrum); a further Gaussian of
   sigma_k = sqrt(350^2 - sigma_inst^2) km/s brings them to 350 km/s.  One
   kernel per spectrum, from the median sigma_inst of the good pixels: the
   extremes change sigma_k by < 2% (339-347 km/s), far below what the 138
   elements of ~2,030 km/s resolve, while a constant kernel keeps the
   operation a plain convolution.  By default the galaxy's own stellar
   velocity dispersion stays in the data on top of the 350 km/s, as the
   model library's resolution does on the model side (see
   :mod:`sedscale.observe.spectra`); ``subtract_vdisp=True`` also removes
   the pipeline's ``VDISP`` in quadrature, reading 350 km/s as the total.
5. **Smoothing, resampling and inverse variance** (:func:`smooth_resample`):
   each output element is a weighted mean of the input pixels with the
   Gaussian kernel (in ln lambda, applied to ``lambda * f_lambda`` as in
   :func:`~sedscale.observe.spectra.smooth_velocity`) as weights; masked
   pixels get zero weight and the remaining weights are renormalized.  The
   output ivar is the inverse of the propagated variance of that weighted
   mean.  Kernel weights rather than kernel x ivar weights: ivar-weighting
   changes the effective kernel wherever the noise varies (sky lines,
   Poisson noise that tracks absorption features) and biases the data away
   from the model's plain Gaussian average.  On the six shared spectra it
   would gain < 1% in S/N but shift the elements by -0.1 to -0.2 sigma in
   the median (up to 3 sigma), low because Poisson ivar is higher where the
   flux is lower.  Outputs whose good input pixels carry
   less than ``min_weight_fraction`` of the full kernel (gaps, ends of the
   observed range) are marked bad in ``good``.
6. **Spectrum flags.** A spectrum is flagged (``flag=True``, with the
   ``reason``) when the file is unreadable, the redshift is missing or has
   ``ZWARNING != 0``, the class is not ``GALAXY``, values are non-finite, all
   ivar are zero, or fewer than ``min_good_fraction`` of the 138 elements are
   good (reported as a coverage problem when the observed range alone
   already leaves too few).  Unflagged spectra can still have bad elements.

Notes
-----
* SDSS-I/II spectra end at ~9,200 A observed, so the top of the DIGS grid
  (9,500 A rest) is never covered: at z = 0.02-0.06 the last ~8-15 elements
  are marked bad, at z = 0.26 about 30%.  Inference must handle missing
  elements (e.g. a flow trained with masked elements).
* Neighbouring outputs share input pixels only in the far tails of the
  kernel (elements are ~5.9 sigma_k apart, the kernel is cut at 5 sigma_k),
  so their correlation coefficient is below ~2e-4 and the diagonal ivar is
  the full covariance to that accuracy; :func:`smoothing_weights` gives the
  weights to build the exact covariance ``W diag(1/ivar_in) W^T``.
* These are 3-arcsec fiber spectra, spectrophotometrically calibrated to
  the fiber (not the total) flux: masses inferred from their amplitude are
  fiber masses.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
import pandas as pd

from ..cosmology import DEFAULT_COSMOLOGY, cosmology_table
from ..errors import ParameterError, SedscaleError
from ..observe.smoothing import (
    MIN_WEIGHT_FRACTION,
    kernel_sigma_kms,
    smooth_resample,
    smoothing_weights,
    vacuum_to_air,
)
from ..observe.spectra import DIGS_SIGMA_V_KMS, DIGS_WAVELENGTH, FLAMBDA_UNIT_CGS
from ..units import C_KMS, LSUN_ERG_S

#: Velocity width of one SDSS pixel (1e-4 dex in wavelength), km/s.
SDSS_PIXEL_KMS = C_KMS * np.log(10.0) * 1e-4
#: Columns read from the ``COADD`` table (lower case as in SDSS files).
COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask", "wdisp")
#: Columns read from the ``SPECOBJ`` table.
SPECOBJ_COLUMNS = ("Z", "ZWARNING", "CLASS")
#: Identifier columns of ``SPECOBJ``, used when present.
SPECOBJ_ID_COLUMNS = ("PLATE", "MJD", "FIBERID")
#: SDSS spectroscopic pixel-mask (``SPPIXMASK``) bit numbers by name; bits
#: 0-12 are per-fiber conditions copied to every pixel of the fiber.
SPPIXMASK = {
    "NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4, "MANYREJECTED": 5,
    "LARGESHIFT": 6, "BADSKYFIBER": 7, "NEARWHOPPER": 8, "WHOPPER": 9, "SMEARIMAGE": 10,
    "SMEARHIGHSN": 11, "SMEARMEDSN": 12, "NEARBADPIXEL": 16, "LOWFLAT": 17, "FULLREJECT": 18,
    "PARTIALREJECT": 19, "SCATTEREDLIGHT": 20, "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23,
    "NODATA": 24, "COMBINEREJ": 25, "BADFLUXFACTOR": 26, "BADSKYCHI": 27, "REDMONSTER": 28,
}  # fmt: skip
#: Every ``and_mask`` bit counts as bad.
ALL_MASK_BITS = 0xFFFFFFFF
#: A spectrum is flagged when fewer of its 138 elements than this are good.
MIN_GOOD_FRACTION = 0.7
WAVELENGTH_CONVENTIONS = ("air", "vacuum")
_ID_PATTERN = re.compile(r"spec-(\d+)-(\d+)-(\d+)", re.IGNORECASE)


class SpectrumFormatError(SedscaleError, ValueError):
    """A spectrum file is missing, unreadable (truncated) or lacks an HDU or column."""


@dataclass
class SDSSSpectrum:
    """One SDSS spectrum on the DIGS rest-frame grid.

    Attributes
    ----------
    id : str
        ``"PLATE-MJD-FIBER"`` (zero-padded as in SDSS file names).
    path : str
        The file read.
    z : float
        Redshift used for the rest frame (NaN if none).
    zwarning : int
        ``SPECOBJ`` ``ZWARNING`` bits (-1 when unknown).
    spec_class : str
        ``SPECOBJ`` ``CLASS`` (``GALAXY``, ``QSO``, ``STAR``; ``""`` if unknown).
    wave : ndarray, shape (138,)
        Rest-frame wavelengths (Angstrom, air unless read with
        ``wavelengths="vacuum"``), :data:`DIGS_WAVELENGTH`.
    flux : ndarray, shape (138,)
        Rest-frame f_lambda, ``(1 + z) f_lambda,obs``, smoothed to 350 km/s,
        in 1e-17 erg/s/cm^2 per rest-frame Angstrom; NaN where no good pixel
        contributes.
    ivar : ndarray, shape (138,)
        Inverse variance of ``flux`` ((1e-17 erg/s/cm^2/A)^-2); 0 where no
        good pixel contributes.
    good : ndarray of bool, shape (138,)
        Elements fit for inference.
    flag : bool
        True when the spectrum should not be used; see ``reason``.
    reason : str
        Why it is flagged (``"; "``-separated), ``""`` if not flagged.
    sigma_inst_kms : float
        Median instrumental sigma of the good pixels (km/s).
    sigma_kernel_kms : float
        Sigma of the Gaussian applied, sqrt(350^2 - sigma_inst^2) (km/s).
    coverage : float
        Fraction of elements the observed wavelength range alone could make
        good (before the pixel mask).
    """

    id: str
    path: str
    z: float = np.nan
    zwarning: int = -1
    spec_class: str = ""
    wave: np.ndarray = field(default_factory=lambda: DIGS_WAVELENGTH.copy())
    flux: np.ndarray = field(default_factory=lambda: np.full(DIGS_WAVELENGTH.size, np.nan))
    ivar: np.ndarray = field(default_factory=lambda: np.zeros(DIGS_WAVELENGTH.size))
    good: np.ndarray = field(default_factory=lambda: np.zeros(DIGS_WAVELENGTH.size, dtype=bool))
    flag: bool = False
    reason: str = ""
    sigma_inst_kms: float = np.nan
    sigma_kernel_kms: float = np.nan
    coverage: float = 0.0

    @property
    def good_fraction(self) -> float:
        """Fraction of the 138 elements that are good."""
        return float(np.mean(self.good))

    @property
    def median_snr(self) -> float:
        """Median flux * sqrt(ivar) over good elements (NaN if none)."""
        if not self.good.any():
            return np.nan
        return float(np.median(self.flux[self.good] * np.sqrt(self.ivar[self.good])))


def sppixmask(*names: str) -> int:
    """Integer with the named :data:`SPPIXMASK` bits set.

    ``mask_bits=ALL_MASK_BITS & ~sppixmask("MANYBADCOLUMNS")`` keeps pixels
    that carry only that (fiber-level) warning.
    """
    unknown = [n for n in names if n.upper() not in SPPIXMASK]
    if unknown:
        raise ParameterError(f"unknown SPPIXMASK bit(s) {', '.join(unknown)}; known: {', '.join(SPPIXMASK)}")
    return sum(1 << SPPIXMASK[n.upper()] for n in dict.fromkeys(names))


def _spectrum_id(path: Path, ids: dict | None) -> str:
    if ids is not None:
        return f"{ids['PLATE']:04d}-{ids['MJD']:05d}-{ids['FIBERID']:04d}"
    match = _ID_PATTERN.search(path.name)
    return "-".join(match.groups()) if match else path.stem


def _read_table(fits: fitsio.FITS, path: Path, extname: str, wanted: Sequence[str]) -> np.ndarray:
    """The ``wanted`` columns (case-insensitive) of a table HDU, named as in ``wanted``."""
    if extname not in fits:
        raise SpectrumFormatError(f"{path}: no {extname} HDU")
    hdu = fits[extname]
    if hdu.get_exttype() not in ("BINARY_TBL", "ASCII_TBL"):
        raise SpectrumFormatError(f"{path}: {extname} is not a table")
    present = {c.lower(): c for c in hdu.get_colnames()}
    missing = [c for c in wanted if c.lower() not in present]
    if missing:
        raise SpectrumFormatError(f"{path}: {extname} lacks column(s) {', '.join(missing)}")
    data = hdu.read(columns=[present[c.lower()] for c in wanted])
    # fitsio returns the columns in file order: rename by name, not position.
    canonical = {c.lower(): c for c in wanted}
    data.dtype.names = [canonical[n.lower()] for n in data.dtype.names]
    return data


def _read_hdus(path: Path, need_specobj: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``COADD`` columns, ``SPECOBJ`` columns and the optional identifier/VDISP columns."""
    with fitsio.FITS(str(path)) as fits:
        coadd = _read_table(fits, path, "COADD", COADD_COLUMNS)
        if "SPECOBJ" not in fits and not need_specobj:
            return coadd, None, None
        specobj = _read_table(fits, path, "SPECOBJ", SPECOBJ_COLUMNS)
        names = {c.upper() for c in fits["SPECOBJ"].get_colnames()}
        extra = [c for c in (*SPECOBJ_ID_COLUMNS, "VDISP") if c in names]
        return coadd, specobj, _read_table(fits, path, "SPECOBJ", extra) if extra else None


def read_sdss_file(path: str | os.PathLike, need_specobj: bool = True) -> dict:
    """Raw arrays of an SDSS spectrum file.

    Parameters
    ----------
    path : str or PathLike
        A ``spec-PLATE-MJD-FIBER.fits`` file.
    need_specobj : bool
        Whether a missing ``SPECOBJ`` HDU is an error (it is not when the
        redshift comes from elsewhere).

    Returns
    -------
    dict
        ``id``; the :data:`COADD_COLUMNS` as 1-d float64 (``and_mask``
        int64) arrays; ``z`` (float), ``zwarning`` (int), ``spec_class``
        (str) and ``vdisp`` (stellar velocity dispersion, km/s), NaN / -1 /
        ``""`` / NaN without ``SPECOBJ`` (``vdisp`` also without its column).

    Raises
    ------
    SpectrumFormatError
        Missing or unreadable (e.g. truncated) file, missing HDU or column,
        malformed values.
    """
    path = Path(path)
    if not path.is_file():
        raise SpectrumFormatError(f"{path}: no such file")
    try:
        coadd, specobj, extra = _read_hdus(path, need_specobj)
        raw: dict[str, Any] = {name: np.asarray(coadd[name], dtype=np.float64) for name in COADD_COLUMNS}
        raw["and_mask"] = np.asarray(coadd["and_mask"], dtype=np.int64)
        if any(v.ndim != 1 for v in raw.values()):
            raise SpectrumFormatError(f"{path}: COADD columns are not scalar per pixel")
        if specobj is not None and len(specobj) != 1:
            raise SpectrumFormatError(f"{path}: SPECOBJ has {len(specobj)} rows, expected 1")
        ids: dict[str, int] | None = None
        vdisp = np.nan
        if extra is not None:
            names = extra.dtype.names or ()
            if set(SPECOBJ_ID_COLUMNS) <= set(names):
                ids = {c: int(extra[c][0]) for c in SPECOBJ_ID_COLUMNS}
            if "VDISP" in names:
                vdisp = float(extra["VDISP"][0])
        raw["id"] = _spectrum_id(path, ids)
        raw["vdisp"] = vdisp
        if specobj is None:
            raw.update(z=np.nan, zwarning=-1, spec_class="")
        else:
            raw.update(
                z=float(specobj["Z"][0]),
                zwarning=int(specobj["ZWARNING"][0]),
                spec_class=str(specobj["CLASS"][0]).strip().upper(),
            )
    except SpectrumFormatError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        # cfitsio reports truncated files and bad headers as OSError, garbage
        # headers as decoding errors, and wrong column types fail conversion.
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise SpectrumFormatError(f"{path}: unreadable FITS file (truncated or corrupt?): {first}") from exc
    return raw


def _instrumental_sigma_kms(loglam: np.ndarray, wdisp: np.ndarray, good: np.ndarray) -> float:
    """Median LSF sigma of the good pixels in km/s (0 when ``wdisp`` is unusable)."""
    usable = good & np.isfinite(wdisp) & (wdisp > 0)
    if not usable.any():
        # Without wdisp the kernel is the full 350 km/s: SDSS's ~60 km/s
        # would then broaden the total by only 1.5%.
        return 0.0
    # The mean step: float32 loglam makes single differences ~0.1% noisy.
    pixel_kms = (loglam[-1] - loglam[0]) / (loglam.size - 1) * np.log(10.0) * C_KMS
    return float(np.median(wdisp[usable]) * pixel_kms)


def _header_problems(raw: dict, z_given: bool) -> list[str]:
    """Reasons the redshift, class or wavelength grid make the spectrum unusable."""
    problems = []
    z = raw["z"]
    if not np.isfinite(z) or z <= 0:
        problems.append(f"no usable redshift (z={z})")
    elif not z_given and raw["zwarning"] != 0:
        problems.append(f"ZWARNING={raw['zwarning']}")
    if raw["spec_class"] and raw["spec_class"] != "GALAXY":
        problems.append(f"CLASS={raw['spec_class']}, not a galaxy")
    loglam = raw["loglam"]
    if loglam.size < 2:
        problems.append(f"loglam: only {loglam.size} pixel(s)")
    elif not np.all(np.isfinite(loglam)) or np.any(np.diff(loglam) <= 0):
        problems.append("loglam is not finite and strictly increasing")
    return problems


def spectrum_from_raw(
    raw: dict,
    path: str = "",
    z: float | None = None,
    *,
    mask_bits: int = ALL_MASK_BITS,
    wavelengths: str = "air",
    subtract_vdisp: bool = False,
    min_good_fraction: float = MIN_GOOD_FRACTION,
    min_weight_fraction: float = MIN_WEIGHT_FRACTION,
) -> SDSSSpectrum:
    """Put raw SDSS arrays (as from :func:`read_sdss_file`) on the DIGS grid.

    See :func:`read_sdss_spectrum` for the parameters.  Bad data never
    raise: they come back flagged.
    """
    if wavelengths not in WAVELENGTH_CONVENTIONS:
        raise ParameterError(f"wavelengths must be one of {WAVELENGTH_CONVENTIONS}, got {wavelengths!r}")
    raw = dict(raw)
    if z is not None:
        raw["z"] = float(z)
    spec = SDSSSpectrum(
        id=raw["id"], path=str(path), z=raw["z"], zwarning=raw["zwarning"], spec_class=raw["spec_class"]
    )
    problems = _header_problems(raw, z is not None)
    usable_z = np.isfinite(spec.z) and spec.z > 0
    if not usable_z or any(p.startswith("loglam") for p in problems):
        spec.flag, spec.reason = True, "; ".join(problems)
        return spec

    flux, ivar = raw["flux"], raw["ivar"]
    finite = np.isfinite(flux) & np.isfinite(ivar)
    if not finite.all():
        problems.append(f"{np.sum(~finite)} pixel(s) with non-finite flux or ivar")
    if not np.any(finite & (ivar > 0)):
        problems.append("ivar is zero (or negative) everywhere")
    good = finite & (ivar > 0) & ((raw["and_mask"] & mask_bits) == 0)

    if "sigma_inst_kms" in raw:
        # Readers of other spectrographs (DESI) give the line-spread sigma in km/s per pixel.
        usable = good & np.isfinite(raw["sigma_inst_kms"])
        spec.sigma_inst_kms = float(np.median(raw["sigma_inst_kms"][usable])) if usable.any() else 0.0
    else:
        spec.sigma_inst_kms = _instrumental_sigma_kms(raw["loglam"], raw["wdisp"], good)
    vdisp = raw.get("vdisp", np.nan) if subtract_vdisp else np.nan
    intrinsic = np.hypot(spec.sigma_inst_kms, vdisp if np.isfinite(vdisp) and vdisp > 0 else 0.0)
    if intrinsic >= DIGS_SIGMA_V_KMS:
        problems.append(
            f"intrinsic broadening {intrinsic:.0f} km/s is not below the model's {DIGS_SIGMA_V_KMS:.0f} km/s"
        )
        spec.flag, spec.reason = True, "; ".join(problems)
        return spec
    spec.sigma_kernel_kms = kernel_sigma_kms(intrinsic)

    wave_obs = 10.0 ** raw["loglam"]
    if wavelengths == "air":
        wave_obs = vacuum_to_air(wave_obs)
    wave_rest = wave_obs / (1.0 + spec.z)
    spec.flux, spec.ivar, spec.good = smooth_resample(
        wave_rest,
        np.where(finite, flux, 0.0) * (1.0 + spec.z),
        np.where(finite, ivar, 0.0) / (1.0 + spec.z) ** 2,
        good,
        DIGS_WAVELENGTH,
        spec.sigma_kernel_kms,
        min_weight_fraction,
    )
    _, in_range = smoothing_weights(wave_rest, np.ones_like(good), DIGS_WAVELENGTH, spec.sigma_kernel_kms)
    spec.coverage = float(np.mean(in_range >= min_weight_fraction))
    if spec.coverage < min_good_fraction:
        problems.append(
            f"coverage: rest frame {wave_rest[0]:.0f}-{wave_rest[-1]:.0f} A reaches {spec.coverage:.0%} of the "
            f"{DIGS_WAVELENGTH[0]:.0f}-{DIGS_WAVELENGTH[-1]:.0f} A elements (< {min_good_fraction:.0%})"
        )
    elif spec.good_fraction < min_good_fraction:
        problems.append(
            f"too many masked pixels: {spec.good_fraction:.0%} of elements good (< {min_good_fraction:.0%})"
        )
    spec.flag, spec.reason = bool(problems), "; ".join(problems)
    return spec


def read_sdss_spectrum(
    path: str | os.PathLike,
    z: float | None = None,
    *,
    mask_bits: int = ALL_MASK_BITS,
    wavelengths: str = "air",
    subtract_vdisp: bool = False,
    min_good_fraction: float = MIN_GOOD_FRACTION,
    min_weight_fraction: float = MIN_WEIGHT_FRACTION,
) -> SDSSSpectrum:
    """Read an SDSS spectrum onto the DIGS rest-frame grid (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
        A ``spec-PLATE-MJD-FIBER.fits`` file.
    z : float, optional
        Redshift to use instead of ``SPECOBJ`` ``Z`` (then ``ZWARNING`` is
        not checked and ``SPECOBJ`` may be absent).
    mask_bits : int
        ``and_mask`` bits that make a pixel bad (default: all).
    wavelengths : {"air", "vacuum"}
        Wavelength convention of the models the data are compared with
        (BC03/MILES: air).
    subtract_vdisp : bool
        Also subtract the pipeline's stellar velocity dispersion ``VDISP``
        (km/s) in quadrature, so that instrument + stars + kernel total
        350 km/s, the model's reading of sigma_v as the *total* broadening.
        Off by default: sigma_k = sqrt(350^2 - sigma_inst^2).  On the six
        shared spectra (VDISP 136-283 km/s) it changes elements by 0.3-0.8
        sigma rms (up to 2.7 sigma).
    min_good_fraction : float
        Flag the spectrum when fewer of its elements are good.
    min_weight_fraction : float
        An element is good when its good pixels carry at least this fraction
        of the smoothing kernel.

    Returns
    -------
    SDSSSpectrum
        Never raises for a bad file or bad data: those come back flagged
        (``flag=True``) with the ``reason``, arrays NaN/0/False where unknown.
    """
    try:
        raw = read_sdss_file(path, need_specobj=z is None)
    except SpectrumFormatError as exc:
        match = _ID_PATTERN.search(Path(path).name)
        sid = "-".join(match.groups()) if match else Path(path).stem
        return SDSSSpectrum(id=sid, path=str(path), flag=True, reason=str(exc))
    return spectrum_from_raw(
        raw,
        str(path),
        z,
        mask_bits=mask_bits,
        wavelengths=wavelengths,
        subtract_vdisp=subtract_vdisp,
        min_good_fraction=min_good_fraction,
        min_weight_fraction=min_weight_fraction,
    )


def _expand_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*spec-*.fits")) if p.is_dir() else [p])
    return out


def read_sdss_spectra(
    paths: str | os.PathLike | Iterable[str | os.PathLike], z: Sequence[float] | None = None, **kwargs
) -> list[SDSSSpectrum]:
    """Read many SDSS spectra; bad files are flagged, never raised.

    Parameters
    ----------
    paths : path, directory or iterable of paths
        Spectrum files; a directory stands for its ``*spec-*.fits`` files
        (sorted).
    z : sequence of float, optional
        One redshift per file overriding ``SPECOBJ`` ``Z`` (NaN entries keep it).
    **kwargs
        Passed to :func:`read_sdss_spectrum`.

    Returns
    -------
    list of SDSSSpectrum
        In input order; :func:`spectra_table` makes a DataFrame of them.
    """
    files = _expand_paths(paths)
    if z is not None and len(z) != len(files):
        raise ParameterError(f"got {len(z)} redshifts for {len(files)} spectrum files")
    zs = [None] * len(files) if z is None else [None if not np.isfinite(v) else float(v) for v in z]
    return [read_sdss_spectrum(p, zi, **kwargs) for p, zi in zip(files, zs)]


#: Scalar columns of :func:`spectra_table`, then the per-element arrays.
TABLE_SCALARS = (
    "id", "path", "z", "zwarning", "spec_class", "flag", "reason", "good_fraction", "median_snr",
    "coverage", "sigma_inst_kms", "sigma_kernel_kms",
)  # fmt: skip
TABLE_ARRAYS = ("flux", "ivar", "good")


def spectra_table(spectra: Sequence[SDSSSpectrum]) -> pd.DataFrame:
    """One row per spectrum, the 138-element arrays as list-like columns.

    Columns: :data:`TABLE_SCALARS` (``good_fraction`` and ``median_snr`` as
    defined on :class:`SDSSSpectrum`), then ``flux``, ``ivar`` and ``good``:
    float64/bool arrays of length 138 per row, which Parquet stores as list
    columns.  The rest-frame wavelengths (:data:`DIGS_WAVELENGTH`) are in
    ``attrs["wave"]``.
    """
    columns = TABLE_SCALARS + TABLE_ARRAYS
    table = pd.DataFrame([[getattr(s, c) for c in columns] for s in spectra], columns=list(columns))
    table.attrs["wave"] = DIGS_WAVELENGTH.tolist()  # a list survives Parquet metadata (JSON)
    return table


def rest_luminosity(spectrum: SDSSSpectrum, cosmology: str = DEFAULT_COSMOLOGY) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame L_lambda (Lsun/A) of a spectrum, the model's unit.

    ``L_lambda(lambda_rest) = 4 pi d_L^2 f_rest`` with ``f_rest = (1 + z) f_obs``
    (the inverse of :func:`sedscale.observe.spectra.observed_flambda`).  For
    SDSS fiber spectra this is the luminosity inside the 3-arcsec fiber.

    Returns
    -------
    lum : ndarray, shape (138,)
        L_lambda in Lsun/A (NaN where ``flux`` is).
    lum_ivar : ndarray, shape (138,)
        Its inverse variance in (Lsun/A)^-2.
    """
    if not np.isfinite(spectrum.z) or spectrum.z <= 0:
        raise ParameterError(f"spectrum {spectrum.id} has no usable redshift (z={spectrum.z})")
    d_l = cosmology_table(cosmology).luminosity_distance_cm(spectrum.z)
    scale = 4.0 * np.pi * d_l**2 * FLAMBDA_UNIT_CGS / LSUN_ERG_S
    return spectrum.flux * scale, spectrum.ivar / scale**2
