"""Dask clusters from YAML: LocalCluster or dask-jobqueue SLURMCluster.

Example::

    from sedscale.cluster import load_cluster_config, open_client
    with open_client(load_cluster_config("local")) as client:
        print(client.dashboard_link)
"""
from .build import build_cluster, local_cluster_kwargs, open_client, scale_cluster, slurm_cluster_kwargs
from .config import ClusterConfig, cluster_config_from_dict, load_cluster_config, resolve_config_path
from .plugins import WorkerTuning, limit_threads, thread_environment, tune_malloc

__all__ = [
    "ClusterConfig",
    "WorkerTuning",
    "build_cluster",
    "cluster_config_from_dict",
    "limit_threads",
    "load_cluster_config",
    "local_cluster_kwargs",
    "open_client",
    "resolve_config_path",
    "scale_cluster",
    "slurm_cluster_kwargs",
    "thread_environment",
    "tune_malloc",
]
