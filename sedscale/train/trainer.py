"""Single-node training of the amortized posterior q(theta | x).

:func:`train` streams the Parquet training set (:mod:`sedscale.train.data`)
through an sbi flow wrapped in :class:`~sedscale.train.flows.ConditionalFlow`
with its own loop (Adam, gradient clipping, early stopping on the
validation log-prob), so that training sets larger than memory work.

Output directory::

    out/
      posterior.pt / posterior.json    # best validated state + metadata
      loss.png                          # train / validation curves
      train_state.pt / train_state.json # last epoch: weights, optimizer, best
                                        # state and history, for --resume

The training state is rewritten atomically after every epoch, so an
interrupted run continues with ``resume=True`` from its last finished epoch
and reaches the same result as an uninterrupted one.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..models.priors import marginals_from_list, marginals_to_list
from ..observe.spectral_noise import SpectralNoiseModel
from .checkpoint import (
    CheckpointError,
    check_compatible,
    checkpoint_paths,
    library_versions,
    load_checkpoint,
    read_json,
    read_weights,
    save_checkpoint,
    write_json,
    write_weights,
)
from .config import PRESETS, TrainConfig
from .data import (
    SpectralSource,
    Split,
    SplitCounts,
    TrainingSet,
    compute_normalization,
    open_training_set,
    read_chunks,
    shuffled_batches,
)
from .flows import ConditionalFlow, Normalization, build_flow
from .plot import plot_history

CHECKPOINT_NAME = "posterior.pt"
STATE_NAME = "train_state.pt"
LOSS_PLOT = "loss.png"
STATE_FORMAT = "sedscale.train_state"
#: Options that may change when a run is resumed (they only decide when to stop).
RESUMABLE_CHANGES = ("max_epochs", "max_time", "patience", "min_lr_factor")
#: Rows per forward pass when evaluating the validation log-prob.
EVAL_ROWS = 8192
#: The loss plot is redrawn after an epoch at most this often (s), and at the end.
PLOT_INTERVAL_S = 30.0


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    checkpoint : Path
        The written ``posterior.pt``.
    history : list of dict
        Per epoch: ``epoch``, ``train_log_prob``, ``val_log_prob`` (mean
        nats per simulation), ``seconds``, ``rows``, ``lr``.
    best_epoch : int
    best_val_log_prob, prior_log_prob : float
        Mean validation log q(theta|x) of the kept state, and the prior's
        log density for comparison.
    stop_reason : str
        ``patience``, ``max_epochs``, ``max_time`` or ``lr_floor``.
    wall_s : float
        Training wall time including earlier runs of a resumed training.
    counts : SplitCounts
    """

    checkpoint: Path
    history: list
    best_epoch: int
    best_val_log_prob: float
    prior_log_prob: float
    stop_reason: str
    wall_s: float
    counts: SplitCounts


@torch.no_grad()
def mean_log_prob(flow: ConditionalFlow, ts: TrainingSet, split: Split, rows: int = EVAL_ROWS) -> float:
    """Mean log q(theta | x) over the valid rows of ``split`` (nats)."""
    flow.eval()
    total, n = 0.0, 0
    for theta, x, _ in read_chunks(ts, split):
        for s in range(0, theta.shape[0], rows):
            lp = flow.log_prob(torch.from_numpy(theta[s : s + rows]), torch.from_numpy(x[s : s + rows]))
            total += float(lp.double().sum())
            n += lp.shape[0]
    return total / n


def _check_resumable(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The saved config with the stopping options of ``given``; error if anything else differs."""
    a, b = saved.to_dict(), given.to_dict()
    differ = sorted(k for k in a if k not in RESUMABLE_CHANGES + ("preset",) and a[k] != b[k])
    if differ:
        raise ConfigError(
            "cannot resume with different training options: "
            + "; ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in differ)
            + f" (only {', '.join(RESUMABLE_CHANGES)} may change)"
        )
    return replace(saved, **{k: getattr(given, k) for k in RESUMABLE_CHANGES})


def read_train_state(out: Path) -> tuple[dict, dict]:
    """``(tensors, state)`` of the last finished epoch in ``out``.

    Raises
    ------
    CheckpointError
        No or unreadable training state.
    """
    weights, sidecar = checkpoint_paths(out / STATE_NAME)
    if not sidecar.exists():
        raise CheckpointError(f"{out}: no interrupted training to resume ({sidecar.name} not found)")
    state = read_json(sidecar)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{sidecar}: not a sedscale training state")
    return read_weights(weights, state["weights"]), state


def _check_output(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    if resume:
        return
    if (out / STATE_NAME).with_suffix(".json").exists() and not overwrite:
        raise ConfigError(
            f"{out} holds an earlier training run; continue it with --resume, "
            "or pass --overwrite / choose another --out"
        )
    if checkpoint_paths(out / CHECKPOINT_NAME)[1].exists() and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint; pass --overwrite or choose another --out")


def _format_epoch(row: dict, best_epoch: int, best: float) -> str:
    mark = "*" if row["epoch"] == best_epoch else " "
    return (
        f"epoch {row['epoch']:4d}  train {row['train_log_prob']:9.4f}  val {row['val_log_prob']:9.4f}{mark}"
        f"  best {best:9.4f} @{best_epoch}  lr {row['lr']:.2g}  {row['seconds']:6.1f} s  {row['rows']} rows"
    )


def checkpoint_metadata(
    ts: TrainingSet,
    config: TrainConfig,
    norm: Normalization,
    counts: SplitCounts,
    history: list,
    summary: dict,
    marginals=None,
) -> dict:
    """The sidecar of a posterior checkpoint (see :mod:`sedscale.train.checkpoint`).

    ``marginals``: the trained flow's parameter map (``prior_probit``), recorded as
    ``theta_marginals``.
    """
    training = {k: v for k, v in config.to_dict().items() if k != "flow"}
    training.update(
        n_train=counts.n_train,
        n_val=counts.n_val,
        n_invalid=counts.n_invalid,
        threads=torch.get_num_threads(),
        **summary,
    )
    return {
        "model": {"name": ts.model_name, "options": ts.metadata.get("model_options") or {}},
        "prior": ts.prior.to_dict(),
        "param_names": list(ts.param_names),
        "theta_transform": config.flow.theta_transform,
        **_theta_marginals(marginals),
        "x_columns": list(ts.x_columns),
        "x_units": ts.x_units,
        "observable": ts.observable,
        **_source_metadata(ts),
        "normalization": norm.to_dict(),
        "flow": config.flow.to_dict(),
        "training": training,
        "history": history,
        "training_set": ts.describe(),
        "versions": library_versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class _Run:
    """Mutable state of a training run (what the epoch checkpoint holds)."""

    config: TrainConfig
    norm: Normalization
    counts: SplitCounts
    flow: ConditionalFlow
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    best_state: dict
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = -np.inf
    bad_epochs: int = 0
    elapsed_before: float = 0.0
    initialized_from: dict | None = None

    def record(self, row: dict) -> None:
        """Append an epoch's row; keep the best state; step the lr schedule."""
        self.history.append(row)
        val = row["val_log_prob"]
        if np.isfinite(val) and val > self.best_val:
            self.best_val, self.best_epoch, self.bad_epochs = val, row["epoch"], 0
            self.best_state = copy.deepcopy(self.flow.state_dict())
        else:
            self.bad_epochs += 1
        if self.scheduler is not None and np.isfinite(val):
            self.scheduler.step(val)

    def tensors(self) -> dict:
        out = {"flow": self.flow.state_dict(), "optimizer": self.optimizer.state_dict(), "best": self.best_state}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        return out


def _fresh_run(ts: TrainingSet, config: TrainConfig, norm: Normalization, counts: SplitCounts,
               marginals=None) -> _Run:
    """Seeded flow, optimizer and lr schedule (``marginals``: the ``prior_probit`` map, new or a resumed run's)."""
    torch.manual_seed(config.seed)
    flow = build_flow(config.flow, ts.prior, norm, marginals)
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.learning_rate)
    scheduler = None
    if config.lr_patience is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience
        )
    return _Run(config, norm, counts, flow, optimizer, scheduler, best_state=copy.deepcopy(flow.state_dict()))


def _new_run(ts: TrainingSet, config: TrainConfig) -> _Run:
    norm, counts, marginals = compute_normalization(ts, config.val_fraction, config.seed,
                                                    config.flow.theta_transform)
    return _fresh_run(ts, config, norm, counts, marginals)


def _resume_run(out: Path, ts: TrainingSet, config: TrainConfig | None) -> _Run:
    """The run saved in ``out`` after its last finished epoch."""
    tensors, state = read_train_state(out)
    saved = TrainConfig.from_dict(state["config"])
    config = saved if config is None else _check_resumable(saved, config)
    ts = ts.with_noise(config.spectral_noise, config.photometric_noise).with_redshift(config.redshift)
    if state["training_set"]["manifest_sha256"] != ts.manifest_sha256 or state["x_columns"] != list(ts.x_columns):
        raise CheckpointError(
            f"{out}: the interrupted run trained on other data ({state['training_set']['path']}, "
            f"x {state['x_columns']}); resume with the same --sims"
        )
    marginals = None
    if config.flow.theta_transform == "prior_probit":
        # The weights and normalization were fitted under the map of the code that started the run.
        if "theta_marginals" not in state:
            raise CheckpointError(f"{out}: this interrupted prior_probit run does not record its parameter map "
                                  "(theta_marginals: written before maps were recorded); start it again without --resume")
        marginals = marginals_from_list(state["theta_marginals"])
    run = _fresh_run(ts, config, Normalization.from_dict(state["normalization"]), SplitCounts(**state["counts"]),
                     marginals)
    run.flow.load_state_dict(tensors["flow"])
    run.optimizer.load_state_dict(tensors["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(tensors["scheduler"])
    run.best_state = tensors["best"]
    run.history = state["history"]
    run.best_epoch, run.best_val, run.bad_epochs = state["best_epoch"], state["best_val_log_prob"], state["bad_epochs"]
    run.elapsed_before = state["wall_s"]
    run.initialized_from = state.get("initialized_from")
    return run


def _warm_start(run: _Run, ts: TrainingSet, path) -> None:
    """Start ``run`` from the network weights of the checkpoint at ``path`` (fine-tuning).

    Only the density estimator's weights are taken: the prior box and the
    normalization stay those of the new training set, so the checkpoint may
    come from a neighbouring prior (e.g. a wider box) with the same
    parameters, observations and architecture.
    """
    state, meta = load_checkpoint(path)
    check_compatible(meta, str(path), model=ts.model_name, x_columns=ts.x_columns, param_names=ts.param_names)
    if meta["flow"] != run.config.flow.to_dict():
        differ = sorted(k for k in meta["flow"] if meta["flow"][k] != run.config.flow.to_dict().get(k))
        raise CheckpointError(
            f"{path}: cannot start from this checkpoint, its flow differs in {', '.join(differ)}; "
            "give the same architecture options"
        )
    prefix = "estimator."
    run.flow.estimator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    run.best_state = copy.deepcopy(run.flow.state_dict())
    run.initialized_from = {
        "path": str(path),
        "created_utc": meta.get("created_utc"),
        "best_val_log_prob": meta.get("training", {}).get("best_val_log_prob"),
        # Its training time: the fine-tuned flow's total cost is this plus its own wall_s.
        "wall_s": meta.get("training", {}).get("wall_s"),
        "prior": meta["prior"],
    }


def prior_reference_log_prob(ts: TrainingSet, rows: int = 20_000) -> float:
    """Mean log prior density of the training parameters: the log-prob a flow that learnt nothing reaches.

    Box-uniform priors: minus the log volume of the box.  Other priors
    (:class:`~sedscale.models.physical_prior.PhysicalPrior`): the mean over
    the first ``rows`` rows of the first file (z-dependent densities read ``z``).
    """
    if getattr(ts.prior, "is_uniform", True):
        return float(-np.sum(np.log(ts.prior.high - ts.prior.low)))
    import pyarrow.parquet as pq

    table = pq.read_table(ts.files[0], columns=list(dict.fromkeys([*ts.param_names, "z"]))).slice(0, rows)
    theta = np.column_stack([table.column(c).to_numpy() for c in ts.param_names]).astype(np.float64)
    lp = ts.prior.log_prob(theta, table.column("z").to_numpy().astype(np.float64))
    return float(np.mean(lp[np.isfinite(lp)]))


def _theta_marginals(marginals) -> dict:
    """``theta_marginals`` of a ``prior_probit`` flow (its ``ConditionalFlow.marginals``; none for
    the other maps): the map is read back from the sidecar, not re-derived from the prior code, so a
    later change of ``Prior.marginals`` cannot re-map it."""
    return {} if marginals is None else {"theta_marginals": marginals_to_list(marginals)}


def _source_metadata(ts: TrainingSet) -> dict:
    """Sidecar entries of the noise drawn at training time (none when the noise is in the data)."""
    if ts.source is None:
        return {}
    if ts.observable == "spectrum":
        assert isinstance(ts.source, SpectralSource)  # open_training_set gives spectra a SpectralSource
        sigma_star = ts.metadata.get("sigma_star_kms")
        return {"spectral_noise": ts.source.noise.to_dict(), "wavelength": ts.source.wave.tolist(),
                **({"sigma_star_kms": sigma_star} if sigma_star else {})}
    redshift = ts.redshift_input
    return {"photometric_noise": ts.source.noise.to_dict(),
            **({} if redshift is None else {"redshift_input": redshift.to_dict()})}


def _describe_noise(noise) -> str:
    return noise.describe() if isinstance(noise, SpectralNoiseModel) else f"{noise.kind} noise"


def _augment(ts: TrainingSet, config: TrainConfig) -> int:
    """Passes per epoch: ``config.augment`` for spectra (fresh noise each), 1 for photometry."""
    return config.augment if ts.source is not None else 1


def default_preset(ts: TrainingSet) -> str:
    """The preset used when none is given: ``spectra`` for spectral sets, else ``default``."""
    return "spectra" if ts.observable == "spectrum" else "default"


def _run_epoch(run: _Run, ts: TrainingSet, epoch: int, deadline: float | None, progress: bool):
    """One pass over the training rows, then validation; ``(history row, out_of_time)``."""
    from tqdm.auto import tqdm

    config, flow, optimizer = run.config, run.flow, run.optimizer
    t0 = time.perf_counter()
    flow.train()
    rng = np.random.default_rng([config.seed, epoch])
    total, rows, skipped, out_of_time = 0.0, 0, 0, False
    split = Split("train", config.val_fraction, config.seed)
    with tqdm(total=run.counts.n_train * _augment(ts, config), unit="sim", desc=f"epoch {epoch}", leave=False,
              disable=not progress) as bar:
        for theta, x in shuffled_batches(ts, split, config.batch_size, config.shuffle_buffer, rng, _augment(ts, config)):
            lp = flow.log_prob(torch.from_numpy(theta), torch.from_numpy(x))
            loss = -lp.mean()
            if not torch.isfinite(loss):
                # One bad batch should not poison Adam's moments: skip it and count.
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(flow.parameters(), config.clip_grad_norm)
            optimizer.step()
            total += float(lp.detach().double().sum())
            rows += theta.shape[0]
            bar.update(theta.shape[0])
            if deadline is not None and time.perf_counter() > deadline:
                out_of_time = True
                break
    row = {
        "epoch": epoch,
        "train_log_prob": total / max(rows, 1),
        "val_log_prob": mean_log_prob(flow, ts, Split("val", config.val_fraction, config.seed)),
        "seconds": round(time.perf_counter() - t0, 3),
        "rows": rows,
        "lr": optimizer.param_groups[0]["lr"],
    }
    if skipped:
        row["skipped_batches"] = skipped
    return row, out_of_time


def _write_state(out: Path, run: _Run, ts: TrainingSet, elapsed: float) -> None:
    """The epoch checkpoint for ``resume`` (weights first, then the JSON that names them)."""
    record = write_weights(out / STATE_NAME, run.tensors())
    write_json(
        checkpoint_paths(out / STATE_NAME)[1],
        {
            "format": STATE_FORMAT,
            "config": run.config.to_dict(),
            "training_set": ts.describe(),
            "x_columns": list(ts.x_columns),
            "normalization": run.norm.to_dict(),
            **_theta_marginals(run.flow.marginals),
            "counts": vars(run.counts),
            "history": run.history,
            "best_epoch": run.best_epoch,
            "best_val_log_prob": run.best_val,
            "bad_epochs": run.bad_epochs,
            "wall_s": elapsed,
            "initialized_from": run.initialized_from,
            "weights": record,
        },
    )


def train(
    sims,
    out,
    config: TrainConfig | None = None,
    *,
    x_columns=None,
    resume: bool = False,
    init_from=None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Fit q(theta | x) to a simulated training set and write a checkpoint.

    The training set is verified first: a finished simulation whose partition
    files all exist with the size, rows and sha256 its manifest records.

    Parameters
    ----------
    sims : str or Path
        Output directory of ``bin/run_simulate``.
    out : str or Path
        Checkpoint directory (created).
    config : TrainConfig, optional
        Defaults to the ``default`` preset (``spectra`` for a spectral
        training set); when resuming, to the saved one.
    x_columns : sequence of str, optional
        Observation columns (default: those recorded in the training set).
    resume : bool
        Continue the interrupted run in ``out`` from its last finished epoch.
        Only ``max_epochs``, ``max_time`` and ``patience`` may differ.
    init_from : str or Path, optional
        A checkpoint of the same model, parameters, observation columns and
        flow architecture whose network weights start the run (fine-tuning
        on a new training set, e.g. a wider prior box); recorded in the
        sidecar as ``training.initialized_from``.
    overwrite : bool
        Replace an earlier run or checkpoint in ``out``.
    progress : bool
        Show a tqdm bar per epoch (on stderr).
    log : callable
        Receives the per-epoch lines and the summary.

    Returns
    -------
    TrainResult

    Raises
    ------
    SedscaleError
        Unusable (unfinished, missing or damaged) training set, bad options, or a resume that does not fit.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_output(out, resume, overwrite)
    ts = open_training_set(sims, x_columns, checksums=True)
    if resume and init_from is not None:
        raise ConfigError("a resumed run continues from its own weights; drop init_from (--init-from)")
    if resume:
        run = _resume_run(out, ts, config)
    else:
        config = config or PRESETS[default_preset(ts)]
        # The normalization statistics are computed from x made with the run's spectral noise.
        run = _new_run(ts.with_noise(config.spectral_noise, config.photometric_noise).with_redshift(config.redshift),
                       config)
        if init_from is not None:
            _warm_start(run, ts, init_from)
    config = run.config
    ts = ts.with_noise(config.spectral_noise, config.photometric_noise).with_redshift(config.redshift)
    prior_lp = prior_reference_log_prob(ts)
    log(
        f"training set {ts.path}: {ts.n_rows} rows, model {ts.model_name}; {run.counts.n_train} train, "
        f"{run.counts.n_val} validation, {run.counts.n_invalid} invalid rows skipped"
        + (
            ""
            if ts.source is None
            else f"; {ts.observable} with {_describe_noise(ts.source.noise)}, {_augment(ts, config)} noise draws per epoch"
        )
    )
    log(
        f"flow {config.flow.kind} ({config.flow.num_transforms} transforms x {config.flow.num_blocks} x "
        f"{config.flow.hidden_features}, theta {config.flow.theta_transform}"
        f"{'' if config.flow.embedding is None else ', ' + config.flow.embedding + ' embedding'}), "
        f"{sum(p.numel() for p in run.flow.parameters())} weights; preset {config.preset}, "
        f"batch {config.batch_size}, lr {config.learning_rate}; prior log-prob {prior_lp:.4f}"
        + (f"; resuming after epoch {len(run.history)}" if run.history else "")
        + (f"; weights from {run.initialized_from['path']}" if run.initialized_from else "")
    )
    deadline = None if config.max_time is None else started + config.max_time - run.elapsed_before
    plot_title = f"{ts.model_name}: {config.flow.kind} ({config.preset})"
    last_plot = time.perf_counter()
    stop_reason = "max_epochs"
    while len(run.history) < config.max_epochs and run.bad_epochs < config.patience:
        row, out_of_time = _run_epoch(run, ts, len(run.history) + 1, deadline, progress)
        run.record(row)
        log(_format_epoch(row, run.best_epoch, run.best_val))
        _write_state(out, run, ts, elapsed=run.elapsed_before + time.perf_counter() - started)
        if time.perf_counter() - last_plot > PLOT_INTERVAL_S:
            plot_history(run.history, out / LOSS_PLOT, prior_lp, title=plot_title)
            last_plot = time.perf_counter()
        if out_of_time:
            stop_reason = "max_time"
            break
        if run.optimizer.param_groups[0]["lr"] < config.learning_rate * config.min_lr_factor:
            stop_reason = "lr_floor"
            break
    else:
        stop_reason = "patience" if run.bad_epochs >= config.patience else "max_epochs"
    if run.best_epoch == 0:
        raise ConfigError("training produced no finite validation log-prob; lower the learning rate")
    wall = run.elapsed_before + time.perf_counter() - started
    summary = {
        "epochs": len(run.history),
        "best_epoch": run.best_epoch,
        "best_val_log_prob": run.best_val,
        "prior_log_prob": prior_lp,
        "stop_reason": stop_reason,
        "wall_s": round(wall, 1),
        **({"initialized_from": run.initialized_from} if run.initialized_from else {}),
    }
    meta = checkpoint_metadata(ts, config, run.norm, run.counts, run.history, summary, run.flow.marginals)
    path = save_checkpoint(out / CHECKPOINT_NAME, run.best_state, meta)
    plot_history(run.history, out / LOSS_PLOT, prior_lp, title=plot_title)
    log(
        f"stopped ({stop_reason}) after {len(run.history)} epochs, {wall:.0f} s; best validation log-prob "
        f"{run.best_val:.4f} at epoch {run.best_epoch} (prior {prior_lp:.4f}); wrote {path}"
    )
    return TrainResult(path, run.history, run.best_epoch, run.best_val, prior_lp, stop_reason, wall, run.counts)
