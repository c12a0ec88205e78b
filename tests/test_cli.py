"""The ``sedscale`` command: one entry point dispatching to every tool."""
from __future__ import annotations

from pathlib import Path

import pytest


def test_sedscale_command_dispatches_to_every_tool(capsys):
    from sedscale.cli.commands import COMMANDS, main

    assert main([]) == 2 and "usage: sedscale <command>" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("sedscale ")
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        # Each tool names itself as it was called (its bin/ name only from bin/).
        assert info.value.code == 0 and f"usage: sedscale {name}" in capsys.readouterr().out
    from sedscale.cli.catalog import main as catalog_main

    with pytest.raises(SystemExit):
        catalog_main(["--help"])
    assert "usage: run_catalog" in capsys.readouterr().out


def test_shipped_flow_and_cluster_templates_are_package_data(tmp_path, monkeypatch):
    """A non-editable install finds the default flow and the cluster YAMLs inside the package, from any directory."""
    import sedscale
    from sedscale.cluster.config import PACKAGE_CONFIG_DIR, resolve_config_path
    from sedscale.shipped import DEFAULT_FLOW_NAME, FLOW_ENV, default_flow, resolve_checkpoint
    from sedscale.train.checkpoint import checkpoint_observable

    package = Path(sedscale.__file__).parent
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(FLOW_ENV, raising=False)
    assert Path(default_flow()) == package / "data" / "checkpoints" / DEFAULT_FLOW_NAME
    assert resolve_checkpoint(DEFAULT_FLOW_NAME) == Path(default_flow())
    assert checkpoint_observable(DEFAULT_FLOW_NAME) == "photometry"
    assert resolve_checkpoint("no_such_flow") == Path("no_such_flow")  # not shipped: the path as given
    assert resolve_config_path("slurm") == PACKAGE_CONFIG_DIR / "slurm.yaml"
    assert PACKAGE_CONFIG_DIR.parent.parent == package
    monkeypatch.setenv(FLOW_ENV, "checkpoints/mine")
    assert default_flow() == "checkpoints/mine"


def test_shipped_flows_are_listed_and_an_unknown_name_names_them(tmp_path, monkeypatch, capsys):
    from sedscale.cli.commands import main
    from sedscale.shipped import DEFAULT_FLOW_NAME, shipped_names
    from sedscale.train.checkpoint import CheckpointError, checkpoint_observable

    monkeypatch.chdir(tmp_path)
    names = shipped_names()
    # Every flow the docs name ships in the package (issue 38): usable by name from any directory.
    assert {DEFAULT_FLOW_NAME, "photoz_ugriz", "photoz_legacy_wise", "galex_sdss", "legacy_wise", "all_surveys",
            "provabgs_nsa", "dirichlet_nsa", "dirichlet_spectra", "delayed_tau_spectra"} <= set(names)
    assert checkpoint_observable("galex_sdss") == "photometry"
    assert main(["flows"]) == 0
    listed = capsys.readouterr().out
    assert f"{DEFAULT_FLOW_NAME} " in listed and "(default)" in listed and "inferred (photo-z)" in listed
    with pytest.raises(CheckpointError, match=f"a shipped flow's name \\({', '.join(names)}\\)"):
        checkpoint_observable("galex_sdssx")


def test_a_full_disk_is_one_line_with_the_resume_hint(capsys):
    import errno

    from sedscale.cli import EXIT_ERROR, run_guarded

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.parquet.tmp")

    assert run_guarded(full, [], "run_catalog") == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left" in err and "--resume" in err and "/data/out.parquet.tmp" in err

    def other(argv):
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        run_guarded(other, [], "run_catalog")
