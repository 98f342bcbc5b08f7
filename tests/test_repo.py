"""Repository hygiene: lint, and CI running the README's test command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the test extras)")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_starts_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert first_block, "README has no command block"
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0] == "pip install -e . && python -m harness.sweep sweeps/ablation_lifting.yaml"
    assert commands[1].startswith("pip install -e '.[test]' && pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E \"^pip install -e '\\.\\[test\\]'\" README.md" in ci


# Every `python -m harness.<verb>`: a module with a __main__ guard, or a package's __main__.py.
ENTRY_POINTS = sorted(
    [path.stem for path in (ROOT / "harness").glob("*.py")
     if 'if __name__ == "__main__":' in path.read_text()]
    + [path.parent.name for path in (ROOT / "harness").glob("*/__main__.py")])


def test_the_entry_points_are_found() -> None:
    assert {"train", "data", "evaluate", "sweep", "report", "bench", "invert",
            "studio"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("verb", ENTRY_POINTS)
def test_every_entry_point_has_help(verb: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"harness.{verb}", "--help"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
