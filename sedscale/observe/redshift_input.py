"""What a photometric-redshift flow is told about each galaxy's redshift.

A flow with z among its parameters serves three cases with one network: no
redshift (photometric redshift), a redshift with a Gaussian uncertainty (a
photo-z from elsewhere, a grism z) and a spectroscopic redshift (the same with
the smallest uncertainty).  Its observation vector ends, instead of the true
z of a spec-z flow, in three numbers (:data:`REDSHIFT_X_COLUMNS`):

* ``z_obs``: the given redshift (0 when none is given);
* ``log_z_err``: log10 of its 1-sigma uncertainty (0, i.e. sigma = 1, when none);
* ``z_known``: 1 when a redshift is given, else 0.

In training every simulated galaxy draws its case: with probability
``p_unknown`` nothing is given; otherwise sigma is log-uniform in
``[sigma_min, sigma_max]`` and ``z_obs = z + sigma * N(0, 1)``.  The flow thus
learns ``p(theta, z | photometry, z_obs, sigma)``, the posterior under a
Gaussian redshift likelihood: a given redshift uncertainty is marginalized
over, and the photometry still informs z where sigma is large.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from ..options import check_option_keys

__all__ = ["REDSHIFT_X_COLUMNS", "RedshiftInput", "redshift_input"]

#: The flow inputs that replace ``z`` in a photometric-redshift flow's x.
REDSHIFT_X_COLUMNS = ("z_obs", "log_z_err", "z_known")


@dataclass(frozen=True)
class RedshiftInput:
    """The redshift cases drawn in training, and the encoding of a catalog's redshifts.

    Attributes
    ----------
    p_unknown : float
        Fraction of training rows without a given redshift.
    sigma_min, sigma_max : float
        Range of the given redshifts' 1-sigma uncertainties (log-uniform);
        a catalog redshift without an uncertainty is given :attr:`exact_sigma`.
    """

    p_unknown: float = 0.5
    sigma_min: float = 1e-4
    sigma_max: float = 0.3

    def __post_init__(self):
        if not 0 <= self.p_unknown <= 1:
            raise ConfigError(f"p_unknown must be in [0, 1], got {self.p_unknown!r}")
        if not (np.isfinite(self.sigma_min) and np.isfinite(self.sigma_max) and 0 < self.sigma_min < self.sigma_max < 1):
            raise ConfigError(f"redshift uncertainties must satisfy 0 < sigma_min < sigma_max < 1, got "
                              f"[{self.sigma_min}, {self.sigma_max}]")

    @property
    def exact_sigma(self) -> float:
        """The uncertainty encoded for a redshift given without one (a spectroscopic z): twice
        ``sigma_min``, inside the trained range (its edge is barely ever drawn), and any uncertainty
        far below the photometric one acts alike."""
        return 2.0 * self.sigma_min

    def draw(self, z, rng: np.random.Generator) -> np.ndarray:
        """Training inputs (n, 3) for true redshifts ``z`` (n,): a case per row, then its noisy z."""
        z = np.asarray(z, dtype=np.float64)
        n = z.size
        known = rng.random(n) >= self.p_unknown
        sigma = np.exp(rng.uniform(np.log(self.sigma_min), np.log(self.sigma_max), n))
        z_obs = z + sigma * rng.standard_normal(n)
        return self._columns(np.where(known, z_obs, np.nan), sigma)

    def encode(self, z_obs, z_err) -> np.ndarray:
        """Flow inputs (n, 3) of given redshifts and uncertainties.

        Parameters
        ----------
        z_obs : array_like, shape (n,)
            Given redshift; NaN where none is given.
        z_err : array_like, shape (n,)
            Its 1-sigma uncertainty; NaN for a redshift given without one
            (a spectroscopic redshift).  Uncertainties are encoded within
            ``[exact_sigma, sigma_max]`` (the catalog flags those above
            ``sigma_max`` and those <= 0).
        """
        z_err = np.asarray(z_err, dtype=np.float64)
        sigma = np.clip(np.where(np.isfinite(z_err), z_err, self.exact_sigma), self.exact_sigma, self.sigma_max)
        return self._columns(np.asarray(z_obs, dtype=np.float64), sigma)

    @staticmethod
    def _columns(z_obs: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """The (n, 3) inputs: a NaN ``z_obs`` is the no-redshift case (0, 0, 0)."""
        known = np.isfinite(z_obs)
        return np.column_stack([np.where(known, z_obs, 0.0), np.where(known, np.log10(sigma), 0.0),
                                known.astype(np.float64)]).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)


def redshift_input(spec) -> RedshiftInput | None:
    """A :class:`RedshiftInput` from ``None`` (redshift given, not a parameter), ``"parameter"``
    (the defaults) or a dict of its options.

    Raises
    ------
    ConfigError
        Anything else.
    """
    if spec is None:
        return None
    if isinstance(spec, RedshiftInput):
        return spec
    if spec == "parameter":
        return RedshiftInput()
    if isinstance(spec, dict):
        check_option_keys(RedshiftInput, spec, "redshift-input")
        return RedshiftInput(**spec)
    raise ConfigError(f"redshift must be None, 'parameter' or a dict of RedshiftInput options; got {spec!r}")
