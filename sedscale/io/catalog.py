"""Survey catalogs in (NSA, or any FITS/Parquet/CSV table with a column mapping), posterior catalogs out.

Input
-----
:func:`read_catalog` turns one or several catalog files into the canonical
photometry frame used by :mod:`sedscale.infer.catalog`:

``id``
    The catalog's identifier (NSA: ``NSAID``), or the row number when no id
    column is mapped.
``z``
    Redshift (NaN where the catalog gives none: a photometric-redshift flow infers it).
``z_err``
    1-sigma uncertainty of ``z`` (NaN where none is given: an exact, spectroscopic z).
``flux_u`` .. ``flux_z``
    Galactic-extinction corrected SDSS fluxes in nanomaggies.
``flux_ivar_u`` .. ``flux_ivar_z``
    Their inverse variances in nanomaggies^-2.

plus any extra columns asked for (``keep``).  Nothing is filtered here:
bad values (NaN, non-positive flux, zero ivar, missing z) pass through and
are flagged by :mod:`sedscale.infer.quality`.  Only unreadable files and
missing columns raise (:class:`~sedscale.io.nsa.CatalogFormatError`).

NSA FITS files (``NSAID``, ``Z``, ``NMGY[7]``, ``NMGY_IVAR[7]``) are
recognised and read with :func:`sedscale.io.nsa.read_nsa`.  Any other table
needs a :class:`ColumnMapping` (YAML file or ``key=value`` pairs)::

    id: OBJID
    z: ZSPEC
    flux: FLUX_{band}          # '{band}' expands to u, g, r, i, z
    flux_err: FLUXERR_{band}   # or flux_ivar: ...; a vector column: flux: NMGY[2:7]
    flux_unit: uJy             # nanomaggy, maggy, Jy, mJy, uJy, nJy: required unless
                               # the file gives it (FITS TUNIT, Parquet field 'unit')
    extinction: A_{band}       # optional Galactic extinction (mag) to correct for
    # z: none                  # no redshift column: photometric redshifts (a flow with z as a parameter)
    # z_err: ZERR              # optional 1-sigma redshift uncertainty, marginalized over (same flows)
    # or magnitudes instead of fluxes:
    # mag: MAG_{band}
    # mag_err: MAGERR_{band}

A catalog may hold only some of the flow's bands: ``bands`` lists them (a
DESI catalog for the ``all_surveys`` flow), the others are masked for every
row, and band entries follow that list::

    bands: decam_g,decam_r,decam_z,w1,w2
    flux: FLUX_G,FLUX_R,FLUX_Z,FLUX_W1,FLUX_W2
    flux_ivar: FLUX_IVAR_G,FLUX_IVAR_R,FLUX_IVAR_Z,FLUX_IVAR_W1,FLUX_IVAR_W2

Whitespace-separated text tables (``.txt``, ``.dat``, ``.ascii``, or any file
with ``format: text``) take their column names from a ``#`` header line, or
from ``names`` (comma-separated, in file order) when the header is missing
or wrong, e.g. the SDSS MGS table of ``../shared/data/sdss_mgs``::

    bin/run_catalog SDSS_MGS.train --columns format=text \
        names=zs,u,g,r,i,z,u-g,g-r,r-i,i-z,eu,eg,er,ei,ez,eu-g,eg-r,er-i,ei-z \
        z=zs mag={band} mag_err=e{band}

Rows repeating an ``id`` of an earlier row are dropped (first occurrence
kept), as for the NSA, whose fields overlap; without an id column the rows
are numbered 0, 1, ... across all files and none is dropped.

Output
------
:func:`write_catalog` writes a posterior catalog (a :class:`pyarrow.Table`)
as Parquet or FITS, atomically, with per-column units (Parquet field
metadata ``unit`` and ``sedscale.units``; FITS ``TUNIT``) and provenance
(Parquet key-value metadata ``sedscale.*``; FITS header keywords).
Fixed-size list columns (posterior samples) become FITS vector columns.
"""
from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, MissingDataError, SedscaleError
from ..observe.filters import SDSS_BANDS
from ..units import POGSON, mag_to_nanomaggies
from .atomic import atomic_write
from .nsa import (
    NSA_FLUX_COLUMNS,
    NSA_FLUX_IVAR_COLUMNS,
    REQUIRED_COLUMNS,
    CatalogFormatError,
)

log = logging.getLogger(__name__)

#: Canonical photometry columns produced by :func:`read_catalog`.
FLUX_COLUMNS = NSA_FLUX_COLUMNS
FLUX_IVAR_COLUMNS = NSA_FLUX_IVAR_COLUMNS
#: Flux units accepted by a column mapping: nanomaggies per unit.  One
#: nanomaggy is 3.631e-6 Jy (AB magnitude 22.5).
FLUX_UNITS = {
    "nanomaggy": 1.0,
    "nmgy": 1.0,
    "maggy": 1e9,
    "Jy": 1.0 / 3.631e-6,
    "mJy": 1.0 / 3.631e-3,
    "uJy": 1.0 / 3.631,
    "nJy": 1.0 / 3631.0,
}
_FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_BAND_KEYS = ("flux", "flux_ivar", "flux_err", "mag", "mag_err", "extinction")
_SCALAR_KEYS = ("id", "z", "z_err", "distance", "flux_unit", "keep", "format", "names", "bands")
#: Centimetres per megaparsec (the ``distance`` column is in Mpc).
_CM_PER_MPC = 3.0856775814913673e24
#: Unit strings found in files (FITS TUNIT, Parquet field metadata) -> FLUX_UNITS key.  Jansky
#: prefixes are case-sensitive (MJy is not mJy); the maggy words are not.
_FILE_FLUX_UNITS = {**{k: k for k in FLUX_UNITS}, "nanomaggies": "nanomaggy", "nmaggy": "nanomaggy",
                    "nMgy": "nanomaggy", "maggies": "maggy", "µJy": "uJy", "microJy": "uJy", "Jansky": "Jy"}
_TEXT_SUFFIXES = (".txt", ".dat", ".ascii")
#: ``NAME[a:b]``: elements a..b-1 of a vector column, one per band; ``NAME[k]``: one element.
_VECTOR_SLICE = re.compile(r"^(.+)\[(\d+):(\d+)\]$")
_VECTOR_ELEMENT = re.compile(r"^(.+)\[(\d+)\]$")
#: Metadata key prefix shared with the simulation outputs.
META_PREFIX = "sedscale."


# --------------------------------------------------------------------------- column mapping
@dataclass(frozen=True)
class ColumnMapping:
    """Where the canonical quantities are in a user catalog.

    Attributes
    ----------
    z : str or None
        Redshift column; None (``z: none``) when the catalog has none
        (photometric redshifts, with a flow that has z as a parameter).
    z_err : str or None
        Column of the redshift's 1-sigma uncertainty (same flows); NaN
        entries mean an exact redshift.
    id : str or None
        Identifier column; None numbers the rows from 0.
    distance : str or None
        Column of luminosity distances (Mpc) for galaxies whose redshift
        does not give their distance (peculiar velocities dominate below
        z ~ 0.01).  The fluxes are rescaled to the distance the redshift
        implies, ``(D / d_L(z))^2`` (the project's Planck13), so the
        posterior's masses and SFRs are those at D while z stays the
        redshift of the SED; a distance that is not positive and finite
        leaves the row without photometry (``nan_flux``).
    flux, flux_ivar, flux_err : dict of band -> column, or None
        Fluxes (in ``flux_unit``) and either their inverse variances or
        1-sigma errors (same unit).
    mag, mag_err : dict of band -> column, or None
        AB magnitudes and 1-sigma errors, instead of fluxes.
    flux_unit : str or None
        A key of :data:`FLUX_UNITS`; None takes the unit the file gives its
        flux columns (FITS ``TUNIT``, Parquet field metadata ``unit``), and
        reading a file that gives none is an error: a wrong unit shifts
        every mass (a uJy catalog read as nanomaggies: +0.56 dex).
    extinction : dict of band -> column, or None
        Galactic extinction in magnitudes, removed from the photometry
        (flux * 10^(0.4 A)).  Leave out when the catalog is already corrected.
    keep : tuple of str
        Extra columns to carry into the posterior catalog (lower-cased).
    format : str or None
        ``"text"`` reads whitespace-separated text whatever the file name;
        None: from the file name.
    names : tuple of str
        Column names of a text table, in file order (replace its header).
    bands : tuple of str
        Band labels of the photometry (the flow's band set, or with a
        ``bands`` entry the part of it the catalog has; default ugriz):
        ``{band}`` expands to each, a list or a vector slice gives one column
        per band.
    partial : bool
        True when a ``bands`` entry declared the catalog's bands a part of the
        flow's set: the others are masked in every row.
    """

    z: str | None = "z"
    z_err: str | None = None
    id: str | None = None
    distance: str | None = None
    flux: dict | None = None
    flux_ivar: dict | None = None
    flux_err: dict | None = None
    mag: dict | None = None
    mag_err: dict | None = None
    flux_unit: str | None = None
    extinction: dict | None = None
    keep: tuple = field(default_factory=tuple)
    format: str | None = None
    names: tuple = field(default_factory=tuple)
    bands: tuple = SDSS_BANDS
    partial: bool = False

    def __post_init__(self):
        has_flux = self.flux is not None
        has_mag = self.mag is not None
        if has_flux == has_mag:
            raise ConfigError("a column mapping needs either 'flux' (with 'flux_ivar' or 'flux_err') or 'mag' (with 'mag_err')")
        if has_flux and (self.flux_ivar is None) == (self.flux_err is None):
            raise ConfigError("with 'flux', give exactly one of 'flux_ivar' and 'flux_err'")
        if has_mag and self.mag_err is None:
            raise ConfigError("with 'mag', give 'mag_err'")
        if has_mag and (self.flux_ivar is not None or self.flux_err is not None):
            raise ConfigError("'flux_ivar'/'flux_err' go with 'flux', not with 'mag'")
        if self.flux_unit is not None and self.flux_unit not in FLUX_UNITS:
            raise ConfigError(f"unknown flux_unit {self.flux_unit!r}; choose one of {sorted(FLUX_UNITS)}")
        object.__setattr__(self, "keep", tuple(self.keep))
        object.__setattr__(self, "names", tuple(self.names))
        if self.format not in (None, "text"):
            raise ConfigError(f"format must be 'text' (or left out), got {self.format!r}")
        if self.names and len(set(self.names)) != len(self.names):
            raise ConfigError("'names' repeats a column name")
        if self.z is None and self.z_err is not None:
            raise ConfigError("'z_err' needs a 'z' column (z: none means no redshift at all)")
        if self.z is None and self.distance is not None:
            raise ConfigError("'distance' needs a 'z' column: the SED is placed at the redshift, the fluxes at the distance")

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "<mapping>", bands: Sequence[str] = SDSS_BANDS) -> ColumnMapping:
        """Build from a mapping such as a parsed YAML file (see module docstring).

        Band entries may be a string with ``{band}``, a list of column names
        in ``bands`` order, or a dict band -> column.

        Raises
        ------
        ConfigError
            Unknown keys, incomplete band lists, or inconsistent photometry.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: a column mapping must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_BAND_KEYS) - set(_SCALAR_KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown column-mapping key(s) {unknown}; allowed: {sorted(_BAND_KEYS + _SCALAR_KEYS)}")
        bands = flow_bands = tuple(bands)
        if d.get("bands") is not None:
            subset = d["bands"]
            subset = tuple(b.strip() for b in (subset.split(",") if isinstance(subset, str) else subset) if b.strip())
            unknown = [b for b in subset if b not in bands]
            if unknown or not subset or len(set(subset)) != len(subset):
                raise ConfigError(f"{source}: 'bands: {','.join(subset)}' must name distinct bands of the flow's set {bands}")
            bands = subset
        kwargs: dict[str, Any] = {"partial": bands != flow_bands}
        kwargs.update({k: _band_columns(d[k], k, source, bands) for k in _BAND_KEYS if d.get(k) is not None})
        kwargs["bands"] = bands
        for key in ("id", "z", "z_err", "distance", "flux_unit", "format"):
            if d.get(key) is not None:
                kwargs[key] = str(d[key])
        if str(kwargs.get("z", "")).lower() == "none":
            kwargs["z"] = None
        for key in ("keep", "names"):
            value = d.get(key) or ()
            if isinstance(value, str):
                value = [k.strip() for k in value.split(",") if k.strip()]
            kwargs[key] = tuple(str(k) for k in value)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_pairs(cls, pairs: Iterable[str], bands: Sequence[str] = SDSS_BANDS) -> ColumnMapping:
        """Build from ``key=value`` strings, e.g. ``["z=ZSPEC", "flux=F_{band}", "flux_err=E_{band}"]``."""
        d = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ConfigError(f"column mapping entries are key=value, got {pair!r}")
            d[key.strip()] = value.strip()
        return cls.from_dict(d, source="--columns", bands=bands)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, bands: Sequence[str] = SDSS_BANDS) -> ColumnMapping:
        """Read a YAML column-mapping file."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise MissingDataError(f"column mapping file {path} does not exist") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path), bands=bands)

    def source_columns(self) -> list[str]:
        """Every catalog column the mapping reads, in a stable order."""
        cols = [c for c in (self.z, self.z_err, self.id, self.distance) if c]
        for key in _BAND_KEYS:
            bands = getattr(self, key)
            if bands is not None:
                cols += [bands[b] for b in self.bands]
        return list(dict.fromkeys(cols + list(self.keep)))

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _SCALAR_KEYS + _BAND_KEYS if getattr(self, k) not in (None, ())}
        if self.z is None:
            d["z"] = "none"
        if not self.partial:
            del d["bands"]  # the flow's set, which the checkpoint records
        return d


def _band_columns(value, key: str, source: str, bands: tuple[str, ...]) -> dict[str, str]:
    need = f"need {len(bands)} ({','.join(bands)})"
    if isinstance(value, str) and "," in value:
        value = [c.strip() for c in value.split(",")]
    if isinstance(value, str) and (sliced := _VECTOR_SLICE.match(value)):
        name, start, stop = sliced.group(1), int(sliced.group(2)), int(sliced.group(3))
        if stop - start != len(bands):
            raise ConfigError(f"{source}: '{key}: {value}' selects {stop - start} elements; {need}")
        return {b: f"{name}[{start + k}]" for k, b in enumerate(bands)}
    if isinstance(value, str):
        if "{band}" not in value:
            raise ConfigError(f"{source}: '{key}: {value}' names one column; use '{{band}}' in it, a list or a mapping")
        return {b: value.format(band=b) for b in bands}
    if isinstance(value, (list, tuple)):
        if len(value) != len(bands):
            raise ConfigError(f"{source}: '{key}' lists {len(value)} columns; {need}")
        return {b: str(c) for b, c in zip(bands, value)}
    if isinstance(value, Mapping):
        missing = [b for b in bands if b not in value]
        if missing:
            raise ConfigError(f"{source}: '{key}' lacks band(s) {missing}")
        return {b: str(value[b]) for b in bands}
    raise ConfigError(f"{source}: '{key}' must be a '{{band}}' template, a list or a mapping")


def load_column_mapping(spec: ColumnMapping | str | os.PathLike | Sequence[str] | Mapping | None,
                        bands: Sequence[str] = SDSS_BANDS) -> ColumnMapping | None:
    """A :class:`ColumnMapping` for ``bands`` from a YAML path, ``key=value`` strings or a dict (None passes through)."""
    if spec is None or isinstance(spec, ColumnMapping):
        return spec
    if isinstance(spec, Mapping):
        return ColumnMapping.from_dict(spec, bands=bands)
    if isinstance(spec, (str, os.PathLike)):
        return ColumnMapping.from_yaml(spec, bands=bands)
    items = list(spec)
    if len(items) == 1 and "=" not in items[0]:
        return ColumnMapping.from_yaml(items[0], bands=bands)
    return ColumnMapping.from_pairs(items, bands=bands)


# --------------------------------------------------------------------------- table readers
def catalog_format(path: str | os.PathLike) -> str:
    """``"fits"``, ``"parquet"``, ``"csv"`` or ``"text"`` from a file name; ConfigError otherwise."""
    name = str(path).lower()
    for fmt, suffixes in (("fits", _FITS_SUFFIXES), ("parquet", _PARQUET_SUFFIXES), ("csv", _CSV_SUFFIXES),
                          ("text", _TEXT_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    raise ConfigError(
        f"{path}: unknown catalog format; use FITS (.fits), Parquet (.parquet), CSV (.csv) or whitespace text "
        "(.txt/.dat, or --columns format=text)"
    )


def _text_table(path: Path, names: Sequence[str] = (), rows: RowRange | None = None) -> pd.DataFrame:
    """A whitespace-separated text table (or ``rows`` of it); names from ``names`` or the ``#`` header line."""
    try:
        with _open_binary(path) as fh:
            if rows is None:
                frame = pd.read_csv(fh, sep=r"\s+", comment="#", header=None)
            else:
                fh.seek(rows.seek)
                frame = rows.trim(pd.read_csv(fh, sep=r"\s+", comment="#", header=None, nrows=rows.stop - rows.seek_row))
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CatalogFormatError(f"{path}: unreadable text table: {_first_line(exc)}") from exc
    source = "'names'" if names else "its '#' header line"
    names = _text_names(path, names)
    if len(names) != frame.shape[1]:
        raise CatalogFormatError(
            f"{path}: {source} names {len(names)} columns but the rows hold {frame.shape[1]}; "
            "give the column names in file order with --columns names=a,b,c,..."
        )
    frame.columns = list(names)
    return frame


def _text_names(path: Path, names: Sequence[str] = ()) -> list[str]:
    """Column names of a text table: ``names``, else its ``#`` header line (empty when it has none)."""
    if names:
        return list(names)
    with _open_binary(path) as fh:
        first = fh.readline().decode(errors="replace")
    return first.lstrip("#").split() if first.startswith("#") else []


def _open_binary(path: Path):
    """A binary handle on a (possibly gzipped) text file; seekable either way."""
    import gzip

    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


class RowRange(NamedTuple):
    """Rows ``start <= row < stop`` of one file (data rows, 0-based, header excluded).

    ``seek`` is the byte offset of data row ``seek_row <= start`` in a text or
    CSV file (0 and 0 for the others): line files are read from there, so no
    reader scans a file from its top.
    """

    start: int
    stop: int
    seek: int = 0
    seek_row: int = 0

    def trim(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of a line-file frame read from ``seek_row`` that belong to the range."""
        frame = frame.iloc[self.start - self.seek_row :].reset_index(drop=True)
        if len(frame) != self.stop - self.start:
            raise CatalogFormatError(f"expected {self.stop - self.start} rows from data row {self.start}, read {len(frame)} "
                                     "(the file changed since the run was planned?)")
        return frame


def table_columns(path: str | os.PathLike, text_names: Sequence[str] | None = None) -> list[str]:
    """Column names of a FITS (first table HDU), Parquet, CSV or text file.

    ``text_names`` (a tuple, possibly empty) reads the file as whitespace
    text whatever its name, with these names (empty: its header line).

    Raises
    ------
    MissingDataError, CatalogFormatError
    """
    path = _existing(path)
    fmt = "text" if text_names is not None else catalog_format(path)
    if fmt == "text":
        return _text_names(path, text_names or ())
    try:
        if fmt == "fits":
            import fitsio

            with fitsio.FITS(str(path)) as fits:
                return list(_fits_table_hdu(fits, path).get_colnames())
        if fmt == "parquet":
            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CatalogFormatError(f"{path}: unreadable {fmt} file (truncated or corrupt?): {_first_line(exc)}") from exc


class ColumnMatch(NamedTuple):
    """How requested column names match a file's columns (see :func:`check_columns`)."""

    present: list[str]
    lookup: dict[str, str]
    element: dict[str, tuple[str, int]]
    wanted: list[str]


def check_columns(path: Path, columns: Sequence[str], text_names: Sequence[str] | None = None) -> ColumnMatch:
    """Match ``columns`` (case-insensitively; ``NAME[k]`` is element k of the vector column NAME) to a file's columns.

    Reads the file's column names only.  ``text_names``: as for :func:`table_columns`.

    Returns
    -------
    ColumnMatch
        The file's columns, lower-case name -> file name, the vector
        elements asked for (``NAME[k]`` -> (NAME, k)) and the file column
        each requested name reads.

    Raises
    ------
    CatalogFormatError
        A column is missing (the message lists those present).
    """
    present = table_columns(path, text_names)
    lookup = {c.lower(): c for c in present}
    matches = {c: _VECTOR_ELEMENT.match(c) for c in columns}
    # NAME[k] reads element k of the vector column NAME (when no column is literally called so).
    element = {c: (m.group(1), int(m.group(2))) for c, m in matches.items() if m and c.lower() not in lookup}
    wanted = [element[c][0] if c in element else c for c in columns]
    missing = [c for c in wanted if c.lower() not in lookup]
    if missing:
        shown = ", ".join(present[:40]) + (" ..." if len(present) > 40 else "")
        raise CatalogFormatError(f"{path}: missing column(s) {', '.join(missing)} (columns present: {shown})")
    return ColumnMatch(present, lookup, element, wanted)


def read_table_columns(path: str | os.PathLike, columns: Sequence[str],
                       text_names: Sequence[str] | None = None, rows: RowRange | None = None) -> dict[str, np.ndarray]:
    """Read named scalar columns (matched case-insensitively) of a FITS, Parquet, CSV or text table.

    ``text_names``: as for :func:`table_columns`.  ``rows``: read only this
    row range (FITS row indices, Parquet row groups, a seek into line files).

    Returns
    -------
    dict
        Requested name -> 1-d numpy array in native byte order.

    Raises
    ------
    MissingDataError
        No such file.
    CatalogFormatError
        Unreadable file, missing column (the message lists those present)
        or a vector column.
    """
    path = _existing(path)
    fmt = "text" if text_names is not None else catalog_format(path)
    present, lookup, element, wanted = check_columns(path, columns, text_names)
    columns = list(columns)
    names = list(dict.fromkeys(lookup[c.lower()] for c in wanted))
    try:
        if fmt == "fits":
            import fitsio

            with fitsio.FITS(str(path)) as fits:
                hdu = _fits_table_hdu(fits, path)
                data = hdu.read(columns=names, rows=None if rows is None else np.arange(rows.start, rows.stop))
            raw = {n: np.asarray(data[n]) for n in names}
        elif fmt == "parquet":
            table = _parquet_rows(path, names, rows)
            raw = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}
        elif fmt == "text":
            frame = _text_table(path, text_names or (), rows)
            raw = {n: frame[n].to_numpy() for n in names}
        else:
            frame = _csv_rows(path, present, names, rows)
            raw = {n: frame[n].to_numpy() for n in names}
    except (OSError, pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise CatalogFormatError(f"{path}: unreadable {fmt} file (truncated or corrupt?): {_first_line(exc)}") from exc
    out = {}
    for c, w in zip(columns, wanted):
        values = raw[lookup[w.lower()]]
        if c in element:
            k = element[c][1]
            if values.ndim != 2 or k >= values.shape[1]:
                raise CatalogFormatError(f"{path}: {c}: {w} is not a vector column with more than {k} elements")
            values = values[:, k]
        if values.ndim != 1:
            raise CatalogFormatError(f"{path}: column {c} is a vector column; map its elements as {c}[k] or {c}[a:b]")
        if values.dtype.byteorder not in ("=", "|"):
            values = values.astype(values.dtype.newbyteorder("="))
        out[c] = values
    return out


def _parquet_rows(path: Path, names: list[str], rows: RowRange | None) -> pa.Table:
    """Columns ``names`` of a Parquet file, or of the row groups holding ``rows`` (sliced to them)."""
    if rows is None:
        return pq.read_table(path, columns=names)
    pf = pq.ParquetFile(path)
    sizes = [pf.metadata.row_group(k).num_rows for k in range(pf.metadata.num_row_groups)]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    groups = [k for k in range(len(sizes)) if edges[k] < rows.stop and edges[k + 1] > rows.start]
    table = pf.read_row_groups(groups, columns=names)
    return table.slice(rows.start - int(edges[groups[0]]) if groups else 0, rows.stop - rows.start)


def _csv_rows(path: Path, header: list[str], names: list[str], rows: RowRange | None) -> pd.DataFrame:
    """Columns ``names`` of a CSV file, or of ``rows`` of it (read from the row's byte offset)."""
    if rows is None:
        return pd.read_csv(path, usecols=names)
    with _open_binary(path) as fh:
        fh.seek(rows.seek)
        if rows.seek == 0:
            fh.readline()  # the header line
        frame = pd.read_csv(fh, header=None, names=header, usecols=names, nrows=rows.stop - rows.seek_row)
    return rows.trim(frame)


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"catalog {path} does not exist")
    return path


def _fits_table_hdu(fits, path):
    for hdu in fits:
        if hdu.get_exttype() in ("BINARY_TBL", "ASCII_TBL"):
            return hdu
    raise CatalogFormatError(f"{path}: no table extension (truncated or not a catalog?)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_nsa_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a FITS table with the NSA columns (NSAID, Z, NMGY, NMGY_IVAR)."""
    if catalog_format(path) != "fits":
        return False
    upper = {c.upper() for c in table_columns(path)}
    return all(c in upper for c in REQUIRED_COLUMNS)


# --------------------------------------------------------------------------- canonical frame
def _distance_scale(distance_mpc: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(D / d_L(z))^2``: fluxes at distance D rescaled to the distance redshift z implies (NaN where D is unusable)."""
    from ..cosmology import cosmology_table

    with np.errstate(invalid="ignore", divide="ignore"):
        usable = np.isfinite(distance_mpc) & (distance_mpc > 0) & np.isfinite(z) & (z > 0)
        d_l = np.full(z.shape, np.nan)
        if usable.any():
            d_l[usable] = cosmology_table().luminosity_distance_cm(z[usable]) / _CM_PER_MPC
        return np.where(usable, (distance_mpc / d_l) ** 2, np.nan)


def write_canonical(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a canonical frame (:func:`read_catalog`: fluxes in nanomaggies) as Parquet that reads back unmapped.

    The flux and inverse-variance columns carry their units (Parquet field
    metadata ``unit``: ``nanomaggy``, ``nanomaggy-2``), so the file is read
    in sedscale's layout without a column mapping; a frame saved with
    ``DataFrame.to_parquet`` has none and is refused.
    """
    table = pa.Table.from_pandas(df, preserve_index=False)
    units = {c: "nanomaggy" for c in df.columns if c.startswith("flux_") and not c.startswith("flux_ivar_")}
    units.update({c: "nanomaggy-2" for c in df.columns if c.startswith("flux_ivar_")})
    fields = [f.with_metadata({"unit": units[f.name]}) if f.name in units else f for f in table.schema]
    return write_parquet(table.cast(pa.schema(fields, metadata=table.schema.metadata)), path)


def read_catalog(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    mapping: ColumnMapping | None = None,
    keep: Sequence[str] = (),
    bands: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read catalog files into the canonical photometry frame (see module docstring).

    The whole catalog in memory: survey-scale runs read it a partition at a
    time instead (:func:`sedscale.io.source.open_catalog`).

    Parameters
    ----------
    paths : path or iterable of paths
        FITS, Parquet, CSV or text files, directories of them or glob
        patterns, concatenated in the given order.
    mapping : ColumnMapping, optional
        Required unless every file is an NSA FITS file or already holds the
        canonical columns.
    keep : sequence of str
        Extra columns to carry along (lower-cased in the output); added to
        ``mapping.keep``.
    bands : sequence of str, optional
        Band labels to read (the flow's band set); default ``mapping.bands``,
        else ugriz.

    Returns
    -------
    pandas.DataFrame
        ``id``, ``z``, ``flux_<band>`` (nanomaggies), ``flux_ivar_<band>``
        (nanomaggies^-2), the kept columns; ``attrs``: ``sources``,
        ``flux_unit`` (the unit the input fluxes were read in, and where it
        came from), ``format`` (``"nsa"``, ``"mapped"`` or ``"canonical"``),
        ``n_rows_read``, ``n_duplicates`` and ``absent_bands`` (bands of
        ``bands`` the catalog does not have: masked in every row).

    Raises
    ------
    MissingDataError, CatalogFormatError, ConfigError
    """
    from .source import open_catalog

    return open_catalog(paths, mapping=mapping, keep=keep, bands=bands).read()


def _with_absent_bands(df: pd.DataFrame, bands: Sequence[str]) -> pd.DataFrame:
    """The canonical frame of ``bands``: bands the catalog does not have are masked in every row (NaN flux, ivar 0)."""
    absent = [b for b in bands if f"flux_{b}" not in df]
    if absent:
        df = df.assign(**{f"flux_{b}": np.nan for b in absent}, **{f"flux_ivar_{b}": 0.0 for b in absent})
    canonical = canonical_columns(bands)
    if "z_err" not in df:
        df = df.assign(z_err=np.nan)
    df = df[list(canonical) + [c for c in df.columns if c not in canonical]]
    df.attrs["absent_bands"] = tuple(absent)
    return df


#: Columns of the canonical frame a file in sedscale's own layout may leave out (NaN: none given).
OPTIONAL_CANONICAL = ("z", "z_err")


def canonical_columns(bands: Sequence[str] = SDSS_BANDS) -> tuple[str, ...]:
    """``id``, ``z``, ``z_err``, ``flux_<band>``, ``flux_ivar_<band>``: the canonical frame of ``bands``."""
    return ("id", "z", "z_err") + tuple(f"flux_{b}" for b in bands) + tuple(f"flux_ivar_{b}" for b in bands)


def _canonical_mapping(bands: Sequence[str], present: Sequence[str] = OPTIONAL_CANONICAL,
                       flux_unit: str | None = None) -> ColumnMapping:
    """The mapping of a file in the canonical layout that has the ``present`` optional columns.

    ``flux_unit`` None takes the unit from the file's metadata (FITS
    ``TUNIT``, Parquet field ``unit``); a file without one is refused, never
    read in an assumed unit.
    """
    return ColumnMapping(id="id", z="z" if "z" in present else None, z_err="z_err" if "z_err" in present else None,
                         flux={b: f"flux_{b}" for b in bands}, flux_ivar={b: f"flux_ivar_{b}" for b in bands},
                         flux_unit=flux_unit, bands=tuple(bands))


def column_units(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, str]:
    """Units a FITS (``TUNIT``) or Parquet (field metadata ``unit``) file gives its columns.

    ``NAME[k]`` / ``NAME[a:b]`` look up ``NAME``.  Columns without a unit, and
    every column of CSV and text files, are left out.
    """
    path = Path(path)
    fmt = catalog_format(path)
    base = {c: re.sub(r"\[\d+(:\d+)?\]$", "", c) for c in columns}
    found: dict[str, str] = {}
    if fmt == "fits":
        import fitsio

        with fitsio.FITS(str(path)) as fits:
            hdu = _fits_table_hdu(fits, path)
            header = hdu.read_header()
            for k, name in enumerate(hdu.get_colnames(), start=1):
                unit = str(header.get(f"TUNIT{k}", "") or "").strip()
                if unit:
                    found[name.lower()] = unit
    elif fmt == "parquet":
        for f in pq.read_schema(path):
            unit = (f.metadata or {}).get(b"unit", b"").decode().strip()
            if unit:
                found[f.name.lower()] = unit
    return {c: found[b.lower()] for c, b in base.items() if b.lower() in found}


def _flux_unit(path: Path, mapping: ColumnMapping) -> tuple[str, str]:
    """The FLUX_UNITS key of a mapped file's flux columns, and where it came from.

    Raises
    ------
    ConfigError
        The mapping gives no unit and the file none (or one sedscale does not
        know), or the mapping's unit contradicts the file's.
    """
    assert mapping.flux is not None  # called for flux (not magnitude) mappings only
    flux_cols = [mapping.flux[b] for b in mapping.bands]
    in_file = set(column_units(path, flux_cols).values()) if mapping.format != "text" and not mapping.names else set()
    known = {_FILE_FLUX_UNITS.get(u, _FILE_FLUX_UNITS.get(u.lower())) for u in in_file}
    if mapping.flux_unit is not None:
        if in_file and None not in known and known != {mapping.flux_unit}:
            raise ConfigError(f"{path}: flux_unit={mapping.flux_unit} but the file gives its flux columns the unit "
                              f"{', '.join(sorted(in_file))}; fix the mapping or the file")
        return mapping.flux_unit, "column mapping"
    if len(known) == 1 and None not in known:
        return cast(str, known.pop()), f"file unit {', '.join(sorted(in_file))!s}"
    given = f"the file gives {', '.join(sorted(in_file))}" if in_file else "the file gives none"
    raise ConfigError(
        f"{path}: the flux columns need a unit ({given}): add flux_unit=<unit> to the column mapping, "
        f"one of {', '.join(FLUX_UNITS)} (a wrong unit shifts every mass: uJy read as nanomaggies is +0.56 dex)"
    )


def mapped_columns(mapping: ColumnMapping, keep: Sequence[str]) -> list[str]:
    """Every column a mapped file is read for: the mapping's and the kept ones."""
    return mapping.source_columns() + [k for k in keep if k not in mapping.source_columns()]


def text_names_of(mapping: ColumnMapping) -> tuple[str, ...] | None:
    """The ``text_names`` argument of the readers for files of ``mapping`` (None: not a text table)."""
    return mapping.names if (mapping.format == "text" or mapping.names) else None


def flux_unit_of(path: Path, mapping: ColumnMapping) -> tuple[str | None, str]:
    """The flux unit (a :data:`FLUX_UNITS` key, None for magnitudes) of a mapped file, and how it reads in words."""
    if mapping.flux is None:
        return None, "AB magnitudes"
    unit, source = _flux_unit(path, mapping)
    return unit, f"{unit} ({source})"


def mapped_frame(path: Path, mapping: ColumnMapping, keep: Sequence[str], unit: str | None,
                 rows: RowRange | None = None) -> pd.DataFrame:
    """The canonical frame of one mapped file (or of ``rows`` of it), fluxes read in ``unit`` (see :func:`flux_unit_of`)."""
    raw = read_table_columns(path, mapped_columns(mapping, keep), text_names=text_names_of(mapping), rows=rows)

    def bands(key) -> np.ndarray:
        cols = getattr(mapping, key)
        return np.column_stack([_as_float(raw[cols[b]], path, cols[b]) for b in mapping.bands])

    n = len(next(iter(raw.values())))
    if mapping.flux is not None:
        assert unit is not None  # flux mappings always have one (flux_unit_of)
        scale = FLUX_UNITS[unit]
        flux = bands("flux") * scale
        if mapping.flux_ivar is not None:
            ivar = bands("flux_ivar") / scale**2
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = 1.0 / (bands("flux_err") * scale) ** 2
    else:
        mag, mag_err = bands("mag"), bands("mag_err")
        flux = mag_to_nanomaggies(mag)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ivar = (POGSON / (mag_err * flux)) ** 2
    if mapping.extinction is not None:
        # Correcting for extinction brightens the source and scales its error alike.
        boost = 10.0 ** (0.4 * bands("extinction"))
        flux, ivar = flux * boost, ivar / boost**2
    if mapping.distance is not None and mapping.z is not None:
        rescale = _distance_scale(_as_float(raw[mapping.distance], path, mapping.distance),
                                  _as_float(raw[mapping.z], path, mapping.z))[:, None]
        flux, ivar = flux * rescale, ivar / rescale**2
    cols: dict[str, np.ndarray] = {
        "id": raw[mapping.id] if mapping.id else np.zeros(n, dtype=np.int64),
        "z": _as_float(raw[mapping.z], path, mapping.z) if mapping.z else np.full(n, np.nan),
        "z_err": _as_float(raw[mapping.z_err], path, mapping.z_err) if mapping.z_err else np.full(n, np.nan),
    }
    cols.update({f"flux_{b}": flux[:, k] for k, b in enumerate(mapping.bands)})
    cols.update({f"flux_ivar_{b}": ivar[:, k] for k, b in enumerate(mapping.bands)})
    for name in keep:
        cols.setdefault(name.lower(), raw[name])
    return pd.DataFrame(cols)


def _as_float(values: np.ndarray, path, column: str) -> np.ndarray:
    """A numeric column as float64; masked/None entries become NaN."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    try:
        return pd.to_numeric(pd.Series(values), errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise CatalogFormatError(f"{path}: column {column} is not numeric (dtype {values.dtype})") from None


# --------------------------------------------------------------------------- writers
def output_format(path: str | os.PathLike) -> str:
    """``"parquet"`` or ``"fits"`` from an output file name; ConfigError otherwise."""
    name = str(path).lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith((".fits", ".fit")):
        return "fits"
    raise ConfigError(f"{path}: posterior catalogs are written as Parquet (.parquet) or FITS (.fits)")


def with_units(table: pa.Table, units: Mapping[str, str], metadata: Mapping[str, str]) -> pa.Table:
    """``table`` with field metadata ``unit`` per column and ``sedscale.*`` schema metadata.

    ``metadata`` values are strings; ``sedscale.units`` (JSON) is added.
    """
    fields = []
    for f in table.schema:
        unit = units.get(f.name)
        fields.append(f.with_metadata({"unit": unit}) if unit else f)
    meta = {META_PREFIX + "units": json.dumps({k: units[k] for k in table.column_names if units.get(k)}, sort_keys=True)}
    meta.update({(k if k.startswith(META_PREFIX) else META_PREFIX + k): str(v) for k, v in metadata.items()})
    return table.cast(pa.schema(fields)).replace_schema_metadata(meta)


def write_parquet(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` (with its metadata) to Parquet atomically."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


#: Bytes of input tables gathered into one row group of a streamed Parquet file.
ROW_GROUP_BYTES = 32 * 2**20


def write_parquet_stream(tables: Iterable[pa.Table], path: str | os.PathLike, schema: pa.Schema,
                         row_group_bytes: int = ROW_GROUP_BYTES) -> Path:
    """Write tables of one ``schema`` as consecutive rows of a Parquet file, atomically.

    Tables are gathered into row groups of about ``row_group_bytes``: the
    writer keeps every row group's metadata until it closes the file, and
    with a row group per small table (catalog partitions of 250 rows) that
    metadata grew with the catalog (~0.6 kB per row).  At most one row group
    is in memory.
    """

    def write(tmp):
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            pending: list[pa.Table] = []
            size = 0
            for table in tables:
                pending.append(table)
                size += table.nbytes
                if size >= row_group_bytes:
                    _write_row_group(writer, pending)
                    pending, size = [], 0
            if pending:
                _write_row_group(writer, pending)

    return atomic_write(path, write)


def _write_row_group(writer: pq.ParquetWriter, tables: list[pa.Table]) -> None:
    rows = pa.concat_tables(tables)
    writer.write_table(rows, row_group_size=max(1, rows.num_rows))


#: sedscale unit strings -> FITS (astropy ``format="fits"``) spellings.
_FITS_UNIT_WORDS = {"Msun": "solMass", "mag(AB)": "mag"}


def fits_unit(unit: str) -> str:
    """A sedscale unit string in FITS spelling (``Msun`` -> ``solMass``, ``mag(AB)`` -> ``mag``).

    Logarithmic units stay ``dex(...)``: FITS has no standard spelling that
    astropy reads back, so astropy reports them as unrecognised units
    (read with ``unit_parse_strict="silent"`` to hide the warning).
    """
    if unit in _FITS_UNIT_WORDS:
        return _FITS_UNIT_WORDS[unit]
    for word, fits_word in _FITS_UNIT_WORDS.items():
        unit = unit.replace(word, fits_word)
    return unit


def write_fits(table: pa.Table, path: str | os.PathLike, header: Mapping[str, object] | None = None) -> Path:
    """Write ``table`` as a FITS binary table atomically, with TUNIT per column (see :func:`write_fits_stream`)."""
    return write_fits_stream(lambda: iter([table]), path, table.schema, header)


def write_fits_stream(tables: Callable[[], Iterable[pa.Table]], path: str | os.PathLike, schema: pa.Schema,
                      header: Mapping[str, object] | None = None) -> Path:
    """Write tables of one ``schema`` as one FITS binary table (HDU ``POSTERIORS``), atomically.

    Only one table is in memory at a time, so a catalog of any size is
    written in bounded memory.  FITS rows have a fixed width, so ``tables()``
    is iterated twice: once for the row count and the longest string of
    each string column, once to write the rows.

    Parameters
    ----------
    tables : callable
        Returns a fresh iterator over the tables (both passes must see the same rows).
    path : str or PathLike
    schema : pyarrow.Schema
        Scalar numeric, boolean and string columns, and fixed-size list
        columns (written as vector columns).  Units come from the field
        metadata ``unit``.
    header : mapping
        Extra keywords of the table HDU (8-character names; long strings are
        written with the CONTINUE convention).

    Raises
    ------
    ConfigError
        A string that is not ASCII, or a column type FITS cannot hold.
    """
    import pyarrow.compute as pc
    from astropy.io import fits

    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    n_rows, widths = 0, dict.fromkeys(strings, 1)
    for table in tables():
        n_rows += table.num_rows
        for name in strings:
            longest = pc.max(pc.binary_length(table.column(name).fill_null(""))).as_py()
            widths[name] = max(widths[name], int(longest or 0))
    columns = [fits.Column(name=f.name, format=_fits_format(f, widths.get(f.name)),
                           unit=fits_unit((f.metadata or {}).get(b"unit", b"").decode()) or None) for f in schema]
    hdu = fits.BinTableHDU.from_columns(columns, nrows=0, name="POSTERIORS")
    hdu.header["NAXIS2"] = n_rows
    with warnings.catch_warnings():
        # Long JSON provenance values are written with CONTINUE cards on purpose.
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for key, value in dict(header or {}).items():
            hdu.header[key] = value
        table_header = hdu.header.tostring().encode("ascii")
    row_bytes = int(hdu.header["NAXIS1"])

    def write(tmp) -> None:
        written = 0
        with open(tmp, "wb") as fh:
            fh.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
            fh.write(table_header)
            for table in tables():
                rows = _fits_rows(table, widths)
                if rows.dtype.itemsize != row_bytes:
                    raise SedscaleError(f"FITS rows of {rows.dtype.itemsize} bytes, the header says {row_bytes}")
                fh.write(rows.tobytes())
                written += len(rows)
            if written != n_rows:
                raise SedscaleError(f"{path}: {written} rows written, {n_rows} counted; the tables changed in between")
            fh.write(b"\0" * (-(written * row_bytes) % FITS_BLOCK))

    return atomic_write(path, write)


#: FITS files are written in blocks of this many bytes.
FITS_BLOCK = 2880
_FITS_CODES = {"f4": "E", "f8": "D", "i2": "I", "i4": "J", "i8": "K", "u1": "B", "b1": "L"}


def _fits_format(f: pa.Field, width: int | None) -> str:
    """TFORM of an Arrow field (``width``: bytes of a string column)."""
    if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
        return f"{width}A"
    if pa.types.is_fixed_size_list(f.type):
        return f"{f.type.list_size}{_fits_code(f.type.value_type.to_pandas_dtype())}"
    return _fits_code(f.type.to_pandas_dtype())


def _fits_rows(table: pa.Table, widths: Mapping[str, int]) -> np.ndarray:
    """The rows of ``table`` as FITS stores them: a packed big-endian record array.

    Logical columns hold ``T`` / ``F``, strings are NUL-padded ASCII of the
    column's width, fixed-size lists are vector cells.
    """
    fields: list[tuple] = []
    values = []
    for f, col in zip(table.schema, table.columns):
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if f.name in widths:
            text = np.asarray(arr.fill_null("").to_pylist(), dtype=str)
            check_fits_strings({f.name: text})
            fields.append((f.name, f"S{widths[f.name]}"))
            values.append(text.astype(f"S{widths[f.name]}"))
            continue
        shape: tuple = ()
        if pa.types.is_fixed_size_list(f.type):
            shape = (f.type.list_size,)
            data = arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), *shape)
        else:
            data = arr.to_numpy(zero_copy_only=False)
        _fits_code(data.dtype)  # refuses what FITS cannot hold
        if data.dtype == np.bool_:
            data = np.where(data, ord("T"), ord("F")).astype(np.uint8)
        fields.append((f.name, data.dtype.newbyteorder(">"), shape))
        values.append(data)
    rows = np.empty(table.num_rows, dtype=np.dtype(fields))
    for (name, *_), data in zip(fields, values):
        rows[name] = data
    return rows


def _fits_code(dtype) -> str:
    key = np.dtype(dtype).str[1:]
    if key not in _FITS_CODES:
        raise ConfigError(f"cannot write a column of dtype {dtype} to FITS")
    return _FITS_CODES[key]


def check_fits_strings(columns: Mapping[str, Any]) -> None:
    """Refuse text that a FITS table cannot hold: FITS strings are ASCII.

    Parameters
    ----------
    columns : mapping
        Output column name -> its values (array-like); columns without
        strings pass.

    Raises
    ------
    ConfigError
        A column holds non-ASCII strings (one line: the column, a few of
        its strings, what to do instead).
    """
    for name, values in columns.items():
        bad = _non_ascii(values)
        if not bad:
            continue
        shown = ", ".join(repr(v if len(v) <= 40 else v[:37] + "...") for v in bad)
        what, instead = ((f"ids {shown}", "map an ASCII id column") if name == "id"
                         else (f"values {shown} of column {name}", f"do not keep {name}"))
        raise ConfigError(f"{what} are not ASCII: FITS tables hold ASCII strings only; "
                          f"write Parquet (--out x.parquet) or {instead}")


def _non_ascii(values: Any, limit: int = 3) -> list[str]:
    """Up to ``limit`` distinct strings of ``values`` that are not ASCII (none for a column without strings)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "OU":
        return []
    found: dict[str, None] = {}
    for v in arr.ravel().tolist():
        if isinstance(v, str) and not v.isascii():
            found[v] = None
            if len(found) == limit:
                break
    return list(found)


def write_catalog(table: pa.Table, path: str | os.PathLike, header: Mapping[str, object] | None = None) -> Path:
    """Write a posterior catalog as Parquet or FITS (chosen by the suffix of ``path``)."""
    if output_format(path) == "parquet":
        return write_parquet(table, path)
    return write_fits(table, path, header)
