"""`tidings subscribers ...`: add, import, find, change, export and erase subscribers."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tidings.cli.common import State, confirm_on_terminal, lines_of, pass_state
from tidings.cli.output import output_file, output_options, plain, write_object, write_rows

if TYPE_CHECKING:
    from tidings.subscribers.directory import SubscriberFilter
    from tidings.subscribers.importing import ImportReport, Reject

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = ["pending", "active", "unsubscribed", "bounced", "complained"]
LIST_COLUMNS = ["email", "name", "timezone", "status", "created_at", "confirmed_at"]


@click.group("subscribers")
def subscribers_group() -> None:
    """Add, import, find, change, export and erase subscribers."""


def _send_confirmations(state: State, delivery_ids: list[int]) -> None:
    """Send the confirmation email at once rather than at the next scheduler pass."""
    from tidings.sending.oneoff import send_now

    if not delivery_ids:
        return
    if send_now(state.runtime(), delivery_ids).sent:
        click.echo("confirmation email sent")
    else:
        click.echo(
            "confirmation email queued: it could not be sent now and will be "
            "retried by `tidings run` / `tidings send-due`",
            err=True,
        )


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
    from tidings.subscribers.lifecycle import Consent, add_subscriber, waiting_confirmations

    if evidence and not confirmed:
        raise click.UsageError("--evidence goes with --confirmed")
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = add_subscriber(
            session,
            runtime.clock.now(),
            email,
            Consent(source="cli", evidence=evidence),
            name=name,
            timezone=timezone,
            confirmed=confirmed,
            message_domain=runtime.settings.sender_domain,
        )
        address, status = subscriber.email, subscriber.status
        pending = waiting_confirmations(session, subscriber)
    click.echo(f"{address}: added ({status})")
    _send_confirmations(state, pending)


@subscribers_group.command("confirm")
@click.argument("email")
@pass_state
def confirm(state: State, email: str) -> None:
    """Confirm a pending subscriber (as if they clicked the link) and start their series.

    \b
    Example:
      tidings subscribers confirm ann@example.org
    """
    from tidings.subscribers.directory import find_subscriber
    from tidings.subscribers.lifecycle import Consent, activate

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        consent = Consent(source="cli", evidence="confirmed by an operator")
        joined = activate(session, subscriber, consent, runtime.clock.now())
        address = subscriber.email
    click.echo(f"{address}: active" + (f", enrolled in {', '.join(joined)}" if joined else ""))


@subscribers_group.command("unsubscribe")
@click.argument("emails", nargs=-1, metavar="EMAIL... | -")
@pass_state
def unsubscribe(state: State, emails: tuple[str, ...]) -> None:
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
    from tidings.subscribers.lifecycle import unsubscribe_address

    if not emails:
        raise click.UsageError("give one or more addresses, or - to read them from stdin")
    runtime = state.runtime()

    def one(session: Any, raw: str) -> str:
        address, changed = unsubscribe_address(session, raw, "cli", runtime.clock.now())
        return f"{address}: " + ("unsubscribed" if changed else "was already unsubscribed")

    each_address(state, emails, one, "unsubscribed")


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


def filter_options(func: F) -> F:
    """--status, --campaign, --since, --search: which subscribers a command covers."""
    options = [
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
    for option in reversed(options):
        func = option(func)
    return func


def _filters(
    state: State, statuses: Any, campaign: Any, since: Any, search: Any
) -> SubscriberFilter:
    from tidings.subscribers.directory import SubscriberFilter, parse_since

    when = parse_since(since, state.runtime().clock.now()) if since else None
    return SubscriberFilter(statuses=statuses, campaign=campaign, since=when, search=search)


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
    from tidings.subscribers.directory import subscriber_rows

    runtime = state.runtime()
    filters = _filters(state, statuses, campaign, since, search)
    with runtime.read_sessions.begin() as session:
        rows = subscriber_rows(session, filters, limit)
        write_rows(rows, LIST_COLUMNS, fmt, page=not no_pager)


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
    from tidings.subscribers.directory import subscriber_details

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        info = subscriber_details(session, email)
    write_object(info, fmt)


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
    type=click.Path(dir_okay=False),
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
    default=2000,
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
    from sqlalchemy.exc import DBAPIError

    from tidings.errors import InvalidInput
    from tidings.files import UnsafePath, check_writable
    from tidings.subscribers.importing import Importer, ImportOptions, check_options

    options = ImportOptions(evidence, double_opt_in, dry_run, encoding, batch_size)
    try:
        check_options(options)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    if rejects_path is None:
        rejects_path = (
            "import-rejects.csv" if file == "-" else os.path.splitext(file)[0] + ".rejects.csv"
        )
    if file != "-" and os.path.abspath(rejects_path) == os.path.abspath(file):
        raise click.UsageError("--rejects must not be the file being imported")
    try:  # found out now, not at the first bad row with half the file imported
        check_writable(rejects_path)
    except UnsafePath as exc:
        raise click.UsageError(
            f"cannot write the reject file {rejects_path} ({exc}): use --rejects PATH"
        ) from exc
    runtime = state.runtime()
    with (
        click.open_file(file, "rb") as stream,
        _progress(stream) as progress,
        _RejectFile(rejects_path) as rejects,
    ):
        importer = Importer(
            runtime.sessions,
            runtime.read_sessions,
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
    if as_json:
        click.echo(json.dumps(report.as_dict() | {"rejects_file": rejects.written}))
    else:
        _print_import(report, dry_run, double_opt_in, rejects.written)
    if report.rejected:
        sys.exit(3)


class _RejectFile:
    """The reject file, written as rows are rejected, created only if one is. It holds
    addresses, so only its owner may read it."""

    def __init__(self, path: str):
        self.path = path
        self.written: str | None = None
        self._stack = contextlib.ExitStack()
        self._writer: Any = None

    def write(self, reject: Reject) -> None:
        from tidings.files import open_private

        if self._writer is None:
            out = self._stack.enter_context(open_private(self.path))
            self._writer = csv.writer(out, lineterminator="\n")
            self._writer.writerow(["line", "field", "reason", "data"])
            self.written = self.path
        self._writer.writerow([reject.line, reject.field, reject.reason, reject.data])

    def __enter__(self) -> _RejectFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.close()


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
    report: ImportReport, dry_run: bool, double_opt_in: bool, rejects: str | None
) -> None:
    counts = (
        f"created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
        f"suppressed {report.suppressed}, rejected {report.rejected}"
    )
    click.echo(f"dry run, nothing was stored: would have {counts}" if dry_run else counts)
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
    if rejects:
        click.echo(
            f"{report.rejected} rejected rows written to {rejects} "
            "(line, field, reason, and the row as it was)",
            err=True,
        )


# ----------------------------------------------------------------------------- export


@subscribers_group.command("export")
@filter_options
@output_options(default="csv")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (readable by its owner only) instead of stdout.",
)
@pass_state
def export(
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
    ignored by the import). JSON: one object per subscriber, attributes as an object.

    \b
    Examples:
      tidings subscribers export --status active --out active.csv
      tidings subscribers export --campaign kap-benefits --json | jq length
    """
    from tidings.subscribers.directory import export_columns, export_rows

    runtime = state.runtime()
    filters = _filters(state, statuses, campaign, since, search)
    with runtime.read_sessions.begin() as session, output_file(out_path) as out:
        columns = export_columns(session, filters, flat=fmt != "json")
        write_rows(export_rows(session, filters, flat=fmt != "json"), columns, fmt, out)


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
def update(
    state: State, email: str, name: str | None, timezone: str | None, attrs: tuple[str, ...]
) -> None:
    """Change a subscriber's name, timezone or attributes. A new timezone applies from the
    next email planned for them.

    \b
    Examples:
      tidings subscribers update ann@example.org --timezone America/Chicago
      tidings subscribers update ann@example.org --name "Ann Lee" --attr city=Lyon --attr ref=
    """
    from tidings.subscribers.directory import parse_attribute, update_subscriber

    if name is None and timezone is None and not attrs:
        raise click.UsageError("nothing to change: give --name, --timezone or --attr")
    attributes = [parse_attribute(a) for a in attrs]
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        result = update_subscriber(
            session, email, runtime.clock.now(), name=name, timezone=timezone, attributes=attributes
        )
    changes = "; ".join(result.changes) if result.changes else "nothing changed"
    click.echo(f"{result.email}: {changes}")


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
def resubscribe(state: State, email: str, evidence: str | None, double_opt_in: bool) -> None:
    """Bring back someone who unsubscribed, with new consent: --evidence of how they asked,
    or --double-opt-in to have them confirm by email. Their series resumes where it
    stopped. Bounced and complained addresses cannot come back this way.

    \b
    Examples:
      tidings subscribers resubscribe ann@example.org --evidence "asked by phone, 2026-11-02"
      tidings subscribers resubscribe ann@example.org --double-opt-in
    """
    from tidings.errors import InvalidInput
    from tidings.subscribers.directory import find_subscriber
    from tidings.subscribers.importing import check_evidence
    from tidings.subscribers.lifecycle import Consent, waiting_confirmations
    from tidings.subscribers.lifecycle import resubscribe as come_back

    if bool(evidence) == double_opt_in:
        raise click.UsageError(
            "coming back needs new consent: give --evidence TEXT or --double-opt-in (one of them)"
        )
    try:
        evidence = check_evidence(evidence) if evidence is not None else None
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        joined = come_back(
            session,
            subscriber,
            Consent(source="cli", evidence=evidence),
            runtime.clock.now(),
            runtime.settings.sender_domain,
            confirmed=not double_opt_in,
        )
        address, status = subscriber.email, subscriber.status
        pending = waiting_confirmations(session, subscriber)
    click.echo(f"{address}: {status}" + (f", back in {', '.join(joined)}" if joined else ""))
    _send_confirmations(state, pending)


# ----------------------------------------------------------------------------- data rights


@subscribers_group.command("export-data")
@click.argument("email")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (readable by its owner only) instead of stdout.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_state
def export_data(state: State, email: str, out_path: str | None, yes: bool) -> None:
    """Everything stored about one person, as JSON (a right-of-access request): profile,
    attributes, suppression, consent events, enrollments and every email sent or planned.

    On a terminal it asks first, since the output is personal data.

    \b
    Examples:
      tidings subscribers export-data ann@example.org --out ann-data.json
      tidings subscribers export-data ann@example.org --yes | less
    """
    from tidings.subscribers.privacy import export_data as everything_about

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        data = everything_about(session, email, runtime.clock.now())
    question = (
        f"Write everything stored about {data['profile']['email']} to {out_path or 'stdout'}?"
    )
    confirm_on_terminal(question, yes)
    with output_file(out_path) as out:
        out.write(json.dumps(data, default=plain, indent=2, ensure_ascii=False) + "\n")
    if out_path:
        click.echo(f"wrote {out_path}", err=True)


@subscribers_group.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Erase without asking (needed without a terminal).")
@click.option(
    "--note",
    default=None,
    help="Kept with the record of the erasure, e.g. a ticket number. Never the address.",
)
@pass_state
def erase(state: State, email: str, yes: bool, note: str | None) -> None:
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
    from tidings.subscribers.directory import find_subscriber
    from tidings.subscribers.privacy import erase as erase_person
    from tidings.subscribers.validation import normalize_email

    normalized = normalize_email(email)
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("erasing cannot be undone: add --yes to erase without a terminal")
    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        find_subscriber(session, normalized)  # unknown: say so before asking
    confirm_on_terminal(f"Erase everything stored about {normalized}? This cannot be undone", yes)
    with runtime.sessions.begin() as session:
        report = erase_person(session, normalized, runtime.clock.now(), source="cli", note=note)
    kept = "added to" if report.suppression_added else "kept on"
    click.echo(
        f"{report.email}: erased ({report.consent_events} consent events, "
        f"{report.enrollments} enrollments, {report.deliveries} emails); its hash is "
        f"{kept} the suppression list ({report.suppression_reason})"
    )
