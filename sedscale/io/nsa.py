"""Reader of NASA-Sloan Atlas (NSA) catalog files.

The NSA (v0_1_2 and later) is distributed as FITS binary tables with one row
per galaxy.  The columns used here are

``NMGY[7]``, ``NMGY_IVAR[7]``
    Galactic-extinction corrected elliptical-Petrosian fluxes in nanomaggies
    and their inverse variances (nanomaggies^-2), band order
    FUV, NUV, u, g, r, i, z.  Only the SDSS ugriz slice (2..6) is kept.
``Z``
    Heliocentric redshift.
``NSAID``
    The catalog's unique galaxy identifier.
``MASS`` (optional)
    K-correct stellar mass in Msun h^-2 (h = 1); kept as ``mass_nsa`` for
    comparison only.

Catalogs cut around overlapping fields repeat galaxies, so rows are
de-duplicated by ``NSAID`` (the first occurrence wins).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from ..errors import MissingDataError, SedscaleError
from ..observe.filters import SDSS_BANDS

log = logging.getLogger(__name__)

#: Band order of the NSA ``NMGY`` / ``NMGY_IVAR`` vectors.
NSA_BANDS = ("FUV", "NUV", "u", "g", "r", "i", "z")
#: The filter of each NSA band (names of :mod:`sedscale.observe.filters`): a flow band of the same label
#: through another filter (DECam g, r, z) is not what the NSA measured.
NSA_FILTERS = {"fuv": "galex_FUV", "nuv": "galex_NUV", "u": "sdss_u0", "g": "sdss_g0", "r": "sdss_r0",
               "i": "sdss_i0", "z": "sdss_z0"}
#: Slice of the NSA band vectors that holds SDSS ugriz (indices 2..6).
NSA_UGRIZ = slice(2, 7)
#: NSA columns every file must provide.
REQUIRED_COLUMNS = ("NSAID", "Z", "NMGY", "NMGY_IVAR")
#: Output flux (nanomaggies) and inverse-variance (nanomaggies^-2) columns.
NSA_FLUX_COLUMNS = tuple(f"flux_{b}" for b in SDSS_BANDS)
NSA_FLUX_IVAR_COLUMNS = tuple(f"flux_ivar_{b}" for b in SDSS_BANDS)


class CatalogFormatError(SedscaleError, ValueError):
    """A catalog file is unreadable (corrupt, truncated) or lacks columns."""


def ugriz_indices() -> np.ndarray:
    """Indices of SDSS u, g, r, i, z in the NSA 7-band vectors."""
    return nsa_band_indices(SDSS_BANDS)


def _as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise SedscaleError("no NSA catalog file given")
    return out


def _table_hdu(fits: fitsio.FITS, path: Path):
    """The first binary/ASCII table HDU of an open FITS file."""
    for hdu in fits:
        if hdu.get_exttype() in ("BINARY_TBL", "ASCII_TBL"):
            return hdu
    raise CatalogFormatError(f"{path}: no table extension (truncated or not an NSA catalog?)")


def read_nsa_file(path: str | os.PathLike, columns: Sequence[str] = (), rows: tuple[int, int] | None = None) -> np.ndarray:
    """Read the NSA columns needed by sedscale from one FITS file.

    Parameters
    ----------
    path : str or PathLike
        An NSA FITS file (table in the first table extension).
    columns : sequence of str
        Extra NSA column names to read besides :data:`REQUIRED_COLUMNS` and
        ``MASS`` (case-insensitive).
    rows : (int, int), optional
        Read only rows ``start <= row < stop``.

    Returns
    -------
    numpy structured array
        The raw rows with upper-case column names; ``MASS`` only when present.

    Raises
    ------
    MissingDataError
        The file does not exist.
    CatalogFormatError
        The file is not a readable FITS table (e.g. truncated) or lacks a
        required or requested column.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"NSA catalog {path} does not exist")
    try:
        with fitsio.FITS(str(path)) as fits:
            hdu = _table_hdu(fits, path)
            present = {c.upper(): c for c in hdu.get_colnames()}
            wanted = list(REQUIRED_COLUMNS) + [c.upper() for c in columns]
            missing = [c for c in wanted if c not in present]
            if missing:
                raise CatalogFormatError(f"{path}: missing NSA column(s) {', '.join(missing)}")
            if "MASS" in present and "MASS" not in wanted:
                wanted.append("MASS")
            data = hdu.read(columns=[present[c] for c in dict.fromkeys(wanted)],
                            rows=None if rows is None else np.arange(rows[0], rows[1]))
    except OSError as exc:
        # cfitsio reports truncation and bad headers as OSError with its status text.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CatalogFormatError(f"{path}: unreadable FITS file (truncated or corrupt?): {first_line}") from exc
    data.dtype.names = [n.upper() for n in data.dtype.names]
    for name in ("NMGY", "NMGY_IVAR"):
        if data[name].ndim != 2 or data[name].shape[1] != len(NSA_BANDS):
            raise CatalogFormatError(
                f"{path}: column {name} has shape {data[name].shape[1:]}, expected ({len(NSA_BANDS)},) "
                f"for bands {','.join(NSA_BANDS)}"
            )
    return data


def nsa_band_indices(bands: Sequence[str]) -> np.ndarray:
    """Indices of band labels (``fuv``, ``nuv``, ``u`` ... ``z``) in the NSA 7-band vectors.

    Raises
    ------
    CatalogFormatError
        A band the NSA does not measure.
    """
    labels = [b.lower() for b in NSA_BANDS]
    missing = [b for b in bands if b not in labels]
    if missing:
        raise CatalogFormatError(f"the NSA has no band(s) {missing}; its bands are {','.join(NSA_BANDS)}")
    return np.array([labels.index(b) for b in bands])


def nsa_frame(data: np.ndarray, extra: Sequence[str], bands: Sequence[str]) -> pd.DataFrame:
    """The canonical frame of raw NSA rows (:func:`read_nsa_file`): ``bands`` of NMGY, NSAID as ``id``, ``mass_nsa``.

    ``z_err`` is NaN: the NSA's ``Z`` are spectroscopic redshifts, used as exact.
    """
    idx = nsa_band_indices(bands)
    flux = np.asarray(data["NMGY"][:, idx], dtype=np.float64)
    ivar = np.asarray(data["NMGY_IVAR"][:, idx], dtype=np.float64)
    cols = {"id": np.asarray(data["NSAID"], dtype=np.int64), "z": np.asarray(data["Z"], dtype=np.float64),
            "z_err": np.full(len(data), np.nan)}
    cols.update({f"flux_{b}": flux[:, k] for k, b in enumerate(bands)})
    cols.update({f"flux_ivar_{b}": ivar[:, k] for k, b in enumerate(bands)})
    if "MASS" in (data.dtype.names or ()):
        cols["mass_nsa"] = np.asarray(data["MASS"], dtype=np.float64)
    for name in extra:
        # FITS columns are big-endian; pandas wants native byte order.
        values = np.asarray(data[name.upper()])
        if values.ndim != 1:
            raise CatalogFormatError(
                f"NSA column {name.upper()} is a vector column; only scalar columns can be carried"
            )
        cols[name.lower()] = values.astype(values.dtype.newbyteorder("="))
    return pd.DataFrame(cols)


def read_nsa(
    paths: str | os.PathLike | Iterable[str | os.PathLike], columns: Sequence[str] | None = None,
    bands: Sequence[str] = SDSS_BANDS,
) -> pd.DataFrame:
    """Read one or several NSA FITS files into a de-duplicated DataFrame.

    Parameters
    ----------
    paths : path or iterable of paths
        NSA FITS files, read in the given order.
    columns : sequence of str, optional
        Extra scalar NSA columns to carry along, named in lower case in the
        output (e.g. ``["RA", "DEC"]`` -> ``ra``, ``dec``).
    bands : sequence of str
        Band labels to read (default ugriz; ``fuv`` and ``nuv`` are GALEX).

    Returns
    -------
    pandas.DataFrame
        One row per unique ``NSAID`` (first occurrence kept, original order)
        with columns ``id`` (NSAID), ``z``, ``z_err`` (NaN), ``flux_u`` .. ``flux_z``
        (nanomaggies, Galactic-extinction corrected), ``flux_ivar_u`` ..
        ``flux_ivar_z`` (nanomaggies^-2), ``mass_nsa`` (Msun h^-2) when every
        file has ``MASS``, and the extra columns.  ``df.attrs`` records
        ``n_rows_read``, ``n_duplicates`` and ``sources``.

    Raises
    ------
    MissingDataError, CatalogFormatError
        See :func:`read_nsa_file`.
    """
    files = _as_paths(paths)
    extra = tuple(columns or ())
    frames = [nsa_frame(read_nsa_file(p, extra), extra, tuple(bands)) for p in files]
    if any("mass_nsa" not in f for f in frames):
        frames = [f.drop(columns="mass_nsa", errors="ignore") for f in frames]
    df = pd.concat(frames, ignore_index=True)
    n_read = len(df)
    df = df.drop_duplicates(subset="id", keep="first").reset_index(drop=True)
    n_dup = n_read - len(df)
    if n_dup:
        log.info("read_nsa: dropped %d duplicate NSAID rows of %d read from %d file(s)", n_dup, n_read, len(files))
    df.attrs.update(n_rows_read=n_read, n_duplicates=n_dup, sources=[str(p) for p in files])
    return df
