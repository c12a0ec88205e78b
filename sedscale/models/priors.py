"""Priors over forward-model parameters, usable by ``sbi``.

Every model is parameterized in a *sampling space* in which its prior is a
box-uniform distribution (``sbi.utils.BoxUniform``).  The flow is trained in
that space.  Dirichlet-distributed fractions (PROVABGS SFH coefficients
beta, Leja et al. mass fractions) enter through the exact stick-breaking
unit-cube transform of Betancourt (2013): for Dirichlet(1, ..., 1) with K
components and u_k ~ U(0, 1), k = 1..K-1,

    v_k  = 1 - u_k ** (1 / (K - k))          (v_k ~ Beta(1, K - k))
    x_k  = v_k * prod_{j<k} (1 - v_j),  x_K = prod_{j<K} (1 - v_j)

is exactly Dirichlet(1, ..., 1); :func:`simplex_to_unit_cube` inverts it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

from ..errors import ParameterError


def unit_cube_to_simplex(u: np.ndarray) -> np.ndarray:
    """Map (n, K-1) unit-cube coordinates to (n, K) Dirichlet(1,...,1) fractions."""
    u = np.asarray(u, dtype=float)
    k_minus_1 = u.shape[-1]
    exponents = 1.0 / (k_minus_1 - np.arange(k_minus_1))
    v = 1.0 - u**exponents
    remaining = np.cumprod(1.0 - v, axis=-1)
    before = np.concatenate([np.ones(u.shape[:-1] + (1,)), remaining[..., :-1]], axis=-1)
    return np.concatenate([v * before, remaining[..., -1:]], axis=-1)


def simplex_to_unit_cube(x: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`unit_cube_to_simplex`."""
    x = np.asarray(x, dtype=float)
    k_minus_1 = x.shape[-1] - 1
    remaining = 1.0 - np.cumsum(x[..., :-1], axis=-1)
    before = np.concatenate([np.ones(x.shape[:-1] + (1,)), remaining[..., :-1]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(before > 0, x[..., :-1] / before, 0.0)
    exponents = (k_minus_1 - np.arange(k_minus_1)).astype(float)
    return np.clip(1.0 - v, 0.0, 1.0) ** exponents


@dataclass(frozen=True)
class Marginal:
    """The prior of one parameter when its CDF can be written down.

    Attributes
    ----------
    kind : {"uniform", "truncnormal", "conditional_truncnormal", "tabulated"}
        Uniform on the parameter's box; a normal truncated to it; a normal
        truncated to it whose mean and sigma are piecewise-linear functions of
        another parameter (e.g. log Z about a mass-metallicity relation), i.e.
        the conditional prior p(theta_j | theta_given); or a piecewise-linear
        CDF tabulated from prior draws (:func:`tabulated_marginal`), for a
        parameter whose prior has no closed form.
    mean, sigma : float
        Of the normal before truncation (``truncnormal`` only), in the
        parameter's unit.
    given : int, optional
        ``conditional_truncnormal``: index of the parameter the normal is
        conditioned on; that parameter must not be conditional itself.
    nodes : tuple of tuples of float, optional
        ``conditional_truncnormal``: ``(x, mean, sigma)``, the conditioning
        parameter's values (strictly increasing) and the normal's mean and
        sigma there; interpolated linearly, constant beyond the ends.
        ``tabulated``: ``(x, cdf)``, both strictly increasing, x spanning the
        box; the CDF is linear between nodes.
    """

    kind: str
    mean: float = 0.0
    sigma: float = 1.0
    given: int | None = None
    nodes: tuple[tuple[float, ...], ...] | None = None


#: Standard-normal levels of the nodes of :func:`tabulated_marginal` (every 0.1 sigma to 4 sigma).
TABULATED_LEVELS = np.linspace(-4.0, 4.0, 81)


def tabulated_marginal(draws: np.ndarray, low: float, high: float) -> Marginal:
    """A ``tabulated`` :class:`Marginal`: the empirical CDF of prior draws of one parameter.

    Nodes sit at the draws' quantiles of :data:`TABULATED_LEVELS` (probit
    levels, so the tails are resolved as finely as the middle) and at the box
    edges.  The CDF at a node is the mid-rank one, (#draws < x + #draws <= x)
    / 2n, so a value that many draws share (a box edge; float32 rounding near
    it) maps to the middle of its probability, not to 0 or 1.  Nodes are
    strictly increasing in float32, the precision the flow evaluates them in.

    Parameters
    ----------
    draws : ndarray, shape (n,)
        Prior draws of the parameter, inside [low, high].
    low, high : float
        The parameter's box.

    Raises
    ------
    ValueError
        Fewer than 100 draws, or draws outside the box.
    """
    v = np.sort(np.asarray(draws, dtype=np.float32).astype(np.float64))
    if v.size < 100 or v[0] < np.float32(low) or v[-1] > np.float32(high):
        raise ValueError(f"a tabulated prior CDF needs >= 100 draws inside [{low}, {high}], got {v.size} "
                         f"in [{v[0] if v.size else np.nan}, {v[-1] if v.size else np.nan}]")
    x = np.unique(np.concatenate([[low, high], np.quantile(v, ndtr(TABULATED_LEVELS))]).astype(np.float32))
    x = x[(x >= np.float32(low)) & (x <= np.float32(high))].astype(np.float64)
    cdf = (np.searchsorted(v, x, side="left") + np.searchsorted(v, x, side="right")) / (2.0 * v.size)
    keep = np.concatenate([[True], np.diff(cdf) > 0])
    # A node whose CDF does not rise (no draw between it and the previous one) adds nothing.
    x, cdf = x[keep], cdf[keep]
    return Marginal("tabulated", nodes=(tuple(float(a) for a in x), tuple(float(a) for a in cdf)))


def marginals_to_list(marginals) -> list[dict | None]:
    """JSON form of a sequence of :class:`Marginal` or None (a checkpoint's ``theta_marginals``)."""
    out: list[dict | None] = []
    for m in marginals:
        if m is None:
            out.append(None)
        elif m.kind == "conditional_truncnormal":
            out.append({"kind": m.kind, "given": m.given, "nodes": [list(a) for a in m.nodes]})
        elif m.kind == "tabulated":
            out.append({"kind": m.kind, "nodes": [list(a) for a in m.nodes]})
        else:
            out.append({"kind": m.kind, "mean": m.mean, "sigma": m.sigma})
    return out


def marginals_from_list(items) -> tuple[Marginal | None, ...]:
    """Inverse of :func:`marginals_to_list`."""
    out: list[Marginal | None] = []
    for d in items:
        if d is None:
            out.append(None)
        elif d["kind"] in ("conditional_truncnormal", "tabulated"):
            nodes = tuple(tuple(float(v) for v in a) for a in d["nodes"])
            out.append(Marginal(d["kind"], given=None if d.get("given") is None else int(d["given"]), nodes=nodes))
        else:
            out.append(Marginal(d["kind"], float(d["mean"]), float(d["sigma"])))
    return tuple(out)


@dataclass(frozen=True)
class Parameter:
    """One sampling-space parameter with a uniform prior.

    Attributes
    ----------
    name : str
        Column name used everywhere (Parquet, catalogs, plots).
    low, high : float
        Prior bounds.
    unit : str
        Unit of the parameter ("" for dimensionless, "dex" for logs).
    label : str
        LaTeX label for plots.
    """

    name: str
    low: float
    high: float
    unit: str = ""
    label: str = ""


class Prior:
    """Box-uniform prior in a model's sampling space.

    Parameters
    ----------
    parameters : sequence of Parameter
    """

    def __init__(self, parameters):
        self.parameters = tuple(parameters)
        self.names = tuple(p.name for p in self.parameters)
        self.low = np.array([p.low for p in self.parameters], dtype=float)
        self.high = np.array([p.high for p in self.parameters], dtype=float)

    @property
    def dim(self) -> int:
        return len(self.parameters)

    def torch_distribution(self, device: str = "cpu"):
        """The prior as an ``sbi.utils.BoxUniform`` (a torch Distribution)."""
        from sbi.utils import BoxUniform

        return BoxUniform(
            low=torch.as_tensor(self.low, dtype=torch.float32, device=device),
            high=torch.as_tensor(self.high, dtype=torch.float32, device=device),
        )

    def marginals(self) -> tuple[Marginal | None, ...]:
        """Per parameter, its prior if independent and closed-form, else None.

        A flow with the ``prior_probit`` parameter map uses these to map each
        such parameter to a standard normal under the prior.  Box-uniform:
        every parameter is ``uniform``.
        """
        return tuple(Marginal("uniform") for _ in self.parameters)

    def sample(self, n: int, rng: np.random.Generator, z=None) -> np.ndarray:
        """Draw ``n`` samples (float64, shape (n, dim)) with a numpy Generator.

        ``z`` (the redshifts of the draws) is ignored here; priors whose
        density depends on z (:class:`~sedscale.models.physical_prior.PhysicalPrior`) use it.
        """
        return self.low + (self.high - self.low) * rng.random((n, self.dim))

    def log_prob(self, theta, z=None) -> np.ndarray:
        """Log density (uniform: constant inside the box, -inf outside; ``z`` is ignored)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        inside = self.in_support(theta)
        return np.where(inside, -np.sum(np.log(self.high - self.low)), -np.inf)

    def in_support(self, theta) -> np.ndarray:
        """Boolean per row: every parameter finite and inside its bounds."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        return np.all(np.isfinite(theta) & (theta >= self.low) & (theta <= self.high), axis=-1)

    def validate(self, theta) -> np.ndarray:
        """Return ``theta`` as a float64 (n, dim) array or raise ParameterError.

        The error names the first offending parameter.
        """
        theta = np.asarray(theta, dtype=float)
        if theta.ndim == 1:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.dim:
            raise ParameterError(
                f"theta must have shape (n, {self.dim}) with columns {list(self.names)}; got {theta.shape}"
            )
        for j, p in enumerate(self.parameters):
            col = theta[:, j]
            if not np.all(np.isfinite(col)):
                raise ParameterError(f"parameter {p.name!r} has NaN or infinite values")
            bad = (col < p.low) | (col > p.high)
            if np.any(bad):
                raise ParameterError(
                    f"parameter {p.name!r} outside its prior [{p.low}, {p.high}]: "
                    f"{col[bad][:3].tolist()} ({int(bad.sum())} rows)"
                )
        return theta

    def to_dict(self) -> dict:
        """JSON-serializable description (stored in Parquet and checkpoints)."""
        return {
            "type": "BoxUniform",
            "parameters": [
                {"name": p.name, "low": p.low, "high": p.high, "unit": p.unit} for p in self.parameters
            ],
        }
