"""The conditional density estimator q(theta | x) and its normalisation.

:class:`ConditionalFlow` wraps an ``sbi`` density estimator (nflows or zuko
flow, built by :func:`build_flow`) between two fixed maps:

* parameters: theta -> y, either ``(theta - mean) / std`` (``zscore``),
  ``(logit((theta - low) / (high - low)) - mean) / std`` (``logit``) or,
  for ``prior_probit``, ``(probit(F(theta)) - mean) / std`` with F the
  parameter's prior CDF: in closed form where the prior gives one (a
  parameter the data do not constrain is then exactly the flow's standard
  normal base), tabulated from the training rows where it does not, and
  the logit for a parameter whose recorded map has neither (older flows);
* observations: x -> ``(x - mean) / std``.

All statistics are computed from the training data and stored as buffers,
so the ``state_dict`` alone reproduces the estimator.  :meth:`log_prob`
returns the density of theta itself (the log-Jacobian of the parameter map
is added), so values are comparable with the prior's log density and
between checkpoints with different transforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .config import FlowConfig

#: Positions inside the prior box are clamped to [EPS, 1 - EPS] before the
#: logit, so that parameters on the boundary stay finite.
LOGIT_EPS = 1e-6


@dataclass(frozen=True)
class Normalization:
    """Statistics of the (transformed) parameters and of x.

    Attributes
    ----------
    theta_mean, theta_std : ndarray, shape (d,)
        Of the transformed parameters (after the logit for ``logit``).
    x_mean, x_std : ndarray, shape (dx,)
        Of the observations, in their own units.
    """

    theta_mean: np.ndarray
    theta_std: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k), dtype=float).tolist() for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(**{k: np.asarray(d[k], dtype=np.float64) for k in cls.__dataclass_fields__})


#: Codes of :func:`marginal_tensors`: the parameter's own prior is not used
#: (logit of the box position), uniform on the box, a tabulated
#: piecewise-linear CDF, truncated normal, and a truncated normal whose mean
#: and sigma depend on another parameter (the normals last: ``>= TRUNCNORMAL``).
BOX, UNIFORM, TABULATED, TRUNCNORMAL, CONDITIONAL = 0, 1, 2, 3, 4
_CODES = {"uniform": UNIFORM, "truncnormal": TRUNCNORMAL, "conditional_truncnormal": CONDITIONAL,
          "tabulated": TABULATED}
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class MarginalTensors(NamedTuple):
    """A prior's per-parameter marginals as tensors, for the ``prior_probit`` map.

    Every normal is written as a piecewise-linear function of a conditioning
    parameter (itself, with constant nodes, for an unconditional one), so one
    vectorised interpolation serves both kinds; a tabulated CDF uses the same
    interpolation on its own nodes.

    Attributes
    ----------
    code : Tensor, shape (d,), int64
        BOX, UNIFORM, TABULATED, TRUNCNORMAL or CONDITIONAL.
    given : Tensor, shape (d,), int64
        Index of the parameter that sets the normal's mean and sigma.
    x, mean, sigma : Tensor, shape (d, k)
        Interpolation nodes (strictly increasing in x) of the normal's mean
        and sigma (before truncation), constant beyond the ends; for a
        TABULATED parameter, x holds its own nodes (padded below the first).
    cdf : Tensor, shape (d, k)
        TABULATED: the CDF at x (strictly increasing, padded below the first).
    """

    code: torch.Tensor
    given: torch.Tensor
    x: torch.Tensor
    mean: torch.Tensor
    sigma: torch.Tensor
    cdf: torch.Tensor

    def to(self, dtype: torch.dtype) -> MarginalTensors:
        """The same marginals with float nodes of ``dtype``."""
        return self._replace(x=self.x.to(dtype), mean=self.mean.to(dtype), sigma=self.sigma.to(dtype),
                             cdf=self.cdf.to(dtype))


def marginal_tensors(marginals, dtype: torch.dtype = torch.float64) -> MarginalTensors:
    """:class:`MarginalTensors` of a prior's per-parameter marginals.

    Parameters
    ----------
    marginals : sequence of Marginal or None
        As :meth:`sedscale.models.priors.Prior.marginals` returns them (or a
        checkpoint's ``theta_marginals`` read back).
    dtype : torch.dtype
        Of the nodes.

    Raises
    ------
    ValueError
        A conditional marginal given a conditional (or its own) parameter, or
        nodes not strictly increasing: the map would not be triangular.
    """
    marginals = list(marginals)
    d = len(marginals)
    code = np.array([BOX if m is None else _CODES[m.kind] for m in marginals], dtype=np.int64)
    k = max([2] + [len(m.nodes[0]) for m in marginals if m is not None and m.nodes is not None])
    given = np.arange(d)
    x = np.broadcast_to(np.arange(k, dtype=float), (d, k)).copy()
    mean, sigma, cdf = np.zeros((d, k)), np.ones((d, k)), x.copy()
    for j, m in enumerate(marginals):
        if m is None or m.kind == "uniform":
            continue
        if m.kind == "truncnormal":
            mean[j], sigma[j] = m.mean, m.sigma
            continue
        if m.kind == "tabulated":
            nx, ncdf = (np.asarray(a, dtype=float) for a in m.nodes)
            if np.any(np.diff(nx) <= 0) or np.any(np.diff(ncdf) <= 0):
                raise ValueError(f"parameter {j}: a tabulated CDF needs strictly increasing nodes and values")
            # Pad below the first node: the interpolation clamps its argument to the last node, and the
            # padding must never be a segment an in-range value falls into.
            below = np.arange(k - len(nx), 0, -1, dtype=float)
            x[j], cdf[j] = np.concatenate([nx[0] - below, nx]), np.concatenate([ncdf[0] - below, ncdf])
            continue
        nx, nmean, nsigma = (np.asarray(a, dtype=float) for a in m.nodes)
        if m.given == j or code[m.given] == CONDITIONAL or np.any(np.diff(nx) <= 0):
            raise ValueError(f"parameter {j}: a conditional prior must be given another, unconditional "
                             "parameter on strictly increasing nodes")
        given[j] = m.given
        # pad to k nodes beyond the last one: the normal is constant there anyway
        pad = k - len(nx)
        x[j] = np.concatenate([nx, nx[-1] + 1.0 + np.arange(pad)])
        mean[j] = np.concatenate([nmean, np.full(pad, nmean[-1])])
        sigma[j] = np.concatenate([nsigma, np.full(pad, nsigma[-1])])
    return MarginalTensors(*(torch.as_tensor(a) for a in (code, given)),
                           *(torch.as_tensor(a, dtype=dtype) for a in (x, mean, sigma, cdf)))


def _piecewise(v: torch.Tensor, xp: torch.Tensor, *fps: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Linear interpolation, per column, of each fp (c, k) on nodes xp (c, k) at v (..., c).

    v is clamped to [xp[:, 0], xp[:, -1]].  Returns, per fp, its value and its
    slope d fp / d v, both shaped as v.
    """
    flat = v.reshape(-1, v.shape[-1]).T.contiguous()
    flat = torch.minimum(torch.maximum(flat, xp[:, :1]), xp[:, -1:])
    hi = torch.searchsorted(xp, flat, right=True).clamp(1, xp.shape[1] - 1)
    x0 = xp.gather(1, hi - 1)
    dx = xp.gather(1, hi) - x0
    out = []
    for fp in fps:
        y0 = fp.gather(1, hi - 1)
        slope = (fp.gather(1, hi) - y0) / dx
        out.append(((y0 + (flat - x0) * slope).T.reshape(v.shape), slope.T.reshape(v.shape)))
    return out


def _interpolate(v: torch.Tensor, m: MarginalTensors, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sigma (..., c) of the conditional normals of parameters ``cols`` (c,) at their
    conditioning values v (..., c): linear between nodes, constant beyond the ends."""
    (mean, _), (sigma, _) = _piecewise(v, m.x[cols], m.mean[cols], m.sigma[cols])
    return mean, sigma


def _tabulated(m: MarginalTensors) -> torch.Tensor:
    """Indices of the parameters with a tabulated CDF."""
    return torch.nonzero(m.code == TABULATED)[:, 0]


def _conditional(m: MarginalTensors) -> torch.Tensor:
    """Indices of the conditional parameters."""
    return torch.nonzero(m.code == CONDITIONAL)[:, 0]


def _normal_at(theta: torch.Tensor, m: MarginalTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sigma of each parameter's normal: shape (d,), or (..., d) where one is conditional on theta."""
    mean, sigma = m.mean[:, 0], m.sigma[:, 0]
    cols = _conditional(m)
    if cols.numel() == 0:
        return mean, sigma
    c_mean, c_sigma = _interpolate(theta[..., m.given[cols]], m, cols)
    mean, sigma = mean.expand(theta.shape).clone(), sigma.expand(theta.shape).clone()
    mean[..., cols], sigma[..., cols] = c_mean, c_sigma
    return mean, sigma


def _truncation(low, high, mean, sigma):
    """Normal CDF at the lower bound and the probability mass inside [low, high]."""
    lo = torch.special.ndtr((low - mean) / sigma)
    return lo, torch.special.ndtr((high - mean) / sigma) - lo


def _truncnormal_quantile(cdf, low, high, mean, sigma):
    """Quantile ``cdf`` of N(mean, sigma) truncated to [low, high] (inf at a CDF rounded to 0 or 1:
    the caller clamps)."""
    lo, norm = _truncation(low, high, mean, sigma)
    return mean + sigma * torch.special.ndtri(lo + cdf * norm)


def _prior_cdf(theta, low, high, m: MarginalTensors):
    """Prior CDF u of each coded parameter and log du/dtheta (BOX rows: the box position).

    For a conditional parameter, u = F(theta_j | theta_given): the map is
    triangular, so its log-determinant is the sum of these diagonal terms.
    """
    m = m.to(theta.dtype)
    mean, sigma = _normal_at(theta, m)
    s = (theta - mean) / sigma
    lo, norm = _truncation(low, high, mean, sigma)
    tn = m.code >= TRUNCNORMAL
    u = torch.where(tn, (torch.special.ndtr(s) - lo) / norm, (theta - low) / (high - low))
    log_du = torch.where(tn, -0.5 * s**2 - _LOG_SQRT_2PI - torch.log(sigma * norm), -torch.log(high - low))
    cols = _tabulated(m)
    if cols.numel():
        ((u_tab, slope),) = _piecewise(theta[..., cols], m.x[cols], m.cdf[cols])
        u, log_du = u.clone(), log_du.clone()
        u[..., cols], log_du[..., cols] = u_tab, torch.log(slope)
    return u, log_du


def pretransform_theta(theta: torch.Tensor, low: torch.Tensor, high: torch.Tensor, kind: str, marginals=None):
    """The fixed map applied before z-scoring and its log-Jacobian.

    Parameters
    ----------
    theta : Tensor, shape (..., d)
    low, high : Tensor, shape (d,)
        Prior box.
    kind : {"zscore", "logit", "prior_probit"}
        ``zscore``: identity; ``logit``: logit of the position in the box
        (clamped to [LOGIT_EPS, 1 - LOGIT_EPS]); ``prior_probit``: for a
        parameter with a marginal (closed form, conditional on another
        parameter for ``conditional_truncnormal``, or ``tabulated``), the
        probit of that CDF (standard normal under the prior), for the others
        the logit.
    marginals : MarginalTensors, optional
        ``prior_probit`` only.

    Returns
    -------
    t : Tensor, shape (..., d)
    log_jac : Tensor, shape (...)
        sum of log|dt/dtheta|.
    """
    if kind == "zscore":
        return theta, theta.new_zeros(theta.shape[:-1])
    u = ((theta - low) / (high - low)).clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    log_u, log_1mu = torch.log(u), torch.log1p(-u)
    t, log_jac = log_u - log_1mu, -(torch.log(high - low) + log_u + log_1mu)
    if kind == "prior_probit":
        cdf, log_du = _prior_cdf(theta, low, high, marginals)
        probit = torch.special.ndtri(cdf.clamp(LOGIT_EPS, 1 - LOGIT_EPS))
        coded = marginals.code != BOX
        t = torch.where(coded, probit, t)
        # log|dt/dtheta| = log(du/dtheta) - log phi(t)
        log_jac = torch.where(coded, log_du + 0.5 * probit**2 + _LOG_SQRT_2PI, log_jac)
    return t, log_jac.sum(-1)


def posttransform_theta(t: torch.Tensor, low: torch.Tensor, high: torch.Tensor, kind: str, marginals=None):
    """The inverse of :func:`pretransform_theta`: t (..., d) -> theta (..., d) inside the box."""
    if kind == "zscore":
        return t
    theta = low + (high - low) * torch.sigmoid(t)
    if kind == "prior_probit":
        m = marginals.to(t.dtype)
        cdf = torch.special.ndtr(t)
        quantile = _truncnormal_quantile(cdf, low, high, m.mean[:, 0], m.sigma[:, 0])
        inverse = torch.where(m.code >= TRUNCNORMAL, quantile, low + (high - low) * cdf)
        theta = torch.where(m.code == BOX, theta, inverse)
        tab = _tabulated(m)
        if tab.numel():
            ((values, _),) = _piecewise(cdf[..., tab], m.cdf[tab], m.x[tab])
            theta[..., tab] = values
        cols = _conditional(m)
        if cols.numel():
            # The conditioning parameters are unconditional, hence already inverted above.
            v = torch.minimum(torch.maximum(theta[..., m.given[cols]], low[m.given[cols]]), high[m.given[cols]])
            c_mean, c_sigma = _interpolate(v, m, cols)
            theta[..., cols] = _truncnormal_quantile(cdf[..., cols], low[cols], high[cols], c_mean, c_sigma)
    # A saturated sigmoid (or CDF) rounds low + (high - low) * 1 past high in float32 (log Z: 0.2 + 4e-8),
    # and ndtri of a CDF rounded to 1 is inf: the box edge is what the flow means.
    return torch.minimum(torch.maximum(theta, low), high)


def learned_theta(theta, low, high, kind: str, marginals=None) -> np.ndarray:
    """The parameters a flow with theta transform ``kind`` is trained on and samples.

    ``logit`` clamps the position in the prior box to [LOGIT_EPS, 1 - LOGIT_EPS]
    (:func:`pretransform_theta`), so the flow learns the posterior of the
    clamped parameter (``prior_probit`` clamps the prior CDF the same way,
    after rounding theta to float32 as the training set stores it).
    Calibration tests must rank this, not the raw truth:
    a truth closer to the box edge than 1e-6 of its width (e.g. the youngest
    SFH bin's stick-breaking coordinate, 1 - u ~ 1e-7 for ~5% of continuity-prior
    draws) is above every sample and would fail SBC for a difference no
    observation can carry.

    Parameters
    ----------
    theta : array_like, shape (..., d)
    low, high : array_like, shape (d,)
        Prior box.
    kind : {"zscore", "logit", "prior_probit"}
    marginals : sequence of Marginal or None, optional
        The flow's per-parameter marginals (``prior_probit`` only:
        :attr:`ConditionalFlow.marginals`).

    Returns
    -------
    ndarray, shape (..., d), float64
    """
    theta = np.asarray(theta, dtype=float)
    if kind == "zscore":
        return theta
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if kind == "logit":
        return low + (high - low) * np.clip((theta - low) / (high - low), LOGIT_EPS, 1 - LOGIT_EPS)
    lo, hi = torch.as_tensor(low), torch.as_tensor(high)
    tensors = marginal_tensors(marginals)
    # Training sets store float32 parameters, and a tabulated CDF has float32 nodes: near a box edge the
    # flow learned the rounded value (frac_u1 = 1 - 1e-9 is 1.0 there), so the truth is ranked rounded.
    theta = theta.astype(np.float32).astype(float)
    t, _ = pretransform_theta(torch.as_tensor(theta), lo, hi, kind, tensors)
    return posttransform_theta(t, lo, hi, kind, tensors).numpy()


def build_embedding(config: FlowConfig, x_dim: int) -> nn.Module:
    """The embedding net of ``config`` for standardised x of ``x_dim`` numbers.

    Trained jointly with the flow (its weights are part of the estimator's
    ``state_dict``).
    """
    from sbi.neural_nets.embedding_nets import FCEmbedding

    return FCEmbedding(
        input_dim=x_dim,
        output_dim=config.embedding_features,
        num_layers=config.embedding_layers,
        num_hiddens=config.embedding_hidden,
    )


def build_estimator(config: FlowConfig, theta_dim: int, x_dim: int) -> nn.Module:
    """An untrained sbi conditional density estimator on standardised inputs.

    Built with sbi's public ``posterior_nn`` builder.  sbi's own z-scoring
    is off: :class:`ConditionalFlow` normalises with statistics of the whole
    training set, not of one batch.
    """
    from sbi.neural_nets import posterior_nn

    kwargs = {"num_transforms": config.num_transforms, "z_score_theta": "none", "z_score_x": "none"}
    if config.kind.startswith("zuko_"):
        kwargs["hidden_features"] = [config.hidden_features] * config.num_blocks
        if config.passes is not None:
            kwargs["passes"] = config.passes
    else:
        kwargs["hidden_features"] = config.hidden_features
        kwargs["num_blocks"] = config.num_blocks
    if config.kind in ("nsf", "maf_rqs", "zuko_nsf"):
        kwargs["num_bins"] = config.num_bins
    if config.embedding is not None:
        kwargs["embedding_net"] = build_embedding(config, x_dim)
    # The builder infers the dimensions from example batches.
    return posterior_nn(model=config.kind, **kwargs)(torch.zeros(2, theta_dim), torch.zeros(2, x_dim))


class ConditionalFlow(nn.Module):
    """q(theta | x) on physical (sampling-space) parameters.

    Parameters
    ----------
    estimator : nn.Module
        An sbi ``ConditionalDensityEstimator`` on standardised (y, x).
    low, high : array_like, shape (d,)
        Prior box of the parameters.
    normalization : Normalization
    theta_transform : {"zscore", "logit", "prior_probit"}
    marginals : sequence of Marginal or None, optional
        The prior's per-parameter marginals (``prior_probit`` only; recorded
        in the checkpoint's sidecar as ``theta_marginals``, not in the
        ``state_dict``).
    """

    # sbi ships no type information; the buffers would otherwise be typed by
    # nn.Module.__getattr__ as Tensor | Module.
    estimator: Any
    low: torch.Tensor
    high: torch.Tensor
    theta_mean: torch.Tensor
    theta_std: torch.Tensor
    x_mean: torch.Tensor
    x_std: torch.Tensor
    marginal_code: torch.Tensor
    marginal_given: torch.Tensor
    marginal_x: torch.Tensor
    marginal_mean: torch.Tensor
    marginal_sigma: torch.Tensor
    marginal_cdf: torch.Tensor

    def __init__(self, estimator: nn.Module, low, high, normalization: Normalization, theta_transform: str,
                 marginals=None):
        super().__init__()
        if theta_transform == "prior_probit" and marginals is None:
            raise ValueError("the prior_probit parameter map needs the prior's marginals")
        self.marginals = tuple(marginals) if theta_transform == "prior_probit" else None
        self.estimator = estimator
        self.theta_transform = theta_transform

        def buf(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float32))

        self.register_buffer("low", buf(low))
        self.register_buffer("high", buf(high))
        self.register_buffer("theta_mean", buf(normalization.theta_mean))
        self.register_buffer("theta_std", buf(normalization.theta_std))
        self.register_buffer("x_mean", buf(normalization.x_mean))
        self.register_buffer("x_std", buf(normalization.x_std))
        # Not in the state_dict: the map is rebuilt from the sidecar's theta_marginals.
        tensors = marginal_tensors(marginals if marginals is not None else [None] * len(low), torch.float32)
        for name, value in tensors._asdict().items():
            self.register_buffer(f"marginal_{name}", value, persistent=False)

    @property
    def theta_dim(self) -> int:
        return int(self.low.numel())

    @property
    def x_dim(self) -> int:
        return int(self.x_mean.numel())

    def _to_latent(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta (..., d) -> y (..., d) and log|dy/dtheta| (...)."""
        t, log_jac = pretransform_theta(theta, self.low, self.high, self.theta_transform, self._marginals)
        return (t - self.theta_mean) / self.theta_std, log_jac - torch.log(self.theta_std).sum()

    def _from_latent(self, y: torch.Tensor) -> torch.Tensor:
        t = y * self.theta_std + self.theta_mean
        return posttransform_theta(t, self.low, self.high, self.theta_transform, self._marginals)

    @property
    def _marginals(self) -> MarginalTensors:
        return MarginalTensors(self.marginal_code, self.marginal_given, self.marginal_x, self.marginal_mean,
                               self.marginal_sigma, self.marginal_cdf)

    def _condition(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(theta | x) per row for theta (n, d) and x (n, dx); shape (n,)."""
        y, log_jac = self._to_latent(theta)
        return self.estimator.log_prob(y.unsqueeze(0), self._condition(x))[0] + log_jac

    def sample(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """``n`` draws for each row of x (b, dx); shape (n, b, d).

        Call under ``torch.no_grad()``: the flow's graph is otherwise kept.
        """
        return self._from_latent(self.estimator.sample((n,), self._condition(x)))

    def in_support(self, theta: torch.Tensor) -> torch.Tensor:
        """True where every parameter is finite and inside the prior box."""
        return ((theta >= self.low) & (theta <= self.high) & torch.isfinite(theta)).all(-1)


def build_flow(config: FlowConfig, prior, normalization: Normalization, marginals=None) -> ConditionalFlow:
    """A :class:`ConditionalFlow` on ``prior``'s box with freshly initialised weights.

    ``marginals`` (``prior_probit``): those recorded in a checkpoint; by default
    ``prior.marginals()``, for a new flow.
    """
    estimator = build_estimator(config, len(normalization.theta_mean), len(normalization.x_mean))
    if marginals is None:
        marginals = prior.marginals()
    return ConditionalFlow(estimator, prior.low, prior.high, normalization, config.theta_transform, marginals)
