"""Serving the app with waitress (a production WSGI server, not Flask's development one), in
a background thread so that `tidings run` can serve the pages beside the scheduler."""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from tidings.errors import TidingsError
from tidings.runtime import Runtime
from tidings.web.app import MAX_REQUEST_BYTES

log = logging.getLogger(__name__)

# waitress reads a whole body before the app sees it, up to 1 GiB by default, spilling what
# is over 512 KB to a temporary file: a few large POSTs could fill the disk. The app accepts
# MAX_REQUEST_BYTES (16 KB); waitress refuses four times that outright (413, before reading
# the body), so a body between the two still gets the app's own page.
MAX_BODY_BYTES = 4 * MAX_REQUEST_BYTES


class WebServer:
    """`WebServer(app, host, port).start()` listens at once (so a busy port is an error here,
    not later); `.stop()` closes it. Port 0 picks a free port: see `.port`."""

    def __init__(self, app: Any, host: str, port: int, threads: int = 4):
        self._map: dict[int, Any] = {}
        try:
            self._server = create_server(
                app,
                map=self._map,
                host=host,
                port=port,
                threads=threads,
                ident="tidings",
                max_request_body_size=MAX_BODY_BYTES,
                # X-Forwarded-* are read by the app's ProxyFix, only as far as
                # TIDINGS_TRUSTED_PROXIES says; waitress must pass them through untouched.
                clear_untrusted_proxy_headers=False,
            )
        except OSError as exc:
            raise TidingsError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(another program uses it? pick one with --port)"
            ) from exc
        self.host = host
        self.port = int(getattr(self._server, "effective_port", port))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self._server.run, name="tidings-web", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, let the requests in progress finish, then return."""
        if self._thread is None:
            return
        trigger = getattr(self._server, "trigger", None)
        if trigger is not None:
            # Close the sockets from the server's own loop thread: closing them from here
            # while it polls them could make it fail on a closed descriptor.
            trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        else:
            wasyncore.close_all(self._map)
        self._thread.join(timeout)
        self._server.task_dispatcher.shutdown(timeout=timeout)
        self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_web(runtime: Runtime, host: str | None = None, port: int | None = None) -> WebServer:
    """Build the app for this runtime and listen (at once: a busy port is an error now)."""
    from tidings.web.app import create_app

    settings = runtime.settings
    server = WebServer(
        create_app(runtime),
        host or settings.web_host,
        settings.web_port if port is None else port,
        threads=settings.web_threads,
    )
    return server.start()
