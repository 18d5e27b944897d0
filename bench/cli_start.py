"""Figure 7: the command starts fast. Median wall time, process start to exit, of
`tidings --version`, `tidings --help` and `tidings subscribers show EMAIL` (on SQLite),
against `python -c "import click"` measured in the same run: the floor of any click CLI.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from common import QUICK, median_seconds, report, tidings_env

from tidings.db import upgrade

TARGETS = {"--version": 0.30, "--help": 0.30, "subscribers show": 0.50}


def main() -> None:
    runs = 5 if QUICK else 15
    # The installed command, as people run it (beside this interpreter, in its virtualenv).
    tidings = [str(Path(sys.executable).with_name("tidings"))]
    folder = Path(tempfile.mkdtemp(prefix="tidings-bench-cli-"))
    try:
        url = f"sqlite:///{folder / 'cli.db'}"
        upgrade(url)
        env = tidings_env(url, "smtp://127.0.0.1:25")
        median_seconds(
            [*tidings, "subscribers", "add", "ann@example.org", "--confirmed", "--evidence", "b"],
            1,
            env,
        )
        floor = median_seconds([sys.executable, "-c", "import click"], runs, env)
        commands = {
            "--version": [*tidings, "--version"],
            "--help": [*tidings, "--help"],
            "subscribers show": [*tidings, "subscribers", "show", "ann@example.org"],
        }
        for name, command in commands.items():
            seconds = median_seconds(command, runs, env)
            report(
                f"7. start, s: tidings {name} (median of {runs}) vs python -c 'import click'",
                round(seconds, 3),
                round(floor, 3),
                round(seconds / floor, 2),
                f"<= {TARGETS[name]:.2f} s",
                seconds <= TARGETS[name],
                "s",
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
