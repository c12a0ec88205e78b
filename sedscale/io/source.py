"""Catalog input read lazily, one partition at a time, by whoever needs the rows.

A survey catalog (10^7 rows for DESI, 10^9-10^10 for Rubin) must not pass
through the driver.  :func:`open_catalog` looks at the files without reading
their rows: schemas and row counts (FITS headers, Parquet footers; CSV and
text files are scanned once for the byte offset of every
:data:`LINE_INDEX_STRIDE`-th row), the flux unit of each file, and, when ids
must be de-duplicated, the id column alone.  The result, a
:class:`CatalogSource`, cuts the de-duplicated catalog into
:class:`CatalogPartition` s of fixed size; each is a small picklable list of
row ranges that :func:`read_partition` turns into the canonical photometry
frame of :func:`sedscale.io.catalog.read_catalog` on a worker (FITS row
ranges through fitsio, Parquet row groups, a seek into CSV/text files).

Inputs
------
Paths may be files, directories (every catalog file inside, recursively,
sorted; names starting with ``_`` or ``.`` such as Parquet ``_metadata`` are
skipped) or glob patterns, in the order given.

Repeated ids
------------
NSA files (cut around overlapping fields) and mapped catalogs with an ``id``
column are de-duplicated by id, first occurrence kept, which needs every id
in the driver (8 bytes a row).  Above ``dedup_max_rows``
(:data:`DEDUP_MAX_ROWS` by default) the ids are not read and a repeated id
stays a repeated row; the catalog summary says so.  Catalogs without an id
column are numbered 0, 1, ... across all files and never de-duplicated.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyarrow import ArrowException

from ..errors import ConfigError, InputChangedError, MissingDataError, SedscaleError
from ..observe.filters import SDSS_BANDS
from .catalog import (
    OPTIONAL_CANONICAL,
    ColumnMapping,
    RowRange,
    _canonical_mapping,
    _first_line,
    _fits_table_hdu,
    _open_binary,
    _text_table,
    _with_absent_bands,
    canonical_columns,
    catalog_format,
    check_columns,
    flux_unit_of,
    is_nsa_file,
    mapped_columns,
    mapped_frame,
    read_table_columns,
    table_columns,
    text_names_of,
)
from .nsa import NSA_BANDS, REQUIRED_COLUMNS, CatalogFormatError, nsa_frame, read_nsa_file

__all__ = [
    "DEDUP_MAX_ROWS",
    "LINE_INDEX_STRIDE",
    "CatalogPartition",
    "CatalogSource",
    "ReadSpec",
    "Segment",
    "SourceFile",
    "expand_catalog_paths",
    "file_fingerprint",
    "open_catalog",
    "read_partition",
]

log = logging.getLogger(__name__)

#: Largest catalog whose ids the driver reads to drop repeated ids (8 bytes a row: 160 MB).
DEDUP_MAX_ROWS = 20_000_000
#: CSV and text files: byte offset kept for every this many data rows (a reader skips at most this many rows).
LINE_INDEX_STRIDE = 256
#: Bytes hashed at each end of an input file for its fingerprint.
FINGERPRINT_BYTES = 1 << 16
_CATALOG_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts", ".parquet", ".pq", ".csv", ".csv.gz",
                     ".txt", ".dat", ".ascii")


@dataclass(frozen=True)
class SourceFile:
    """One input file as a partition reader needs it (small: shipped with every task that reads it).

    Attributes
    ----------
    path : str
    format : str
        ``"nsa"``, ``"fits"``, ``"parquet"``, ``"csv"`` or ``"text"``.
    n_rows : int
        Data rows in the file.
    unit : str or None
        Flux unit of a mapped file (a ``FLUX_UNITS`` key; None for NSA files and magnitudes).
    size, mtime_ns, inode : int
        Bytes, modification time and inode number when the run was planned.
    fingerprint : str
        sha256 of the first and last :data:`FINGERPRINT_BYTES` (catches a
        rewrite that kept the size and the modification time, such as ``cp -p``).
    """

    path: str
    format: str
    n_rows: int
    unit: str | None = None
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    fingerprint: str = ""

    @classmethod
    def at(cls, path: Path, format: str, n_rows: int, unit: str | None = None) -> SourceFile:
        """The file at ``path`` as it is now."""
        stat = path.stat()
        return cls(str(path), format, n_rows, unit, stat.st_size, stat.st_mtime_ns, stat.st_ino,
                   file_fingerprint(path, stat.st_size))

    def check_unchanged(self) -> None:
        """Raise when the file is no longer the one the run was planned on.

        Called by the worker that reads the file, before and after reading
        its rows, so that a file rewritten in place or replaced during a run
        stops the run instead of mixing old and new rows in one catalog.

        Raises
        ------
        InputChangedError
            Naming the file and what differs.
        """
        path = Path(self.path)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise InputChangedError(f"{self.path}: the input file disappeared during the run") from None
        changed = [what for what, old, new in (("size", self.size, stat.st_size),
                                                ("modification time", self.mtime_ns, stat.st_mtime_ns),
                                                ("inode (replaced by another file)", self.inode, stat.st_ino))
                   if old and old != new]
        if not changed and self.fingerprint and file_fingerprint(path, stat.st_size) != self.fingerprint:
            changed = ["contents"]
        if changed:
            raise InputChangedError(
                f"{self.path}: the input file changed during the run ({', '.join(changed)} differ from when the run "
                "was planned); no catalog was written: restore the file and rerun with --resume, or rerun with "
                "--overwrite to start over on the new contents"
            )


def file_fingerprint(path: str | os.PathLike, size: int) -> str:
    """sha256 (hex) of a file's first and last :data:`FINGERPRINT_BYTES` bytes and its size (cheap at any size)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            fh.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(fh.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


@dataclass(frozen=True)
class Segment:
    """Rows of one file that belong to a partition."""

    file: SourceFile
    rows: RowRange


@dataclass(frozen=True)
class CatalogPartition:
    """A partition of the de-duplicated catalog: consecutive rows, possibly across files.

    Attributes
    ----------
    index : int
    first_row : int
        Position of its first row in the de-duplicated catalog (the id of
        catalogs without an id column).
    n_rows : int
    segments : tuple of Segment
        The file rows it spans, in catalog order.
    drop : tuple of int
        Positions within the spanned rows that repeat an earlier id (dropped).
    """

    index: int
    first_row: int
    n_rows: int
    segments: tuple
    drop: tuple = ()


@dataclass(frozen=True)
class ReadSpec:
    """How every partition's rows become the canonical frame (small, shipped with the tasks).

    ``mapping`` is None for NSA files; ``nsa_mass`` keeps the NSA ``MASS``
    column (only when every file has it).
    """

    bands: tuple
    mapping: ColumnMapping | None
    keep: tuple = ()
    nsa_mass: bool = False

    @property
    def numbered(self) -> bool:
        """Rows are numbered across files (a mapped catalog without an id column)."""
        return self.mapping is not None and self.mapping.id is None


@dataclass
class CatalogSource:
    """A catalog opened for partitioned reading (see the module docstring).

    Attributes
    ----------
    files : list of SourceFile
    spec : ReadSpec
    kind : str
        ``"nsa"``, ``"mapped"`` or ``"canonical"``.
    flux_unit : str
        The unit(s) the fluxes are read in, and where that came from.
    n_rows_read : int
        Rows in all files.
    kept : ndarray of bool or None
        Which rows survive de-duplication (None: all).
    kept_positions : ndarray of int or None
        Their positions among all rows (set with ``kept``).
    ids : ndarray or None
        The de-duplicated ids, when they were read.
    dedup_checked : bool
        False when ids were not read because the catalog is above the limit.
    absent_bands : tuple of str
        Bands of the flow the catalog does not have (masked in every row).
    """

    files: list
    spec: ReadSpec
    kind: str
    flux_unit: str
    n_rows_read: int
    kept: np.ndarray | None = None
    kept_positions: np.ndarray | None = None
    ids: np.ndarray | None = None
    dedup_checked: bool = True
    absent_bands: tuple = ()
    #: CSV/text files: path -> byte offsets of every LINE_INDEX_STRIDE-th data row.
    _line_offsets: dict = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        """Rows of the de-duplicated catalog."""
        return self.n_rows_read if self.kept_positions is None else int(self.kept_positions.size)

    @property
    def n_duplicates(self) -> int:
        return self.n_rows_read - self.n_rows

    @property
    def sources(self) -> list[str]:
        return [f.path for f in self.files]

    def attrs(self) -> dict:
        """What :func:`~sedscale.io.catalog.read_catalog` records in ``DataFrame.attrs``."""
        return {"sources": self.sources, "flux_unit": self.flux_unit, "format": self.kind,
                "n_rows_read": self.n_rows_read, "n_duplicates": self.n_duplicates, "absent_bands": self.absent_bands}

    def identity(self) -> dict:
        """What the rows depend on, without reading them: files (name, bytes, mtime, rows), mapping, bands.

        A rewritten file changes its size or modification time, so a run
        planned on it is not resumed from partitions of the old contents.
        """
        mapping = self.spec.mapping.to_dict() if self.spec.mapping is not None else None
        return {
            "files": [[Path(f.path).name, f.size, f.mtime_ns, f.n_rows, f.fingerprint] for f in self.files],
            "kind": self.kind,
            "mapping": json.loads(json.dumps(mapping, default=list)),
            "bands": list(self.spec.bands),
            "keep": list(self.spec.keep),
            "n_rows": self.n_rows,
            "dedup_checked": self.dedup_checked,
            "kept_sha256": hashlib.sha256(np.packbits(self.kept).tobytes()).hexdigest() if self.kept is not None else None,
        }

    def digest(self) -> str:
        """sha256 of :meth:`identity` (recorded in the posterior catalog's provenance)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ partitions
    def partitions(self, size: int) -> list[CatalogPartition]:
        """The catalog cut into partitions of ``size`` rows (the last one shorter), in catalog order."""
        if size < 1:
            raise ConfigError(f"partition size must be >= 1, got {size}")
        return [self.partition(i, size) for i in range(max(1, -(-self.n_rows // size)))]

    def partition(self, index: int, size: int) -> CatalogPartition:
        """Partition ``index`` of the catalog cut into ``size``-row partitions."""
        first = index * size
        n = max(0, min(size, self.n_rows - first))
        drop: tuple = ()
        if self.kept is None or self.kept_positions is None:
            start, stop = first, first + n
        else:
            positions = self.kept_positions[first : first + n]
            start, stop = (int(positions[0]), int(positions[-1]) + 1) if n else (0, 0)
            drop = tuple(np.flatnonzero(~self.kept[start:stop]).tolist())
        return CatalogPartition(index=index, first_row=first, n_rows=n, segments=self._segments(start, stop), drop=drop)

    def _segments(self, start: int, stop: int) -> tuple:
        """Rows ``start..stop-1`` of the concatenated files as per-file row ranges."""
        out, offset = [], 0
        for f in self.files:
            lo, hi = max(start, offset), min(stop, offset + f.n_rows)
            if lo < hi:
                out.append(Segment(f, self._row_range(f, lo - offset, hi - offset)))
            offset += f.n_rows
        return tuple(out)

    def _row_range(self, f: SourceFile, start: int, stop: int) -> RowRange:
        offsets = self._line_offsets.get(f.path)
        if offsets is None:
            return RowRange(start, stop)
        k = start // LINE_INDEX_STRIDE
        return RowRange(start, stop, int(offsets[k]), k * LINE_INDEX_STRIDE)

    # ------------------------------------------------------------------ reading
    def read(self, max_rows: int | None = None) -> pd.DataFrame:
        """The whole de-duplicated catalog (or its first ``max_rows``) as one frame, with ``attrs``."""
        n = self.n_rows if max_rows is None else min(max_rows, self.n_rows)
        df = read_partition(self.partition(0, max(1, n)), self.spec)
        df.attrs.update(self.attrs())
        return df

    def read_rows(self, rows: Sequence[int], size: int) -> pd.DataFrame:
        """Rows ``rows`` (positions in the de-duplicated catalog) in that order, reading only their partitions."""
        positions = np.asarray(rows, dtype=np.int64)
        parts = {int(p): read_partition(self.partition(int(p), size), self.spec) for p in np.unique(positions // size)}
        return pd.concat([parts[int(r // size)].iloc[[int(r % size)]] for r in positions], ignore_index=True)


# ------------------------------------------------------------------------- opening
def expand_catalog_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files of ``paths`` in order: files as given, directories' catalog files (sorted), glob matches (sorted).

    Raises
    ------
    ConfigError
        No path given, or a directory or pattern with no catalog file.
    MissingDataError
        A path that is neither a file, a directory nor a matching pattern.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ConfigError("no catalog file given")
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            out.append(path)
            continue
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_CATALOG_SUFFIXES)
                           and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts))
            where = f"directory {path}"
        elif glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            where = f"pattern {item}"
        else:
            raise MissingDataError(f"catalog {path} does not exist")
        if not found:
            raise ConfigError(f"{where} holds no catalog file ({', '.join(_CATALOG_SUFFIXES[:8])}, ...)")
        out.extend(found)
    return out


def open_catalog(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    mapping: ColumnMapping | None = None,
    keep: Sequence[str] = (),
    bands: Sequence[str] | None = None,
    *,
    dedup_max_rows: int = DEDUP_MAX_ROWS,
) -> CatalogSource:
    """Open catalog files for partitioned reading: check them, count their rows, read ids only to de-duplicate.

    Parameters are those of :func:`sedscale.io.catalog.read_catalog`, plus
    ``dedup_max_rows`` (see the module docstring).

    Raises
    ------
    MissingDataError, CatalogFormatError, ConfigError
        Before any row is read: missing files or columns, unknown units,
        a mapping for other bands.
    """
    files = expand_catalog_paths(paths)
    keep = tuple(dict.fromkeys(tuple(keep) + (mapping.keep if mapping else ())))
    bands = tuple(bands if bands is not None else (mapping.bands if mapping else SDSS_BANDS))
    if mapping is not None and tuple(mapping.bands) != bands and not (mapping.partial and set(mapping.bands) <= set(bands)):
        raise ConfigError(f"the column mapping is for bands {mapping.bands}, the flow takes {bands}")
    if mapping is None and all(is_nsa_file(f) for f in files):
        return _open_nsa(files, keep, bands, dedup_max_rows)
    canonical = canonical_columns(bands)
    kind = "mapped" if mapping is not None else "canonical"
    if mapping is None:
        required = [c for c in canonical if c not in OPTIONAL_CANONICAL]
        present: set[str] = set(OPTIONAL_CANONICAL)
        for f in files:
            lower = {c.lower() for c in table_columns(f)}
            if not all(c in lower for c in required):
                raise CatalogFormatError(
                    f"{f}: neither an NSA catalog (NSAID, Z, NMGY, NMGY_IVAR) nor in sedscale's layout "
                    f"({', '.join(required)}, optionally {', '.join(OPTIONAL_CANONICAL)}); give a column mapping "
                    "(--columns / --column-map)"
                )
            present &= lower
        mapping = _canonical_mapping(bands, tuple(present))
    source_files, units, line_offsets = [], [], {}
    text = text_names_of(mapping)
    for f in files:
        fmt = "text" if text is not None else catalog_format(f)
        n_rows, offsets = _count_rows(f, fmt)
        if offsets is not None:
            line_offsets[str(f)] = offsets
        if fmt == "text" and n_rows and offsets is not None:
            # A header naming other columns than the rows hold: said plainly, before any column lookup.
            _text_table(f, text or (), RowRange(0, 1, int(offsets[0]), 0))
        check_columns(f, mapped_columns(mapping, keep), text)
        unit, words = _canonical_flux_unit(f, mapping) if kind == "canonical" else flux_unit_of(f, mapping)
        source_files.append(SourceFile.at(f, fmt, n_rows, unit))
        units.append(words)
    spec = ReadSpec(bands=bands, mapping=mapping, keep=keep)
    source = CatalogSource(files=source_files, spec=spec, kind=kind, flux_unit=", ".join(dict.fromkeys(units)),
                           n_rows_read=sum(f.n_rows for f in source_files),
                           absent_bands=tuple(b for b in bands if b not in mapping.bands), _line_offsets=line_offsets)
    if mapping.id is not None:
        _deduplicate(source, lambda f: read_table_columns(f.path, [mapping.id], text_names=text)[mapping.id],
                     dedup_max_rows)
    return source


def _canonical_flux_unit(path: Path, mapping: ColumnMapping) -> tuple[str | None, str]:
    """:func:`flux_unit_of` a file in sedscale's layout: the unit its metadata gives, else a one-line refusal.

    Such a file comes without a column mapping, so nothing else says what its
    fluxes are in (uJy read as nanomaggies would shift every mass by +0.56 dex).
    """
    try:
        return flux_unit_of(path, mapping)
    except ConfigError:
        raise ConfigError(
            f"{path}: in sedscale's layout but its flux columns carry no flux unit (FITS TUNIT or Parquet field "
            "metadata 'unit'); write the unit into the file, or give the columns with their unit: --columns id=id "
            "z=z flux=flux_{band} flux_ivar=flux_ivar_{band} flux_unit=<nanomaggy|uJy|nJy|mJy|Jy|maggy>"
        ) from None


def _open_nsa(files: list[Path], keep: tuple, bands: tuple, dedup_max_rows: int) -> CatalogSource:
    source_files, has_mass = [], []
    for f in files:
        present = {c.upper() for c in table_columns(f)}
        n_rows = _fits_rows(f)
        missing = [c for c in (*REQUIRED_COLUMNS, *(k.upper() for k in keep)) if c not in present]
        if missing:
            raise CatalogFormatError(f"{f}: missing NSA column(s) {', '.join(missing)}")
        has_mass.append("MASS" in present)
        source_files.append(SourceFile.at(f, "nsa", n_rows))
    nsa = [b.lower() for b in NSA_BANDS]
    spec = ReadSpec(bands=bands, mapping=None, keep=keep, nsa_mass=all(has_mass))
    source = CatalogSource(files=source_files, spec=spec, kind="nsa", flux_unit="nanomaggy (NSA NMGY)",
                           n_rows_read=sum(f.n_rows for f in source_files),
                           absent_bands=tuple(b for b in bands if b not in nsa))

    _deduplicate(source, lambda f: read_table_columns(f.path, ["NSAID"])["NSAID"].astype(np.int64), dedup_max_rows)
    return source


def _fits_rows(path: Path) -> int:
    """Rows of a FITS table, after reading its last row: a truncated file fails here, not on a worker."""
    import fitsio

    try:
        with fitsio.FITS(str(path)) as fits:
            hdu = _fits_table_hdu(fits, path)
            n_rows = int(hdu.get_nrows())
            if n_rows:
                hdu.read(columns=[hdu.get_colnames()[0]], rows=[n_rows - 1])
    except OSError as exc:
        raise CatalogFormatError(f"{path}: unreadable FITS file (truncated or corrupt?): {_first_line(exc)}") from exc
    return n_rows


def _count_rows(path: Path, fmt: str) -> tuple[int, np.ndarray | None]:
    """Data rows of a file, and for CSV/text the byte offset of every :data:`LINE_INDEX_STRIDE`-th data row."""
    if fmt == "fits":
        return _fits_rows(path), None  # its own one-line errors
    try:
        if fmt == "parquet":
            return int(pq.ParquetFile(path).metadata.num_rows), None
        return _line_offsets(path, header=fmt == "csv", comments=fmt == "text", quotes=fmt == "csv")
    except (OSError, ValueError) as exc:
        raise CatalogFormatError(f"{path}: unreadable {fmt} file (truncated or corrupt?): {exc}") from exc


def _line_offsets(path: Path, header: bool, comments: bool, quotes: bool = False) -> tuple[int, np.ndarray]:
    """Scan a line file once: data rows (blank lines, a CSV header, ``#`` lines of text tables skipped) and offsets.

    With ``quotes`` (CSV) a row may span lines: a line with an odd number of
    ``"`` opens or closes a quoted field (an escaped ``""`` counts twice), and
    the lines inside a quoted field continue the row they belong to.
    """
    offsets, pos = [], 0
    n = -1 if header else 0  # the header is row -1
    inside = False  # the line starts within a quoted field
    with _open_binary(path) as fh:
        for line in fh:
            starts_row = not inside
            if quotes and line.count(b'"') % 2:
                inside = not inside
            stripped = line.strip()
            if starts_row and stripped and not (comments and stripped.startswith(b"#")):
                if n >= 0 and n % LINE_INDEX_STRIDE == 0:
                    offsets.append(pos)
                n += 1
            pos += len(line)
    return max(n, 0), np.asarray(offsets, dtype=np.int64)


def _deduplicate(source: CatalogSource, read_ids, dedup_max_rows: int) -> None:
    """Read the id column of every file and mark the rows repeating an earlier id (first occurrence kept)."""
    if source.n_rows_read > dedup_max_rows:
        source.dedup_checked = False
        log.warning("open_catalog: %d rows > %d: ids are not read, repeated ids are not dropped",
                    source.n_rows_read, dedup_max_rows)
        return
    ids = np.concatenate([np.asarray(read_ids(f)) for f in source.files]) if source.files else np.array([])
    repeated = pd.Index(ids).duplicated(keep="first")
    if repeated.any():
        source.kept = ~repeated
        source.kept_positions = np.flatnonzero(source.kept)
        log.info("open_catalog: dropped %d rows repeating an id", int(repeated.sum()))
    source.ids = ids[~repeated] if repeated.any() else ids


# ------------------------------------------------------------------------- worker side
def _read_segment(seg: Segment, spec: ReadSpec) -> pd.DataFrame:
    """The canonical frame of one segment's rows."""
    f = seg.file
    if f.format == "nsa":
        nsa = [b.lower() for b in NSA_BANDS]
        frame = nsa_frame(read_nsa_file(f.path, spec.keep, rows=(seg.rows.start, seg.rows.stop)), spec.keep,
                          [b for b in spec.bands if b in nsa] or spec.bands)
        return frame if spec.nsa_mass else frame.drop(columns="mass_nsa", errors="ignore")
    assert spec.mapping is not None  # NSA files are the only unmapped kind
    return mapped_frame(Path(f.path), spec.mapping, spec.keep, f.unit, seg.rows)


def read_partition(part: CatalogPartition, spec: ReadSpec) -> pd.DataFrame:
    """The canonical photometry frame of one partition (runs on a worker; see :func:`read_catalog`).

    Raises
    ------
    CatalogFormatError
        A file unreadable, or holding other rows than when the run was planned.
    """
    frames = []
    for seg in part.segments:
        f = seg.file
        f.check_unchanged()
        try:
            frame = _read_segment(seg, spec)
        except (OSError, ValueError, ArrowException) as exc:
            if isinstance(exc, SedscaleError) and not isinstance(exc, CatalogFormatError):
                raise  # bad values, said by the reader
            f.check_unchanged()  # a file rewritten under the reader is said as such, not as corrupt
            # Planning read the file's metadata and first rows only: damage further in is found here.
            detail = str(exc).removeprefix(f"{f.path}: ") if isinstance(exc, CatalogFormatError) else _first_line(exc)
            raise CatalogFormatError(
                f"{f.path}: rows {seg.rows.start}..{seg.rows.stop - 1} are unreadable ({detail}); the partitions "
                "finished so far are kept: repair or replace the file, then rerun (--overwrite starts over on it)"
            ) from None
        # A rewrite that began while these rows were read.
        f.check_unchanged()
        if len(frame) != seg.rows.stop - seg.rows.start:
            raise CatalogFormatError(f"{f.path}: rows {seg.rows.start}..{seg.rows.stop - 1} read as {len(frame)} rows; "
                                     "the file does not hold the rows its metadata announced")
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(canonical_columns(spec.bands)))
    if part.drop:
        df = df.drop(index=list(part.drop)).reset_index(drop=True)
    if len(df) != part.n_rows:
        raise CatalogFormatError(f"partition {part.index}: read {len(df)} rows, planned {part.n_rows}")
    if spec.numbered:
        df["id"] = np.arange(part.first_row, part.first_row + part.n_rows, dtype=np.int64)
    return _with_absent_bands(df, spec.bands)
