"""docs/tutorial.md runs as written: its bash and Python blocks in order, on the shared NSA rows."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
DATA = ROOT.parent / "shared" / "data"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of the fenced ``bash`` and ``python`` blocks, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(bash|python)\n(.*?)```", text, re.S)]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "nsa_lcs").is_dir(), reason="the shared NSA rows (../shared/data/nsa_lcs) are absent")
def test_the_tutorial_runs_as_written(tmp_path):
    found = blocks(TUTORIAL.read_text())
    assert [lang for lang, _ in found] == ["bash", "bash", "python", "python"]
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    python = []
    for lang, code in found:
        if lang == "bash":
            # The tutorial's data path is relative to the checkout; here the run happens in a scratch folder.
            code = code.replace("DATA=../shared/data", f"DATA={DATA}")
            done = subprocess.run(["bash", "-e", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=900)
            assert done.returncode == 0, done.stderr[-2000:]
        else:
            python.append(code)
    script = tmp_path / "tutorial.py"
    script.write_text("\n".join(python))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = tmp_path / "figures"
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert "summary.png" in pngs and "mass_function.png" in pngs
    assert sum(name.endswith("_fit.png") for name in pngs) == 2 and sum(name.endswith("_corner.png") for name in pngs) == 2
    assert re.search(r"\d+ ok galaxies; median log M\* [\d.]+ \(NSA: [\d.]+\); offset [+-]0\.0\d\d dex", done.stdout)
