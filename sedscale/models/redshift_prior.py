"""The joint prior of a model's parameters and the redshift, for photometric-redshift flows.

A flow that infers z from photometry samples ``(theta, z)``: z is its last
parameter.  Its prior is the training set's redshift distribution times the
model's prior given z (the continuity SFH bins and the age of the universe
depend on z), ``p(theta, z) = p(z) p(theta | z)``.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .priors import Marginal, Parameter, Prior

__all__ = ["REDSHIFT_PARAMETER", "RedshiftDistribution", "RedshiftParameterPrior"]

#: Name of the redshift among a photometric-redshift flow's parameters (always the last).
REDSHIFT_PARAMETER = "z"


class RedshiftDistribution(Protocol):
    """What the joint prior needs of a redshift distribution (:mod:`sedscale.simulate.redshift`)."""

    @property
    def low(self) -> float: ...

    @property
    def high(self) -> float: ...

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def log_prob(self, z) -> np.ndarray: ...

    def to_dict(self) -> dict: ...


class RedshiftParameterPrior(Prior):
    """``p(z) p(theta | z)`` on the parameters ``(*base.names, "z")``.

    Parameters
    ----------
    base : Prior
        The model's prior (its density may depend on z).
    redshift : RedshiftDistribution
        The redshift prior, with a closed-form density.
    """

    def __init__(self, base: Prior, redshift: RedshiftDistribution):
        super().__init__((*base.parameters, Parameter(REDSHIFT_PARAMETER, float(redshift.low), float(redshift.high),
                                                      "", "z")))
        self.base = base
        self.redshift = redshift

    #: The density is not box-uniform (the redshift prior is not).
    is_uniform = False

    def marginals(self) -> tuple[Marginal | None, ...]:
        """The base prior's marginals, then None for z (tabulated from the training rows when needed)."""
        return (*self.base.marginals(), None)

    def sample(self, n: int, rng: np.random.Generator, z=None) -> np.ndarray:
        """``n`` draws ``(theta, z)``: z from the redshift prior, then theta given z (``z`` is ignored)."""
        zz = self.redshift.sample(n, rng)
        return np.concatenate([self.base.sample(n, rng, zz), zz[:, None]], axis=1)

    def log_prob(self, theta, z=None) -> np.ndarray:
        """``log p(z) + log p(theta | z)`` with z the last column (the ``z`` argument is ignored)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        zz = theta[:, -1]
        lp = self.redshift.log_prob(zz)
        inside = np.isfinite(lp)
        out = np.full(theta.shape[0], -np.inf)
        if inside.any():
            out[inside] = lp[inside] + self.base.log_prob(theta[inside, :-1], zz[inside])
        return out

    def torch_distribution(self, device: str = "cpu"):
        """Not available: the redshift prior is not box-uniform (NPE needs only draws)."""
        from ..errors import ParameterError

        raise ParameterError("a prior with redshift as a parameter is not box-uniform; draw it with .sample(n, rng)")

    def to_dict(self) -> dict:
        """The box (as :meth:`Prior.to_dict`), the base prior's description and the redshift distribution."""
        return {**super().to_dict(), "type": "RedshiftParameterPrior", "base": self.base.to_dict(),
                "redshift": self.redshift.to_dict()}
