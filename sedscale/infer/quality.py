"""Input quality checks and the conversion of catalog photometry to the flow's x.

SEDflow-style handling: a galaxy whose photometry or redshift cannot be
turned into a valid observation vector gets ``status = "bad_input"`` and a
``reason`` naming every failed check, and no posterior; it never stops the
run.  Checks (reason labels):

``missing_z``                 redshift NaN or infinite (not with a photometric-redshift flow,
                              which infers it)
``nonpositive_z``             redshift <= 0
``z_outside_training_range``  redshift outside the training set's range
``invalid_z_err``             photometric-redshift flows: a redshift uncertainty that is <= 0
                              or infinite
``z_err_outside_training_range``  photometric-redshift flows: a redshift uncertainty above the
                              largest the flow was trained with (give the row no z instead)
``z_err_without_z``           photometric-redshift flows: an uncertainty but no redshift
``nan_flux:<bands>``          flux NaN
``infinite_flux:<bands>``     flux infinite
``nonpositive_flux:<bands>``  flux <= 0 (no magnitude)
``zero_ivar:<bands>``         inverse variance 0 (no measurement)
``invalid_ivar:<bands>``      inverse variance negative, NaN or infinite
``low_snr:<bands>``           band-masked flows: measured at S/N below ``min_snr``

Several labels are joined with ``;`` (e.g. ``nan_flux:u;zero_ivar:r``).

The observation vector (:data:`sedscale.observe.layout.PHOTOMETRY_X_COLUMNS`)
is the ugriz AB magnitudes, their 1-sigma errors in magnitudes
(``1.0857 sigma_f / f``), and z.

A photometric-redshift flow (z among its parameters) ends its x in the given
redshift, its uncertainty and whether one is given
(:mod:`sedscale.observe.redshift_input`) instead of z, and every row says
which case applied (:data:`Z_SOURCES`).

Band-masked flows (:data:`~sedscale.observe.layout.MASKED_PHOTOMETRY_X_COLUMNS`)
mask a band with a NaN flux, an ivar that is 0, NaN or negative, or a flux
<= 0 (a faint measurement without a magnitude) instead of refusing the
galaxy, and also a band measured at a S/N below the flow's training noise
(``low_snr``: a non-detection, e.g. GALEX FUV of a red galaxy at S/N 0.01,
whose magnitude error of ~100 mag no training row had); the galaxy is
``bad_input`` only with fewer than three usable bands (``fewer_than_3_bands``,
plus the per-band labels that say why).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..observe.filters import SDSS_BANDS
from ..observe.layout import MIN_BANDS, masked_photometry_x
from ..observe.redshift_input import RedshiftInput
from ..units import flux_sigma_to_mag_sigma, ivar_to_sigma, nanomaggies_to_mag

#: Status values of the posterior catalog, in order of precedence.
STATUS_OK = "ok"
STATUS_BAD_INPUT = "bad_input"
STATUS_TIMEOUT = "sampling_timeout"
STATUS_OUT_OF_SUPPORT = "out_of_support"
#: A galaxy sent to MCMC (``--fallback mcmc``) whose chains did not converge within its budget.
STATUS_MCMC_NOT_CONVERGED = "mcmc_not_converged"
#: Importance sampling (``--importance-sampling``): too few effective samples to trust the corrected posterior.
STATUS_LOW_IS_EFFICIENCY = "low_is_efficiency"
#: ``--fit-check``: the posterior does not reproduce the galaxy's own photometry (:mod:`sedscale.infer.fit_check`).
STATUS_POOR_FIT = "poor_fit"
STATUSES = (STATUS_OK, STATUS_BAD_INPUT, STATUS_OUT_OF_SUPPORT, STATUS_TIMEOUT, STATUS_MCMC_NOT_CONVERGED,
            STATUS_LOW_IS_EFFICIENCY, STATUS_POOR_FIT)
#: ``method`` values: how a galaxy's posterior samples were made (the flow's own samples; importance-sampled
#: against the exact likelihood; MCMC, ``--fallback mcmc``); ``""`` for bad input.
METHOD_ANPE, METHOD_IS, METHOD_MCMC = "anpe", "is", "mcmc"
#: ``z_source`` values: the redshift was given and used as exact; given with a
#: Gaussian uncertainty that the posterior marginalizes over; or inferred from
#: the photometry alone (photometric redshift).
Z_GIVEN, Z_GIVEN_WITH_ERROR, Z_PHOTOMETRIC = "given", "given_with_error", "photometric"
Z_SOURCES = (Z_GIVEN, Z_GIVEN_WITH_ERROR, Z_PHOTOMETRIC)


@dataclass(frozen=True, eq=False)
class CheckedPhotometry:
    """Observation vectors and input flags of a batch of galaxies.

    Attributes
    ----------
    x : ndarray, shape (n, 11) or (n, 16)
        The flow's x (SEDflow or band-masked layout); NaN rows for bad input.
    bad : ndarray of bool, shape (n,)
    reason : ndarray of str (object), shape (n,)
        ``""`` for good rows, else the failed checks (module docstring);
        for band-masked flows, usable rows may list the masked bands.
    used : ndarray of bool, shape (n, n_band)
        Bands that entered x.
    mag, mag_sigma : ndarray, shape (n, n_band)
        Magnitudes and their errors (error floor included) of every
        measured band, also of ``bad`` rows (NaN for unusable bands).
    z_source : ndarray of str (object), shape (n,)
        Per galaxy one of :data:`Z_SOURCES` (``""`` for bad input).
    bands : tuple of str
        Band labels, in column order.
    """

    x: np.ndarray
    bad: np.ndarray
    reason: np.ndarray
    used: np.ndarray
    mag: np.ndarray
    mag_sigma: np.ndarray
    z_source: np.ndarray
    bands: tuple = SDSS_BANDS

    @property
    def bands_used(self) -> np.ndarray:
        """Per galaxy the used bands as a string, object array.

        ``"ugriz"``, ``"gri"``, ``""`` for one-letter labels; comma-separated
        otherwise (``"fuv,nuv,u,g,r,i,z"``).
        """
        names = np.array(self.bands)
        sep = "" if all(len(b) == 1 for b in self.bands) else ","
        return np.array([sep.join(names[u]) for u in self.used], dtype=object)


def photometry_x(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(n, 11) observation vectors from fluxes (nanomaggies), inverse variances and z.

    Entries are NaN where a flux is non-positive or an ivar is not positive.
    """
    flux = np.asarray(flux, dtype=np.float64)
    mag = nanomaggies_to_mag(flux)
    sigma = flux_sigma_to_mag_sigma(flux, ivar_to_sigma(ivar))
    return np.column_stack([mag, sigma, np.asarray(z, dtype=np.float64)])


def check_photometry(flux, ivar, z, z_range: tuple[float, float] | None = None, masked: bool = False,
                     error_floor: float = 0.0, bands: tuple[str, ...] = SDSS_BANDS,
                     absent: tuple[str, ...] = (), min_snr: float = 0.0, z_err=None,
                     redshift: RedshiftInput | None = None) -> CheckedPhotometry:
    """Flag unusable rows and build the observation vectors of the others.

    Parameters
    ----------
    flux, ivar : array_like, shape (n, n_band)
        Fluxes (nanomaggies) and inverse variances (nanomaggies^-2) in
        ``bands`` order (SEDflow's x: the five ugriz).
    z : array_like, shape (n,)
    z_range : (float, float), optional
        Redshift range of the training set; rows outside are bad input
        (the flow was never shown such redshifts).
    masked : bool
        Build the band-masked x (bad bands masked, >= 3 needed) instead of
        the SEDflow x (every band needed).
    error_floor : float
        Magnitudes added in quadrature to every uncertainty (band-masked x).
    bands : tuple of str
        Band labels (reasons and ``bands_used``).
    absent : tuple of str
        Bands the catalog does not have at all (a union-band flow): masked
        like the others, but not named in the reasons.
    min_snr : float
        Band-masked x: bands with ``flux sqrt(ivar)`` below this are masked
        (``low_snr``); 0 keeps every positive flux.
    z_err : array_like, shape (n,), optional
        1-sigma redshift uncertainties (NaN: none given); photometric-redshift flows only.
    redshift : RedshiftInput, optional
        The redshift input of a photometric-redshift flow (band-masked x):
        rows without z are inferred, not refused, and x ends in the encoded
        redshift instead of z.

    Returns
    -------
    CheckedPhotometry
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        flux_finite = np.isfinite(flux)
        ivar_finite = np.isfinite(ivar)
        per_band = {
            "nan_flux": np.isnan(flux),
            "infinite_flux": np.isinf(flux),
            "nonpositive_flux": flux_finite & (flux <= 0),
            "zero_ivar": ivar == 0,
            "invalid_ivar": ~ivar_finite | (ivar < 0),
        }
        if masked and min_snr > 0:
            per_band["low_snr"] = flux_finite & (flux > 0) & ivar_finite & (ivar > 0) & (flux * np.sqrt(ivar) < min_snr)
        z_ok = np.isfinite(z)
        per_row = {"missing_z": ~z_ok if redshift is None else np.zeros(z.shape, dtype=bool),
                   "nonpositive_z": z_ok & (z <= 0)}
        if z_range is not None:
            per_row["z_outside_training_range"] = z_ok & (z > 0) & ((z < z_range[0]) | (z > z_range[1]))
        z_err = np.full(z.shape, np.nan) if z_err is None else np.asarray(z_err, dtype=np.float64)
        if redshift is not None:
            err_given = ~np.isnan(z_err)
            per_row["invalid_z_err"] = err_given & ~(np.isfinite(z_err) & (z_err > 0))
            per_row["z_err_outside_training_range"] = err_given & np.isfinite(z_err) & (z_err > redshift.sigma_max)
            per_row["z_err_without_z"] = err_given & np.isnan(z)
    band_bad = np.zeros(flux.shape, dtype=bool)
    for mask in per_band.values():
        band_bad |= mask
    if masked:
        per_row["fewer_than_3_bands"] = (~band_bad).sum(axis=1) < MIN_BANDS
        # A photometric-redshift row without z still gets its photometry's x (z is re-encoded below).
        z_x = z if redshift is None else np.where(z_ok, z, 0.0)
        x, used, _ = masked_photometry_x(np.where(band_bad, np.nan, flux), ivar_to_sigma(ivar), z_x, error_floor)
        if redshift is not None:
            x = np.concatenate([x[:, :-1], redshift.encode(z, z_err)], axis=1)
    else:
        x, used = photometry_x(flux, ivar, z), ~band_bad
    bad = np.zeros(z.shape[0], dtype=bool) if masked else np.asarray(band_bad.any(axis=1))
    for mask in per_row.values():
        bad |= mask
    reason = np.full(z.shape[0], "", dtype=object)
    reported = band_bad & ~np.isin(np.asarray(bands), absent)[None, :]
    for i in np.flatnonzero(bad | reported.any(axis=1)):
        labels = [name for name, mask in per_row.items() if mask[i]]
        labels += [
            f"{name}:{','.join(named)}"
            for name, mask in per_band.items()
            if (named := [b for b, m in zip(bands, mask[i]) if m and b not in absent])
        ]
        reason[i] = ";".join(labels)
    x = np.asarray(x, dtype=np.float64)
    x[bad] = np.nan
    used = used & ~bad[:, None]
    z_source = np.where(~z_ok, Z_PHOTOMETRIC, np.where(np.isnan(z_err), Z_GIVEN, Z_GIVEN_WITH_ERROR)).astype(object)
    z_source[bad] = ""
    # Magnitudes of every measured band, also of rows refused for another reason (a missing z):
    # the catalog keeps what was measured.
    measured = ~band_bad | per_band.get("low_snr", False)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(measured, nanomaggies_to_mag(flux), np.nan)
        sigma = np.sqrt(flux_sigma_to_mag_sigma(flux, ivar_to_sigma(ivar)) ** 2 + (error_floor if masked else 0.0) ** 2)
    return CheckedPhotometry(x=x, bad=bad, reason=reason, used=used, mag=mag,
                             mag_sigma=np.where(measured, sigma, np.nan), bands=tuple(bands), z_source=z_source)


def reason_labels(reason: str) -> list[str]:
    """The check names in a reason string, without band lists (for counting)."""
    return [part.split(":", 1)[0] for part in reason.split(";") if part]


def reason_counts(reasons: Iterable[str | None]) -> Counter:
    """Rows per check name in ``reason`` strings (a row counts once per name; None counts as no reason)."""
    counts: Counter = Counter()
    for reason in reasons:
        counts.update(set(reason_labels(reason or "")))
    return counts
