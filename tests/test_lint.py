"""The code passes the project's linter (ruff.toml): unused imports, import order, bugbear checks."""

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
