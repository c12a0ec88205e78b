"""PROVABGS SPS model (Hahn et al. 2022), the forward model of SEDflow.

12 physical parameters: log10 mass formed; SFH = four NMF basis
coefficients beta_1..4 (Dirichlet, sum to 1) plus a burst (f_burst,
t_burst); metallicity history = two NMF basis coefficients gamma_1,2; dust
tau_BC, tau_ISM, n_dust (Charlot & Fall with a Kriek & Conroy diffuse curve).

The sampling space has 11 dimensions (beta through a 3-d unit cube), as in
SEDflow.  The NMF bases (the PROVABGS repository's ``src/provabgs/dat``
tables, MIT licence) ship in ``sedscale/data/provabgs``; another folder can
be given with the ``nmf_dir`` argument or the ``SEDSCALE_PROVABGS_DIR``
environment variable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MissingDataError
from .base import ForwardModel, StarFormation
from .dust import birth_cloud_tau, kriek_conroy_tau
from .priors import Parameter, Prior, unit_cube_to_simplex
from .sfh import cumulative_table

NMF_FILES = (
    "NMF_2basis_SFH_components_nowgt_lin_Nc4.txt",
    "NMF_2basis_Z_components_nowgt_lin_Nc2.txt",
    "sfh_t_int.txt",
)
#: Metallicity limits of the MIST isochrones imposed on the ZH by PROVABGS.
Z_MIN, Z_MAX = 4.49043431e-05, 4.49043431e-02
#: PROVABGS stores the SFH bases in the order [2, 0, 1, 3].
_SFH_BASIS_ORDER = (2, 0, 1, 3)

PROVABGS_PRIOR = Prior(
    [
        Parameter("log_mass", 7.0, 12.5, "dex(Msun)", r"$\log M_{\rm formed}$"),
        Parameter("beta_u1", 0.0, 1.0, "", r"$u_1$"),
        Parameter("beta_u2", 0.0, 1.0, "", r"$u_2$"),
        Parameter("beta_u3", 0.0, 1.0, "", r"$u_3$"),
        Parameter("f_burst", 0.0, 1.0, "", r"$f_{\rm burst}$"),
        Parameter("t_burst", 0.01, 13.27, "Gyr", r"$t_{\rm burst}$"),
        Parameter("log_gamma1", float(np.log10(4.5e-5)), float(np.log10(1.5e-2)), "dex", r"$\log\gamma_1$"),
        Parameter("log_gamma2", float(np.log10(4.5e-5)), float(np.log10(1.5e-2)), "dex", r"$\log\gamma_2$"),
        Parameter("tau_bc", 0.0, 3.0, "", r"$\tau_{\rm BC}$"),
        Parameter("tau_ism", 0.0, 3.0, "", r"$\tau_{\rm ISM}$"),
        Parameter("n_dust", -2.0, 1.0, "", r"$n_{\rm dust}$"),
    ]
)


@dataclass(frozen=True)
class NMFBases:
    """PROVABGS NMF bases on lookback time (Gyr), ascending from ~0.07 Gyr.

    Attributes
    ----------
    t_gyr : ndarray, shape (50,)
    sfh : ndarray, shape (4, 50)
        SFH bases (arbitrary normalization; the SFH is normalized to 1 Msun).
    zh : ndarray, shape (2, 50)
        Metallicity-history bases (Z = sum gamma_i zh_i).
    """

    t_gyr: np.ndarray
    sfh: np.ndarray
    zh: np.ndarray

    def sfh_at(self, t_gyr: np.ndarray) -> np.ndarray:
        """SFH bases at lookback times (4, n); constant beyond the table."""
        return np.clip(np.stack([np.interp(t_gyr, self.t_gyr, b) for b in self.sfh]), 0.0, None)

    def zh_at(self, t_gyr: np.ndarray) -> np.ndarray:
        """ZH bases at lookback times (2, ...); constant beyond the table."""
        return np.clip(np.stack([np.interp(t_gyr, self.t_gyr, b) for b in self.zh]), 0.0, None)


#: The NMF tables shipped with sedscale (MIT licence, see the folder's LICENSE and README.md).
PACKAGED_NMF_DIR = Path(__file__).resolve().parents[1] / "data" / "provabgs"


def provabgs_data_dir(nmf_dir=None) -> Path:
    """Folder of the PROVABGS NMF tables: argument, then ``SEDSCALE_PROVABGS_DIR``, then the packaged copy."""
    path = Path(nmf_dir or os.environ.get("SEDSCALE_PROVABGS_DIR") or PACKAGED_NMF_DIR)
    hint = (
        "the provabgs model needs the PROVABGS NMF tables " + ", ".join(NMF_FILES) + " (from the PROVABGS "
        "repository, src/provabgs/dat); pass nmf_dir=... / --nmf-dir or set SEDSCALE_PROVABGS_DIR"
    )
    missing = [f for f in NMF_FILES if not (path / f).is_file()]
    if missing:
        raise MissingDataError(f"{hint}; missing in {path}: {', '.join(missing)}")
    return path


@lru_cache(maxsize=4)
def load_nmf_bases(nmf_dir=None) -> NMFBases:
    """Read the NMF bases; columns are reversed so time runs from lookback 0 upward."""
    path = provabgs_data_dir(nmf_dir)
    sfh = np.loadtxt(path / NMF_FILES[0])[:, ::-1]
    zh = np.loadtxt(path / NMF_FILES[1])[:, ::-1]
    t = np.loadtxt(path / NMF_FILES[2])[::-1]
    if sfh.shape != (4, t.size) or zh.shape != (2, t.size):
        raise MissingDataError(f"unexpected NMF table shapes {sfh.shape}, {zh.shape} for {t.size} times in {path}")
    return NMFBases(t_gyr=t, sfh=sfh[list(_SFH_BASIS_ORDER)], zh=zh)


class ProvabgsModel(ForwardModel):
    """The PROVABGS / SEDflow forward model on BC03 SSPs.

    Parameters
    ----------
    nmf_dir : str or Path, optional
        Folder of the PROVABGS NMF tables (else ``SEDSCALE_PROVABGS_DIR``,
        else the copy shipped in ``sedscale/data/provabgs``).
    **kwargs
        Passed to :class:`~sedscale.models.base.ForwardModel`.
    """

    name = "provabgs"

    def __init__(self, nmf_dir=None, **kwargs):
        super().__init__(**kwargs)
        self.nmf_dir = str(provabgs_data_dir(nmf_dir))
        self.bases = load_nmf_bases(self.nmf_dir)
        # Cumulative mass and first moment of each SFH basis on a fine
        # lookback grid (yr), integrated once.
        self._t_fine = np.linspace(0.0, 14e9, 28001)
        basis = self.bases.sfh_at(self._t_fine / 1e9)
        self._cum_mass = cumulative_table(self._t_fine, basis)
        self._cum_moment = cumulative_table(self._t_fine, basis * self._t_fine)
        self._tables: dict[bytes, tuple] = {}

    @property
    def prior(self) -> Prior:
        return PROVABGS_PRIOR

    def physical(self, theta):
        theta = np.atleast_2d(theta)
        beta = unit_cube_to_simplex(theta[:, 1:4])
        return {
            "log_mass": theta[:, 0],
            "beta": beta,
            "f_burst": theta[:, 4],
            "t_burst": theta[:, 5],
            "gamma": 10.0 ** theta[:, 6:8],
            "tau_bc": theta[:, 8],
            "tau_ism": theta[:, 9],
            "n_dust": theta[:, 10],
        }

    def metallicity(self, gamma: np.ndarray, t_gyr: np.ndarray) -> np.ndarray:
        """Z(t) = sum_i gamma_i ZH_i(t), clipped to the MIST range; t of shape (n, m)."""
        basis = self.bases.zh_at(t_gyr)  # (2, n, m)
        return np.clip(np.einsum("ni,inm->nm", gamma, basis), Z_MIN, Z_MAX)

    def _node_tables(self, node_ages: np.ndarray):
        """Cumulative basis mass/moment and ZH bases at the node ages (cached per grid)."""
        key = node_ages.tobytes()
        if key not in self._tables:
            self._tables[key] = (
                _interp_rows(node_ages, self._t_fine, self._cum_mass),
                _interp_rows(node_ages, self._t_fine, self._cum_moment),
                self.bases.zh_at(node_ages / 1e9),
            )
        return self._tables[key]

    def star_formation(self, phys, tage_yr, node_ages):
        # SFH(t) = sum_i beta_i basis_i(t) for t < t_univ(z), normalized to 1;
        # beyond t_univ the cumulative values stay at their t_univ value.
        cum_m_nodes, cum_k_nodes, zh_nodes = self._node_tables(node_ages)
        beyond = node_ages[None, :] >= tage_yr[:, None]
        beta = phys["beta"]

        def at_tage(table):
            return np.sum(beta * _interp_rows(tage_yr, self._t_fine, table).T, axis=1)[:, None]

        cum_m = np.where(beyond, at_tage(self._cum_mass), beta @ cum_m_nodes)
        cum_k = np.where(beyond, at_tage(self._cum_moment), beta @ cum_k_nodes)
        has_burst = phys["t_burst"] < tage_yr / 1e9
        f_burst = np.where(has_burst, phys["f_burst"], 0.0)
        scale = (1 - f_burst)[:, None] / cum_m[:, -1:]
        return StarFormation(
            mass_formed=10.0 ** phys["log_mass"],
            cum_mass=cum_m * scale,
            cum_moment=cum_k * scale,
            node_z=np.clip(phys["gamma"] @ zh_nodes, Z_MIN, Z_MAX),
            burst_fraction=f_burst,
            burst_age=phys["t_burst"] * 1e9,
            burst_z=self.metallicity(phys["gamma"], phys["t_burst"][:, None])[:, 0],
        )

    def optical_depths(self, phys, wave):
        return kriek_conroy_tau(wave, phys["tau_ism"], phys["n_dust"]), birth_cloud_tau(wave, phys["tau_bc"])

    def dust_summary(self, phys):
        return {"tau_bc": phys["tau_bc"], "tau_ism": phys["tau_ism"]}


def _interp_rows(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp of each row of ``fp`` (k, m) at points ``x`` (any shape) -> (k, *x.shape)."""
    return np.stack([np.interp(x, xp, f) for f in fp])
