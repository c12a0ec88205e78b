"""Posteriors for an in-memory table, from a notebook: :func:`fit`.

The catalog engine of ``sedscale catalog`` on a table held in memory: the
table is written to a scratch file (FITS for an astropy Table, keeping its
units and vector columns; Parquet for a pandas DataFrame), planned, checked
and inferred exactly as a catalog file would be, and the posterior catalog
comes back as an astropy Table::

    import sedscale
    from astropy.table import Table

    table = Table.read("nsa_mstar.virgo.fits")[:100]
    post = sedscale.fit(table, columns=["id=ISEDFIT_ID", "z=Z", "flux=MAGGIES[2:7]",
                                        "flux_ivar=IVARMAGGIES[2:7]", "flux_unit=maggy"])
    post["log_mstar_total_p50", "status"]
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["fit", "read_posterior_table"]


def fit(table, flow: str | os.PathLike | None = None, *,
        columns: Sequence[str] | Mapping | str | os.PathLike | None = None, keep: Sequence[str] = (),
        client=None, **options):
    """Posterior summaries of every row of an in-memory catalog.

    Parameters
    ----------
    table : astropy.table.Table or pandas.DataFrame
        Photometry and redshifts, in the NSA layout or any layout ``columns`` maps.
    flow : path or shipped name, optional
        Default: the shipped default flow (``sedscale flows`` lists them).
    columns : column mapping, optional
        ``key=value`` strings, a dict or a YAML path, as ``--columns`` /
        ``--column-map`` (``docs/catalog.md``).
    keep : sequence of str
        Input columns copied into the output.
    client : distributed.Client, optional
        Run the partitions on this cluster; None runs them here, one after another.
    **options
        :class:`~sedscale.infer.catalog_plan.CatalogOptions` fields
        (``n_samples``, ``seed``, ``error_floor``, ``importance_proposals``, ...).

    Returns
    -------
    astropy.table.Table
        The posterior catalog, one row per input row in input order, with the
        units and provenance the catalog files carry (``docs/catalog.md``).
    """
    import pandas as pd
    from astropy.table import Table

    from .errors import ConfigError
    from .infer.catalog import CatalogOptions, plan_catalog, run_catalog
    from .shipped import default_flow

    with tempfile.TemporaryDirectory(prefix="sedscale-fit-") as tmp:
        if isinstance(table, Table):
            source = Path(tmp) / "input.fits"
            table.write(source)
        elif isinstance(table, pd.DataFrame):
            source = Path(tmp) / "input.parquet"
            table.to_parquet(source)
        else:
            raise ConfigError(f"fit takes an astropy Table or a pandas DataFrame, got {type(table).__name__}")
        out = Path(tmp) / "posteriors.parquet"
        plan = plan_catalog(source, flow or default_flow(), out, CatalogOptions(**options), mapping=columns,
                            keep=keep, work_dir=Path(tmp) / "parts")
        run_catalog(plan, client, log=lambda message: None)
        return read_posterior_table(out)


def read_posterior_table(parquet: str | os.PathLike):
    """A posterior catalog's Parquet file as an astropy Table, with the units its ``sedscale.units`` metadata names."""
    import json

    import astropy.units as u
    import pyarrow.parquet as pq
    from astropy.table import Table

    table = Table.read(parquet)

    units = json.loads((pq.read_schema(parquet).metadata or {}).get(b"sedscale.units", b"{}"))
    with u.add_enabled_aliases({"Msun": u.solMass}):
        for name, unit in units.items():
            if unit and name in table.colnames:
                table[name].unit = u.Unit(unit, parse_strict="silent")
    return table
