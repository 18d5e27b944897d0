"""The code stays readable and clean: ruff (lint and format), mypy, and the size limits of
the house (no module over 500 lines; no function over 60 unless a `# Long:` comment above it
says why). Part of the suite, so CI catches a regression."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ["tidings", "tests", "bench"]
MODULE_MAX_LINES = 500
FUNCTION_MAX_LINES = 60


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def _sources() -> list[Path]:
    return [p for p in (ROOT / "tidings").rglob("*.py") if "migrations" not in p.parts]


def test_ruff_finds_nothing():
    done = subprocess.run([_tool("ruff"), "check", *CODE], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_has_nothing_to_change():
    done = subprocess.run(
        [_tool("ruff"), "format", "--check", *CODE], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_finds_nothing_in_tidings():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "tidings"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MODULE_MAX_LINES
    }
    assert not long, f"split these modules (DESIGN.md, Shape of the code): {long}"


def test_a_function_over_60_lines_says_why():
    unexplained = []
    for path in _sources():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.end_lineno - node.lineno + 1 <= FUNCTION_MAX_LINES:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if not lines[first - 2].lstrip().startswith("# Long:"):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unexplained, "split these, or say why above them with '# Long: ...'"
