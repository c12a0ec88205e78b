"""Physically motivated priors of the non-parametric (``dirichlet``) model, as configuration.

The flow's parameters stay those of :mod:`sedscale.models.dirichlet`
(log mass formed, six unit-cube SFH coordinates, log Z/Zsun, tau_BC,
tau_ISM, n_dust) and their support stays a box; what a prior changes is the
*density* of the training draws inside the box, so that every prior trains
the same network, the catalog code is unchanged, and priors compare on
equal terms.  A prior is a mapping of parameter blocks to distributions
(the presets ship in ``sedscale/data/priors.yaml``; a user YAML with the
same keys replaces them):

``sfh``
    ``dirichlet``: flat Dirichlet(1, ..., 1) mass fractions (Leja et al.
    2017; the unit cube is uniform).  ``continuity``: Student-t on the log
    SFR ratios of adjacent bins, ``log10(SFR_i / SFR_i+1) ~ t(nu, scale)``
    truncated to ``[-clip, clip]`` (Leja et al. 2019, nu = 2, scale = 0.3;
    Prospector's ``logsfr_ratios``).  The bins are tied to the age of the
    universe at each z, so this density on the unit cube depends on z.
``log_mass``, ``log_zsol``, ``tau_bc``, ``tau_ism``, ``n_dust``
    ``uniform`` (low, high), ``truncnormal`` (mean, sigma, low, high), or,
    for ``log_zsol``, ``mass_metallicity``: a normal in log Z/Zsun about
    the Gallazzi et al. (2005) median relation at the galaxy's mass, with
    the 16-84 percentile range at that mass times ``width`` as its sigma
    (Leja et al. 2019 use width 1, i.e. twice the observed scatter),
    truncated to (low, high).  The relation is in present-day stellar mass;
    the parameter is mass formed, so ``mass_offset`` (dex, default 0.2, the
    typical log(formed / living) of the relation's galaxies) is subtracted.

For the continuity SFH the density on the unit cube u follows from the
Dirichlet(1) map (constant density 6! on the simplex) and the additive
log-ratio Jacobian ``|d f / d r| = (ln 10)^6 prod_i f_i``:
``log p(u) = log p(r) - log 6! - 6 log ln 10 - sum_i log f_i``.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special, stats

from ..errors import ConfigError, ParameterError
from .priors import Marginal, Parameter, Prior, simplex_to_unit_cube, unit_cube_to_simplex

__all__ = [
    "GALLAZZI05",
    "PhysicalPrior",
    "load_prior_config",
    "mass_metallicity_relation",
    "prior_presets",
]

#: Gallazzi et al. (2005, Table 2) stellar mass-metallicity relation:
#: log M* (Msun), median, 16th and 84th percentile of log Z/Zsun.
GALLAZZI05 = np.array([
    [8.87, -0.60, -1.11, -0.00], [9.07, -0.61, -1.07, -0.00], [9.27, -0.65, -1.10, -0.05],
    [9.47, -0.61, -1.03, -0.01], [9.68, -0.52, -0.97, 0.05], [9.87, -0.41, -0.90, 0.09],
    [10.07, -0.23, -0.80, 0.14], [10.27, -0.11, -0.65, 0.17], [10.47, -0.01, -0.41, 0.20],
    [10.68, 0.04, -0.24, 0.22], [10.87, 0.07, -0.14, 0.24], [11.07, 0.10, -0.09, 0.25],
    [11.27, 0.12, -0.06, 0.26], [11.47, 0.13, -0.04, 0.28], [11.68, 0.14, -0.03, 0.29],
    [11.87, 0.15, -0.03, 0.30],
])
PRESETS_FILE = "priors.yaml"
#: Blocks of a prior configuration and the parameters each one sets.
SCALAR_BLOCKS = ("log_mass", "log_zsol", "tau_bc", "tau_ism", "n_dust")
_UNITS = {"log_mass": "dex(Msun)", "log_zsol": "dex", "tau_bc": "", "tau_ism": "", "n_dust": ""}
_LABELS = {
    "log_mass": r"$\log M_{\rm formed}$", "log_zsol": r"$\log Z/Z_\odot$", "tau_bc": r"$\tau_{\rm BC}$",
    "tau_ism": r"$\tau_{\rm ISM}$", "n_dust": r"$n_{\rm dust}$",
}


def mass_metallicity_relation(log_mstar) -> tuple[np.ndarray, np.ndarray]:
    """Gallazzi et al. (2005) median log Z/Zsun and 16-84 percentile range at ``log_mstar``.

    Parameters
    ----------
    log_mstar : array_like
        log10 present-day stellar mass (Msun); constant beyond the table.

    Returns
    -------
    median, width : ndarray
        In dex, shaped like ``log_mstar``.
    """
    m = np.asarray(log_mstar, dtype=float)
    t = GALLAZZI05
    return np.interp(m, t[:, 0], t[:, 1]), np.interp(m, t[:, 0], t[:, 3]) - np.interp(m, t[:, 0], t[:, 2])


@lru_cache(maxsize=1)
def prior_presets() -> dict[str, dict]:
    """The named prior configurations shipped in ``sedscale/data/priors.yaml``."""
    import yaml

    text = resources.files("sedscale").joinpath("data", PRESETS_FILE).read_text()
    return yaml.safe_load(text)


def load_prior_config(spec: str | os.PathLike | dict) -> dict:
    """A complete prior configuration from a preset name, a YAML/JSON file or a dict.

    Raises
    ------
    ConfigError
        Unknown preset, unreadable file, or an invalid configuration (one line).
    """
    if isinstance(spec, dict):
        config = spec
    else:
        text = str(spec)
        presets = prior_presets()
        if text in presets:
            config = dict(presets[text], name=text)
        elif text.lstrip().startswith("{"):
            config = json.loads(text)
        elif Path(text).is_file():
            import yaml

            config = yaml.safe_load(Path(text).read_text())
            if not isinstance(config, dict):
                raise ConfigError(f"{text}: a prior file must hold a mapping of blocks (sfh, log_zsol, ...)")
            config.setdefault("name", Path(text).stem)
        else:
            raise ConfigError(f"unknown prior {text!r}: give a preset ({', '.join(presets)}) or a YAML file")
    return _validated(config)


def _validated(config: dict) -> dict:
    missing = [k for k in ("sfh",) + SCALAR_BLOCKS if k not in config]
    if missing:
        raise ConfigError(f"prior {config.get('name', '?')!r} lacks block(s) {missing}")
    out: dict[str, Any] = {"name": str(config.get("name", "custom"))}
    sfh = config["sfh"] if isinstance(config["sfh"], dict) else {"kind": config["sfh"]}
    if sfh.get("kind") == "dirichlet":
        out["sfh"] = {"kind": "dirichlet"}
    elif sfh.get("kind") == "continuity":
        out["sfh"] = {"kind": "continuity", "nu": float(sfh.get("nu", 2.0)), "scale": float(sfh.get("scale", 0.3)),
                      "clip": float(sfh.get("clip", 5.0))}
        if not (out["sfh"]["nu"] > 0 and out["sfh"]["scale"] > 0 and out["sfh"]["clip"] > 0):
            raise ConfigError(f"continuity SFH prior needs nu, scale, clip > 0, got {sfh}")
    else:
        raise ConfigError(f"sfh prior kind must be 'dirichlet' or 'continuity', got {sfh.get('kind')!r}")
    for name in SCALAR_BLOCKS:
        block = dict(config[name])
        kind = block.get("kind")
        try:
            low, high = float(block["low"]), float(block["high"])
            if kind == "uniform":
                entry = {"kind": kind, "low": low, "high": high}
            elif kind == "truncnormal":
                entry = {"kind": kind, "mean": float(block["mean"]), "sigma": float(block["sigma"]),
                         "low": low, "high": high}
                if entry["sigma"] <= 0:
                    raise ConfigError(f"prior block {name}: sigma must be > 0")
            elif kind == "mass_metallicity" and name == "log_zsol":
                entry = {"kind": kind, "relation": str(block.get("relation", "gallazzi05")),
                         "width": float(block.get("width", 1.0)), "mass_offset": float(block.get("mass_offset", 0.2)),
                         "low": low, "high": high}
                if entry["relation"] != "gallazzi05" or entry["width"] <= 0:
                    raise ConfigError(f"prior block {name}: relation must be 'gallazzi05' and width > 0")
            else:
                raise ConfigError(f"prior block {name}: unknown kind {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"prior block {name}: malformed ({exc!r})") from None
        if not low < high:
            raise ConfigError(f"prior block {name}: need low < high, got [{low}, {high}]")
        out[name] = entry
    if out["log_zsol"]["kind"] == "mass_metallicity" and out["log_mass"]["kind"] != "uniform":
        raise ConfigError("the mass_metallicity prior needs a uniform log_mass prior")
    return out


class PhysicalPrior(Prior):
    """A configured prior of the dirichlet model: a box support with a non-uniform density.

    Parameters
    ----------
    config : dict
        As returned by :func:`load_prior_config`.
    bin_edges : callable
        ``bin_edges(z) -> (n, 8)`` lookback-time bin edges in yr (needed by
        the continuity SFH prior, whose density depends on z).
    n_bins : int
        Number of SFH bins (7).
    """

    def __init__(self, config: dict, bin_edges, n_bins: int = 7):
        self.config = _validated(config)
        self._bin_edges = bin_edges
        self.n_bins = n_bins
        c = self.config
        params = [Parameter("log_mass", c["log_mass"]["low"], c["log_mass"]["high"], _UNITS["log_mass"],
                            _LABELS["log_mass"])]
        params += [Parameter(f"frac_u{i}", 0.0, 1.0, "", rf"$u_{i}$") for i in range(1, n_bins)]
        params += [Parameter(k, c[k]["low"], c[k]["high"], _UNITS[k], _LABELS[k]) for k in SCALAR_BLOCKS[1:]]
        super().__init__(params)

    @property
    def is_uniform(self) -> bool:
        """True when the density is constant on the box (the flat preset)."""
        c = self.config
        return c["sfh"]["kind"] == "dirichlet" and all(c[k]["kind"] == "uniform" for k in SCALAR_BLOCKS)

    @property
    def needs_z(self) -> bool:
        return self.config["sfh"]["kind"] == "continuity"

    def _z(self, z, n: int) -> np.ndarray | None:
        if z is None:
            if self.needs_z:
                raise ParameterError(f"the {self.config['name']!r} prior (continuity SFH) depends on z: pass z")
            return None
        z = np.asarray(z, dtype=float)
        return np.full(n, float(z)) if z.ndim == 0 else z

    def marginals(self) -> tuple[Marginal | None, ...]:
        """Per parameter, its prior if its CDF has a closed form, else None.

        None for the SFH coordinates of a continuity SFH (their density depends
        on z and on each other); flat-Dirichlet SFH coordinates are uniform; a
        mass-metallicity ``log_zsol`` is a ``conditional_truncnormal`` given
        ``log_mass`` (the Gallazzi table shifted by ``mass_offset``, its
        16-84 range times ``width`` as sigma), so that its prior CDF is exact.
        """
        c = self.config

        def block(name: str) -> Marginal | None:
            b = c[name]
            if b["kind"] == "uniform":
                return Marginal("uniform")
            if b["kind"] == "truncnormal":
                return Marginal("truncnormal", b["mean"], b["sigma"])
            # mass_metallicity: mean and sigma of _normal() at the table's masses
            t = GALLAZZI05

            def floats(a) -> tuple[float, ...]:
                return tuple(float(v) for v in a)

            nodes = (floats(t[:, 0] + b["mass_offset"]), floats(t[:, 1]), floats(b["width"] * (t[:, 3] - t[:, 2])))
            return Marginal("conditional_truncnormal", given=self.names.index("log_mass"), nodes=nodes)

        sfh = Marginal("uniform") if c["sfh"]["kind"] == "dirichlet" else None
        return (block("log_mass"),) + (sfh,) * (self.n_bins - 1) + tuple(block(k) for k in SCALAR_BLOCKS[1:])

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, rng: np.random.Generator, z=None) -> np.ndarray:
        """Draw ``n`` samples (float64, (n, dim)); ``z`` (n,) is required by a continuity SFH."""
        z = self._z(z, n)
        theta = np.empty((n, self.dim))
        names = self.names
        theta[:, 0] = self._scalar_sample("log_mass", n, rng, None)
        theta[:, 1 : self.n_bins] = self._sfh_sample(n, rng, z)
        for k in SCALAR_BLOCKS[1:]:
            theta[:, names.index(k)] = self._scalar_sample(k, n, rng, theta[:, 0])
        return theta

    def _scalar_sample(self, name: str, n: int, rng, log_mass) -> np.ndarray:
        b = self.config[name]
        if b["kind"] == "uniform":
            return b["low"] + (b["high"] - b["low"]) * rng.random(n)
        loc, scale = self._normal(name, log_mass)
        lo, hi = stats.norm.cdf((b["low"] - loc) / scale), stats.norm.cdf((b["high"] - loc) / scale)
        q = lo + (hi - lo) * rng.random(n)
        return np.clip(loc + scale * stats.norm.ppf(q), b["low"], b["high"])

    def _normal(self, name: str, log_mass):
        b = self.config[name]
        if b["kind"] == "truncnormal":
            return b["mean"], b["sigma"]
        median, width = mass_metallicity_relation(log_mass - b["mass_offset"])
        return median, b["width"] * width

    def _sfh_sample(self, n: int, rng, z) -> np.ndarray:
        k = self.n_bins - 1
        if self.config["sfh"]["kind"] == "dirichlet":
            return rng.random((n, k))
        s = self.config["sfh"]
        t = stats.t(s["nu"], scale=s["scale"])
        lo, hi = t.cdf(-s["clip"]), t.cdf(s["clip"])
        ratios = t.ppf(lo + (hi - lo) * rng.random((n, k)))
        frac = self.fractions_from_ratios(ratios, z)
        return np.clip(simplex_to_unit_cube(frac), 0.0, 1.0)

    def fractions_from_ratios(self, log_sfr_ratios, z) -> np.ndarray:
        """Mass fractions (n, n_bins) of log SFR ratios (n, n_bins - 1) at redshifts ``z``."""
        width = np.diff(self._bin_edges(z), axis=1)
        log_sfr = np.concatenate([np.zeros((width.shape[0], 1)), -np.cumsum(log_sfr_ratios, axis=1)], axis=1)
        log_mass = log_sfr * math.log(10.0) + np.log(width)
        return special.softmax(log_mass, axis=1)

    def log_sfr_ratios(self, frac_u, z) -> np.ndarray:
        """log10(SFR_i / SFR_i+1), (n, n_bins - 1), of unit-cube SFH coordinates at ``z``."""
        frac = unit_cube_to_simplex(frac_u)
        width = np.diff(self._bin_edges(z), axis=1)
        with np.errstate(divide="ignore"):
            log_sfr = np.log10(frac) - np.log10(width)
        return log_sfr[:, :-1] - log_sfr[:, 1:]

    # ------------------------------------------------------------------ density
    def log_prob(self, theta, z=None) -> np.ndarray:
        """Log density in the sampling space, (n,); -inf outside the support.

        ``z`` (n,) is required by a continuity SFH.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        n = theta.shape[0]
        z = self._z(z, n)
        inside = self.in_support(theta)
        safe = np.where(inside[:, None], theta, 0.5 * (self.low + self.high))
        lp = np.zeros(n)
        names = self.names
        for k in SCALAR_BLOCKS:
            lp += self._scalar_log_prob(k, safe[:, names.index(k)], safe[:, 0])
        lp += self._sfh_log_prob(safe[:, 1 : self.n_bins], z)
        return np.where(inside, lp, -np.inf)

    def _scalar_log_prob(self, name: str, x, log_mass) -> np.ndarray:
        b = self.config[name]
        if b["kind"] == "uniform":
            return np.full(x.shape, -math.log(b["high"] - b["low"]))
        loc, scale = self._normal(name, log_mass)
        norm = stats.norm.cdf((b["high"] - loc) / scale) - stats.norm.cdf((b["low"] - loc) / scale)
        return stats.norm.logpdf(x, loc, scale) - np.log(norm)

    def _sfh_log_prob(self, frac_u, z) -> np.ndarray:
        if self.config["sfh"]["kind"] == "dirichlet":
            return np.zeros(frac_u.shape[0])
        s = self.config["sfh"]
        k = self.n_bins - 1
        t = stats.t(s["nu"], scale=s["scale"])
        frac = unit_cube_to_simplex(frac_u)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = self.log_sfr_ratios(frac_u, z)
            ok = np.all(np.isfinite(ratios) & (np.abs(ratios) <= s["clip"]), axis=1)
            r = np.where(ok[:, None], ratios, 0.0)
            lp = t.logpdf(r).sum(axis=1) - k * math.log(t.cdf(s["clip"]) - t.cdf(-s["clip"]))
            lp += -math.lgamma(self.n_bins) - k * math.log(math.log(10.0)) - np.log(np.where(ok[:, None], frac, 1.0)).sum(axis=1)
        return np.where(ok, lp, -np.inf)

    def torch_distribution(self, device: str = "cpu"):
        """``BoxUniform`` for the flat preset; other densities have no torch form (NPE needs only draws)."""
        if not self.is_uniform:
            raise ParameterError(
                f"the {self.config['name']!r} prior is not box-uniform; draw it with .sample(n, rng, z)"
            )
        return super().torch_distribution(device)

    def to_dict(self) -> dict:
        """The box (as :meth:`Prior.to_dict`) plus ``density``: the configuration."""
        out = super().to_dict()
        if not self.is_uniform:
            out["type"] = "PhysicalPrior"
            out["density"] = self.config
        return out
