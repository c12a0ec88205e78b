"""Training of the amortized posterior on one node (``bin/run_train``).

Example::

    from sedscale.train import resolve_config, train

    config = resolve_config("default", max_time=1200)
    result = train("sims/dirichlet_nsa", "checkpoints/dirichlet_nsa", config)
    print(result.best_val_log_prob, result.checkpoint)

Load the result with :class:`sedscale.infer.Posterior`.
"""
from .checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from .config import (
    FLOW_KINDS,
    PRESETS,
    THETA_TRANSFORMS,
    FlowConfig,
    TrainConfig,
    resolve_config,
)
from .data import TrainingSet, TrainingSetError, open_training_set, prior_from_dict
from .flows import ConditionalFlow, Normalization, build_flow
from .trainer import TrainResult, train

__all__ = [
    "FLOW_KINDS",
    "PRESETS",
    "THETA_TRANSFORMS",
    "CheckpointError",
    "ConditionalFlow",
    "FlowConfig",
    "Normalization",
    "TrainConfig",
    "TrainResult",
    "TrainingSet",
    "TrainingSetError",
    "build_flow",
    "check_compatible",
    "load_checkpoint",
    "open_training_set",
    "prior_from_dict",
    "resolve_config",
    "save_checkpoint",
    "train",
]
