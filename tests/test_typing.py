"""The design's convention: typed everywhere, mypy-clean."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PACKAGES = ["core", "storage", "bot", "scripts"]


def test_mypy_is_clean():
    proc = subprocess.run([sys.executable, "-m", "mypy", *PACKAGES], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
