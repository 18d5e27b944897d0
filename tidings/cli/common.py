"""What every command shares: the State (settings and runtime, built on first use), reading
addresses from arguments or stdin, confirming on a terminal, and running until a signal.

Nothing here imports the engine at module level: `tidings --help` must stay fast.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tidings.config import Settings, load_settings

if TYPE_CHECKING:
    from tidings.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """What every command may need, built on first use (so --help needs no database)."""

    def __init__(self, config_file: str | None):
        self.config_file = config_file
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(config_file=self.config_file)
        return self._settings

    def runtime(self, service: bool = False) -> Runtime:
        """`service`: a long-running process (run, worker, serve): what it changes by itself
        is the system's doing in the audit log, not the OS user's who started it."""
        if self._runtime is None:
            from tidings.db.audit import SYSTEM, cli_actor
            from tidings.runtime import Runtime

            actor = SYSTEM if service else cli_actor()
            self._runtime = Runtime.open(self.settings, actor=actor)
            started()
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


pass_state = click.make_pass_decorator(State)


def started() -> None:
    """The command has loaded what it runs with: keep those objects out of every future
    collection (gc.freeze) and turn garbage collection back on (main() turned it off)."""
    gc.freeze()
    gc.enable()


def lines_of(arguments: Iterable[str]) -> Iterator[str]:
    """The values given, with - replaced by the lines of stdin (blank lines and # comments
    skipped): `tidings subscribers unsubscribe - < list.txt`."""
    for argument in arguments:
        if argument != "-":
            yield argument
            continue
        for line in sys.stdin:
            text = line.strip()
            if text and not text.startswith("#"):
                yield text


def confirm_on_terminal(question: str, yes: bool) -> bool:
    """Ask on a terminal (aborting on no). True if asked; False when --yes was given or there
    is no terminal to ask on."""
    if yes or not sys.stdin.isatty():
        return False
    click.confirm(question, default=False, abort=True, err=True)
    return True


@contextmanager
def until_signalled(stopping: str) -> Iterator[threading.Event]:
    """Yields an event set by SIGTERM or SIGINT (Ctrl-C), after saying `stopping` on stderr;
    the previous handlers are restored afterwards."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        click.echo(f"{signal.Signals(signum).name}: {stopping}", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for(stop: threading.Event) -> None:
    """Block until `stop` is set (a signal, with until_signalled)."""
    while not stop.wait(0.5):
        pass


host_option = click.option(
    "--host",
    default=None,
    help="Address to listen on (default: TIDINGS_WEB_HOST, 127.0.0.1; behind a reverse proxy "
    "keep it on loopback).",
)
port_option = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on (default: TIDINGS_WEB_PORT, 8000; 0 picks a free one).",
)


def each_address(
    state: State, arguments: tuple[str, ...], action: Callable[[Any, str], str], verb: str
) -> None:
    """Run `action` for each address given (or read from stdin), 200 to a transaction; print
    a line per address once its transaction is committed (what it says is stored). One
    address: its problem is the error, as for every other command."""
    from tidings.errors import TidingsError

    runtime = state.runtime()
    if len(arguments) == 1 and arguments[0] != "-":
        with runtime.sessions.begin() as session:
            click.echo(action(session, arguments[0]))
        return
    addresses, failed, total = lines_of(arguments), 0, 0
    while chunk := [a for _, a in zip(range(200), addresses, strict=False)]:
        lines: list[tuple[str, bool]] = []
        with runtime.sessions.begin() as session:
            for raw in chunk:
                try:
                    lines.append((action(session, raw), False))
                except TidingsError as exc:
                    lines.append((f"{raw}: {exc}", True))
        for text, error in lines:
            click.echo(text, err=error)
            failed += error
        total += len(chunk)
    if failed:
        raise click.ClickException(f"{failed} of {total} addresses could not be {verb}")


@contextlib.contextmanager
def progress_bar(stream: Any) -> Iterator[Any]:
    """A progress bar by bytes read, on stderr, only when stderr is a terminal and the size
    is known (a file, or stdin redirected from one)."""
    size = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        info = os.fstat(stream.fileno())
        if stat.S_ISREG(info.st_mode):
            size = info.st_size
    if size is None or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=size, label="Importing", file=sys.stderr) as bar:
        yield bar.update
