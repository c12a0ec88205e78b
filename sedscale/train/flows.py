"""The conditional density estimator q(theta | x) and its normalisation.

:class:`ConditionalFlow` wraps an ``sbi`` density estimator (nflows or zuko
flow, built by :func:`build_flow`) between two fixed maps:

* parameters: theta -> y, either ``(theta - mean) / std`` (``zscore``),
  ``(logit((theta - low) / (high - low)) - mean) / std`` (``logit``) or,
  for ``prior_probit``, ``(probit(F(theta)) - mean) / std`` with F the
  parameter's prior CDF where the prior gives one in closed form (a
  parameter the data do not constrain is then exactly the flow's standard
  normal base) and the logit elsewhere;
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
from typing import Any

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


#: Codes of :func:`marginal_arrays`: the parameter's own prior is not used
#: (logit of the box position), uniform on the box, truncated normal.
BOX, UNIFORM, TRUNCNORMAL = 0, 1, 2
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def marginal_arrays(marginals) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, means and sigmas, shape (d,) each, of a prior's per-parameter marginals.

    Parameters
    ----------
    marginals : sequence of Marginal or None
        As :meth:`sedscale.models.priors.Prior.marginals` returns them.
    """
    code = np.array([BOX if m is None else {"uniform": UNIFORM, "truncnormal": TRUNCNORMAL}[m.kind]
                     for m in marginals], dtype=np.int64)
    mean = np.array([0.0 if m is None else m.mean for m in marginals])
    sigma = np.array([1.0 if m is None else m.sigma for m in marginals])
    return code, mean, sigma


def marginal_tensors(marginals) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`marginal_arrays` as tensors (int64 codes, float64 means and sigmas)."""
    code, mean, sigma = marginal_arrays(marginals)
    return torch.as_tensor(code), torch.as_tensor(mean), torch.as_tensor(sigma)


def _truncation(low, high, mean, sigma):
    """Normal CDF at the lower bound and the probability mass inside [low, high]."""
    lo = torch.special.ndtr((low - mean) / sigma)
    return lo, torch.special.ndtr((high - mean) / sigma) - lo


def _prior_cdf(theta, low, high, marginals):
    """Prior CDF u of each coded parameter and log du/dtheta (BOX rows: the box position)."""
    code, mean, sigma = marginals
    s = (theta - mean) / sigma
    lo, norm = _truncation(low, high, mean, sigma)
    tn = code == TRUNCNORMAL
    u = torch.where(tn, (torch.special.ndtr(s) - lo) / norm, (theta - low) / (high - low))
    log_du = torch.where(tn, -0.5 * s**2 - _LOG_SQRT_2PI - torch.log(sigma * norm), -torch.log(high - low))
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
        parameter with an independent closed-form prior, the probit of its
        prior CDF (standard normal under the prior), for the others the logit.
    marginals : tuple of Tensor, optional
        ``(code, mean, sigma)`` of :func:`marginal_arrays`; ``prior_probit`` only.

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
        coded = marginals[0] != BOX
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
        code, mean, sigma = marginals
        cdf = torch.special.ndtr(t)
        lo, norm = _truncation(low, high, mean, sigma)
        tn = mean + sigma * torch.special.ndtri(lo + cdf * norm)
        theta = torch.where(code == BOX, theta, torch.where(code == TRUNCNORMAL, tn, low + (high - low) * cdf))
    # A saturated sigmoid (or CDF) rounds low + (high - low) * 1 past high in float32 (log Z: 0.2 + 4e-8),
    # and ndtri of a CDF rounded to 1 is inf: the box edge is what the flow means.
    return torch.minimum(torch.maximum(theta, low), high)


def learned_theta(theta, low, high, kind: str, marginals=None) -> np.ndarray:
    """The parameters a flow with theta transform ``kind`` is trained on and samples.

    ``logit`` clamps the position in the prior box to [LOGIT_EPS, 1 - LOGIT_EPS]
    (:func:`pretransform_theta`), so the flow learns the posterior of the
    clamped parameter (``prior_probit`` clamps the prior CDF the same way).
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
    marginal_mean: torch.Tensor
    marginal_sigma: torch.Tensor

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
        code, mean, sigma = marginal_arrays(marginals if marginals is not None else [None] * len(low))
        self.register_buffer("marginal_code", torch.as_tensor(code), persistent=False)
        self.register_buffer("marginal_mean", buf(mean), persistent=False)
        self.register_buffer("marginal_sigma", buf(sigma), persistent=False)

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
    def _marginals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.marginal_code, self.marginal_mean, self.marginal_sigma

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
