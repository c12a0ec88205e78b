"""Column names and the layout of the observation vector ``x``.

This module is the single contract between simulation (Parquet columns),
training (what the flow is conditioned on) and catalog inference (how a
survey catalog is converted), so that the three agree by construction.

Photometric x (SEDflow): the five ugriz AB magnitudes, their 1-sigma
uncertainties in magnitudes, and the redshift -- 11 numbers.
"""
from __future__ import annotations

from .filters import SDSS_BANDS

#: Noisy observed flux (nanomaggies) and its 1-sigma error.
FLUX_COLUMNS = tuple(f"flux_{b}" for b in SDSS_BANDS)
FLUX_SIGMA_COLUMNS = tuple(f"flux_sigma_{b}" for b in SDSS_BANDS)
#: Noiseless model flux (nanomaggies), kept for diagnostics.
FLUX_TRUE_COLUMNS = tuple(f"flux_true_{b}" for b in SDSS_BANDS)
#: AB magnitude of the noisy flux and its 1-sigma error (magnitudes).
MAG_COLUMNS = tuple(f"mag_{b}" for b in SDSS_BANDS)
MAG_SIGMA_COLUMNS = tuple(f"sigma_{b}" for b in SDSS_BANDS)
REDSHIFT_COLUMN = "z"
#: The conditioning vector of photometric flows, in order.
PHOTOMETRY_X_COLUMNS = MAG_COLUMNS + MAG_SIGMA_COLUMNS + (REDSHIFT_COLUMN,)
X_UNITS = {**{c: "mag(AB)" for c in MAG_COLUMNS}, **{c: "mag" for c in MAG_SIGMA_COLUMNS}, "z": ""}
