"""The notebook path: sedscale.fit on an in-memory table gives the catalog the command line gives."""
from __future__ import annotations

import numpy as np
import pytest

from sedscale.errors import ConfigError


def test_fit_of_an_in_memory_table_is_the_command_line_catalog(tmp_path):
    from astropy.table import Table

    import sedscale
    from sedscale.cli.catalog import main

    # An astropy Table in memory, in a layout of its own (vector fluxes in maggies, other names).
    mock = Table.read("catalogs/mock_nsa_dirichlet.fits")[:12]
    table = Table({"objid": mock["NSAID"], "zspec": mock["Z"], "maggies": mock["NMGY"][:, 2:] * 1e-9,
                   "maggies_ivar": mock["NMGY_IVAR"][:, 2:] * 1e18})
    columns = ["id=objid", "z=zspec", "flux=maggies[0:5]", "flux_ivar=maggies_ivar[0:5]", "flux_unit=maggy"]
    post = sedscale.fit(table, columns=columns, n_samples=200, seed=3)
    assert isinstance(post, Table) and len(post) == 12
    assert list(post["id"]) == list(table["objid"]) and set(post["status"]) <= {"ok", "poor_fit"}
    assert str(post["log_mstar_total_p50"].unit) == "dex(solMass)"
    # The same rows through the command line: the same numbers (up to float32 rounding: torch's thread count
    # differs between this process and the command line's, which limits it to one).
    table.write(tmp_path / "t.fits")
    assert main([str(tmp_path / "t.fits"), "--out", str(tmp_path / "cli.parquet"), "--columns", *columns,
                 "--n-samples", "200", "--seed", "3", "--cluster", "none", "--no-progress"]) == 0
    cli = Table.read(tmp_path / "cli.parquet")
    for name in ("log_mstar_total_p50", "sfr_100myr_p16", "ppc_p"):
        np.testing.assert_allclose(np.asarray(post[name]), np.asarray(cli[name]), rtol=1e-5)
    with pytest.raises(ConfigError, match="astropy Table or a pandas DataFrame"):
        sedscale.fit([1, 2, 3])
