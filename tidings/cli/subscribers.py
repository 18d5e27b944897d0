"""`tidings subscribers ...`: add, confirm, unsubscribe, list and inspect subscribers."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import click
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from tidings.cli import State, pass_state
from tidings.cli.output import emit_object, emit_rows, output_options
from tidings.dispatch import Dispatcher
from tidings.errors import InvalidInput, TidingsError
from tidings.models import (
    Delivery,
    SubscriberStatus,
)
from tidings.subscribers.admin import (
    PROFILE_COLUMNS,
    SubscriberFilter,
    attribute_keys,
    erase,
    export_data,
    parse_attribute,
    parse_since,
    subscriber_details,
    subscriber_rows,
    update_subscriber,
)
from tidings.subscribers.importer import (
    BATCH_SIZE,
    Importer,
    ImportOptions,
    ImportReport,
    Reject,
    check_evidence,
)
from tidings.subscribers.service import (
    Consent,
    activate,
    add_subscriber,
    find_subscriber,
    resubscribe,
    unsubscribe,
)
from tidings.subscribers.validation import normalize_email

F = TypeVar("F", bound=Callable[..., Any])

STATUSES = [
    SubscriberStatus.PENDING,
    SubscriberStatus.ACTIVE,
    SubscriberStatus.UNSUBSCRIBED,
    SubscriberStatus.BOUNCED,
    SubscriberStatus.COMPLAINED,
]


@click.group("subscribers")
def subscribers_group() -> None:
    """Add, import, find, change, export and erase subscribers."""


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name (optional).")
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA timezone, e.g. America/New_York: emails arrive in its daytime.",
)
@click.option(
    "--confirmed",
    is_flag=True,
    help="Consent was already given elsewhere (needs --evidence); no confirmation email.",
)
@click.option(
    "--evidence", default=None, help="Where and when they agreed, e.g. 'paper form, 2026 open day'."
)
@pass_state
def add(
    state: State, email: str, name: str, timezone: str, confirmed: bool, evidence: str | None
) -> None:
    """Add a subscriber. By default they get a confirmation email (double opt-in).

    \b
    Examples:
      tidings subscribers add ann@example.org --name Ann --timezone Europe/Paris
      tidings subscribers add bob@example.org --confirmed --evidence "signed form, 2026-11-02"
    """
    if evidence and not confirmed:
        raise click.UsageError("--evidence goes with --confirmed")
    runtime = state.runtime()
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        subscriber = add_subscriber(
            session,
            now,
            email,
            Consent(source="cli", evidence=evidence),
            name=name,
            timezone=timezone,
            confirmed=confirmed,
            message_domain=runtime.settings.sender_domain,
        )
        address, status = subscriber.email, subscriber.status
        pending_ids = [
            d.id
            for d in session.scalars(
                select(Delivery).where(
                    Delivery.subscriber_id == subscriber.id, Delivery.kind == "confirmation"
                )
            )
        ]
    click.echo(f"{address}: added ({status})")
    if pending_ids:
        _send_now(state, pending_ids)


def _send_now(state: State, delivery_ids: list[int]) -> None:
    """Send queued confirmation emails at once rather than at the next scheduler pass."""
    runtime = state.runtime()
    with runtime.transport() as transport:
        result = Dispatcher(runtime.sessions, runtime.clock, runtime.settings, transport).run_pass(
            only_ids=delivery_ids
        )
    if result.sent:
        click.echo("confirmation email sent")
    else:
        click.echo(
            "confirmation email queued: it could not be sent now and will be "
            "retried by `tidings run` / `tidings send-due`",
            err=True,
        )


@subscribers_group.command("confirm")
@click.argument("email")
@pass_state
def confirm(state: State, email: str) -> None:
    """Confirm a pending subscriber (as if they clicked the link) and start their series.

    \b
    Example:
      tidings subscribers confirm ann@example.org
    """
    runtime = state.runtime()
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        joined = activate(
            session, subscriber, Consent(source="cli", evidence="confirmed by an operator"), now
        )
        address = subscriber.email
    click.echo(f"{address}: active" + (f", enrolled in {', '.join(joined)}" if joined else ""))


@subscribers_group.command("unsubscribe")
@click.argument("emails", nargs=-1, metavar="EMAIL... | -")
@pass_state
def unsubscribe_cmd(state: State, emails: tuple[str, ...]) -> None:
    """Unsubscribe now: nothing more is sent, queued emails are skipped, the address is
    suppressed.

    Give one or more addresses, or - to read them from stdin, one per line (blank lines and
    lines starting with # are skipped). Every address is tried; the exit code is 1 if any
    could not be unsubscribed.

    \b
    Examples:
      tidings subscribers unsubscribe ann@example.org bob@example.org
      cut -d, -f1 complaints.csv | tidings subscribers unsubscribe -
    """
    if not emails:
        raise click.UsageError("give one or more addresses, or - to read them from stdin")
    runtime = state.runtime()
    addresses = addresses_from(emails)
    if len(emails) == 1 and emails[0] != "-":
        # One address: its problem is the error message, as for every other command.
        with runtime.sessions.begin() as session:
            subscriber = find_subscriber(session, emails[0])
            changed = unsubscribe(session, subscriber, "cli", runtime.clock.now())
            address = subscriber.email
        click.echo(f"{address}: " + ("unsubscribed" if changed else "was already unsubscribed"))
        return
    failed = total = 0
    while chunk := list(itertools.islice(addresses, 200)):
        lines: list[tuple[str, bool]] = []
        with runtime.sessions.begin() as session:
            now = runtime.clock.now()
            for raw in chunk:
                try:
                    subscriber = find_subscriber(session, raw)
                except TidingsError as exc:
                    lines.append((f"{raw}: {exc}", True))
                    continue
                changed = unsubscribe(session, subscriber, "cli", now)
                verdict = "unsubscribed" if changed else "was already unsubscribed"
                lines.append((f"{subscriber.email}: {verdict}", False))
        for text, error in lines:  # printed once committed: what it says is stored
            click.echo(text, err=error)
            failed += error
        total += len(chunk)
    if failed:
        raise click.ClickException(f"{failed} of {total} addresses could not be unsubscribed")


def addresses_from(arguments: tuple[str, ...]) -> Iterator[str]:
    """The addresses given, with - replaced by the lines of stdin."""
    for argument in arguments:
        if argument != "-":
            yield argument
            continue
        for line in sys.stdin:
            text = line.strip()
            if text and not text.startswith("#"):
                yield text


def filter_options(func: F) -> F:
    """--status, --campaign, --since, --search: which subscribers a command covers."""
    for option in reversed(
        [
            click.option(
                "--status",
                "statuses",
                type=click.Choice(STATUSES),
                multiple=True,
                help="Only this status (repeat for several).",
            ),
            click.option("--campaign", default=None, help="Only those enrolled in this campaign."),
            click.option(
                "--since",
                default=None,
                help="Only those who joined since: a date (2026-10-01) or an age (7d, 12h).",
            ),
            click.option(
                "--search", default=None, help="Only those whose address or name contains TEXT."
            ),
        ]
    ):
        func = option(func)
    return func


def _filters(
    state: State,
    statuses: tuple[str, ...],
    campaign: str | None,
    since: str | None,
    search: str | None,
) -> SubscriberFilter:
    return SubscriberFilter(
        statuses=statuses,
        campaign=campaign,
        since=parse_since(since, state.runtime().clock.now()) if since else None,
        search=search,
    )


LIST_COLUMNS = ["email", "name", "timezone", "status", "created_at", "confirmed_at"]


@subscribers_group.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N subscribers.")
@click.option("--no-pager", is_flag=True, help="Do not page the table on a terminal.")
@output_options
@pass_state
def list_cmd(
    state: State,
    statuses: tuple[str, ...],
    campaign: str | None,
    since: str | None,
    search: str | None,
    limit: int | None,
    no_pager: bool,
    fmt: str,
) -> None:
    """List subscribers, oldest first. On a terminal the table goes through a pager ($PAGER).

    \b
    Examples:
      tidings subscribers list --status pending
      tidings subscribers list --campaign kap-benefits --since 7d
      tidings subscribers list --search @example.org --csv > subscribers.csv
    """
    runtime = state.runtime()
    filters = _filters(state, statuses, campaign, since, search)
    with runtime.sessions.begin() as session:
        rows = subscriber_rows(session, filters, limit)
        if fmt == "table" and not no_pager and sys.stdout.isatty():
            page = io.StringIO()
            with contextlib.redirect_stdout(page):
                emit_rows(rows, LIST_COLUMNS, fmt)
            click.echo_via_pager(page.getvalue())
        else:
            emit_rows(rows, LIST_COLUMNS, fmt)


@subscribers_group.command("show")
@click.argument("email")
@output_options
@pass_state
def show(state: State, email: str, fmt: str) -> None:
    """Everything about one subscriber: status, consent history, series position, deliveries.

    \b
    Examples:
      tidings subscribers show ann@example.org
      tidings subscribers show ann@example.org --json
    """
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        info = subscriber_details(session, subscriber)
    emit_object(info, "json" if fmt == "json" else "table")


# ----------------------------------------------------------------------------- import


@subscribers_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--evidence",
    default=None,
    help="How everyone on the list agreed, e.g. 'paper form, 2026 open day': recorded for each "
    "new subscriber, who is active at once.",
)
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="New addresses get a confirmation email and stay pending until they click.",
)
@click.option("--dry-run", is_flag=True, help="Check every row and count; store nothing.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Where to write rejected rows (default: FILE with .rejects.csv, or "
    "import-rejects.csv for stdin).",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The file's encoding, e.g. cp1252 for a CSV saved by Excel on Windows.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=BATCH_SIZE,
    show_default=True,
    help="Rows per transaction: a crash loses at most one batch, which a re-run does again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_state
def import_cmd(
    state: State,
    file: str,
    evidence: str | None,
    double_opt_in: bool,
    dry_run: bool,
    rejects_path: str | None,
    encoding: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Import subscribers from a CSV file (or - for stdin), streaming.

    The first line names the columns: email (required), name, timezone, and any others,
    which are kept as attributes of each subscriber. Consent must be accounted for:
    --evidence says how everyone on the list agreed (they become active and start the
    series), or --double-opt-in asks each new address to confirm by email.

    Existing subscribers are updated (empty cells leave stored values alone), never
    duplicated; addresses on the suppression list or that unsubscribed are never
    re-activated. Bad rows (invalid address, unknown timezone, encoding errors, wrong number
    of fields, line breaks inside fields, oversized fields) are skipped and written to the
    reject file with their line number and reason. Each batch of rows is committed whole,
    so an import that was interrupted can simply be run again: the result is the same.

    Exit code: 0 when every row was imported, 3 when some rows were rejected (the others
    were imported), 1 when the file could not be imported at all (nothing was stored).

    \b
    Examples:
      tidings subscribers import open-day.csv --evidence "paper form, 2026 open day"
      tidings subscribers import newsletter-list.csv --double-opt-in --dry-run
      gunzip -c list.csv.gz | tidings subscribers import - --double-opt-in
    """
    options = ImportOptions(
        evidence=evidence,
        double_opt_in=double_opt_in,
        dry_run=dry_run,
        encoding=encoding,
        batch_size=batch_size,
    )
    try:
        options.check()
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    if rejects_path is None:
        rejects_path = "import-rejects.csv" if file == "-" else _rejects_name(file)
    if file != "-" and os.path.abspath(rejects_path) == os.path.abspath(file):
        raise click.UsageError("--rejects must not be the file being imported")
    folder = os.path.dirname(os.path.abspath(rejects_path))
    if not os.access(folder, os.W_OK) or os.path.isdir(rejects_path):
        # Found out now, not at the first bad row with half the file imported.
        raise click.UsageError(f"cannot write the reject file {rejects_path}: use --rejects PATH")
    runtime = state.runtime()
    rejects = _RejectFile(rejects_path)
    with click.open_file(file, "rb") as stream, _progress(stream) as progress:
        importer = Importer(
            runtime.sessions,
            runtime.clock,
            options,
            runtime.settings.sender_domain,
            on_reject=rejects.write,
            progress=progress,
        )
        try:
            report = importer.run(stream)
        except DBAPIError as exc:
            if dry_run:
                raise click.ClickException(
                    f"the database failed: {exc.orig}; nothing was stored (dry run)"
                ) from exc
            done = importer.report.last_committed_line
            raise click.ClickException(
                f"the database failed: {exc.orig}; rows up to line {done} are stored, "
                "each whole: run the same import again to finish it"
            ) from exc
        finally:
            rejects.close()
    if as_json:
        click.echo(json.dumps(report.as_dict() | {"rejects_file": rejects.written}))
    else:
        _print_import(report, dry_run, double_opt_in, rejects)
    if report.rejected:
        sys.exit(3)


def _rejects_name(file: str) -> str:
    root, _ = os.path.splitext(file)
    return root + ".rejects.csv"


class _RejectFile:
    """The reject file, written as rows are rejected, created only if one is. It holds
    addresses, so only its owner may read it."""

    def __init__(self, path: str):
        self.path = path
        self.written: str | None = None
        self._out: Any = None
        self._writer: Any = None

    def write(self, reject: Reject) -> None:
        if self._writer is None:
            self._out = _private_file(self.path)
            self._writer = csv.writer(self._out, lineterminator="\n")
            self._writer.writerow(["line", "field", "reason", "data"])
            self.written = self.path
        self._writer.writerow([reject.line, reject.field, reject.reason, reject.data])

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def _private_file(path: str) -> Any:
    """A new (or truncated) text file that only its owner can read: exports hold addresses."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")


@contextlib.contextmanager
def _progress(stream: Any) -> Iterator[Any]:
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


def _print_import(
    report: ImportReport, dry_run: bool, double_opt_in: bool, rejects: _RejectFile
) -> None:
    counts = (
        f"created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
        f"suppressed {report.suppressed}, rejected {report.rejected}"
    )
    if dry_run:
        click.echo(f"dry run, nothing was stored: would have {counts}")
    else:
        click.echo(counts)
    if report.ignored_columns:
        click.echo(
            f"ignored columns {', '.join(report.ignored_columns)}: tidings keeps these itself",
            err=True,
        )
    if report.suppressed:
        lines = ", ".join(str(n) for n in report.suppressed_lines)
        more = ", ..." if report.suppressed > len(report.suppressed_lines) else ""
        click.echo(
            f"{report.suppressed} rows are on the suppression list or unsubscribed and were not "
            f"re-activated (lines {lines}{more})"
        )
    if double_opt_in and report.confirmations_queued:
        click.echo(
            f"{report.confirmations_queued} confirmation emails queued: `tidings run` or "
            "`tidings send-due` sends them"
        )
    if rejects.written:
        click.echo(
            f"{report.rejected} rejected rows written to {rejects.written} "
            "(line, field, reason, and the row as it was)",
            err=True,
        )


# ----------------------------------------------------------------------------- export


@subscribers_group.command("export")
@filter_options
@click.option("--csv", "fmt", flag_value="csv", default=True, help="CSV with a header (default).")
@click.option("--json", "fmt", flag_value="json", help="A JSON array, one object per subscriber.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to FILE (readable by its owner only) instead of stdout.",
)
@pass_state
def export_cmd(
    state: State,
    statuses: tuple[str, ...],
    campaign: str | None,
    since: str | None,
    search: str | None,
    fmt: str,
    out_path: str | None,
) -> None:
    """Export subscribers, streaming: any list size in constant memory.

    CSV columns: email, name, timezone, status, created_at, confirmed_at, unsubscribed_at,
    then one column per attribute. The CSV can be imported again (status and dates are
    ignored by the import).

    \b
    Examples:
      tidings subscribers export --status active --out active.csv
      tidings subscribers export --campaign kap-benefits --json | jq length
    """
    runtime = state.runtime()
    filters = _filters(state, statuses, campaign, since, search)
    out = _private_file(out_path) if out_path else sys.stdout
    try:
        with runtime.sessions.begin() as session:
            if fmt == "json":
                _export_json(out, subscriber_rows(session, filters))
            else:
                keys = attribute_keys(session, filters)
                _export_csv(out, subscriber_rows(session, filters), keys)
    finally:
        if out_path:
            out.close()


def _plain(value: Any) -> Any:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def _export_csv(out: Any, rows: Iterator[dict[str, Any]], keys: list[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*PROFILE_COLUMNS, *keys])
    for row in rows:
        attributes = row["attributes"]
        writer.writerow(
            [_plain(row[c]) for c in PROFILE_COLUMNS] + [attributes.get(k, "") for k in keys]
        )


def _export_json(out: Any, rows: Iterator[dict[str, Any]]) -> None:
    out.write("[")
    for i, row in enumerate(rows):
        body = json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False)
        out.write(("," if i else "") + "\n  " + body)
    out.write("\n]\n")


# ----------------------------------------------------------------------------- change


@subscribers_group.command("update")
@click.argument("email")
@click.option("--name", default=None, help="New name ('' clears it).")
@click.option("--timezone", default=None, help="New IANA timezone, e.g. Europe/Paris.")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set an attribute (repeatable); KEY= removes it.",
)
@pass_state
def update_cmd(
    state: State, email: str, name: str | None, timezone: str | None, attrs: tuple[str, ...]
) -> None:
    """Change a subscriber's name, timezone or attributes. A new timezone applies from the
    next email planned for them.

    \b
    Examples:
      tidings subscribers update ann@example.org --timezone America/Chicago
      tidings subscribers update ann@example.org --name "Ann Lee" --attr city=Lyon --attr ref=
    """
    if name is None and timezone is None and not attrs:
        raise click.UsageError("nothing to change: give --name, --timezone or --attr")
    attributes = [parse_attribute(a) for a in attrs]
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        result = update_subscriber(
            session, email, runtime.clock.now(), name=name, timezone=timezone, attributes=attributes
        )
    if result.changes:
        click.echo(f"{result.email}: " + "; ".join(result.changes))
    else:
        click.echo(f"{result.email}: nothing changed")


@subscribers_group.command("resubscribe")
@click.argument("email")
@click.option(
    "--evidence",
    default=None,
    help="How they asked to come back, e.g. 'phone call, 2026-11-02, ticket 88': active at once.",
)
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="Send a confirmation email instead; they are back when they click it.",
)
@pass_state
def resubscribe_cmd(state: State, email: str, evidence: str | None, double_opt_in: bool) -> None:
    """Bring back someone who unsubscribed, with new consent: --evidence of how they asked,
    or --double-opt-in to have them confirm by email. Their series resumes where it
    stopped. Bounced and complained addresses cannot come back this way.

    \b
    Examples:
      tidings subscribers resubscribe ann@example.org --evidence "asked by phone, 2026-11-02"
      tidings subscribers resubscribe ann@example.org --double-opt-in
    """
    if bool(evidence) == double_opt_in:
        raise click.UsageError(
            "coming back needs new consent: give --evidence TEXT or --double-opt-in (one of them)"
        )
    if evidence is not None:
        try:
            evidence = check_evidence(evidence)
        except InvalidInput as exc:
            raise click.UsageError(str(exc)) from exc
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        joined = resubscribe(
            session,
            subscriber,
            Consent(source="cli", evidence=evidence),
            runtime.clock.now(),
            runtime.settings.sender_domain,
            confirmed=not double_opt_in,
        )
        address, status = subscriber.email, subscriber.status
        pending_ids = [
            d.id
            for d in session.scalars(
                select(Delivery).where(
                    Delivery.subscriber_id == subscriber.id,
                    Delivery.kind == "confirmation",
                    Delivery.status == "queued",
                )
            )
        ]
    click.echo(f"{address}: {status}" + (f", back in {', '.join(joined)}" if joined else ""))
    if double_opt_in and pending_ids:
        _send_now(state, pending_ids)


# ----------------------------------------------------------------------------- data rights


def _confirm_on_terminal(question: str, yes: bool) -> bool:
    """True when the user said yes here, False when there is no terminal to ask on."""
    if yes or not sys.stdin.isatty():
        return False
    click.confirm(question, default=False, abort=True, err=True)
    return True


@subscribers_group.command("export-data")
@click.argument("email")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to FILE (readable by its owner only) instead of stdout.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_state
def export_data_cmd(state: State, email: str, out_path: str | None, yes: bool) -> None:
    """Everything stored about one person, as JSON (a right-of-access request): profile,
    attributes, suppression, consent events, enrollments and every email sent or planned.

    On a terminal it asks first, since the output is personal data.

    \b
    Examples:
      tidings subscribers export-data ann@example.org --out ann-data.json
      tidings subscribers export-data ann@example.org --yes | less
    """
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        data = export_data(session, email, runtime.clock.now())
    target = out_path or "stdout"
    _confirm_on_terminal(
        f"Write everything stored about {data['profile']['email']} to {target}?", yes
    )
    text = json.dumps(data, default=_plain, indent=2, ensure_ascii=False) + "\n"
    if out_path:
        with _private_file(out_path) as out:
            out.write(text)
        click.echo(f"wrote {out_path}", err=True)
    else:
        click.echo(text, nl=False)


@subscribers_group.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Erase without asking (needed without a terminal).")
@click.option(
    "--note",
    default=None,
    help="Kept with the record of the erasure, e.g. a ticket number. Never the address.",
)
@pass_state
def erase_cmd(state: State, email: str, yes: bool, note: str | None) -> None:
    """Erase one person (right to erasure): their profile, consent history, enrollments and
    emails are deleted everywhere. Only a hash of the address stays on the suppression list,
    so nothing is ever sent to it again, not even after a re-import; and a record that an
    erasure happened, without the address. This cannot be undone.

    Copies outside tidings (your mail server's logs, backups, exports) are not touched.

    \b
    Examples:
      tidings subscribers erase ann@example.org
      tidings subscribers erase ann@example.org --yes --note "request #1234"
    """
    normalized = normalize_email(email)
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("erasing cannot be undone: add --yes to erase without a terminal")
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        find_subscriber(session, normalized)  # unknown: say so before asking
    _confirm_on_terminal(f"Erase everything stored about {normalized}? This cannot be undone", yes)
    with runtime.sessions.begin() as session:
        report = erase(session, normalized, runtime.clock.now(), source="cli", note=note)
    kept = "added to" if report.suppression_added else "kept on"
    click.echo(
        f"{report.email}: erased ({report.consent_events} consent events, "
        f"{report.enrollments} enrollments, {report.deliveries} emails); its hash is "
        f"{kept} the suppression list ({report.suppression_reason})"
    )


def register(cli: click.Group) -> None:
    cli.add_command(subscribers_group)
