"""The amortized posterior: a trained checkpoint as a Python object.

Example::

    from sedscale.infer import Posterior

    post = Posterior.load("checkpoints/dirichlet_nsa", x_columns=PHOTOMETRY_X_COLUMNS)
    x = post.x_from_table(catalog)                 # (n, 11): ugriz mags, sigmas, z
    result = post.draw(x, 1000, max_time=10.0)     # samples (n, 1000, d) + flags
    phys = post.to_physical(result.samples)        # e.g. SFH fractions from the unit cube

Sampling draws from the flow directly, in batches of many galaxies, always
under ``torch.inference_mode()`` (sbi's ``sample_batched`` keeps the
autograd graph and takes gigabytes).  Flows of affine coupling layers (the
default ``zuko_nice``) are inverted by :class:`CouplingSampler`, which
skips zuko's per-layer bookkeeping; other flows use their own ``sample``.
Samples outside the prior box (and non-finite draws) are rejected and
redrawn, within a budget of flow draws per galaxy (``max_proposals`` per
requested sample); a galaxy that still lacks samples when its budget or
``max_time`` runs out is flagged instead of stalling the catalog.
"""
from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError
from ..models.priors import marginals_from_list
from ..models.redshift_prior import RedshiftParameterPrior
from ..observe.redshift_input import redshift_input
from ..train.checkpoint import (
    CheckpointError,
    check_compatible,
    checkpoint_paths,
    load_checkpoint,
)
from ..train.config import FlowConfig
from ..train.data import prior_from_dict
from ..train.flows import ConditionalFlow, Normalization, build_flow

#: Flow evaluations per flow call when ``batch_size`` is not given.  Calls of
#: a few thousand rows keep the activations in cache: 8192 rows sampled
#: ~1.7x faster than 131072 through zuko with the default flow on one core
#: (:class:`CouplingSampler` further splits a call into passes of 2048 rows).
DEFAULT_ROWS_PER_PASS = 8192
#: Redraw sizes assume an acceptance rate of at least 1 / MAX_OVERSAMPLE.
MAX_OVERSAMPLE = 20.0
#: Flow draws a galaxy may spend per requested sample (K): one whose draws
#: land in the prior box less often than 1 / K stops short and is flagged,
#: so one un-sampleable galaxy costs at most K times a normal one.
DEFAULT_MAX_PROPOSALS = 50.0
#: A galaxy none of whose first MIN_DRAWS_HOPELESS draws lands in the prior
#: box stops at once (the flow returns NaN or leaves the box entirely, as
#: for x far outside the training set): redrawing cannot help.
MIN_DRAWS_HOPELESS = 100


class CouplingSampler:
    """Direct sampling of a zuko flow made of affine coupling layers (``zuko_nice``).

    zuko samples by building a lazy transform per call, concatenating the
    context to every sample's coupling inputs and scattering each layer's
    output back through boolean masks.  This inverts the same layers with
    the same weights and the same standard-normal draws, but

    * applies the context's share of each hyper-network's first layer once
      per galaxy instead of once per sample (``W [y_a, c] = W_a y_a + W_c c``);
    * gathers and scatters coupling halves with index vectors, in place,
      and applies the ReLUs in place;
    * runs the layers over blocks of at most ``rows_per_pass`` rows, so that
      the activations stay in cache whatever the caller's batch.

    Samples equal ``flow.sample``'s to float32 rounding (the sums are
    regrouped).  Build with :meth:`from_flow`, which returns None for any
    other architecture.
    """

    #: Rows per pass through the layers: the (rows, 128) float32 activations
    #: of 2048 rows fit a 1 MiB L2 cache; with the shipped flow on one core,
    #: 1000-2000 rows ran 1.25x faster than 8000 and 1.5x faster than 16000.
    ROWS_PER_PASS = 2048

    def __init__(self, flow: ConditionalFlow, loc: torch.Tensor, scale: torch.Tensor, layers: list[dict],
                 rows_per_pass: int = ROWS_PER_PASS):
        self.flow = flow
        self.loc = loc
        self.scale = scale
        self.layers = layers
        self.rows_per_pass = rows_per_pass

    @classmethod
    def from_flow(cls, flow: ConditionalFlow, rows_per_pass: int = ROWS_PER_PASS) -> CouplingSampler | None:
        """A sampler for ``flow``, or None unless its estimator is a zuko flow of
        affine couplings (MLP hyper-networks with ReLUs) on a diagonal normal."""
        try:
            from zuko.distributions import DiagNormal
            from zuko.flows.coupling import GeneralCouplingTransform
            from zuko.lazy import Flow, LazyComposedTransform
            from zuko.nn import Linear
            from zuko.transforms import MonotonicAffineTransform
        except ImportError:
            return None
        net: Any = getattr(flow.estimator, "net", None)
        if type(net) is not Flow or type(net.transform) is not LazyComposedTransform:
            return None
        if not hasattr(flow.estimator, "_embedding_net"):
            return None
        base = net.base()
        if type(base) is not DiagNormal:
            return None
        slope = inspect.signature(MonotonicAffineTransform).parameters["slope"].default
        layers = []
        for t in net.transform.transforms:
            if type(t) is not GeneralCouplingTransform or t.univariate is not MonotonicAffineTransform:
                return None
            if tuple(map(tuple, t.shapes)) != ((), ()):
                return None
            mods = list(t.hyper)
            linear, relu = mods[0::2], mods[1::2]
            if (
                not all(type(m) is Linear and m.weight.dim() == 2 and m.bias is not None for m in linear)
                or not all(type(m) is torch.nn.ReLU for m in relu)
                or len(linear) != len(relu) + 1
            ):
                return None
            idx_a = t.mask.nonzero().squeeze(-1)
            first = linear[0].weight.detach()
            layers.append({
                "idx_a": idx_a,
                "idx_b": (~t.mask).nonzero().squeeze(-1),
                "w_a": first[:, : idx_a.numel()].contiguous(),
                "w_c": first[:, idx_a.numel() :].contiguous(),
                "b_first": linear[0].bias.detach(),
                "hidden": [(m.weight.detach(), m.bias.detach()) for m in linear[1:]],
                "log_slope": math.log(slope),
            })
        return cls(flow, base.base_dist.loc.detach(), base.base_dist.scale.detach(), layers, rows_per_pass)

    def sample(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """``n`` draws for each row of x (b, dx); shape (n, b, d), as ``ConditionalFlow.sample``.

        Call under ``torch.inference_mode()`` or ``torch.no_grad()``.
        """
        estimator: Any = self.flow.estimator
        c = estimator._embedding_net(self.flow._condition(x))
        b, d = c.shape[0], self.loc.numel()
        # The same draws as zuko's base distribution, all at once: loc + N(0, 1) * scale, shape (n, b, d).
        z = self.loc + torch.randn((n, b, d), dtype=self.loc.dtype) * self.scale
        per_pass = max(1, self.rows_per_pass // n)  # galaxies per pass
        sample_step = n if per_pass > 1 else min(n, self.rows_per_pass)
        for g in range(0, b, per_pass):
            for s in range(0, n, sample_step):
                block = z[s : s + sample_step, g : g + per_pass]
                block.copy_(self._invert(block.reshape(-1, d), c[g : g + per_pass], block.shape[1]).view(block.shape))
        return self.flow._from_latent(z)

    def _invert(self, y: torch.Tensor, c: torch.Tensor, b: int) -> torch.Tensor:
        """Latent rows y (m * b, d), sample-major over ``b`` galaxies with context c (b, dc) -> flow space."""
        for layer in reversed(self.layers):
            # Row r belongs to galaxy r % b: the context term broadcasts over the samples.
            context = torch.addmm(layer["b_first"], c, layer["w_c"].t())
            h = torch.mm(y.index_select(1, layer["idx_a"]), layer["w_a"].t())
            h.view(-1, b, h.shape[1]).add_(context)
            for w, bias in layer["hidden"]:
                h = torch.addmm(bias, h.clamp_min_(0.0), w.t())
            phi = h.view(y.shape[0], -1, 2)
            shift, raw = phi[..., 0], phi[..., 1]
            log_scale = raw / (1 + (raw / layer["log_slope"]).abs_())
            y.index_copy_(1, layer["idx_b"], (y.index_select(1, layer["idx_b"]) - shift).div_(log_scale.exp_()))
        return y


@dataclass
class SampleResult:
    """Posterior samples of many galaxies and their per-galaxy flags.

    Attributes
    ----------
    samples : ndarray, shape (n, n_samples, d), float32
        Parameters in :attr:`Posterior.param_names` order.  Rows a galaxy
        did not get (time-out, invalid x) are NaN.
    n_accepted : ndarray, shape (n,), int
        Samples inside the prior box per galaxy (``n_samples`` when complete).
    acceptance : ndarray, shape (n,)
        Fraction of the flow's draws inside the prior box (NaN if none drawn).
    timed_out : ndarray, shape (n,), bool
        Galaxies still short of samples when ``max_time`` ran out.
    invalid_x : ndarray, shape (n,), bool
        Galaxies with non-finite observations (not sampled).
    n_drawn : ndarray, shape (n,), int
        Flow draws spent per galaxy (accepted or not).
    n_nonfinite : ndarray, shape (n,), int
        Non-finite flow draws per galaxy (rejected like draws outside the box).
    exhausted : ndarray, shape (n,), bool
        Galaxies that stopped short because their draw budget ran out, or
        because none of their first :data:`MIN_DRAWS_HOPELESS` draws was
        accepted (then ``n_accepted`` is 0).
    """

    samples: np.ndarray
    n_accepted: np.ndarray
    acceptance: np.ndarray
    timed_out: np.ndarray
    invalid_x: np.ndarray
    n_drawn: np.ndarray
    n_nonfinite: np.ndarray
    exhausted: np.ndarray

    @property
    def complete(self) -> np.ndarray:
        """True for galaxies with all requested samples."""
        return self.n_accepted == self.samples.shape[1]


class Posterior:
    """A trained amortized posterior q(theta | x).

    Build with :meth:`load`.  Attributes: ``metadata`` (the checkpoint's
    sidecar), ``path``, ``flow`` (:class:`~sedscale.train.flows.ConditionalFlow`),
    ``prior`` (:class:`~sedscale.models.priors.Prior`), ``param_names``,
    ``x_columns``, ``x_units``, ``model_name``, ``redshift_input`` (the
    :class:`~sedscale.observe.redshift_input.RedshiftInput` of a
    photometric-redshift flow, whose last parameter is z; None when z is an input).
    """

    def __init__(self, flow: ConditionalFlow, metadata: dict, path: str = "", model=None, model_options=None):
        self.flow = flow.eval()
        self.metadata = metadata
        self.path = path
        self.prior = prior_from_dict(metadata["prior"])
        self.param_names = tuple(metadata["param_names"])
        self.x_columns = tuple(metadata["x_columns"])
        self.x_units = dict(metadata["x_units"])
        self.model_name = metadata["model"]["name"]
        self._model = model
        self._model_options = dict(model_options or metadata["model"].get("options") or {})
        self._sampler = CouplingSampler.from_flow(self.flow)
        self.redshift_input = redshift_input(metadata.get("redshift_input"))

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        model=None,
        x_columns=None,
        param_names=None,
        model_options: dict | None = None,
    ) -> Posterior:
        """Load a checkpoint (directory, ``.pt`` or ``.json`` path).

        Parameters
        ----------
        path : str or PathLike
        model : str or ForwardModel, optional
            Refuse the checkpoint unless it was trained for this model; an
            instance is also used by :meth:`to_physical`.
        x_columns, param_names : sequence of str, optional
            Refuse the checkpoint unless its x layout / parameter order match.
        model_options : dict, optional
            Arguments for building the model in :meth:`to_physical` (e.g.
            ``nmf_dir`` for provabgs).

        Raises
        ------
        CheckpointError
            Missing, truncated or corrupt files, or a mismatch.
        """
        state, meta = load_checkpoint(path)
        where = str(checkpoint_paths(path)[0])
        check_compatible(meta, where, model=model, x_columns=x_columns, param_names=param_names)
        if meta.get("theta_transform") == "prior_probit" and "theta_marginals" not in meta:
            raise CheckpointError(f"{where}: a prior_probit flow without theta_marginals in its metadata "
                                  "(its parameter map cannot be rebuilt)")
        try:
            flow_config = FlowConfig.from_dict(meta["flow"])
            prior = prior_from_dict(meta["prior"])
            norm = Normalization.from_dict(meta["normalization"])
            marginals = marginals_from_list(meta["theta_marginals"]) if "theta_marginals" in meta else None
            flow = build_flow(flow_config, prior, norm, marginals)
            flow.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{where}: weights do not fit the architecture in the metadata ({exc})") from None
        instance = None if model is None or isinstance(model, str) else model
        return cls(flow, meta, where, instance, model_options)

    def check_compatible(self, model=None, x_columns=None, param_names=None) -> None:
        """Raise CheckpointError unless model / x layout / parameter order match."""
        check_compatible(self.metadata, self.path, model=model, x_columns=x_columns, param_names=param_names)

    @property
    def training_redshift(self):
        """A photometric-redshift flow's training redshift distribution (its prior's p(z)), else None."""
        return self.prior.redshift if isinstance(self.prior, RedshiftParameterPrior) else None

    @property
    def n_model_params(self) -> int:
        """The forward model's parameters among :attr:`param_names` (all but a photometric-redshift flow's z)."""
        return len(self.param_names) - (self.redshift_input is not None)

    @property
    def band_masked(self) -> bool:
        """Whether x is the band-masked photometric layout (survey flows) rather than SEDflow's."""
        from ..observe.redshift_input import REDSHIFT_X_COLUMNS

        masked = self.bands.masked_x_columns
        if self.redshift_input is not None:
            masked = (*masked[:-1], *REDSHIFT_X_COLUMNS)
        return tuple(self.x_columns) == tuple(masked)

    @property
    def bands(self):
        """The :class:`~sedscale.observe.bands.BandSet` of the checkpoint's model (SDSS ugriz unless recorded)."""
        from ..observe.bands import get_band_set

        return get_band_set(self._model_options.get("bands"))

    @property
    def model(self):
        """The forward model the checkpoint was trained for (built on first use)."""
        if self._model is None:
            from ..models import get_model

            self._model = get_model(self.model_name, **self._model_options)
        return self._model

    # -------------------------------------------------------------- observations
    def x_from_table(self, table) -> np.ndarray:
        """The (n, dx) float32 observation matrix from named columns.

        Parameters
        ----------
        table : pandas.DataFrame, pyarrow.Table, numpy structured array or dict
            Must hold every column of :attr:`x_columns` (units: :attr:`x_units`).

        Raises
        ------
        ParameterError
            Naming the missing columns.
        """
        names = table.column_names if hasattr(table, "column_names") else (
            table.dtype.names if hasattr(table, "dtype") else list(table.keys())
        )
        missing = [c for c in self.x_columns if c not in set(names or ())]
        if missing:
            raise ParameterError(f"observations lack columns {missing}; this posterior needs {list(self.x_columns)}")
        return np.column_stack([np.asarray(table[c], dtype=np.float32) for c in self.x_columns])

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != len(self.x_columns):
            raise ParameterError(
                f"x must have shape (n, {len(self.x_columns)}) with columns {list(self.x_columns)}; got {x.shape}"
            )
        return x

    # ------------------------------------------------------------------ sampling
    def draw(
        self,
        x,
        n_samples: int,
        *,
        batch_size: int | None = None,
        max_time: float | None = None,
        max_proposals: float | np.ndarray | None = DEFAULT_MAX_PROPOSALS,
        seed: int | None = None,
        progress: bool = False,
    ) -> SampleResult:
        """Posterior samples for many galaxies, with per-galaxy flags.

        Parameters
        ----------
        x : array_like, shape (n, dx) or (dx,)
            Observations in :attr:`x_columns` order and units.
        n_samples : int
            Samples per galaxy.
        batch_size : int, optional
            Galaxies per flow call (one draw of the random stream); default
            keeps a call at about :data:`DEFAULT_ROWS_PER_PASS` flow evaluations.
        max_time : float, optional
            Seconds each batch may spend redrawing samples rejected for
            leaving the prior box (the first draw always completes).
            Galaxies still short when it runs out are ``timed_out``.
        max_proposals : float or array_like of shape (n,), optional
            Flow draws each galaxy may spend per requested sample (default
            :data:`DEFAULT_MAX_PROPOSALS`; at least one draw per sample);
            galaxies still short when theirs runs out are ``exhausted``.
            None: no budget (only ``max_time`` stops the redraws).
        seed : int, optional
            Seed of torch's generator for this call (the global state is
            restored afterwards); None uses the global generator.
        progress : bool
            Show a tqdm bar over galaxies.

        Returns
        -------
        SampleResult
        """
        from tqdm.auto import tqdm

        x = self._check_x(x)
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ParameterError(f"n_samples must be a positive integer, got {n_samples!r}")
        n, d = x.shape[0], len(self.param_names)
        batch = batch_size or max(1, DEFAULT_ROWS_PER_PASS // n_samples)
        if max_proposals is None:
            budget = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        else:
            k = np.broadcast_to(np.asarray(max_proposals, dtype=float), (n,))
            if not (np.isfinite(k) & (k > 0)).all():
                raise ParameterError(f"max_proposals must be positive and finite, got {max_proposals!r}")
            budget = np.maximum(np.ceil(k * n_samples), n_samples).astype(np.int64)
        result = SampleResult(
            samples=np.full((n, n_samples, d), np.nan, dtype=np.float32),
            n_accepted=np.zeros(n, dtype=np.int64),
            acceptance=np.full(n, np.nan),
            timed_out=np.zeros(n, dtype=bool),
            invalid_x=~np.isfinite(x).all(axis=1),
            n_drawn=np.zeros(n, dtype=np.int64),
            n_nonfinite=np.zeros(n, dtype=np.int64),
            exhausted=np.zeros(n, dtype=bool),
        )
        todo = np.flatnonzero(~result.invalid_x)
        with torch.random.fork_rng(enabled=seed is not None), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            with tqdm(total=todo.size, unit="gal", disable=not progress) as bar:
                for s in range(0, todo.size, batch):
                    idx = todo[s : s + batch]
                    self._draw_batch(x[idx], n_samples, idx, result, max_time, budget[idx])
                    bar.update(idx.size)
        return result

    def sample(
        self,
        x,
        n_samples: int,
        *,
        batch_size: int | None = None,
        max_time: float | None = None,
        max_proposals: float | np.ndarray | None = DEFAULT_MAX_PROPOSALS,
        seed: int | None = None,
    ) -> np.ndarray:
        """Samples only: (n, n_samples, d) float32, NaN rows where a galaxy was flagged.

        See :meth:`draw` for the parameters and the flags.
        """
        return self.draw(x, n_samples, batch_size=batch_size, max_time=max_time, max_proposals=max_proposals,
                         seed=seed).samples

    def _draw_batch(self, x: np.ndarray, n_samples: int, idx: np.ndarray, result: SampleResult, max_time,
                    budget: np.ndarray) -> None:
        """Fill ``result`` for galaxies ``idx`` by rejection sampling (under inference mode).

        ``budget`` (per galaxy, >= n_samples) bounds the flow draws each
        galaxy may spend, so a galaxy the flow cannot sample stops on its
        own instead of holding the batch until ``max_time``.
        """
        start = time.perf_counter()
        xt = torch.from_numpy(x)
        filled = np.zeros(idx.size, dtype=np.int64)
        drawn = np.zeros(idx.size, dtype=np.int64)
        accepted = np.zeros(idx.size, dtype=np.int64)
        nonfinite = np.zeros(idx.size, dtype=np.int64)
        active = np.arange(idx.size)
        per_galaxy = n_samples
        first = True
        while active.size:
            if not first and max_time is not None and time.perf_counter() - start > max_time:
                result.timed_out[idx[active]] = True
                break
            drawn_t = self._sample_flow(per_galaxy, xt[active])  # (per_galaxy, b, d)
            ok = self.flow.in_support(drawn_t).numpy()
            theta = drawn_t.numpy()
            finite = np.isfinite(theta).all(axis=-1)
            ok &= finite
            drawn[active] += per_galaxy
            accepted[active] += ok.sum(axis=0)
            nonfinite[active] += (~finite).sum(axis=0)
            if first and ok.all():
                # The common case (logit flows, well-trained zscore flows): no bookkeeping.
                result.samples[idx] = theta.transpose(1, 0, 2)
                filled[:] = n_samples
            else:
                for j, g in enumerate(active):
                    good = theta[ok[:, j], j]
                    take = min(good.shape[0], n_samples - filled[g])
                    result.samples[idx[g], filled[g] : filled[g] + take] = good[:take]
                    filled[g] += take
            first = False
            short = filled < n_samples
            spent = short & ((drawn >= budget) | ((accepted == 0) & (drawn >= MIN_DRAWS_HOPELESS)))
            result.exhausted[idx[spent]] = True
            active = np.flatnonzero(short & ~spent)
            if active.size:
                rate = np.maximum(accepted[active] / drawn[active], 1.0 / MAX_OVERSAMPLE)
                missing = (n_samples - filled[active]) / rate
                # Never more rows per pass than the first draw (bounded memory), nor
                # more draws than any active galaxy has left.
                per_galaxy = int(min(math.ceil(missing.max() * 1.2) + 1, idx.size * n_samples // active.size,
                                     (budget[active] - drawn[active]).max()))
        result.n_accepted[idx] = filled
        result.n_drawn[idx] = drawn
        result.n_nonfinite[idx] = nonfinite
        with np.errstate(invalid="ignore", divide="ignore"):
            result.acceptance[idx] = accepted / drawn

    def _sample_flow(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """``n`` flow draws per row of x, (n, b, d): :class:`CouplingSampler` where it applies."""
        if self._sampler is not None:
            return self._sampler.sample(n, x)
        return self.flow.sample(n, x)

    # ------------------------------------------------------------------ density
    def log_prob(self, theta, x, *, batch_size: int = DEFAULT_ROWS_PER_PASS) -> np.ndarray:
        """log q(theta | x) in the parameters' own units (nats).

        Parameters
        ----------
        theta : array_like, shape (n, d)
        x : array_like, shape (n, dx) or (dx,)
            One observation per row of theta, or one for all rows.
        batch_size : int
            Rows per forward pass.

        Returns
        -------
        ndarray, shape (n,)
            -inf where theta is outside the prior box or x is not finite.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float32))
        if theta.ndim != 2 or theta.shape[1] != len(self.param_names):
            raise ParameterError(
                f"theta must have shape (n, {len(self.param_names)}) with columns {list(self.param_names)}"
            )
        x = self._check_x(x)
        if x.shape[0] == 1:
            x = np.broadcast_to(x, (theta.shape[0], x.shape[1]))
        if x.shape[0] != theta.shape[0]:
            raise ParameterError(f"theta has {theta.shape[0]} rows but x has {x.shape[0]}")
        out = np.full(theta.shape[0], -np.inf)
        ok = self.prior.in_support(theta) & np.isfinite(x).all(axis=1)
        rows = np.flatnonzero(ok)
        with torch.no_grad():
            for s in range(0, rows.size, batch_size):
                r = rows[s : s + batch_size]
                lp = self.flow.log_prob(torch.from_numpy(theta[r]), torch.from_numpy(np.ascontiguousarray(x[r])))
                out[r] = lp.double().numpy()
        return out

    # --------------------------------------------------------------- parameters
    def to_physical(self, samples) -> dict[str, np.ndarray]:
        """Sampling-space parameters -> the model's physical parameters.

        Parameters
        ----------
        samples : array_like, shape (..., d)
            E.g. the (n, n_samples, d) output of :meth:`sample`.  NaN rows
            (flagged galaxies) give NaN.  A photometric-redshift flow's z
            (the last parameter) is not a model parameter and is left out.

        Returns
        -------
        dict of str to ndarray
            :meth:`ForwardModel.physical` of the model, each reshaped to the
            leading shape of ``samples`` (vector quantities such as SFH
            fractions keep a trailing axis).
        """
        samples = np.asarray(samples, dtype=float)
        if samples.shape[-1] != len(self.param_names):
            raise ParameterError(f"samples must end in {len(self.param_names)} parameters, got shape {samples.shape}")
        lead = samples.shape[:-1]
        flat = samples.reshape(-1, samples.shape[-1])[:, : self.n_model_params]
        phys = self.model.physical(flat)
        return {k: np.asarray(v).reshape(lead + np.asarray(v).shape[1:]) for k, v in phys.items()}

    def __repr__(self) -> str:
        t = self.metadata["training"]
        return (
            f"Posterior({self.path!r}, model={self.model_name!r}, flow={self.metadata['flow']['kind']!r}, "
            f"d={len(self.param_names)}, x={len(self.x_columns)} columns, "
            f"val log-prob {t.get('best_val_log_prob', float('nan')):.3f})"
        )
