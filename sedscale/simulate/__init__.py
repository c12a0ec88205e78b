"""Survey-scale simulation of training sets: Dask bags -> partitioned Parquet.

Example::

    from sedscale.cluster import load_cluster_config, open_client
    from sedscale.simulate import SimulationConfig, run_simulation

    config = SimulationConfig(model="dirichlet", n=1_000_000, out="sims/dirichlet")
    with open_client(load_cluster_config("local")) as client:
        summary = run_simulation(config, client, progress=True)
    print(summary.format())

Command line: ``bin/run_simulate``.  Reading: :func:`read_simulation`.
"""
from .config import SimulationConfig, config_hash, identity, load_model, load_noise_model
from .dataset import finished_manifest, read_simulation, read_simulation_metadata, simulation_files
from .manifest import MANIFEST_NAME, partition_filename, read_manifest
from .partition import ID_COLUMN, TaskSpec, draw_valid, partition_streams, simulate_partition
from .redshift import CatalogRedshift, UniformRedshift, read_catalog_column, redshift_from_catalog
from .run import RunPlan, SimulationSummary, check_output, plan_run, run_simulation

__all__ = [
    "ID_COLUMN",
    "MANIFEST_NAME",
    "CatalogRedshift",
    "RunPlan",
    "SimulationConfig",
    "SimulationSummary",
    "TaskSpec",
    "UniformRedshift",
    "check_output",
    "config_hash",
    "draw_valid",
    "finished_manifest",
    "identity",
    "load_model",
    "load_noise_model",
    "partition_filename",
    "partition_streams",
    "plan_run",
    "read_catalog_column",
    "read_manifest",
    "read_simulation",
    "read_simulation_metadata",
    "redshift_from_catalog",
    "run_simulation",
    "simulate_partition",
    "simulation_files",
]
