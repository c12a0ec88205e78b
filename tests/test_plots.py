"""sedscale plot: one galaxy's fit and corner figures and a catalog's summary, from the main job's catalog."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sedscale.errors import ConfigError


@pytest.fixture(scope="module")
def main_job_catalog(tmp_path_factory):
    """The README main job's catalog (the shipped mock, the default flow), on its first 24 galaxies."""
    from astropy.table import Table

    from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
    from sedscale.shipped import default_flow

    root = tmp_path_factory.mktemp("plots")
    source = Table.read("catalogs/mock_nsa_dirichlet.fits")[:24]
    source.write(root / "mock.fits")
    options = CatalogOptions(n_samples=300, partition_size=24, seed=1)
    run_catalog(plan_catalog(root / "mock.fits", default_flow(), root / "posteriors.parquet", options))
    return root / "posteriors.parquet"


def test_the_figures_of_a_galaxy_and_of_the_catalog_are_written(main_job_catalog, tmp_path, capsys):
    from sedscale.cli.commands import main

    frame = pd.read_parquet(main_job_catalog)
    gid = str(frame.loc[frame["status"] == "ok", "id"].iloc[0])
    assert main(["plot", str(main_job_catalog), "--id", gid, "--summary", "--out", str(tmp_path),
                 "--n-samples", "400"]) == 0
    for name in (f"{gid}_fit.png", f"{gid}_corner.png", "summary.png"):
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # An unknown id is refused in one line before any figure is drawn.
    assert main(["plot", str(main_job_catalog), "--id", "nosuch", "--out", str(tmp_path / "x")]) == 2
    assert "no galaxy with id nosuch" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["plot", str(main_job_catalog), "--nope"])


def test_the_plotted_model_photometry_is_the_catalogs_and_a_redraw_reproduces_it(main_job_catalog):
    """The fit figure's model points are the catalog's model_mag_<band>; the posterior redrawn from the flow (the
    catalog stores no samples) predicts the same magnitudes, so the figure shows the catalog's posterior."""
    from sedscale.plots.galaxy import galaxy_posterior, model_photometry

    frame = pd.read_parquet(main_job_catalog)
    row = frame[frame["status"] == "ok"].iloc[0]
    bands = ("u", "g", "r", "i", "z")
    gp = galaxy_posterior(main_job_catalog, row["id"], n_samples=1000, seed=3)
    assert gp.source == "drawn from the flow" and gp.theta.shape == (1000, len(gp.post.param_names))
    catalog_mags = row[[f"model_mag_{b}" for b in bands]].to_numpy(float)
    np.testing.assert_array_equal(model_photometry(gp), catalog_mags)
    redrawn = model_photometry(gp._replace(row=row.drop([f"model_mag_{b}" for b in bands])))
    np.testing.assert_allclose(redrawn, catalog_mags, atol=0.05)
    # The redrawn mass posterior is the catalog's.
    assert abs(np.median(gp.quantities["log_mstar_total"]) - row["log_mstar_total_p50"]) < 0.05


def test_a_changed_checkpoint_is_refused(main_job_catalog, tmp_path):
    import pyarrow.parquet as pq

    from sedscale.plots.galaxy import galaxy_posterior

    table = pq.read_table(main_job_catalog)
    meta = dict(table.schema.metadata)
    meta[b"sedscale.checkpoint_sha256"] = b"0" * 64
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "tampered.parquet")
    with pytest.raises(ConfigError, match="changed since"):
        galaxy_posterior(tmp_path / "tampered.parquet", table.column("id")[0].as_py())
