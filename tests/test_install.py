"""A non-editable install works from any directory with its models found inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~6 s: builds and installs the wheel
def test_wheel_install_finds_models(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        check=True,
        timeout=600,
    )
    assert (target / "deid_edit" / "_models" / "centerface.onnx").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("DEID_EDIT_MODELS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "deid_edit", "models", "verify"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert str(target / "deid_edit" / "_models" / "centerface.onnx") in proc.stdout
