"""The command starts fast because it imports lazily: nothing heavy is loaded to print the
version or the help, and each command loads only what it uses (bench/cli_start.py measures
the times; this keeps the imports honest)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("flask", "premailer", "alembic", "playwright", "dkim", "sqlalchemy", "jinja2")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_importing_the_cli_loads_nothing_heavy():
    assert _heavy(_imported_after("import tidings.cli")) == []


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["subscribers", "--help"]])
def test_version_and_help_load_nothing_heavy(args):
    code = (
        "from click.testing import CliRunner\nfrom tidings.cli import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\nassert result.exit_code == 0, result.output"
    )
    assert _heavy(_imported_after(code)) == []


def test_a_subscriber_lookup_loads_neither_the_web_nor_the_renderer(tmp_path):
    """`subscribers show` needs the database layer, not Flask, premailer or alembic."""
    code = (
        "import os\n"
        f"os.environ['TIDINGS_DATABASE_URL'] = 'sqlite:///{tmp_path}/t.db'\n"
        "from tidings.db import upgrade\n"
        f"upgrade('sqlite:///{tmp_path}/t.db')\n"
        "for name in [m for m in sys.modules if m.split('.')[0] == 'alembic']:\n"
        "    del sys.modules[name]\n"
        "from click.testing import CliRunner\nfrom tidings.cli import cli\n"
        "result = CliRunner().invoke(cli, ['subscribers', 'show', 'nobody@example.org'])\n"
        "assert 'no subscriber nobody@example.org' in result.output, result.output\n"
    )
    loaded = _imported_after(code)
    web_and_rendering = ("flask", "premailer", "playwright", "alembic", "dkim")
    assert sorted(m for m in loaded if m.split(".")[0] in web_and_rendering) == []
