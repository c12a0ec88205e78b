"""``bin/run_train``: fit the amortized posterior to a simulated training set.

Examples
--------
    bin/run_train --sims sims/dirichlet_nsa --out checkpoints/dirichlet_nsa
    bin/run_train --sims sims/provabgs_nsa --out checkpoints/provabgs_nsa --preset sedflow
    bin/run_train --sims sims/provabgs_nsa --out ckpt --flow maf --transforms 8 --hidden 128 --batch-size 512
    bin/run_train --sims sims/provabgs_nsa --out ckpt --resume      # continue an interrupted run

Presets: default (affine coupling flow 8 x 2 x 128, fast on CPU), sedflow (MAF 15 x 2 x 500,
Adam 5e-4, batch 50, patience 20), digs (MAF 10 x 25).  Options given explicitly
replace the preset's values.  Writes posterior.pt + posterior.json, loss.png and
train_state.* (for --resume) into --out.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from . import prog_name, run_guarded

PROG = "run_train"


def build_parser() -> argparse.ArgumentParser:
    from ..observe.spectral_noise import SPECTRAL_NOISE_PRESETS
    from ..observe.survey_noise import PHOTOMETRIC_NOISE_PRESETS
    from ..train.config import EMBEDDINGS, FLOW_KINDS, PRESETS, THETA_TRANSFORMS

    p = argparse.ArgumentParser(
        prog=prog_name(PROG), description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sims", required=True, help="training set: output directory of bin/run_simulate")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help="architecture and optimiser preset (default: default)")
    f = p.add_argument_group("flow (replace the preset's values)")
    f.add_argument("--flow", choices=sorted(FLOW_KINDS), help="flow kind")
    f.add_argument("--transforms", type=int, help="number of flow transforms")
    f.add_argument("--hidden", type=int, help="hidden units per layer")
    f.add_argument("--blocks", type=int, help="hidden layers / residual blocks per transform")
    f.add_argument("--bins", type=int, help="spline bins (nsf, maf_rqs, zuko_nsf)")
    f.add_argument("--passes", type=int, help="zuko_maf, zuko_nsf: inverse passes (2 = coupling)")
    f.add_argument("--theta-transform", choices=THETA_TRANSFORMS, help="parameter map before z-scoring")
    f.add_argument("--embedding", choices=(*EMBEDDINGS, "none"), help="embedding net between x and the flow")
    f.add_argument("--embedding-features", type=int, help="output features of the embedding net")
    sp = p.add_argument_group("spectral training sets")
    sp.add_argument(
        "--spectral-noise",
        choices=sorted(SPECTRAL_NOISE_PRESETS),
        help="noise drawn when spectra are read: digs (5%%) or survey (S/N 5-500, masks; default)",
    )
    sp.add_argument("--augment", type=int, help="noisy copies of every spectrum per epoch (default 1)")
    p.add_argument(
        "--photometric-noise",
        choices=sorted(PHOTOMETRIC_NOISE_PRESETS),
        help="noiseless photometric sets: uncertainties and band masks drawn each epoch (default survey; "
             "galex_sdss for FUV NUV ugriz: UV bands often missing)",
    )
    t = p.add_argument_group("optimisation (replace the preset's values)")
    t.add_argument("--batch-size", type=int, help="rows per gradient step")
    t.add_argument("--lr", type=float, help="Adam learning rate")
    t.add_argument("--val-fraction", type=float, help="validation fraction (default 0.1)")
    t.add_argument("--patience", type=int, help="epochs without validation improvement before stopping")
    t.add_argument("--lr-patience", type=int, help="epochs without improvement before the learning rate is halved")
    t.add_argument("--constant-lr", action="store_true", help="no learning-rate decay (as sbi and the paper presets)")
    t.add_argument("--max-epochs", type=int, help="upper limit on epochs")
    t.add_argument("--max-time", type=float, help="wall-clock budget in seconds (keeps the best state)")
    t.add_argument("--seed", type=int, help="seed of initialisation, split and shuffling (default 0)")
    t.add_argument("--shuffle-buffer", type=int, help="rows held in memory for shuffling (default 1000000)")
    p.add_argument("--redshift-parameter", action="store_true",
                   help="infer z with the other parameters (photometric redshifts; noiseless photometric sets): x ends "
                        "in the given z, its uncertainty and whether one is given instead of the true z")
    p.add_argument("--x-columns", nargs="+", metavar="COL", help="observation columns (default: recorded in the data)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; more is slower on busy machines)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from this checkpoint's network weights (same model, parameters, x columns and architecture; "
        "e.g. fine-tuning on a wider prior box)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run or checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace, base=None):
    """The TrainConfig from a preset (or ``base``) and the explicit options."""
    from dataclasses import replace

    from ..errors import ConfigError
    from ..train.config import resolve_config

    if args.constant_lr and args.lr_patience is not None:
        raise ConfigError("--constant-lr and --lr-patience exclude each other")
    config = resolve_config(
        base if base is not None else (args.preset or "default"),
        flow={
            "kind": args.flow,
            "num_transforms": args.transforms,
            "hidden_features": args.hidden,
            "num_blocks": args.blocks,
            "num_bins": args.bins,
            "passes": args.passes,
            "theta_transform": args.theta_transform,
            "embedding": None if args.embedding == "none" else args.embedding,
            "embedding_features": args.embedding_features,
        },
        batch_size=args.batch_size,
        learning_rate=args.lr,
        val_fraction=args.val_fraction,
        patience=args.patience,
        lr_patience=args.lr_patience,
        max_epochs=args.max_epochs,
        max_time=args.max_time,
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        spectral_noise=args.spectral_noise,
        photometric_noise=args.photometric_noise,
        redshift="parameter" if args.redshift_parameter else None,
        augment=args.augment,
    )
    if args.embedding == "none":
        config = replace(config, flow=replace(config.flow, embedding=None))
    return replace(config, lr_patience=None) if args.constant_lr else config


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from ..errors import ConfigError
    from ..train.config import TrainConfig
    from ..train.trainer import read_train_state, train

    if args.threads < 1:
        raise ConfigError(f"--threads must be positive, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.resume:
        if args.preset:
            raise ConfigError("--resume continues with the saved options; drop --preset")
        from pathlib import Path

        _, state = read_train_state(Path(args.out))
        config = config_from_args(args, base=TrainConfig.from_dict(state["config"]))
    else:
        if not args.preset:
            from ..train.data import open_training_set
            from ..train.trainer import default_preset

            args.preset = default_preset(open_training_set(args.sims, args.x_columns))
        config = config_from_args(args)
    print(f"{PROG}: {shlex.join(['bin/run_train', *(sys.argv[1:] if argv is None else argv)])}")
    train(
        args.sims,
        args.out,
        config,
        x_columns=args.x_columns,
        resume=args.resume,
        init_from=args.init_from,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bin/run_train``; returns the exit status."""
    return run_guarded(_main, argv, PROG)
