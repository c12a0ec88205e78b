"""The redshift prior of a photometric-redshift catalog, applied to the flow's samples.

A photometric-redshift flow learns the posterior under its training
redshift distribution (``survey``: half uniform, half log-uniform in z, so
that nearby galaxies are well sampled).  That distribution is a choice for
training, not a description of a survey: on the SDSS MGS its log-uniform half
pulled the photo-z low by 0.048 in (1+z) (docs/photoz.md).  The catalog
therefore re-weights each galaxy's samples from the training prior to the
run's redshift prior, ``w = p_run(z) / p_train(z)``, and resamples them
(systematic resampling, seeded), reporting the effective sample size of the
weights.  Named priors (:data:`Z_PRIORS`):

``uniform``
    flat in z over the training range (the default: measured best on the MGS);
``training``
    the flow's own training distribution (no re-weighting).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .importance import systematic_resample, weigh

__all__ = ["DEFAULT_Z_PRIOR", "Z_PRIORS", "reweight_redshift_prior"]

Z_PRIORS = ("uniform", "training")
DEFAULT_Z_PRIOR = "uniform"


def check_z_prior(name: str) -> str:
    """``name`` if it is one of :data:`Z_PRIORS`, else a one-line ConfigError."""
    if name not in Z_PRIORS:
        raise ConfigError(f"unknown redshift prior {name!r}; choose one of {', '.join(Z_PRIORS)}")
    return name


def reweight_redshift_prior(theta: np.ndarray, training, name: str, rng: np.random.Generator):
    """Resample each galaxy's samples from the training redshift prior to the prior ``name``.

    Parameters
    ----------
    theta : ndarray, shape (n, s, d)
        Samples whose last parameter is z (NaN rows: missing samples, kept as they are).
    training : redshift distribution
        The flow's training distribution (``log_prob(z)``; :mod:`sedscale.simulate.redshift`).
    name : str
        One of :data:`Z_PRIORS`.
    rng : numpy.random.Generator

    Returns
    -------
    theta : ndarray, shape (n, s, d)
        Resampled (``training``: the input itself).
    ess : ndarray, shape (n,)
        Effective sample size of the weights, ``(sum w)^2 / sum w^2`` (``s`` for
        ``training``; NaN for a galaxy without finite samples).
    """
    check_z_prior(name)
    n, s, _ = theta.shape
    finite = np.isfinite(theta).all(axis=2)
    if name == "training":
        return theta, np.where(finite.any(axis=1), finite.sum(axis=1), np.nan).astype(float)
    # uniform: w = 1 / p_train(z) inside the range.
    with np.errstate(invalid="ignore"):
        log_w = np.where(finite, -training.log_prob(np.where(finite, theta[:, :, -1], training.low)), -np.inf)
    out = theta.copy()
    ess = np.full(n, np.nan)
    for i in np.flatnonzero(finite.any(axis=1)):
        # Samples from the training prior are proposals for the run's prior: importance weights.
        weights = weigh(log_w[i], np.zeros(s))
        ess[i] = weights.ess
        out[i] = theta[i, systematic_resample(weights.weights, s, rng)]
    return out, ess
