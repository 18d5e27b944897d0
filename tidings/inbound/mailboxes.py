"""Where inbound mail is read from on disk: a Maildir, an mbox file, an .eml file or a folder
of them. Yields each message's raw bytes with its kind of source and where it was found;
deletes, moves and marks nothing (the files are the operator's)."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class Found(NamedTuple):
    source: str  # maildir | mbox | file (as inbound_messages.source records it)
    where: str  # path, and the message's key in a Maildir or mbox
    raw: bytes


def read_messages(path: Path) -> Iterator[Found]:
    """Every message in a Maildir, an mbox file, an .eml file or a folder of .eml files."""
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(path, create=False)
        for key in sorted(box.iterkeys()):
            yield Found("maildir", f"{path}:{key}", box.get_bytes(key))
    elif path.is_dir():
        for file in sorted(path.iterdir()):
            if file.is_file() and not file.name.startswith("."):
                yield from _file(file)
    elif path.is_file():
        yield from _file(path)
    else:
        raise FileNotFoundError(f"{path}: no such Maildir, mbox or .eml file")


def _file(path: Path) -> Iterator[Found]:
    with path.open("rb") as fh:
        starts_like_mbox = fh.read(5) == b"From "
    if not starts_like_mbox:
        yield Found("file", str(path), path.read_bytes())
        return
    messages = mailbox.mbox(path, create=False)
    for key in messages.iterkeys():
        yield Found("mbox", f"{path}:{key}", messages.get_bytes(key))
