"""How much a galaxy's data narrowed each quantity: posterior width against prior width.

Photometry does not constrain every parameter: for ugriz the SFR of the last
100 Myr, the mass-weighted age and the dust of most galaxies follow the prior
(``docs/catalog.md``).  Summaries alone do not show that -- a posterior
median is a number either way -- so every catalog row carries, per quantity,

    contraction = 1 - (w_posterior / w_prior)^2,

for the physical parameters other than mass (which every galaxy's
photometry measures; sampling coordinates such as an SFH simplex's are left
out) and the derived log sSFR(100 Myr) and mass-weighted age, with ``w`` the
16-84% width: 1 for a point-like posterior, ~0 when the
posterior is as wide as the prior (negative: wider, where the data pull the posterior
into a tail of the prior).
The prior width is taken at the galaxy's redshift (the SFH prior depends on
the age of the universe) and posterior-median mass (the metallicity prior
follows the mass-metallicity relation), from prior draws on a fixed grid,
drawn once per worker with fixed seeds so that catalogs stay reproducible.
``unconstrained`` lists the quantities whose posterior is wider than
:data:`UNCONSTRAINED_WIDTH` of the prior's (contraction < 0.36).
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import numpy as np

from .summaries import derived_quantities

__all__ = ["DERIVED_CONTRACTION", "UNCONSTRAINED_WIDTH", "PriorWidths", "contraction_columns", "log_ssfr",
           "quantity_values", "with_log_ssfr"]

#: Derived quantities whose contraction is reported besides the sampled parameters.
DERIVED_CONTRACTION = ("log_ssfr_100myr", "age_mw")
#: A quantity whose 16-84% posterior width exceeds this fraction of the prior's is ``unconstrained``.
UNCONSTRAINED_WIDTH = 0.8
#: Redshift grid of the prior widths (bins, log-spaced) and the mass bins (dex) within each.
Z_EDGES = np.geomspace(1e-3, 1.0, 31)
MASS_BIN_DEX = 0.5
#: Prior draws per redshift bin; a mass bin with fewer than MIN_PER_MASS_BIN uses all masses.
N_DRAWS = 20000
MIN_PER_MASS_BIN = 400
#: Floor of the specific SFR (1/yr): quenched models have SFR(100 Myr) = 0.
SSFR_FLOOR = 1e-14


def log_ssfr(sfr_100myr: np.ndarray, log_mstar: np.ndarray) -> np.ndarray:
    """log10 of SFR(100 Myr) / M* (1/yr), floored at :data:`SSFR_FLOOR`; NaN stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.log10(np.maximum(np.asarray(sfr_100myr) / 10.0 ** np.asarray(log_mstar), SSFR_FLOOR))


def with_log_ssfr(derived: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``derived`` (name -> samples) with ``log_ssfr_100myr`` added when the model gives SFR and M*."""
    if "sfr_100myr" in derived and "log_mstar" in derived:
        derived["log_ssfr_100myr"] = log_ssfr(derived["sfr_100myr"], derived["log_mstar"])
    return derived


def _width(values: np.ndarray) -> np.ndarray:
    """16-84% width of each column of prior draws (n, k), NaN draws ignored (numpy's nanpercentile is slow)."""
    out = np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        column = values[:, j]
        column = column[np.isfinite(column)]
        if column.size:
            lo, hi = np.percentile(column, [16.0, 84.0])
            out[j] = hi - lo
    return out


class PriorWidths:
    """16-84% widths of the prior of a forward model's quantities, by redshift and mass bin.

    Parameters
    ----------
    model : ForwardModel
        With its prior (``model.prior.sample(n, rng, z)``) and ``derived``.
    names : sequence of str
        Quantities: the model's parameters and any of :data:`DERIVED_CONTRACTION`.

    Widths are computed lazily, one redshift bin at a time (N_DRAWS draws at
    the bin's geometric centre, seed = bin index), and kept.
    """

    def __init__(self, model, names: Sequence[str]):
        self.model = model
        self.names = tuple(names)
        self.mass_index = list(model.param_names).index("log_mass") if "log_mass" in model.param_names else None
        low, high = (model.prior.low[self.mass_index], model.prior.high[self.mass_index]) if self.mass_index is not None \
            else (0.0, 1.0)
        self.mass_edges = np.arange(low, high + MASS_BIN_DEX / 2, MASS_BIN_DEX)
        self._bins: dict[int, np.ndarray] = {}

    def _bin(self, k: int) -> np.ndarray:
        """(n_mass_bins + 1, n_names) widths of redshift bin k; the last row is over all masses."""
        if k not in self._bins:
            zc = float(np.sqrt(Z_EDGES[k] * Z_EDGES[k + 1]))
            zc = min(zc, float(getattr(self.model, "z_max", zc)))
            z = np.full(N_DRAWS, zc)
            theta = self.model.prior.sample(N_DRAWS, np.random.default_rng([7, k]), z)
            values = quantity_values(self.model, theta[None], z[:1], self.names)[0]  # (N, n_names)
            overall = _width(values)
            n_mass = max(1, self.mass_edges.size - 1)
            out = np.tile(overall, (n_mass + 1, 1))
            if self.mass_index is not None:
                which = np.clip(np.digitize(theta[:, self.mass_index], self.mass_edges) - 1, 0, n_mass - 1)
                for m in range(n_mass):
                    sel = which == m
                    if sel.sum() >= MIN_PER_MASS_BIN:
                        out[m] = _width(values[sel])
            self._bins[k] = out
        return self._bins[k]

    def at(self, z: np.ndarray, log_mass: np.ndarray | None) -> np.ndarray:
        """Prior widths (n, n_names) at redshifts ``z`` (n,) and masses ``log_mass`` (n,) (NaN: any mass)."""
        z = np.asarray(z, dtype=float)
        k = np.clip(np.digitize(z, Z_EDGES) - 1, 0, Z_EDGES.size - 2)
        out = np.empty((z.size, len(self.names)))
        n_mass = max(1, self.mass_edges.size - 1)
        m = np.full(z.size, n_mass)  # all masses
        if log_mass is not None and self.mass_index is not None:
            log_mass = np.asarray(log_mass, dtype=float)
            known = np.isfinite(log_mass)
            m[known] = np.clip(np.digitize(log_mass[known], self.mass_edges) - 1, 0, n_mass - 1)
        for kk in np.unique(k):
            rows = k == kk
            out[rows] = self._bin(int(kk))[m[rows]]
        return out


def quantity_values(model, theta: np.ndarray, z: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Samples of ``names`` (parameters or :data:`DERIVED_CONTRACTION`): (n, s, len(names)).

    ``theta`` (n, s, d) inside the prior box (NaN rows allowed); ``z`` (n,).
    """
    n, s, _ = theta.shape
    params = list(model.param_names)
    derived = with_log_ssfr(derived_quantities(model, theta, z)) if any(q not in params for q in names) else {}
    cols = [theta[:, :, params.index(name)] if name in params else derived.get(name, np.full((n, s), np.nan))
            for name in names]
    return np.stack(cols, axis=-1)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def contraction_columns(model, posterior_width: Mapping[str, np.ndarray], z: np.ndarray,
                        log_mass: np.ndarray | None) -> dict[str, np.ndarray]:
    """``<name>_contraction`` per galaxy and the ``unconstrained`` list.

    Parameters
    ----------
    model : ForwardModel
        The checkpoint's model (its prior gives the prior widths; cached per model object).
    posterior_width : mapping
        name -> (n,) 16-84% posterior width of each quantity (parameters and
        any of :data:`DERIVED_CONTRACTION`), NaN for galaxies without samples.
    z : ndarray, shape (n,)
    log_mass : ndarray, shape (n,), optional
        Posterior-median log mass: picks the mass bin of the prior.

    Returns
    -------
    dict
        ``<name>_contraction`` -> (n,) float64 (NaN without samples);
        ``unconstrained`` -> (n,) object, comma-separated names.
    """
    names = tuple(posterior_width)
    widths = _CACHE.get(model)
    if widths is None or widths.names != names:
        widths = PriorWidths(model, names)
        _CACHE[model] = widths
    prior = widths.at(z, log_mass)
    out: dict[str, np.ndarray] = {}
    loose = np.zeros((len(z), len(names)), dtype=bool)
    for j, name in enumerate(names):
        with np.errstate(invalid="ignore", divide="ignore"):
            c = 1.0 - (np.asarray(posterior_width[name], dtype=float) / prior[:, j]) ** 2
        out[f"{name}_contraction"] = c
        loose[:, j] = c < 1.0 - UNCONSTRAINED_WIDTH**2
    out["unconstrained"] = np.array([",".join(n for n, flag in zip(names, row) if flag) for row in loose], dtype=object)
    return out
