"""The contact channel on the web: sign-up form, confirm, unsubscribe (RFC 8058 one-click),
preferences, the opt-in API and a health check. `create_app(runtime)` builds the Flask app;
`WebServer` serves it with waitress."""

from tidings.web.app import create_app
from tidings.web.server import WebServer

__all__ = ["WebServer", "create_app"]
