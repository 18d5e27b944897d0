"""The Dispatcher as a context manager: leaving its block ends every thread it started (the
sender thread and the recorder's), whether the block ends normally or by an exception."""

from __future__ import annotations

import threading
from contextlib import nullcontext

import pytest

from tidings.runtime import Runtime
from tidings.sending.dispatch import Dispatcher
from tidings.sending.routing import Lane
from tidings.sending.transports import MemoryTransport
from tidings.subscribers.lifecycle import Consent, add_subscriber


def queue_confirmation(runtime: Runtime, email: str) -> None:
    with runtime.sessions.begin() as session:
        add_subscriber(
            session,
            runtime.clock.now(),
            email,
            Consent(source="cli", evidence="test"),
            name="Test Reader",
            timezone="UTC",
            confirmed=False,
            message_domain=runtime.settings.sender_domain,
        )


def started_since(before: set[int | None]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.ident not in before]


@pytest.mark.parametrize("ending", ["normally", "by an exception"])
def test_leaving_the_block_ends_the_threads_it_started(runtime: Runtime, ending: str) -> None:
    queue_confirmation(runtime, "ann@example.org")
    transport = MemoryTransport()  # a lane with no threads of its own
    before = {t.ident for t in threading.enumerate()}
    lanes = [Lane("memory", transport)]
    failing = pytest.raises(RuntimeError) if ending != "normally" else nullcontext()
    with failing, Dispatcher(runtime.sessions, runtime.clock, runtime.settings, lanes) as d:
        assert d.run_pass().sent == 1
        started = started_since(before)
        names = sorted(t.name for t in started)
        assert "recorder" in names and any(n.startswith("dispatch") for n in names), names
        if ending != "normally":
            raise RuntimeError("the block fails")
    assert [m.recipient for m in transport.outbox] == ["ann@example.org"]
    assert [t.name for t in started if t.is_alive()] == []
    assert started_since(before) == []
