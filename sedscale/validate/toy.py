"""A linear-Gaussian toy problem whose posterior is known exactly.

``theta ~ N(0, I_d)`` and ``x = A theta + N(0, sigma^2 I_m)`` give the
Gaussian posterior ``N(mu(x), Sigma)`` with

    Sigma = (I + A^T A / sigma^2)^-1,   mu(x) = Sigma A^T x / sigma^2.

:class:`ToyPosterior` samples and evaluates that posterior, optionally
distorted (widths scaled, means shifted), through the same ``sample`` /
``log_prob`` interface as the trained flows, so the calibration code can be
checked on a case where the right answer is known: SBC and coverage must
pass for the exact posterior and fail for an over-confident one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError


@dataclass(frozen=True)
class LinearGaussianToy:
    """The toy simulator.

    Attributes
    ----------
    design : ndarray, shape (m, d)
        The linear map ``A``.
    noise_sigma : float
        Standard deviation of the Gaussian noise on ``x``.
    """

    design: np.ndarray
    noise_sigma: float = 0.5

    def __post_init__(self):
        a = np.atleast_2d(np.asarray(self.design, dtype=float))
        if not np.all(np.isfinite(a)) or not self.noise_sigma > 0:
            raise ParameterError("design must be finite and noise_sigma > 0")
        object.__setattr__(self, "design", a)

    @property
    def dim(self) -> int:
        return self.design.shape[1]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"theta{j}" for j in range(self.dim))

    def simulate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (theta (n, d), x (n, m)) pairs from the joint."""
        theta = rng.standard_normal((n, self.dim))
        x = theta @ self.design.T + self.noise_sigma * rng.standard_normal((n, self.design.shape[0]))
        return theta, x

    def posterior_cov(self) -> np.ndarray:
        """Exact posterior covariance ``Sigma`` (d, d); the same for every x."""
        a = self.design
        return np.linalg.inv(np.eye(self.dim) + a.T @ a / self.noise_sigma**2)

    def posterior_mean(self, x) -> np.ndarray:
        """Exact posterior means (n, d) of observations ``x`` (n, m)."""
        x = np.atleast_2d(np.asarray(x, dtype=float))
        return x @ (self.posterior_cov() @ self.design.T / self.noise_sigma**2).T


class ToyPosterior:
    """Sampling / density interface to the (optionally distorted) exact posterior.

    Parameters
    ----------
    toy : LinearGaussianToy
    width_scale : float
        Multiplies the posterior standard deviations (``< 1``: over-confident).
    shift : float
        Added to every posterior mean, in units of the exact posterior
        standard deviation of each parameter (a biased posterior).
    seed : int
        Seed of the sampling generator.
    """

    def __init__(self, toy: LinearGaussianToy, width_scale: float = 1.0, shift: float = 0.0, seed: int = 0):
        if not width_scale > 0:
            raise ParameterError(f"width_scale must be > 0, got {width_scale}")
        self.toy = toy
        self.width_scale = float(width_scale)
        self.shift = float(shift)
        self._rng = np.random.default_rng(seed)
        cov = toy.posterior_cov()
        self._sd = np.sqrt(np.diag(cov))
        self._chol = np.linalg.cholesky(cov) * self.width_scale
        self._cov = cov * self.width_scale**2

    def mean(self, x) -> np.ndarray:
        """Means (n, d) of the distorted posterior."""
        return self.toy.posterior_mean(x) + self.shift * self._sd

    def sample(self, x, n_samples: int) -> np.ndarray:
        """Posterior samples, shape (n_obs, n_samples, d)."""
        mu = self.mean(x)
        eps = self._rng.standard_normal((mu.shape[0], n_samples, self.toy.dim))
        return mu[:, None, :] + eps @ self._chol.T

    def log_prob(self, theta, x) -> np.ndarray:
        """Log density of ``theta`` (n_obs, L, d) or (n_obs, d) under the posterior of each ``x``."""
        theta = np.asarray(theta, dtype=float)
        mu = self.mean(x)
        single = theta.ndim == 2
        if single:
            theta = theta[:, None, :]
        r = theta - mu[:, None, :]
        prec = np.linalg.inv(self._cov)
        _, logdet = np.linalg.slogdet(self._cov)
        out = -0.5 * (np.einsum("nld,de,nle->nl", r, prec, r) + logdet + self.toy.dim * np.log(2 * np.pi))
        return out[:, 0] if single else out
