"""Non-parametric Dirichlet SFH model (Leja et al. 2017, 2019; Prospector).

Piecewise-constant SFR in seven lookback-time bins: 0-30 Myr, 30-100 Myr,
100-330 Myr, 330 Myr-1.1 Gyr, 1.1-3.6 Gyr, 3.6 Gyr-0.85 t_univ(z) and
0.85-1 t_univ(z), parameterized by six unit-cube coordinates of the mass
fractions, one stellar metallicity log Z/Zsun, and the same two-component
dust as PROVABGS.  The prior is an option (:mod:`sedscale.models.physical_prior`):
``flat`` (Dirichlet(1, ..., 1) fractions, flat Z and dust; the default of
this class, as the first shipped flow), ``continuity`` or
``prospector_alpha``, or a YAML file.  Everything it needs ships with
sedscale and its dependencies: this is the embedded default model.
"""
from __future__ import annotations

import numpy as np

from .base import ZSUN, BinnedSFH, ForwardModel, StarFormation
from .dust import birth_cloud_tau, kriek_conroy_tau
from .physical_prior import PhysicalPrior, load_prior_config
from .priors import Prior, unit_cube_to_simplex
from .sfh import piecewise_constant_moments

#: Fixed inner bin edges (yr); the last two edges scale with the age of the universe.
FIXED_EDGES_YR = np.array([0.0, 3e7, 1e8, 3.3e8, 1.1e9, 3.6e9])
N_BINS = 7



def dirichlet_bin_edges(tage_yr: np.ndarray) -> np.ndarray:
    """Lookback-time bin edges (n, 8) in yr for galaxies of age ``tage_yr``."""
    tage_yr = np.asarray(tage_yr, dtype=float)[:, None]
    fixed = np.broadcast_to(FIXED_EDGES_YR, (tage_yr.shape[0], FIXED_EDGES_YR.size))
    return np.concatenate([fixed, 0.85 * tage_yr, tage_yr], axis=1)


class DirichletModel(ForwardModel):
    """Leja et al. non-parametric SFH with Charlot & Fall + Kriek & Conroy dust."""

    name = "dirichlet"
    #: 0.85 t_univ must stay above the fixed 3.6 Gyr edge.
    z_max = 0.98

    def __init__(self, prior: str = "flat", **kwargs):
        super().__init__(**kwargs)
        self._prior = PhysicalPrior(load_prior_config(prior), self.bin_edges, N_BINS)

    @property
    def prior(self) -> Prior:
        return self._prior

    def bin_edges(self, z) -> np.ndarray:
        """Lookback-time bin edges (n, 8) in yr at redshifts ``z`` (n,)."""
        return dirichlet_bin_edges(self.tage_yr(np.atleast_1d(np.asarray(z, dtype=float))))

    def physical(self, theta):
        theta = np.atleast_2d(theta)
        return {
            "log_mass": theta[:, 0],
            "sfh_fraction": unit_cube_to_simplex(theta[:, 1:N_BINS]),
            "log_zsol": theta[:, N_BINS],
            "tau_bc": theta[:, N_BINS + 1],
            "tau_ism": theta[:, N_BINS + 2],
            "n_dust": theta[:, N_BINS + 3],
        }

    def binned_sfh(self, phys, tage_yr):
        return BinnedSFH(
            edges=dirichlet_bin_edges(tage_yr),
            fraction=phys["sfh_fraction"],
            metallicity=ZSUN * 10.0 ** phys["log_zsol"],
            mass_formed=10.0 ** phys["log_mass"],
        )

    def star_formation(self, phys, tage_yr, node_ages):
        bins = self.binned_sfh(phys, tage_yr)
        cum_m, cum_k = piecewise_constant_moments(bins.edges, bins.fraction, node_ages)
        z = np.broadcast_to(bins.metallicity[:, None], cum_m.shape)
        return StarFormation(mass_formed=bins.mass_formed, cum_mass=cum_m, cum_moment=cum_k, node_z=z)

    def optical_depths(self, phys, wave):
        return kriek_conroy_tau(wave, phys["tau_ism"], phys["n_dust"]), birth_cloud_tau(wave, phys["tau_bc"])

    def dust_summary(self, phys):
        return {"tau_bc": phys["tau_bc"], "tau_ism": phys["tau_ism"]}
