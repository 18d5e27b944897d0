"""The health check a monitor (and `tidings check`) asks."""

from __future__ import annotations

import logging
from typing import Any

from flask import jsonify

from tidings.web.app import context
from tidings.web.public.common import blueprint

log = logging.getLogger(__name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    """200 if the database answers, 503 if not. A raw connection: on SQLite, an ORM
    transaction would take the write lock (BEGIN IMMEDIATE) just to say hello."""
    engine = context().runtime.engine
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            connection.close()
    except Exception as exc:
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return jsonify({"status": "error", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"}), 200
