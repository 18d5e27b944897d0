"""The dashboard: what is sending now and next, what is paused and why, bounce and
complaint rates against their thresholds, sends per day, sign-ups per day (counts only);
and the set-up checks of `tidings check`, on their own page."""

from __future__ import annotations

from typing import Any

from flask import render_template

from tidings.ops.dashboard import dashboard_facts
from tidings.ops.preflight import FAIL, preflight
from tidings.web.app import context
from tidings.web.staff import now, staff_route


@staff_route("/")
def dashboard() -> Any:
    facts = dashboard_facts(context().runtime, now())
    return render_template("staff/dashboard.html", title="Dashboard", facts=facts)


@staff_route("/checks")
def checks() -> Any:
    """`tidings check`'s lines: it tries the mail servers and the public pages, so it runs
    when asked (a few seconds), not on every dashboard view."""
    runtime = context().runtime
    lines = preflight(runtime.settings, lambda: runtime)
    blockers = sum(line.status == FAIL for line in lines)
    return render_template("staff/checks.html", title="Checks", lines=lines, blockers=blockers)
