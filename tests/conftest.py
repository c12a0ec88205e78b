"""Shared pytest fixtures.

Real data lives outside the repository in ``../shared/data`` (relative to
the repository root); tests that need it use :func:`shared_data`, which
skips with the path it looked for when the folder is absent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Import sedscale from this checkout whatever the working directory; Dask
# worker processes spawned by the tests inherit sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (NSA tables, PROVABGS NMF bases, SDSS spectra); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module (as in the workers; faster on busy machines)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def train_masked_flow():
    """Train a small band-masked flow: ``make(root, seed=..., epochs=..., bands=None, noise="survey", redshift=None)``.

    4000 noiseless simulations of the dirichlet model with the physical prior
    at survey redshifts 0.002-0.6 (the real simulator), then the real trainer
    with the named training noise (``redshift="parameter"``: a
    photometric-redshift flow); returns the checkpoint directory.
    """
    def make(root: Path, *, seed: int, epochs: int, bands: str | None = None, noise: str = "survey",
             redshift: str | None = None) -> Path:
        import torch

        from sedscale.simulate import SimulationConfig, run_simulation
        from sedscale.train import resolve_config, train

        torch.set_num_threads(1)
        options = {"prior": "physical", **({"bands": bands} if bands else {})}
        run_simulation(SimulationConfig(model="dirichlet", n=4000, out=root / "sims", seed=seed, partition_size=2000,
                                        z_range=(0.002, 0.6), z_spacing="survey", noise_model="none",
                                        model_options=options))
        config = resolve_config("default", max_epochs=epochs, max_time=90.0, seed=1, photometric_noise=noise,
                                redshift=redshift)
        train(root / "sims", root / "ckpt", config, progress=False, log=lambda line: None)
        return root / "ckpt"

    return make


#: Redshift range of the tiny catalog flow and its mock catalogs.
Z_RANGE = (0.01, 0.06)


@pytest.fixture(scope="session")
def tiny_flow(tmp_path_factory) -> Path:
    """A small NSF trained for 15 epochs on 3000 dirichlet simulations (checkpoint directory)."""
    import torch

    from sedscale.simulate import SimulationConfig, run_simulation
    from sedscale.train import resolve_config, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("catalog_flow")
    run_simulation(SimulationConfig(model="dirichlet", n=3000, out=root / "sims", seed=11, partition_size=1500, z_range=Z_RANGE))
    # A fixed number of epochs (not a time budget) keeps the flow, hence the test, independent of machine load.
    config = resolve_config("default", max_epochs=15, max_time=90.0, seed=1)
    train(root / "sims", root / "ckpt", config, progress=False, log=lambda line: None)
    return root / "ckpt"


@pytest.fixture(scope="session")
def mock_catalog(tmp_path_factory) -> Path:
    """A MOCK NSA-format FITS file: 160 galaxies, the last 5 with one defect each."""
    from sedscale.infer.mock import write_mock_nsa

    path = tmp_path_factory.mktemp("catalog_mock") / "mock_nsa.fits"
    return write_mock_nsa(path, n=160, seed=5, z_range=Z_RANGE, n_defects=5)
