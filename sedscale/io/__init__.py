"""Catalog input/output: survey catalogs in, simulation and posterior tables out.

* :mod:`sedscale.io.nsa` -- NASA-Sloan Atlas FITS files (``read_nsa``).
"""
from .nsa import (
    NSA_BANDS,
    NSA_FLUX_COLUMNS,
    NSA_FLUX_IVAR_COLUMNS,
    NSA_UGRIZ,
    CatalogFormatError,
    read_nsa,
    read_nsa_file,
    ugriz_indices,
)

__all__ = [
    "NSA_BANDS",
    "NSA_FLUX_COLUMNS",
    "NSA_FLUX_IVAR_COLUMNS",
    "NSA_UGRIZ",
    "CatalogFormatError",
    "read_nsa",
    "read_nsa_file",
    "ugriz_indices",
]
