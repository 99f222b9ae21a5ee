"""The package's metadata: pyproject.toml installs what requirements.txt pins, and the console script runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str = "requirements.txt") -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [re.sub(r"\s+#.*", "", line).strip() for line in lines if line.strip() and not line.startswith("#")]


def test_pyproject_depends_on_what_requirements_txt_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == _requirements()
    assert project["optional-dependencies"]["test"] == _requirements("requirements-test.txt")
    assert any(t.startswith("playwright") for t in project["optional-dependencies"]["test"])


def test_the_console_script_is_the_cli_entry():
    from gantune import __version__
    from gantune.cli import main

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["gantune"] == "gantune.cli:main" and callable(main)
    assert project["version"] == __version__


def _modules_after_import(module: str) -> set[str]:
    import subprocess
    import sys

    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_sampler_knows_nothing_of_methods_and_the_settings_need_no_torch():
    """generation.py samples from any model (inference.py answers with a run's); config and the CLI's flags
    load without torch, so `--help` and a refused flag answer at once."""
    assert not any(m.startswith("gantune.methods") for m in _modules_after_import("gantune.generation"))
    light = _modules_after_import("gantune.cli")
    assert "torch" not in light and "gantune.config" in light and "gantune.methods.gan.settings" in light
