"""Training of the amortized posterior (sedscale.train, bin/run_train) and the Posterior API.

One small training set (dirichlet model, shipped NSA noise model) is simulated
with sedscale.simulate, and one small flow is trained on it for the module.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from sedscale.cli.train import main as run_train
from sedscale.infer import Posterior
from sedscale.models import get_model
from sedscale.observe.layout import PHOTOMETRY_X_COLUMNS, SPECTRUM_X_COLUMNS, X_UNITS
from sedscale.simulate import SimulationConfig, read_manifest, read_simulation, run_simulation
from sedscale.train import (
    CheckpointError,
    FlowConfig,
    TrainConfig,
    TrainingSetError,
    build_flow,
    open_training_set,
    resolve_config,
    train,
)
from sedscale.train.data import Split, manifest_digest, read_chunks, shuffled_batches, validation_mask
from sedscale.train.flows import Normalization

N_SIMS = 5000
#: Small but able to learn log M* well in a few epochs on ~4500 rows.
TINY = resolve_config(
    "default",
    flow={"num_transforms": 4, "hidden_features": 64},
    batch_size=128,
    learning_rate=2e-3,
    max_epochs=5,
    patience=3,
    seed=1,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    out = tmp_path_factory.mktemp("sims") / "dirichlet"
    run_simulation(SimulationConfig(model="dirichlet", n=N_SIMS, out=out, seed=7, partition_size=2000))
    return out


@pytest.fixture(scope="module")
def trained(sims, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "dirichlet"
    lines = []
    result = train(sims, out, TINY, progress=False, log=lines.append)
    return result, out, lines


@pytest.fixture(scope="module")
def held_out(sims):
    """The validation rows of the split (never used for gradient steps)."""
    table = read_simulation(sims).to_pandas()
    mask = validation_mask(np.arange(len(table)), TINY.val_fraction, TINY.seed)
    return table[mask].reset_index(drop=True)


def test_training_learns(trained, held_out):
    result, out, lines = trained
    assert result.best_val_log_prob > result.prior_log_prob + 2.0
    assert result.stop_reason in ("patience", "max_epochs")
    assert len(result.history) >= 2 and any(line.startswith("epoch") for line in lines)
    post = Posterior.load(out)
    x = post.x_from_table(held_out)
    samples = post.sample(x, 200, seed=0)
    assert samples.shape == (len(held_out), 200, len(post.param_names))
    mean_mass = samples[:, :, post.param_names.index("log_mass")].mean(axis=1)
    assert np.corrcoef(mean_mass, held_out["log_mass"])[0, 1] > 0.9


def test_output_files(trained):
    _, out, _ = trained
    for name in ("posterior.pt", "posterior.json", "train_state.pt", "train_state.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


def test_metadata_round_trip(trained, sims, held_out):
    result, out, _ = trained
    model = get_model("dirichlet")
    post = Posterior.load(out, model="dirichlet", x_columns=PHOTOMETRY_X_COLUMNS, param_names=model.param_names)
    meta = post.metadata
    assert post.model_name == "dirichlet"
    assert post.param_names == model.param_names
    assert meta["prior"] == model.prior.to_dict()
    assert post.x_columns == PHOTOMETRY_X_COLUMNS
    assert post.x_units == {c: X_UNITS[c] for c in PHOTOMETRY_X_COLUMNS}
    assert TrainConfig.from_dict(_config_of(meta)) == TINY
    manifest = read_manifest(sims)
    assert meta["training_set"]["manifest_sha256"] == manifest_digest(manifest)
    # The digest names the data, not the run: a re-simulation (other timings, same files) keeps it.
    rerun = json.loads(json.dumps(manifest))
    for entry in rerun["partitions"].values():
        entry["seconds"], entry["cpu_seconds"] = entry["seconds"] + 1.0, 0.0
    assert manifest_digest(rerun) == manifest_digest(manifest)
    rerun["partitions"]["0"]["sha256"] = "0" * 64
    assert manifest_digest(rerun) != manifest_digest(manifest)
    assert meta["training_set"]["n_rows"] == N_SIMS
    assert meta["history"] == result.history
    assert {"sedscale", "torch", "sbi"} <= set(meta["versions"])
    norm = Normalization.from_dict(meta["normalization"])
    np.testing.assert_allclose(post.flow.x_mean.numpy(), norm.x_mean, rtol=1e-6)
    np.testing.assert_allclose(post.flow.theta_std.numpy(), norm.theta_std, rtol=1e-6)
    # The reloaded weights reproduce the validation log-prob recorded at training time.
    theta = held_out[list(post.param_names)].to_numpy()
    lp = post.log_prob(theta, post.x_from_table(held_out))
    assert np.mean(lp) == pytest.approx(result.best_val_log_prob, abs=1e-3)


def _config_of(meta: dict) -> dict:
    keys = set(TrainConfig.__dataclass_fields__) - {"flow"}
    return {"flow": meta["flow"], **{k: meta["training"][k] for k in keys}}


def test_mismatched_checkpoint_refused(trained):
    _, out, _ = trained
    with pytest.raises(CheckpointError, match="trained for model 'dirichlet', not 'provabgs'"):
        Posterior.load(out, model="provabgs")
    with pytest.raises(CheckpointError, match="x layout"):
        Posterior.load(out, x_columns=PHOTOMETRY_X_COLUMNS[:-1])
    # A spectral layout of 277 columns is named by its size and ends, not printed whole.
    with pytest.raises(CheckpointError, match=r"does not match the expected \[277 names: 'log_lnorm', 'fnorm_000', "
                                              r"'fnorm_001', \.\.\., 'lsig_136', 'lsig_137'\]$"):
        Posterior.load(out, x_columns=SPECTRUM_X_COLUMNS)
    post = Posterior.load(out)
    with pytest.raises(CheckpointError, match="parameter order"):
        post.check_compatible(param_names=tuple(reversed(post.param_names)))


def test_damaged_checkpoint_gives_clear_error(trained, tmp_path):
    _, out, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    weights = bad / "posterior.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Posterior.load(bad)
    # Truncated and the sidecar made to agree: torch's own error is wrapped.
    meta = json.loads((bad / "posterior.json").read_text())
    meta["weights"].update(bytes=len(data) // 2, sha256=hashlib.sha256(data[: len(data) // 2]).hexdigest())
    (bad / "posterior.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unreadable weights"):
        Posterior.load(bad)
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    meta["weights"].update(bytes=len(data))
    (bad / "posterior.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sha256"):
        Posterior.load(bad)
    (bad / "posterior.json").write_text(json.dumps(meta)[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated metadata"):
        Posterior.load(bad)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Posterior.load(tmp_path / "nowhere")


def test_sampling_flags_and_support(trained):
    _, out, _ = trained
    post = Posterior.load(out)
    x = np.tile(np.asarray(post.flow.x_mean.numpy(), dtype=np.float32), (4, 1))
    x[2, 0] = np.nan
    result = post.draw(x, 300, batch_size=2, seed=3)
    assert result.invalid_x.tolist() == [False, False, True, False]
    assert np.isnan(result.samples[2]).all() and result.n_accepted[2] == 0
    good = result.samples[~result.invalid_x]
    assert post.prior.in_support(good.reshape(-1, good.shape[-1])).all()
    assert result.complete[~result.invalid_x].all() and not result.timed_out.any()
    # Seeded draws repeat exactly and leave torch's global generator alone.
    state = torch.get_rng_state()
    again = post.draw(x, 300, batch_size=2, seed=3)
    np.testing.assert_array_equal(again.samples, result.samples)
    assert torch.equal(torch.get_rng_state(), state)
    phys = post.to_physical(result.samples[:2])
    assert phys["sfh_fraction"].shape == (2, 300, 7)
    np.testing.assert_allclose(phys["sfh_fraction"].sum(-1), 1.0, rtol=1e-5)


def loose_posterior(checkpoint) -> Posterior:
    """An untrained z-scored flow with the checkpoint's metadata: it leaves the prior box often."""
    post = Posterior.load(checkpoint)
    meta = dict(post.metadata, flow={**post.metadata["flow"], "theta_transform": "zscore"})
    norm = Normalization(
        theta_mean=(post.prior.low + post.prior.high) / 2,
        theta_std=(post.prior.high - post.prior.low) / np.sqrt(12),
        x_mean=post.flow.x_mean.numpy(),
        x_std=post.flow.x_std.numpy(),
    )
    torch.manual_seed(0)
    return Posterior(build_flow(FlowConfig.from_dict(meta["flow"]), post.prior, norm), meta)


def test_rejection_and_time_limit(trained):
    """Rejection of draws outside the prior box, the time-out flag and the per-galaxy draw budget."""
    _, out, _ = trained
    loose = loose_posterior(out)
    x = np.tile(loose.flow.x_mean.numpy().astype(np.float32), (3, 1))
    full = loose.draw(x, 200, seed=0)
    assert full.complete.all() and (full.acceptance < 0.9).all()
    assert loose.prior.in_support(full.samples.reshape(-1, full.samples.shape[-1])).all()
    assert (full.n_drawn > 200).all() and (full.n_nonfinite == 0).all() and not full.exhausted.any()
    cut = loose.draw(x, 200, max_time=0.0, seed=0)
    assert cut.timed_out.all() and (cut.n_accepted < 200).all()
    # A budget of one draw per sample: every galaxy stops after its first draw, flagged, without a time limit.
    spent = loose.draw(x, 200, max_proposals=1.0, seed=0)
    assert spent.exhausted.all() and not spent.timed_out.any()
    assert (spent.n_drawn == 200).all() and (spent.n_accepted < 200).all()
    np.testing.assert_allclose(spent.acceptance, spent.n_accepted / 200)
    for g in range(3):
        assert np.isfinite(cut.samples[g, : cut.n_accepted[g]]).all()
        assert np.isnan(cut.samples[g, cut.n_accepted[g] :]).all()


def test_an_unsampleable_galaxy_stops_on_its_own_budget(trained):
    """One galaxy whose draws all leave the prior box must not hold its partition: no time limit is set here."""
    from sedscale.infer.catalog import CatalogOptions, model_for
    from sedscale.infer.rows import posterior_rows

    _, out, _ = trained
    loose = loose_posterior(out)
    x = np.tile(loose.flow.x_mean.numpy().astype(np.float32), (40, 1))
    x[7, loose.x_columns.index("mag_r")] = 1e3  # far outside anything the flow was trained on
    options = CatalogOptions(n_samples=20, max_time=None, max_proposals=50.0)
    n = len(x)
    table, _ = posterior_rows(loose, model_for(loose), x, np.full(n, 0.03), np.zeros(n, dtype=bool),
                              np.full(n, "", dtype=object), None, options, partition=0)
    rows = table.to_pandas()
    broken = rows.iloc[7]
    assert broken["status"] == "sampling_timeout" and broken["reason"] == "no_samples_in_prior"
    assert broken["n_samples"] == 0 and 100 <= broken["n_draws"] <= 2 * options.max_proposals * options.n_samples
    rest = rows.drop(index=7)
    assert (rest["status"] == "ok").all() and (rest["n_samples"] == 20).all()
    assert (rest["n_draws"] < options.max_proposals * options.n_samples).all()
    assert rest["log_mstar_p50"].notna().all()


def test_cli_resume_matches_uninterrupted_run(sims, tmp_path):
    small = ["--flow", "nsf", "--transforms", "2", "--hidden", "16", "--blocks", "1", "--batch-size", "256",
             "--seed", "5", "--no-progress"]
    interrupted = tmp_path / "interrupted"
    assert run_train(["--sims", str(sims), "--out", str(interrupted), "--max-epochs", "2", *small]) == 0
    assert run_train(["--sims", str(sims), "--out", str(interrupted), "--max-epochs", "2", *small]) == 2  # exists
    assert run_train(["--sims", str(sims), "--out", str(interrupted), "--resume", "--max-epochs", "3",
                      "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert run_train(["--sims", str(sims), "--out", str(straight), "--max-epochs", "3", *small]) == 0
    a = json.loads((interrupted / "posterior.json").read_text())
    b = json.loads((straight / "posterior.json").read_text())
    assert [h["epoch"] for h in a["history"]] == [1, 2, 3]
    assert [h["val_log_prob"] for h in a["history"]] == [h["val_log_prob"] for h in b["history"]]
    assert a["weights"]["sha256"] == b["weights"]["sha256"]


def test_resume_keeps_the_recorded_parameter_map(sims, tmp_path, capsys):
    """A prior_probit run resumes under the map it started with (recorded in its state), never under
    the one the prior code gives now; a state without the record is refused."""
    small = ["--flow", "nsf", "--transforms", "2", "--hidden", "16", "--blocks", "1", "--batch-size", "256",
             "--seed", "5", "--no-progress", "--theta-transform", "prior_probit"]
    out = tmp_path / "probit"
    assert run_train(["--sims", str(sims), "--out", str(out), "--max-epochs", "1", *small]) == 0
    state = json.loads((out / "train_state.json").read_text())
    assert state["theta_marginals"] == json.loads((out / "posterior.json").read_text())["theta_marginals"]
    assert run_train(["--sims", str(sims), "--out", str(out), "--resume", "--max-epochs", "2", "--no-progress"]) == 0
    assert json.loads((out / "posterior.json").read_text())["theta_marginals"] == state["theta_marginals"]
    state = json.loads((out / "train_state.json").read_text())
    del state["theta_marginals"]
    (out / "train_state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert run_train(["--sims", str(sims), "--out", str(out), "--resume", "--max-epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not record its parameter map" in err and err.count("\n") == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert run_train(["--sims", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run_train: error:") and "\n" not in err
    assert run_train(["--sims", str(tmp_path), "--out", str(tmp_path / "o"), "--resume"]) == 2
    assert "no interrupted training" in capsys.readouterr().err


def _flip_byte(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def _edit_manifest(sims, edit) -> None:
    manifest = json.loads((sims / "_manifest.json").read_text())
    edit(manifest)
    (sims / "_manifest.json").write_text(json.dumps(manifest))


def _replace_last_partition(sims) -> None:
    """The last partition replaced by another, and the manifest's byte count made to agree."""
    shutil.copyfile(sims / "part-000001.parquet", sims / "part-000002.parquet")
    _edit_manifest(sims, lambda m: m["partitions"]["2"].update(bytes=(sims / "part-000002.parquet").stat().st_size))


LAST = "part-000002.parquet"
DAMAGES = {
    "deleted": (lambda d: (d / LAST).unlink(), f"{LAST}: partition file listed in _manifest.json is missing"),
    "truncated": (lambda d: (d / LAST).write_bytes((d / LAST).read_bytes()[: (d / LAST).stat().st_size // 2]),
                  "(truncated or overwritten)"),
    "bad footer": (lambda d: _flip_byte(d / LAST, -1), f"{LAST}: unreadable Parquet file (Parquet magic bytes"),
    "bit flip": (lambda d: _flip_byte(d / LAST, (d / LAST).stat().st_size // 2), "(sha256 mismatch)"),
    "replaced": (_replace_last_partition, f"{LAST}: 2000 rows, _manifest.json records 1000"),
}
MANIFEST_DAMAGES = {
    "unfinished": (lambda d: _edit_manifest(d, lambda m: m["partitions"].pop("2")),
                   "unfinished simulation (2/3 partitions); finish it with bin/run_simulate --out"),
    "no manifest": (lambda d: (d / "_manifest.json").unlink(), "holds no simulation (no _manifest.json)"),
    "corrupt manifest": (lambda d: (d / "_manifest.json").write_text("{"), "corrupt manifest"),
    "malformed manifest": (lambda d: _edit_manifest(d, lambda m: m["partitions"]["1"].pop("bytes")),
                           "malformed manifest"),
}


@pytest.mark.parametrize("damage", [*DAMAGES, *MANIFEST_DAMAGES])
def test_damaged_training_set_refused_before_training(sims, tmp_path, capsys, damage):
    """A missing, truncated or altered partition file, or a missing, corrupt or unfinished manifest:
    one line on stderr naming what to do, exit status 2, nothing trained or written."""
    broken, out = tmp_path / "sims", tmp_path / "out"
    shutil.copytree(sims, broken)
    make, message = {**DAMAGES, **MANIFEST_DAMAGES}[damage]
    make(broken)
    capsys.readouterr()
    assert run_train(["--sims", str(broken), "--out", str(out), "--max-epochs", "1", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("run_train: error:") and captured.err.count("\n") == 1
    assert message in captured.err
    if damage in DAMAGES:
        assert str(broken / LAST) in captured.err
        assert f"rerun bin/run_simulate --out {broken} --resume" in captured.err
    assert "training set" not in captured.out and not out.exists()


def test_recomputed_partition_restores_the_training_set(sims, tmp_path):
    """The advice works: bin/run_simulate --resume rewrites a truncated partition as it was."""
    broken = tmp_path / "sims"
    shutil.copytree(sims, broken)
    DAMAGES["truncated"][0](broken)
    with pytest.raises(TrainingSetError, match="truncated"):
        open_training_set(broken)
    run_simulation(SimulationConfig(model="dirichlet", n=N_SIMS, out=broken, seed=7, partition_size=2000), resume=True)
    repaired = open_training_set(broken, checksums=True)
    assert repaired.manifest_sha256 == open_training_set(sims).manifest_sha256 and repaired.n_rows == N_SIMS


def test_bad_options_refused():
    from sedscale.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown flow"):
        resolve_config("default", flow={"kind": "glow"})
    with pytest.raises(ConfigError, match="batch_size"):
        resolve_config("sedflow", batch_size=0)
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("sedflow2")
    with pytest.raises(ConfigError, match="passes applies to"):
        resolve_config("default", flow={"kind": "nsf", "passes": 2})


def test_streaming_epoch_visits_each_training_row_once(sims):
    """A shuffle buffer much smaller than the data (the larger-than-memory path)."""
    ts = open_training_set(sims)
    split = Split("train", 0.1, 0)
    expected = np.concatenate([theta for theta, _, _ in read_chunks(ts, split)])
    batches = list(shuffled_batches(ts, split, 64, 700, np.random.default_rng(0)))
    got = np.concatenate([theta for theta, _ in batches])
    assert all(len(t) == 64 for t, _ in batches[:-1])
    assert got.shape == expected.shape
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(order(got), order(expected))
    assert not np.array_equal(got[:100], expected[:100])
    val = np.concatenate([theta for theta, _, _ in read_chunks(ts, Split("val", 0.1, 0))])
    assert len(val) + len(expected) == N_SIMS and 0.07 < len(val) / N_SIMS < 0.13


def test_warm_start_from_a_checkpoint(trained, sims, tmp_path):
    """--init-from: the run starts from the checkpoint's network, keeps its own normalization, and says so."""
    result, ckpt, _ = trained
    one_epoch = resolve_config(TINY, max_epochs=1)
    warm = train(sims, tmp_path / "warm", one_epoch, init_from=ckpt / "posterior.pt", progress=False, log=lambda s: None)
    assert warm.history[0]["val_log_prob"] > result.history[0]["val_log_prob"] + 0.5
    meta = json.loads((tmp_path / "warm" / "posterior.json").read_text())
    source = meta["training"]["initialized_from"]
    assert source["path"].endswith("posterior.pt") and source["best_val_log_prob"] == pytest.approx(result.best_val_log_prob)
    other = resolve_config(one_epoch, flow={"hidden_features": 32})
    with pytest.raises(CheckpointError, match="flow differs in hidden_features"):
        train(sims, tmp_path / "other", other, init_from=ckpt / "posterior.pt", progress=False, log=lambda s: None)
    assert run_train(["--sims", str(sims), "--out", str(tmp_path / "warm"), "--resume",
                      "--init-from", str(ckpt / "posterior.pt"), "--no-progress"]) == 2
