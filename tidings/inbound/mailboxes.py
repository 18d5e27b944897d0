"""Where inbound mail is read from: a Maildir, an mbox file, an .eml file or a folder of them.
Yields each message's raw bytes with where it was found; deletes nothing."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path


def read_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, raw bytes) for every message in a Maildir, an mbox file, an .eml file or a
    folder of .eml files."""
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(path, create=False)
        for key in box.iterkeys():
            yield f"{path}:{key}", box.get_bytes(key)
    elif path.is_dir():
        for file in sorted(path.iterdir()):
            if file.is_file() and not file.name.startswith("."):
                yield str(file), file.read_bytes()
    elif path.is_file():
        with path.open("rb") as fh:
            starts_like_mbox = fh.read(5) == b"From "
        if starts_like_mbox:
            messages = mailbox.mbox(path, create=False)
            for key in messages.iterkeys():
                yield f"{path}:{key}", messages.get_bytes(key)
        else:
            yield str(path), path.read_bytes()
    else:
        raise FileNotFoundError(f"{path}: no such Maildir, mbox or .eml file")
