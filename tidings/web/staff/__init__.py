"""The staff console at /staff/: server-rendered pages for the marketing team and admins.

Every route is declared with `staff_route(rule, permission)`: the guard below runs before
each one, in this order, and the role test walks them all from `ROUTES`:

1. the client's address must be in TIDINGS_STAFF_NETWORKS (else 404: the console is not there);
2. the session cookie must open a live session (else pages redirect to /staff/login and
   anything else answers 401), except the routes marked `public` (sign-in, set-password);
3. a session still waiting for its second factor reaches only that page; an account that must
   use two-factor (TIDINGS_STAFF_REQUIRE_2FA=1) and has none reaches only its setup;
4. the account's role must hold the route's permission (staff/roles.py; else 403);
5. a POST must carry the session's CSRF token (the cookie is SameSite=Strict as well).

Views call one library function per action, in `unit_of_work()`, which marks the session
with who acts, for the audit log. They hold no SQL.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.orm import Session

from tidings.db.audit import act_as
from tidings.errors import Conflict, NotFound, TidingsError
from tidings.staff import roles, sessions
from tidings.web.app import context

blueprint = Blueprint("staff", __name__, url_prefix="/staff")
COOKIE = "tidings_staff"


@dataclass(frozen=True)
class Route:
    endpoint: str
    rule: str
    methods: tuple[str, ...]
    permission: str | None  # None: public (no session needed)


ROUTES: list[Route] = []


def staff_route(
    rule: str, permission: str | None = "read", methods: tuple[str, ...] = ("GET",)
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        endpoint = view.__name__
        ROUTES.append(Route(f"staff.{endpoint}", f"/staff{rule}", methods, permission))
        blueprint.add_url_rule(rule, endpoint, view, methods=list(methods))
        return view

    return register


PERMISSION_OF: dict[str, str | None] = {}


@blueprint.record_once
def _index_routes(state: Any) -> None:
    PERMISSION_OF.update({r.endpoint: r.permission for r in ROUTES})


def actor() -> str:
    return f"staff:{g.staff.user.email}"


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """A transaction on behalf of the signed-in member of staff (the audit log's actor)."""
    with context().runtime.sessions.begin() as session:
        yield act_as(session, actor())


@contextmanager
def reading() -> Iterator[Session]:
    with context().runtime.read_sessions.begin() as session:
        yield session


def now() -> Any:
    return context().runtime.clock.now()


def wants_page() -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "text/html")


def _in_networks() -> bool:
    networks = context().settings.staff_network_list()
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@blueprint.before_request
def _guard() -> Any:
    if not _in_networks():
        abort(404)
    permission = PERMISSION_OF.get(request.endpoint or "", "read")
    with context().runtime.sessions.begin() as session:
        found = sessions.current(session, now(), request.cookies.get(COOKIE))
    g.staff = found
    if permission is None:
        return None
    if found is None:
        if wants_page():
            return redirect(url_for("staff.login", next=request.full_path.rstrip("?")))
        abort(401)
    if not found.complete and request.endpoint != "staff.second_factor":
        return redirect(url_for("staff.second_factor"))
    must_enrol = context().settings.staff_require_2fa and not found.user.totp_enabled
    if must_enrol and request.endpoint not in ("staff.account", "staff.logout"):
        return redirect(url_for("staff.account", required=1))
    if not roles.allowed(found.user.role, permission):
        abort(403)
    if request.method == "POST":
        check_csrf(found.row.csrf_token)
    return None


def check_csrf(expected: str) -> None:
    given = request.form.get("csrf_token", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        # A response of its own: the app's error pages show only a generic text per status.
        message = "This form has expired or was sent from another site. Please reload the page."
        page = render_template("staff/message.html", title="Not done", message=message)
        abort(make_response(page, 400))


def may(permission: str) -> bool:
    """For templates: show a button only to those who may press it."""
    return g.get("staff") is not None and roles.allowed(g.staff.user.role, permission)


@blueprint.errorhandler(TidingsError)
def _refused(exc: TidingsError) -> Any:
    """A library refusal (bad input, an unknown name): the message, as a 4xx page."""
    code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
    return render_template("staff/message.html", title="Not done", message=str(exc)), code


@blueprint.app_context_processor
def _staff_globals() -> dict[str, Any]:
    if not request.path.startswith("/staff"):
        return {}
    current = g.get("staff")
    return {
        "staff": current.user if current else None,
        "csrf": current.row.csrf_token if current else "",
        "may": may,
        "has_page": lambda endpoint: endpoint in current_app.view_functions,
    }


from tidings.web.staff import (  # noqa: E402
    audit,
    auth,
    campaigns,
    dashboard,
    emails,
    newsletters,
    subscribers,
)

__all__ = [
    "ROUTES",
    "audit",
    "auth",
    "blueprint",
    "campaigns",
    "dashboard",
    "emails",
    "newsletters",
    "staff_route",
    "subscribers",
]
