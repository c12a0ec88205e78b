"""MCMC posteriors of single galaxies, the reference the amortized posterior is checked against.

SEDflow (Hahn & Melchior 2022) validated its flow against zeus ensemble
slice sampling: 30 walkers, 10,000 iterations, the first 2,000 discarded.
This module does the same with the *same* forward model and prior the flow
was trained on and a Gaussian likelihood of the observed fluxes:

    log p(theta | f) = log prior(theta) - 1/2 sum_b ((F_b(theta, z) - f_b) / sigma_b)^2 + const

with fluxes ``f_b`` and uncertainties ``sigma_b`` in nanomaggies.  The
walkers are evaluated together (zeus ``vectorize=True``) through the batched
forward model, and points outside the prior box get ``-inf`` without a model
call.

:mod:`sedscale.validate.mcmc_benchmark` runs it per galaxy on Dask workers
beside the amortized posterior.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ConfigError, ParameterError

#: SEDflow's zeus setup.
SEDFLOW_WALKERS = 30
SEDFLOW_ITERATIONS = 10_000
SEDFLOW_BURN_IN = 2_000
SAMPLERS = ("zeus", "emcee")
INITS = ("prior", "anpe")


@dataclass(frozen=True)
class MCMCConfig:
    """Settings of one MCMC run (defaults: SEDflow's zeus setup).

    Attributes
    ----------
    n_walkers : int
        Ensemble size (>= 2 x the number of free parameters).
    n_iter : int
        Iterations per walker, burn-in included.
    burn_in : int
        Leading iterations discarded.
    sampler : {"zeus", "emcee"}
        emcee only when it is installed (it is not a sedscale dependency).
    n_init : int
        Prior draws evaluated to start the walkers at the ``n_walkers``
        highest posterior densities among them (independent of the flow).
    seed : int
        Seeds the start and the sampler.
    rhat_max : float
        Converged needs every split-R-hat below this ...
    min_iter_per_tau : float
        ... and at least this many post-burn-in iterations per integrated
        autocorrelation time (emcee/zeus documentation: 50) ...
    min_ess : float
        ... and at least this many effective samples of every parameter.
    check_every : int
        0: run ``n_iter`` iterations (SEDflow).  > 0: run until converged,
        checking every ``check_every`` iterations with the first half of the
        chain as burn-in (``burn_in`` is then unused), at most ``n_iter``;
        a run that reaches ``n_iter`` unconverged says so (``converged``).
    init : {"prior", "anpe"}
        Walkers start at the best of ``n_init`` prior draws, or at samples
        of the amortized posterior (:func:`mcmc_task`; shorter burn-in,
        and convergence diagnostics still decide).
    """

    n_walkers: int = SEDFLOW_WALKERS
    n_iter: int = SEDFLOW_ITERATIONS
    burn_in: int = SEDFLOW_BURN_IN
    sampler: str = "zeus"
    n_init: int = 10_000
    seed: int = 0
    rhat_max: float = 1.1
    min_iter_per_tau: float = 50.0
    min_ess: float = 0.0
    check_every: int = 0
    init: str = "prior"

    def __post_init__(self):
        for name in ("n_walkers", "n_iter", "n_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"MCMC {name} must be a positive integer, got {value!r}")
        if not 0 <= self.burn_in < self.n_iter:
            raise ConfigError(f"MCMC burn_in must be in [0, n_iter={self.n_iter}), got {self.burn_in}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown MCMC sampler {self.sampler!r}; choose one of {SAMPLERS}")
        if self.n_init < self.n_walkers:
            raise ConfigError(f"n_init ({self.n_init}) must be >= n_walkers ({self.n_walkers})")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, (int, np.integer)) \
                or not 0 <= self.check_every <= self.n_iter:
            raise ConfigError(f"MCMC check_every must be in [0, n_iter], got {self.check_every!r}")
        if self.init not in INITS:
            raise ConfigError(f"unknown MCMC init {self.init!r}; choose one of {INITS}")

    @classmethod
    def until_converged(cls, max_iter: int = 60_000, **kwargs) -> MCMCConfig:
        """Run until split-R-hat < 1.01 and >= 1,000 effective samples per parameter (or ``max_iter``)."""
        settings = dict(n_iter=max_iter, burn_in=0, check_every=2_000, rhat_max=1.01, min_ess=1_000.0, init="anpe")
        return cls(**{**settings, **kwargs})

    def to_dict(self) -> dict:
        return asdict(self)


# -------------------------------------------------------------------- likelihood
def photometry_chi2(model_flux, flux, flux_sigma) -> np.ndarray:
    """chi2 of model fluxes against observed ones, summed over usable bands.

    Parameters
    ----------
    model_flux : array_like, shape (n, n_band) or (n_band,)
        Model fluxes, nanomaggies.
    flux, flux_sigma : array_like, shape (n_band,) or (n, n_band)
        Observed fluxes and 1-sigma uncertainties, nanomaggies.  Bands with
        non-finite flux or non-positive / non-finite sigma are ignored.

    Returns
    -------
    ndarray, shape (n,)
    """
    model_flux = np.atleast_2d(np.asarray(model_flux, dtype=float))
    flux = np.asarray(flux, dtype=float)
    sigma = np.asarray(flux_sigma, dtype=float)
    with np.errstate(invalid="ignore"):
        use = np.isfinite(flux) & np.isfinite(sigma) & (sigma > 0)
    resid = np.where(use, (model_flux - np.where(use, flux, 0.0)) / np.where(use, sigma, 1.0), 0.0)
    return np.sum(resid**2, axis=-1)


class PhotometryLogPosterior:
    """Unnormalized log posterior of one galaxy's parameters given its fluxes.

    Parameters
    ----------
    model : ForwardModel
        Batched forward model (its prior is the box-uniform sampling prior).
    flux, flux_sigma : array_like, shape (n_band,)
        Observed fluxes and 1-sigma errors, nanomaggies.  Bands with
        non-finite values or sigma <= 0 are left out of the likelihood.
    z : float
        Redshift (fixed).
    free : sequence of int, optional
        Indices of the sampled parameters (default: all); the others are
        held at ``theta_fixed``.
    theta_fixed : array_like, shape (d,), optional
        Full parameter vector supplying the fixed parameters.
    operator : PhotometryOperator, optional
        Bands of ``flux`` (default the model's SDSS ugriz).

    Attributes
    ----------
    n_calls : int
        Calls made (one per batch of walkers).
    n_model_evals : int
        Forward-model evaluations (points inside the prior box).
    """

    def __init__(self, model, flux, flux_sigma, z: float, free=None, theta_fixed=None, operator=None):
        self.model = model
        self.prior = model.prior
        self.operator = operator
        self.flux = np.asarray(flux, dtype=float)
        self.flux_sigma = np.asarray(flux_sigma, dtype=float)
        if self.flux.ndim != 1 or self.flux.shape != self.flux_sigma.shape:
            raise ParameterError(
                f"flux and flux_sigma must be 1-d of equal length, got {self.flux.shape}, {self.flux_sigma.shape}"
            )
        with np.errstate(invalid="ignore"):
            usable = np.isfinite(self.flux) & np.isfinite(self.flux_sigma) & (self.flux_sigma > 0)
        if not usable.any():
            raise ParameterError("no band has a finite flux and a positive uncertainty")
        self.z = float(z)
        if not (np.isfinite(self.z) and 0 < self.z <= model.z_max):
            raise ParameterError(f"redshift must be in (0, {model.z_max}], got {z}")
        d = self.prior.dim
        self.free = np.arange(d) if free is None else np.asarray(free, dtype=int)
        if self.free.ndim != 1 or self.free.size == 0 or len(set(self.free.tolist())) != self.free.size:
            raise ParameterError("free must be a non-empty list of distinct parameter indices")
        if np.any((self.free < 0) | (self.free >= d)):
            raise ParameterError(f"free parameter indices must lie in 0..{d - 1}")
        if self.free.size < d:
            if theta_fixed is None:
                raise ParameterError("theta_fixed is needed when some parameters are fixed")
            self.theta_fixed = self.prior.validate(theta_fixed)[0]
        else:
            self.theta_fixed = np.zeros(d)
        self.n_calls = 0
        self.n_model_evals = 0

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the free parameters."""
        return tuple(self.prior.names[j] for j in self.free)

    @property
    def low(self) -> np.ndarray:
        return self.prior.low[self.free]

    @property
    def high(self) -> np.ndarray:
        return self.prior.high[self.free]

    def full_theta(self, theta_free) -> np.ndarray:
        """Free parameters (n, k) -> full parameter vectors (n, d)."""
        theta_free = np.atleast_2d(np.asarray(theta_free, dtype=float))
        full = np.repeat(self.theta_fixed[None, :], theta_free.shape[0], axis=0)
        full[:, self.free] = theta_free
        return full

    def __call__(self, theta_free) -> np.ndarray:
        """log posterior (n,) of free-parameter vectors (n, k); -inf outside the prior."""
        full = self.full_theta(theta_free)
        self.n_calls += 1
        out = np.full(full.shape[0], -np.inf)
        inside = np.flatnonzero(self.prior.in_support(full))
        if inside.size:
            model_flux = self.model.photometry(full[inside], np.full(inside.size, self.z), operator=self.operator)
            self.n_model_evals += inside.size
            # The prior at the galaxy's redshift: a continuity SFH prior depends on the age of the universe.
            log_prior = self.prior.log_prob(full[inside], np.full(inside.size, self.z))
            out[inside] = log_prior - 0.5 * photometry_chi2(model_flux, self.flux, self.flux_sigma)
        return out


# ------------------------------------------------------------------- diagnostics
def split_rhat(chain) -> np.ndarray:
    """Split-R-hat (Gelman et al., BDA3) of each parameter.

    Parameters
    ----------
    chain : array_like, shape (n_steps, n_chains, k)
        Post-burn-in chains (here: one per walker; ensemble walkers are not
        independent, so this is a heuristic, as it is for emcee/zeus users).

    Returns
    -------
    ndarray, shape (k,)
        ~1 when converged; > 1.1 signals chains that disagree.
    """
    chain = np.asarray(chain, dtype=float)
    if chain.ndim != 3 or chain.shape[0] < 4:
        raise ParameterError(f"chain must be (n_steps >= 4, n_chains, k), got {chain.shape}")
    half = chain.shape[0] // 2
    split = np.concatenate([chain[:half], chain[half : 2 * half]], axis=1)
    n = split.shape[0]
    within = split.var(axis=0, ddof=1).mean(axis=0)
    between_over_n = split.mean(axis=0).var(axis=0, ddof=1)
    var_hat = (n - 1) / n * within + between_over_n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.where(within > 0, var_hat / within, np.inf))


def autocorr_time(chain) -> np.ndarray:
    """Integrated autocorrelation time (iterations) per parameter, zeus' estimator.

    A parameter whose walkers never moved has no defined estimate: its time is
    infinite (the chain holds one independent sample of it, not converged).
    """
    import zeus

    chain = np.asarray(chain, dtype=float)
    if chain.ndim != 3:
        raise ParameterError(f"chain must be (n_steps, n_walkers, k), got {chain.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.asarray(zeus.AutoCorrTime(chain), dtype=float)
    return np.where(np.isfinite(tau), tau, np.inf)


def meets_convergence(chain: np.ndarray, tau: np.ndarray, rhat: np.ndarray, config: MCMCConfig) -> bool:
    """``config``'s convergence criterion for post-burn-in ``chain`` (n_steps, n_walkers, k).

    Every split-R-hat below ``rhat_max``, at least ``min_iter_per_tau``
    iterations per (largest) autocorrelation time and at least ``min_ess``
    effective samples (``n_steps x n_walkers / tau``) of every parameter.
    """
    n_steps, n_walkers = chain.shape[:2]
    return bool(np.all(rhat < config.rhat_max) and n_steps / np.max(tau) >= config.min_iter_per_tau
                and np.min(n_steps * n_walkers / tau) >= config.min_ess)


@dataclass
class MCMCResult:
    """One MCMC posterior and how it was obtained.

    Attributes
    ----------
    names : tuple of str
        Free parameters (columns of ``chain``).
    chain : ndarray, shape (n_iter - burn_in, n_walkers, k)
        Post-burn-in positions.
    log_prob : ndarray, shape (n_iter - burn_in, n_walkers)
    config : MCMCConfig
    tau : ndarray, shape (k,)
        Integrated autocorrelation times (iterations).
    rhat : ndarray, shape (k,)
        Split-R-hat.
    wall_s, cpu_s : float
        Wall-clock and process CPU time of the sampling (start search included).
    n_model_evals : int
        Forward-model evaluations (start search included).
    init_wall_s : float
        Wall time of the start search (part of ``wall_s``).
    init_evals : int
        Forward-model evaluations of the start search (part of ``n_model_evals``).
    init_cpu_s : float
        CPU time of the start search (part of ``cpu_s``).
    n_iter : int
        Iterations run per walker, burn-in included.
    """

    names: tuple
    chain: np.ndarray
    log_prob: np.ndarray
    config: MCMCConfig
    tau: np.ndarray
    rhat: np.ndarray
    wall_s: float
    cpu_s: float
    n_model_evals: int
    init_wall_s: float = 0.0
    init_evals: int = 0
    init_cpu_s: float = 0.0
    n_iter: int = 0

    @property
    def samples(self) -> np.ndarray:
        """Post-burn-in samples of all walkers, shape (n, k)."""
        return self.chain.reshape(-1, self.chain.shape[-1])

    @property
    def iter_per_tau(self) -> float:
        """Post-burn-in iterations per (largest) autocorrelation time."""
        return float(self.chain.shape[0] / np.max(self.tau))

    @property
    def converged(self) -> bool:
        return meets_convergence(self.chain, self.tau, self.rhat, self.config)

    @property
    def ess(self) -> np.ndarray:
        """Effective sample size per parameter, ``n_samples / tau``."""
        return self.samples.shape[0] / self.tau

    @property
    def evals_per_s(self) -> float:
        """Forward-model evaluations per wall second while sampling (start search excluded)."""
        wall = self.wall_s - self.init_wall_s
        return (self.n_model_evals - self.init_evals) / wall if wall > 0 else float("nan")

    @property
    def evals_per_cpu_s(self) -> float:
        """Forward-model evaluations per CPU second while sampling (robust to other load on the machine)."""
        cpu = self.cpu_s - self.init_cpu_s
        return (self.n_model_evals - self.init_evals) / cpu if cpu > 0 else float("nan")

    def independent_samples(self) -> np.ndarray:
        """Post-burn-in samples thinned by the largest autocorrelation time (n, k); one per walker at least."""
        step = max(1, int(np.ceil(min(np.max(self.tau), self.chain.shape[0]))))
        return self.chain[::step].reshape(-1, self.chain.shape[-1])

    def extrapolated_wall_s(self, n_iter: int = SEDFLOW_ITERATIONS, n_walkers: int = SEDFLOW_WALKERS) -> float:
        """Wall time of a run of ``n_iter`` iterations x ``n_walkers`` at this run's cost per walker-step."""
        steps = self.n_iter * self.config.n_walkers
        return (self.wall_s - self.init_wall_s) / steps * n_iter * n_walkers + self.init_wall_s

    def summary(self) -> dict:
        """Scalar diagnostics (JSON/Parquet friendly)."""
        return {
            "sampler": self.config.sampler,
            "n_walkers": self.config.n_walkers,
            "n_iter": self.n_iter,
            "burn_in": self.n_iter - self.chain.shape[0],
            "max_tau": float(np.max(self.tau)),
            "iter_per_tau": self.iter_per_tau,
            "max_rhat": float(np.max(self.rhat)),
            "min_ess": float(np.min(self.ess)),
            "converged": self.converged,
            "mcmc_wall_s": self.wall_s,
            "mcmc_cpu_s": self.cpu_s,
            "mcmc_init_wall_s": self.init_wall_s,
            "n_model_evals": int(self.n_model_evals),
            "mcmc_init_evals": int(self.init_evals),
            "evals_per_s": self.evals_per_s,
            "evals_per_cpu_s": self.evals_per_cpu_s,
            "extrapolated_sedflow_wall_s": self.extrapolated_wall_s(),
        }


def initial_walkers(logpost: PhotometryLogPosterior, n_walkers: int, n_init: int, rng: np.random.Generator) -> np.ndarray:
    """Start positions: the ``n_walkers`` best of ``n_init`` uniform prior draws.

    Raises
    ------
    ParameterError
        If fewer than ``n_walkers`` draws have a finite log posterior.
    """
    low, high = logpost.low, logpost.high
    draws = low + (high - low) * rng.random((n_init, low.size))
    logp = logpost(draws)
    finite = np.flatnonzero(np.isfinite(logp))
    if finite.size < n_walkers:
        raise ParameterError(f"only {finite.size} of {n_init} prior draws have a finite posterior density")
    best = finite[np.argsort(logp[finite])[::-1][:n_walkers]]
    return draws[best]


class _Ensemble:
    """A zeus or emcee ensemble sampler that can be run on in chunks."""

    def __init__(self, logpost, start: np.ndarray, config: MCMCConfig):
        if config.sampler == "zeus":
            import zeus

            self.sampler = zeus.EnsembleSampler(config.n_walkers, start.shape[1], logpost, vectorize=True,
                                                verbose=False)
        else:
            try:
                import emcee
            except ImportError:
                raise ConfigError("sampler 'emcee' needs the emcee package (pip install emcee)") from None
            self.sampler = emcee.EnsembleSampler(config.n_walkers, start.shape[1], logpost, vectorize=True)
            self.sampler.random_state = np.random.RandomState(config.seed).get_state()
        self.start: np.ndarray | None = start
        self.zeus = config.sampler == "zeus"
        self.n_iter = 0

    def run(self, n: int) -> None:
        """``n`` more iterations (from the start positions the first time)."""
        # emcee refuses starts whose spread is nearly degenerate in some direction: samples of a posterior that
        # is narrow in one parameter combination are such a start, and a legitimate one.
        extra = {} if self.zeus else {"skip_initial_state_check": True}
        self.sampler.run_mcmc(self.start, n, progress=False, **extra)
        self.start = None
        self.n_iter += n

    def chain(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.sampler.get_chain()), np.asarray(self.sampler.get_log_prob())


def run_mcmc(logpost: PhotometryLogPosterior, config: MCMCConfig | None = None,
             start: np.ndarray | None = None) -> MCMCResult:
    """Sample one galaxy's posterior with an ensemble sampler.

    Parameters
    ----------
    logpost : PhotometryLogPosterior
    config : MCMCConfig, optional
        Default: SEDflow's setup (:class:`MCMCConfig`()).  With
        ``check_every`` it runs until converged (or ``n_iter``).
    start : ndarray, shape (n_walkers, k), optional
        Walker start positions with finite log posterior; default the best
        of ``config.n_init`` prior draws.

    Returns
    -------
    MCMCResult
        Times count the start search and the sampling, in this process.
    """
    config = config or MCMCConfig()
    k = logpost.free.size
    if config.n_walkers < 2 * k:
        raise ConfigError(f"{config.n_walkers} walkers are too few for {k} parameters (need >= {2 * k})")
    evals0 = logpost.n_model_evals
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if start is None:
        start = initial_walkers(logpost, config.n_walkers, config.n_init, np.random.default_rng(config.seed))
    elif np.shape(start) != (config.n_walkers, k) or not np.isfinite(logpost(np.asarray(start))).all():
        raise ParameterError(f"start must be ({config.n_walkers}, {k}) positions with a finite log posterior")
    init_wall, init_evals = time.perf_counter() - wall0, logpost.n_model_evals - evals0
    init_cpu = time.process_time() - cpu0
    # zeus draws from numpy's global generator: seed it for reproducibility and
    # give the caller's state back afterwards.
    state = np.random.get_state()
    np.random.seed(config.seed)
    ensemble = _Ensemble(logpost, np.asarray(start, dtype=float), config)
    try:
        if not config.check_every:
            ensemble.run(config.n_iter)
            chain, log_prob = (c[config.burn_in :] for c in ensemble.chain())
            tau, rhat = autocorr_time(chain), split_rhat(chain)
        else:
            while True:
                ensemble.run(min(config.check_every, config.n_iter - ensemble.n_iter))
                chain, log_prob = ensemble.chain()
                half = chain.shape[0] // 2  # the first half is burn-in
                chain, log_prob = chain[half:], log_prob[half:]
                tau, rhat = autocorr_time(chain), split_rhat(chain)
                if meets_convergence(chain, tau, rhat, config) or ensemble.n_iter >= config.n_iter:
                    break
    finally:
        np.random.set_state(state)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return MCMCResult(
        names=logpost.names,
        chain=chain,
        log_prob=log_prob,
        config=config,
        tau=tau,
        rhat=rhat,
        wall_s=wall,
        cpu_s=cpu,
        n_model_evals=logpost.n_model_evals - evals0,
        init_wall_s=init_wall,
        init_evals=init_evals,
        init_cpu_s=init_cpu,
        n_iter=ensemble.n_iter,
    )


def walkers_from_samples(logpost: PhotometryLogPosterior, samples: np.ndarray, n_walkers: int,
                         rng: np.random.Generator) -> np.ndarray | None:
    """``n_walkers`` distinct samples (e.g. of the amortized posterior) with a finite log posterior, or None."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples).all(axis=1)]
    if samples.shape[0] < n_walkers:
        return None
    pick = samples[rng.choice(samples.shape[0], size=min(samples.shape[0], 4 * n_walkers), replace=False)]
    pick = pick[np.isfinite(logpost(pick))]
    return pick[:n_walkers] if pick.shape[0] >= n_walkers else None


# ------------------------------------------------------------------- comparison
def marginal_sigma(samples) -> np.ndarray:
    """Half the 16-84 percentile range per column (= sigma for a Gaussian)."""
    lo, hi = np.percentile(np.asarray(samples, dtype=float), [16.0, 84.0], axis=0)
    return 0.5 * (hi - lo)


def compare_marginals(reference, other, names) -> pd.DataFrame:
    """Marginal agreement of a posterior (``other``, e.g. ANPE) with a reference (MCMC).

    Parameters
    ----------
    reference : array_like, shape (n1, k)
        Reference samples, ideally independent (thinned by the
        autocorrelation time: the KS p-value assumes independent draws).
    other : array_like, shape (n2, k)
    names : sequence of str, length k

    Returns
    -------
    pandas.DataFrame
        One row per parameter: ``median_ref``, ``median_other``,
        ``sigma_ref``, ``sigma_other`` (16-84 half widths),
        ``delta_median_sigma`` ((median_other - median_ref) / sigma_ref),
        ``width_ratio`` (sigma_other / sigma_ref), ``ks_stat`` and ``ks_p``
        (two-sample Kolmogorov-Smirnov).
    """
    ref = np.asarray(reference, dtype=float)
    oth = np.asarray(other, dtype=float)
    names = list(names)
    if ref.ndim != 2 or oth.ndim != 2 or ref.shape[1] != len(names) or oth.shape[1] != len(names):
        raise ParameterError(f"samples must be (n, {len(names)}), got {ref.shape} and {oth.shape}")
    oth = oth[np.all(np.isfinite(oth), axis=1)]
    if ref.shape[0] < 2 or oth.shape[0] < 2:
        raise ParameterError("need at least two finite samples of each posterior")
    med_r, med_o = np.median(ref, axis=0), np.median(oth, axis=0)
    sig_r, sig_o = marginal_sigma(ref), marginal_sigma(oth)
    rows = []
    for j, name in enumerate(names):
        ks = stats.ks_2samp(ref[:, j], oth[:, j])
        with np.errstate(divide="ignore", invalid="ignore"):
            rows.append(
                dict(
                    parameter=name,
                    median_ref=med_r[j],
                    median_other=med_o[j],
                    sigma_ref=sig_r[j],
                    sigma_other=sig_o[j],
                    delta_median_sigma=(med_o[j] - med_r[j]) / sig_r[j],
                    width_ratio=sig_o[j] / sig_r[j],
                    ks_stat=float(ks.statistic),
                    ks_p=float(ks.pvalue),
                )
            )
    return pd.DataFrame(rows)


def grid_log_posterior(logpost: PhotometryLogPosterior, axes) -> np.ndarray:
    """The log posterior on the full grid spanned by one axis per free parameter.

    Parameters
    ----------
    logpost : PhotometryLogPosterior
    axes : sequence of 1-d arrays
        Grid values of each free parameter, in ``logpost.free`` order.

    Returns
    -------
    ndarray, shape (len(axes[0]), len(axes[1]), ...)
    """
    axes = [np.asarray(a, dtype=float) for a in axes]
    if len(axes) != logpost.free.size:
        raise ParameterError(f"need one axis per free parameter ({logpost.free.size}), got {len(axes)}")
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.column_stack([m.ravel() for m in mesh])
    return logpost(points).reshape(mesh[0].shape)


def grid_moments(axes, log_post) -> tuple[np.ndarray, np.ndarray]:
    """Marginal means and standard deviations from a gridded log posterior.

    Uses a uniform-weight quadrature: the grid must be regular along each
    axis and cover the posterior mass.
    """
    axes = [np.asarray(a, dtype=float) for a in axes]
    log_post = np.asarray(log_post, dtype=float)
    w = np.exp(log_post - np.max(log_post))
    w /= w.sum()
    means, sds = [], []
    for j, a in enumerate(axes):
        marginal = w.sum(axis=tuple(i for i in range(len(axes)) if i != j))
        mean = np.sum(marginal * a)
        means.append(mean)
        sds.append(np.sqrt(np.sum(marginal * (a - mean) ** 2)))
    return np.array(means), np.array(sds)
