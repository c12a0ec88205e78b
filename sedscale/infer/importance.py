"""Importance sampling: the flow as proposal, the exact likelihood of the galaxy's photometry as target.

The amortized posterior q(theta | x) is fast but approximate.  Following
DINGO-IS (Dax et al. 2023, PRL 130, 171403), each galaxy's flow samples
become an importance-sampling proposal for the exact posterior

    p(theta | x)  propto  p(theta) L(x | theta),

with self-normalized weights w = p L / q.  A defensive component (Hesterberg
1995) proposes where the flow's tails are too thin: a fraction ``defensive``
of the proposals come from a multivariate Student t (5 degrees of freedom)
with the flow draws' mean and twice their standard deviations, so that the
proposal density is ``(1 - a) q + a t`` (both truncated to the prior box and
normalized there by their acceptance rates).  The effective sample size of
the weights, ``ess``, says how much of the flow's answer survived;
``ess / n_proposals`` (the sampling efficiency) below
:data:`MIN_EFFICIENCY`, or an ESS below :data:`MIN_ESS`, flags the galaxy (``low_is_efficiency``).  The mean
weight estimates the evidence p(x), relative to the normalization of the
model's prior density (which the weights do not need).

The likelihood is the training noise model's (``SurveyNoise``): per
used band, a Gaussian in flux whose variance is the catalog's flux error
squared plus the error floor times the *model* flux (the floor is a
fraction of the true flux in the simulator), restricted to model fluxes
for which the band's magnitude error lies inside the range the flow was
trained on, and the prior restricted, as the training set was, to models
whose mean magnitude lies in the training magnitude range.  The
positivity cut of the simulator (a band with a negative noisy flux is
masked) is left out: it matters for bands at S/N below ~1, which the
catalog masks (``low_snr``).

SEDflow-layout flows (every band, the NSA noise model of Hahn & Melchior
2022) are handled with the likelihood of the photometry given its reported
errors (as the MCMC fallback's): their noise model's p(sigma | f), whose
spread is ~1e-4 mag in the NSA, is not part of the target, so that a galaxy
whose errors the NSA never reported (``out_of_support``) still gets its
exact posterior.  Photometric-redshift flows are not handled.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..models.base import ForwardModel
from ..units import POGSON, mag_sigma_to_flux_sigma, mag_to_nanomaggies, nanomaggies_to_mag
from .posterior import Posterior

__all__ = [
    "DEFAULT_DEFENSIVE",
    "DEFAULT_PROPOSALS",
    "MIN_EFFICIENCY",
    "MIN_ESS",
    "ImportanceResult",
    "ObservedPhotometry",
    "check_importance_flow",
    "importance_sample",
    "log_likelihood",
    "observed_photometry",
    "Weights",
    "defensive_proposal",
    "systematic_resample",
    "trusted",
    "weigh",
]

#: Proposals per galaxy by default.
DEFAULT_PROPOSALS = 10_000
#: Fraction of the proposals drawn from the defensive component (a widened t around the flow draws).
DEFAULT_DEFENSIVE = 0.1
#: Sampling efficiency (ESS / proposals) below which a galaxy is flagged ``low_is_efficiency``:
#: at 10^4 proposals, fewer than 100 effective samples.
MIN_EFFICIENCY = 0.01
#: Effective samples below which a galaxy is flagged ``low_is_efficiency`` whatever the proposals: on
#: held-out simulations resampled intervals cover too rarely below ~100 (68% intervals: 0.57 at ESS < 30,
#: 0.65 at 30-100, 0.675 at 100-300; docs/catalog.md).
MIN_ESS = 100.0


def trusted(efficiency, ess) -> np.ndarray:
    """Whether importance weights are trusted: efficiency >= :data:`MIN_EFFICIENCY` and ESS >= :data:`MIN_ESS`
    (NaN: not importance-sampled, False)."""
    efficiency, ess = np.nan_to_num(np.asarray(efficiency, float), nan=-1.0), np.nan_to_num(np.asarray(ess, float), nan=-1.0)
    return (efficiency >= MIN_EFFICIENCY) & (ess >= MIN_ESS)


class ObservedPhotometry(NamedTuple):
    """A galaxy block's photometry as the flow saw it, recovered from band-masked x.

    Attributes
    ----------
    flux : ndarray, shape (n, n_band)
        Nanomaggies (NaN where masked).
    flux_sigma : ndarray, shape (n, n_band)
        The catalog's 1-sigma flux errors without the error floor, nanomaggies (NaN where masked).
    used : ndarray of bool, shape (n, n_band)
    z : ndarray, shape (n,)
    """

    flux: np.ndarray
    flux_sigma: np.ndarray
    used: np.ndarray
    z: np.ndarray


class ImportanceResult(NamedTuple):
    """Importance-sampled posteriors of a block of galaxies.

    Attributes
    ----------
    samples : ndarray, shape (n, n_samples, d), float32
        Draws from the weighted proposals (systematic resampling); NaN rows
        for galaxies without a usable proposal.
    ess : ndarray, shape (n,)
        Effective sample size of the weights, ``(sum w)^2 / sum w^2``.
    efficiency : ndarray, shape (n,)
        ``ess / n_proposals``.
    log_evidence, log_evidence_err : ndarray, shape (n,)
        ln p(x) (x: the fluxes, in nanomaggies) and its 1-sigma error.
    flow_acceptance : ndarray, shape (n,)
        Fraction of the flow's draws inside the prior box (normalizes its density there).
    """

    samples: np.ndarray
    ess: np.ndarray
    efficiency: np.ndarray
    log_evidence: np.ndarray
    log_evidence_err: np.ndarray
    flow_acceptance: np.ndarray


def check_importance_flow(post: Posterior) -> None:
    """Refuse flows importance sampling does not handle (one line).

    Raises
    ------
    ConfigError
        A photometric-redshift flow (z is a parameter).
    """
    if post.redshift_input is not None:
        raise ConfigError(f"{post.path}: importance sampling of photometric-redshift flows is not implemented; "
                          "use a flow that takes z as an input")


def observed_photometry(x: np.ndarray, n_band: int, error_floor: float, band_masked: bool = True) -> ObservedPhotometry:
    """Fluxes, flux errors and z of flow inputs x (inverse of ``masked_photometry_x`` or ``photometry_x``).

    Parameters
    ----------
    x : ndarray, shape (n, 3 n_band + 1) or (n, 2 n_band + 1)
        Band-masked: ``mag_<b>``, ``log_sigma_<b>`` (mag, error floor included), ``used_<b>``, ``z``.
        SEDflow layout: ``mag_<b>``, ``sigma_<b>`` (mag, no floor), ``z``.
    n_band : int
    error_floor : float
        The floor (mag) that was added to the errors in x (band-masked x only).
    band_masked : bool
    """
    x = np.asarray(x, dtype=np.float64)
    if not band_masked:
        mag, sigma_mag = x[:, :n_band], x[:, n_band : 2 * n_band]
        flux = mag_to_nanomaggies(mag)
        return ObservedPhotometry(flux, mag_sigma_to_flux_sigma(flux, sigma_mag), np.isfinite(flux), x[:, -1])
    mag, log_sigma, used = x[:, :n_band], x[:, n_band : 2 * n_band], x[:, 2 * n_band : 3 * n_band] > 0.5
    flux = np.where(used, mag_to_nanomaggies(mag), np.nan)
    with np.errstate(invalid="ignore"):
        sigma_mag = np.sqrt(np.maximum((10.0**log_sigma) ** 2 - float(error_floor) ** 2, 0.0))
    return ObservedPhotometry(flux, np.where(used, mag_sigma_to_flux_sigma(flux, sigma_mag), np.nan), used, x[:, -1])


def log_likelihood(model_flux: np.ndarray, obs_flux: np.ndarray, obs_sigma: np.ndarray, error_floor: float,
                   sigma_range: tuple[float, float] | None = None,
                   mag_range: tuple[float, float] | None = None) -> np.ndarray:
    """ln L of one galaxy's photometry for many models (nats; fluxes in nanomaggies).

    Parameters
    ----------
    model_flux : ndarray, shape (m, n_band)
        Noiseless model fluxes, nanomaggies.
    obs_flux, obs_sigma : ndarray, shape (n_band,)
        Observed fluxes and errors without the floor; NaN bands are left out.
    error_floor : float
        Magnitudes: the floor's flux error is ``error_floor * model_flux / 1.0857``.
    sigma_range : (float, float), optional
        Magnitude errors the flow was trained on: a model whose flux would
        give a band's error (``1.0857 obs_sigma / model_flux`` with the floor
        in quadrature, as in x) outside it has zero likelihood.
    mag_range : (float, float), optional
        Mean model magnitude (all bands, as the training set's cut) the
        training set was cut to: zero prior mass outside (returned as ``-inf``
        here with the likelihood).

    Returns
    -------
    ndarray, shape (m,)
    """
    model_flux = np.asarray(model_flux, dtype=np.float64)
    use = np.isfinite(obs_flux) & np.isfinite(obs_sigma) & (obs_sigma > 0)
    f, s, m = obs_flux[use], obs_sigma[use], model_flux[:, use]
    var = s**2 + (error_floor * m / POGSON) ** 2
    out = -0.5 * np.sum((f - m) ** 2 / var + np.log(2 * np.pi * var), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if sigma_range is not None:
            # The error the flow sees: the catalog's, with the floor in quadrature (x's log_sigma).
            sigma_mag = np.sqrt((POGSON * s / m) ** 2 + error_floor**2)
            out[~np.all((sigma_mag >= sigma_range[0]) & (sigma_mag <= sigma_range[1]), axis=1)] = -np.inf
        if mag_range is not None:
            # The training cut is on the mean true magnitude of every band of the set, masked or not.
            mean_mag = np.mean(nanomaggies_to_mag(model_flux), axis=1)
            out[~((mean_mag >= mag_range[0]) & (mean_mag <= mag_range[1]))] = -np.inf
    out[~np.isfinite(out)] = -np.inf
    return out


def systematic_resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn in proportion to ``weights`` (systematic resampling: ``n`` evenly spaced points through
    the cumulative weights).

    Shuffled: the derived properties use a galaxy's leading samples, which must stay a fair subset.
    """
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    idx = np.searchsorted(cdf, (rng.random() + np.arange(n)) / n, side="right")
    return rng.permutation(np.minimum(idx, weights.size - 1))


class Weights(NamedTuple):
    """Self-normalized importance weights of one galaxy's proposals and what they say.

    Attributes
    ----------
    weights : ndarray, shape (m,)
        Summing to 1 (zeros where the target or the proposal density vanish).
    ess, efficiency : float
        ``(sum w)^2 / sum w^2`` and ``ess / m``.
    log_evidence, log_evidence_err : float
        ln of the mean unnormalized weight (the evidence) and its 1-sigma error.
    """

    weights: np.ndarray
    ess: float
    efficiency: float
    log_evidence: float
    log_evidence_err: float


def weigh(log_target: np.ndarray, log_proposal: np.ndarray) -> Weights:
    """Importance weights of proposals with unnormalized log target and normalized log proposal densities.

    Parameters
    ----------
    log_target : ndarray, shape (m,)
        ln p(theta) + ln L(x | theta), -inf where zero.
    log_proposal : ndarray, shape (m,)
        ln of the density the proposals were drawn from.

    Returns
    -------
    Weights
        All zero (ESS 0, evidence -inf) when no proposal has a finite weight.
    """
    with np.errstate(invalid="ignore"):
        log_w = np.asarray(log_target, dtype=float) - np.asarray(log_proposal, dtype=float)
    finite = np.isfinite(log_w)
    m = log_w.size
    if not finite.any():
        return Weights(np.zeros(m), 0.0, 0.0, -np.inf, np.nan)
    top = log_w[finite].max()
    w = np.where(finite, np.exp(np.where(finite, log_w, top) - top), 0.0)
    total = w.sum()
    ess = float(total**2 / np.sum(w**2))
    mean = total / m
    return Weights(w / total, ess, ess / m, float(top + np.log(mean)), float(np.std(w) / np.sqrt(m) / mean))


def defensive_proposal(theta: np.ndarray, low: np.ndarray, high: np.ndarray, scale: float = 2.0, df: float = 5.0):
    """The defensive component: a multivariate t around flow draws, ``scale`` times their spread, as a frozen scipy law.

    The spread is floored at 1% of the prior box per parameter, so that draws
    of one point still give a proper density.
    """
    from scipy import stats

    cov = np.cov(theta, rowvar=False) if theta.shape[0] > theta.shape[1] else np.zeros((theta.shape[1],) * 2)
    floor = (0.01 * (high - low)) ** 2
    cov = cov + np.diag(np.maximum(floor - np.diag(cov), 0.0)) + 1e-12 * np.eye(cov.shape[0])
    return stats.multivariate_t(loc=theta.mean(axis=0), shape=scale**2 * cov, df=df, allow_singular=True)


def _box_draws(law, n: int, low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``n`` draws of ``law`` inside the box (rejection) and its acceptance rate there."""
    kept, drawn, accepted = [], 0, 0
    while accepted < n and drawn < 1000 * n:
        batch = np.atleast_2d(law.rvs(size=max(2 * (n - accepted), 16), random_state=rng))
        inside = np.all((batch >= low) & (batch <= high), axis=1)
        kept.append(batch[inside])
        drawn += batch.shape[0]
        accepted += int(inside.sum())
    theta = np.concatenate(kept)[:n] if kept else np.empty((0, low.size))
    return theta, accepted / drawn if drawn else 0.0


def importance_sample(post: Posterior, model: ForwardModel, x: np.ndarray, *, n_samples: int, error_floor: float,
                      n_proposals: int = DEFAULT_PROPOSALS, defensive: float = DEFAULT_DEFENSIVE,
                      seed: int | None = None) -> ImportanceResult:
    """Exact-posterior samples of galaxies by importance sampling with the flow as proposal.

    Parameters
    ----------
    post : Posterior
        A flow that takes z as an input (:func:`check_importance_flow`).
    model : ForwardModel
        Its forward model (the likelihood's fluxes, the prior's density and draws).
    x : ndarray, shape (n, dx)
        Flow inputs of usable galaxies.
    n_samples : int
        Samples per galaxy returned (resampled from the weighted proposals).
    error_floor : float
        Magnitudes, the run's floor (in x, and in the likelihood).
    n_proposals : int
        Proposals per galaxy.
    defensive : float
        Fraction of the proposals drawn from the defensive t, in (0, 1).
    seed : int, optional

    Returns
    -------
    ImportanceResult
    """
    check_importance_flow(post)
    if not 0 < defensive < 1:
        raise ConfigError(f"the defensive fraction must lie in (0, 1), got {defensive}")
    if n_proposals < 10:
        raise ConfigError(f"importance sampling needs >= 10 proposals per galaxy, got {n_proposals}")
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    n, d = x.shape[0], len(post.param_names)
    # The survey noise's trained error and magnitude ranges restrict the target; SEDflow flows have none.
    noise = post.metadata.get("photometric_noise") if post.band_masked else None
    sigma_range = (float(noise["sigma_min"]), float(noise["sigma_max"])) if noise else None
    mag_range = tuple(noise["mag_range"]) if noise and noise.get("mag_range") else None
    obs = observed_photometry(x, len(post.bands.bands), error_floor, post.band_masked)
    rng = np.random.default_rng(seed)
    low, high = np.asarray(post.prior.low, dtype=float), np.asarray(post.prior.high, dtype=float)
    n_def = max(1, int(round(defensive * n_proposals)))
    n_flow = n_proposals - n_def
    result = ImportanceResult(samples=np.full((n, n_samples, d), np.nan, dtype=np.float32),
                              ess=np.zeros(n), efficiency=np.zeros(n), log_evidence=np.full(n, -np.inf),
                              log_evidence_err=np.full(n, np.nan), flow_acceptance=np.zeros(n))
    for g in range(n):
        drawn = post.draw(x[g : g + 1], n_flow, seed=int(rng.integers(2**31)))
        if drawn.n_accepted[0] < n_flow:
            continue  # the flow cannot sample it (sampling_timeout): nothing to correct
        # float32 draws on the box's edge round outside it in float64.
        flow_theta = np.clip(drawn.samples[0].astype(np.float64), low, high)
        acc_flow = float(drawn.acceptance[0])
        law = defensive_proposal(flow_theta, low, high)
        def_theta, acc_def = _box_draws(law, n_def, low, high, rng)
        theta = np.concatenate([flow_theta, def_theta])
        z = np.full(theta.shape[0], obs.z[g])
        log_q = post.log_prob(theta.astype(np.float32), x[g]) - np.log(acc_flow)
        log_t = law.logpdf(theta) - np.log(acc_def) if acc_def > 0 else np.full(theta.shape[0], -np.inf)
        # The mixture as drawn (the t may have fallen short of its share in a tight box).
        share = def_theta.shape[0] / theta.shape[0]
        with np.errstate(divide="ignore"):
            log_mix = np.logaddexp(np.log1p(-share) + log_q, np.log(share) + log_t)
        log_target = model.prior.log_prob(theta, z) + log_likelihood(
            model.photometry(theta, z), obs.flux[g], obs.flux_sigma[g], error_floor, sigma_range, mag_range)
        weights = weigh(log_target, log_mix)
        result.flow_acceptance[g] = acc_flow
        result.ess[g], result.efficiency[g] = weights.ess, weights.efficiency
        result.log_evidence[g], result.log_evidence_err[g] = weights.log_evidence, weights.log_evidence_err
        if weights.ess > 0:
            result.samples[g] = theta[systematic_resample(weights.weights, n_samples, rng)].astype(np.float32)
    return result
