"""`tidings subscribers import`: a CSV list, streamed, with a reject file."""

from __future__ import annotations

import os
import sys

import click

from tidings.cli.common import State, pass_state, progress_bar
from tidings.cli.output import write_object


# Long: its help is the import's documentation; the body checks options, then one call.
@click.command("import")
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
@click.option(
    "--keep",
    "keep",
    multiple=True,
    metavar="COLUMN",
    help="Also keep this column as an attribute of each subscriber (repeatable). Without it "
    "only email, name and timezone are stored; the other columns are dropped.",
)
@click.option(
    "--allow-sensitive",
    is_flag=True,
    help="Keep a column named with --keep even though its name looks clinical or "
    "identifying (diagnosis, medication, appointment, insurance, date of birth, notes...).",
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
    keep: tuple[str, ...],
    allow_sensitive: bool,
    as_json: bool,
) -> None:
    """Import subscribers from a CSV file (or - for stdin), streaming.

    The first line names the columns: email (required), name and timezone are stored; any
    other column is dropped (and reported) unless named with --keep COLUMN (or in the
    setting TIDINGS_IMPORT_KEEP_COLUMNS), which keeps it as an attribute of each subscriber.
    A column whose name looks clinical or identifying (diagnosis, medication, appointment,
    insurance, date of birth, SSN, notes...) is refused even then, unless --allow-sensitive.
    Consent must be accounted for: --evidence says how everyone on the list agreed (they
    become active and start the series), or --double-opt-in asks each new address to
    confirm by email.

    Existing subscribers are updated (empty cells leave stored values alone), never
    duplicated; addresses on the suppression list or that unsubscribed are never
    re-activated. Bad rows (invalid address, unknown timezone, encoding errors, wrong number
    of fields, a line break in the email, name or timezone, oversized fields) are skipped and
    written to the reject file with their line number and reason. Each batch of rows is
    committed whole, so an import that was interrupted can simply be run again: the result is
    the same.

    Exit code: 0 when every row was imported, 3 when some rows were rejected (the others
    were imported), 1 when the file could not be imported at all (nothing was stored).

    \b
    Examples:
      tidings subscribers import open-day.csv --evidence "paper form, 2026 open day"
      tidings subscribers import crm.csv --evidence "intake form consent" --keep clinic
      tidings subscribers import newsletter-list.csv --double-opt-in --dry-run
      gunzip -c list.csv.gz | tidings subscribers import - --double-opt-in
    """
    from sqlalchemy.exc import DBAPIError

    from tidings.errors import InvalidInput
    from tidings.files import UnsafePath, check_writable
    from tidings.subscribers.importing import (
        Importer,
        ImportOptions,
        check_options,
        from_setting,
    )
    from tidings.subscribers.importing.rejects import RejectFile

    options = ImportOptions(
        evidence=evidence,
        double_opt_in=double_opt_in,
        dry_run=dry_run,
        encoding=encoding,
        batch_size=batch_size,
        keep=keep,
        keep_if_present=from_setting(state.settings.import_keep_columns),
        allow_sensitive=allow_sensitive,
    )
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
        progress_bar(stream) as progress,
        RejectFile(rejects_path) as rejects,
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
        write_object(report.as_dict() | {"rejects_file": rejects.written}, "json")
    else:
        for line, warning in report.summary(dry_run, double_opt_in, rejects.written):
            click.echo(line, err=warning)
    if report.rejected:
        sys.exit(3)
