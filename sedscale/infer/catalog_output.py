"""The assembled posterior catalog: partitions checked against the input, units, provenance.

Partitions are read back one at a time in input order, checked row by row
against the input ids and streamed into Parquet and/or FITS, with a
unit per column and the run's provenance (Parquet ``sedscale.*`` metadata,
FITS header keywords); the partition directory gets a ``_metadata`` so that
it opens as one table too.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import SedscaleError
from ..io.atomic import atomic_write
from ..io.catalog import META_PREFIX, output_format, with_units, write_fits_stream, write_parquet_stream
from ..models.derived import DERIVED_UNITS
from .catalog_mcmc import patched_tables
from .catalog_plan import CatalogPlan
from .quality import STATUSES
from .summaries import PERCENTILES, STAT_NAMES

if TYPE_CHECKING:
    from .posterior import Posterior

CATALOG_FORMAT = "sedscale.posterior_catalog"


def quantity_units(post: Posterior) -> dict[str, str]:
    """Unit of every summarized quantity: parameters (prior), derived (model), others dimensionless."""
    units = {p.name: p.unit for p in post.prior.parameters}
    units.update({k: v for k, v in DERIVED_UNITS.items() if k not in units})
    units["log_ssfr_100myr"] = "dex(1/yr)"
    return units


#: Median AB magnitudes outside this range suggest fluxes read in the wrong unit (galaxy
#: surveys: ~14-24 mag; the survey flows were trained on 5-27 mag).

def assembled_parts(plan: CatalogPlan, manifest: dict) -> Iterator[pa.Table]:
    """The partition tables in order, each checked against its slice of the input ids.

    One partition is in memory at a time, so catalogs of any size (and with
    samples) are assembled in bounded memory.

    Raises
    ------
    SedscaleError
        A partition is missing, or rows are lost, duplicated or out of order.
    """
    parts = manifest["partitions"]
    missing = [i for i in range(plan.n_partitions) if str(i) not in parts]
    if missing:
        raise SedscaleError(f"partitions {missing[:10]} are not finished; rerun with --resume")
    expected = plan.source.ids  # known when the driver read them to drop repeats; else counts are checked
    offset = 0
    for i in range(plan.n_partitions):
        table = pq.read_table(plan.work_dir / parts[str(i)]["file"]).replace_schema_metadata(None)
        ids = table.column("id").to_numpy(zero_copy_only=False)
        rows = min(plan.spec.options.partition_size, plan.n_galaxies - offset)
        if len(ids) != rows or (expected is not None and not np.array_equal(ids, expected[offset : offset + len(ids)])):
            raise SedscaleError(
                f"partition {i} ({parts[str(i)]['file']}) does not hold input rows {offset}..{offset + rows - 1} "
                f"in order; delete {plan.work_dir} and rerun"
            )
        offset += len(ids)
        yield table
    if offset != plan.n_galaxies:
        raise SedscaleError(f"the partitions hold {offset} rows, the catalog {plan.n_galaxies}; delete {plan.work_dir} and rerun")


def write_outputs(plan: CatalogPlan, manifest: dict, fallback: dict | None = None) -> None:
    """Assemble the partitions into every output file, one partition in memory at a time, with units and provenance.

    ``fallback`` (row -> MCMC columns, :func:`~sedscale.infer.catalog_mcmc.run_catalog_mcmc`)
    replaces those rows (``method`` = ``mcmc``) and adds the ``mcmc_*`` columns.
    """
    first = pq.read_schema(plan.work_dir / manifest["partitions"]["0"]["file"]).empty_table().replace_schema_metadata(None)
    if fallback is not None:
        first = next(patched_tables(iter([first]), {}))
    schema = with_units(first, column_units(plan, first.column_names), catalog_metadata(plan)).schema

    def parts() -> Iterator[pa.Table]:
        tables = assembled_parts(plan, manifest)
        return patched_tables(tables, fallback) if fallback is not None else tables

    for out in plan.outputs:
        if output_format(out) == "parquet":
            write_parquet_stream((t.cast(schema) for t in parts()), out, schema)
        else:
            write_fits_stream(lambda: (t.cast(schema) for t in parts()), out, schema, fits_header(plan))


#: Largest run whose partitions get a ``_metadata`` file (it holds every partition's footer: ~25 kB
#: each, and several times that in memory while it is built).
DATASET_METADATA_MAX_PARTITIONS = 1_000


def write_dataset_metadata(work: Path, files: Sequence[str]) -> Path | None:
    """``_metadata`` of the partition files: the work directory opens as one table, in input order.

    ``pandas.read_parquet(work)``, ``pyarrow.dataset.dataset(work)`` and
    ``dask.dataframe.read_parquet(work)`` then read the partitions of a
    survey-size run without assembling a single file (files starting with
    ``_``, such as the run manifest, are not data).  Above
    :data:`DATASET_METADATA_MAX_PARTITIONS` partitions none is written (the
    driver's memory would grow with the catalog); the readers then list the
    partition files, whose names sort in input order.  Returns the path
    written, or None.
    """
    path = work / "_metadata"
    if len(files) > DATASET_METADATA_MAX_PARTITIONS:
        path.unlink(missing_ok=True)
        return None
    collected = []
    schema = None
    for name in files:
        parquet = pq.ParquetFile(work / name)
        schema = schema or parquet.schema_arrow
        meta = parquet.metadata
        meta.set_file_path(name)
        collected.append(meta)
    atomic_write(path, lambda tmp: pq.write_metadata(schema, tmp, metadata_collector=collected))
    return path


def column_units(plan: CatalogPlan, columns: Sequence[str]) -> dict[str, str]:
    """Unit of every output column (``""`` where dimensionless or unknown)."""
    bands = plan.posterior.bands
    base = {**{c: "mag(AB)" for c in bands.columns("mag_") + bands.columns("model_mag_")},
            **{c: "mag" for c in bands.columns("sigma_")}}
    return output_units(plan.posterior, columns, base)


def output_units(post: Posterior, columns: Sequence[str], base: dict[str, str]) -> dict[str, str]:
    """Units of output columns: ``base`` ones as given; summaries and samples carry their quantity's unit."""
    qunits = quantity_units(post)
    units = {}
    for col in columns:
        if col in base:
            units[col] = base[col]
            continue
        stem = col.removeprefix("samples_")
        for stat in STAT_NAMES:
            if stem.endswith("_" + stat):
                stem = stem[: -len(stat) - 1]
                break
        units[col] = qunits.get(stem, "")
    return units


def catalog_metadata(plan: CatalogPlan) -> dict[str, str]:
    """Provenance stored with the catalog (Parquet ``sedscale.*`` keys)."""
    meta = plan.posterior.metadata
    training_set = meta.get("training_set") or {}
    entries = {
        "format": CATALOG_FORMAT,
        "version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(plan.posterior.path),
        "checkpoint_sha256": plan.spec.flow_sha256,
        "training_set_sha256": training_set.get("manifest_sha256") or "",
        "training_set_config_hash": training_set.get("config_hash") or "",
        "model": meta["model"]["name"],
        "flow": json.dumps(meta["flow"], sort_keys=True),
        "prior": json.dumps(meta["prior"], sort_keys=True),
        "param_names": json.dumps(list(plan.posterior.param_names)),
        "x_columns": json.dumps(list(plan.posterior.x_columns)),
        "z_range": json.dumps(list(plan.spec.z_range)),
        "options": json.dumps(asdict(plan.spec.options), sort_keys=True),
        "percentiles": json.dumps(list(PERCENTILES)),
        "stats": json.dumps(list(STAT_NAMES)),
        "statuses": json.dumps(list(STATUSES)),
        "support": json.dumps(plan.support.describe() if plan.support else None, sort_keys=True),
        "catalog_sources": json.dumps(plan.source.sources),
        "flux_unit": plan.source.flux_unit,
        "catalog_identity_sha256": plan.source.digest(),
        "config_hash": plan.config_hash,
        "mcmc": json.dumps(plan.mcmc.identity() if plan.mcmc else None, sort_keys=True),
    }
    return {META_PREFIX + k: v for k, v in entries.items()}


def fits_header(plan: CatalogPlan) -> dict[str, object]:
    """FITS keywords carrying the same provenance as the Parquet metadata."""
    meta = plan.posterior.metadata
    training_set = meta.get("training_set") or {}
    opts = plan.spec.options
    return {
        "ORIGIN": "sedscale",
        "SEDSCVER": (__version__, "sedscale version"),
        "CATFMT": (CATALOG_FORMAT, "file format"),
        "MODEL": (meta["model"]["name"], "forward model"),
        "FLOWKIND": (meta["flow"]["kind"], "flow architecture"),
        "CKPTPATH": (str(plan.posterior.path), "checkpoint"),
        "CKPTHASH": (plan.spec.flow_sha256, "sha256 of the checkpoint weights"),
        "TRAINHSH": (training_set.get("manifest_sha256") or "", "sha256 of the training-set manifest"),
        "CATHASH": (plan.source.digest(), "sha256 of the input files' names, sizes, times"),
        "FLUXUNIT": (plan.source.flux_unit[:60], "unit the input fluxes were read in"),
        "RUNHASH": (plan.config_hash, "catalog run identity"),
        "NSAMPLE": (opts.n_samples, "posterior samples per galaxy"),
        "NDERIVED": (opts.n_derived, "samples per galaxy for derived properties"),
        "SEED": (opts.seed, "sampling seed"),
        "ERRFLOOR": (opts.error_floor or 0.0, "[mag] error floor added in quadrature"),
        "MINSNR": (opts.min_snr or 0.0, "bands measured at lower S/N masked (low_snr)"),
        "ZMIN": (plan.spec.z_range[0], "training redshift range, low"),
        "ZMAX": (plan.spec.z_range[1], "training redshift range, high"),
        "SUPPTHR": (plan.support.threshold if plan.support else -1.0, "x-support k-NN distance threshold"),
        "SUPPK": (plan.support.k if plan.support else 0, "x-support k"),
        "STATS": (",".join(STAT_NAMES), "column suffixes: percentiles, mean"),
        "PARAMS": json.dumps(list(plan.posterior.param_names)),
        "PRIOR": json.dumps(meta["prior"], sort_keys=True),
    }
