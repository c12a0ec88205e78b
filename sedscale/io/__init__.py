"""Catalog input/output: survey catalogs in, simulation and posterior tables out.

* :mod:`sedscale.io.nsa` -- NASA-Sloan Atlas FITS files (``read_nsa``).
* :mod:`sedscale.io.sdss` -- SDSS spec-PLATE-MJD-FIBER spectra on the DIGS grid
  (``read_sdss_spectra``).
* :mod:`sedscale.io.catalog` -- generic catalogs (FITS/Parquet/CSV) in, posterior
  catalogs out.
"""
from .nsa import (
    NSA_BANDS,
    NSA_FLUX_COLUMNS,
    NSA_FLUX_IVAR_COLUMNS,
    NSA_UGRIZ,
    CatalogFormatError,
    nsa_band_indices,
    read_nsa,
    read_nsa_file,
    ugriz_indices,
)
from .sdss import (
    ALL_MASK_BITS,
    SDSSSpectrum,
    SpectrumFormatError,
    read_sdss_spectra,
    read_sdss_spectrum,
    rest_luminosity,
    spectra_table,
    sppixmask,
)

__all__ = [
    "ALL_MASK_BITS",
    "NSA_BANDS",
    "NSA_FLUX_COLUMNS",
    "NSA_FLUX_IVAR_COLUMNS",
    "NSA_UGRIZ",
    "CatalogFormatError",
    "SDSSSpectrum",
    "SpectrumFormatError",
    "read_nsa",
    "read_nsa_file",
    "read_sdss_spectra",
    "read_sdss_spectrum",
    "rest_luminosity",
    "spectra_table",
    "sppixmask",
    "nsa_band_indices",
    "ugriz_indices",
]
