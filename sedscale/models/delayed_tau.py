"""DIGS delayed-tau model (Khullar et al. 2022).

Five parameters: log10 total mass formed (log-uniform 1e8-1e13 Msun),
log Z/Zsun in [-2, 0.2], diffuse dust optical depth at 5500 A tau_V in
[0.1, 10] (Calzetti curve on all light), age of the population in [0, 4] Gyr
and e-folding time tau, log-uniform in [0.1, 1] Gyr, with
``SFR(s) ~ s/tau exp(-s/tau)`` for time ``s`` since the onset of star
formation.  Nebular continuum and lines (Cloudy, log U = -2) are on.

BC03 uses a Chabrier IMF where DIGS (FSPS) used Kroupa; the two differ by
< 0.05 dex in mass-to-light ratio.
"""
from __future__ import annotations

import numpy as np

from ..sps.rebin import log_wavelength_edges
from .base import ZSUN, ForwardModel, StarFormation
from .dust import calzetti_tau
from .priors import Parameter, Prior
from .sfh import delayed_tau_moments

#: Prospector's default gas ionization parameter.
DEFAULT_LOG_U = -2.0
#: Youngest population age considered (yr); younger populations are treated as this age.
MIN_AGE_YR = 1e5

DELAYED_TAU_PRIOR = Prior(
    [
        Parameter("log_mass", 8.0, 13.0, "dex(Msun)", r"$\log M_{\rm formed}$"),
        Parameter("log_zsol", -2.0, 0.2, "dex", r"$\log Z/Z_\odot$"),
        Parameter("tau_v", 0.1, 10.0, "", r"$\tau_V$"),
        Parameter("age", 0.0, 4.0, "Gyr", r"$t_{\rm age}$"),
        Parameter("log_tau", -1.0, 0.0, "dex(Gyr)", r"$\log\tau$"),
    ]
)


class DelayedTauModel(ForwardModel):
    """DIGS delayed-tau SFH, single metallicity, Calzetti dust, nebular emission."""

    name = "delayed_tau"
    # Emission lines falling on a filter edge need fine bins (R ~ 1900) for
    # photometry to stay within 0.005 mag of the full-resolution reference.
    photometry_wave_edges = log_wavelength_edges(1500.0, 12000.0, 4000)

    def __init__(self, nebular_log_u: float | None = DEFAULT_LOG_U, **kwargs):
        super().__init__(nebular_log_u=nebular_log_u, **kwargs)

    @property
    def prior(self) -> Prior:
        return DELAYED_TAU_PRIOR

    def physical(self, theta):
        theta = np.atleast_2d(theta)
        return {
            "log_mass": theta[:, 0],
            "log_zsol": theta[:, 1],
            "tau_v": theta[:, 2],
            "age": theta[:, 3],
            "tau": 10.0 ** theta[:, 4],
        }

    def star_formation(self, phys, tage_yr, node_ages):
        age = np.clip(np.minimum(phys["age"] * 1e9, tage_yr), MIN_AGE_YR, None)
        cum_m, cum_k = delayed_tau_moments(age, phys["tau"] * 1e9, node_ages)
        z = np.broadcast_to((ZSUN * 10.0 ** phys["log_zsol"])[:, None], cum_m.shape)
        return StarFormation(mass_formed=10.0 ** phys["log_mass"], cum_mass=cum_m, cum_moment=cum_k, node_z=z)

    def optical_depths(self, phys, wave):
        return calzetti_tau(wave, phys["tau_v"]), None

    def dust_summary(self, phys):
        return {"tau_v": phys["tau_v"]}
