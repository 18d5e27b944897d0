"""The dashboard: what is sending now and next, what is paused and why, bounce and
complaint rates against their thresholds, sends per day, sign-ups per day (counts only)."""

from __future__ import annotations

from typing import Any

from flask import render_template

from tidings.ops.dashboard import dashboard_facts
from tidings.web.app import context
from tidings.web.staff import now, staff_route


@staff_route("/")
def dashboard() -> Any:
    facts = dashboard_facts(context().runtime, now())
    return render_template("staff/dashboard.html", title="Dashboard", facts=facts)
