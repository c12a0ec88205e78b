"""The ``sedscale`` command: one entry point dispatching to every tool."""
from __future__ import annotations

import pytest


def test_sedscale_command_dispatches_to_every_tool(capsys):
    from sedscale.cli.commands import COMMANDS, main

    assert main([]) == 2 and "usage: sedscale <command>" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0 and "usage:" in capsys.readouterr().out
