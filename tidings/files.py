"""Writing files that hold personal data or secrets (exports, reject files, DKIM keys,
previews): readable by their owner only, never through a symlink, never half-written.

A file is written under a new name beside its target (created with O_EXCL, mode 0600) and
renamed over the target when complete, so a reader sees the old file or the whole new one;
a symlink at the target is refused rather than followed (it could point at any file the
operator may write).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

from tidings.errors import TidingsError

PRIVATE_MODE = 0o600


class UnsafePath(TidingsError):
    """The path cannot be written safely (a symlink, a folder...)."""


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Refuse a target that is a symlink or not a plain file, and a missing folder, before any
    work is done (an import should not fail at its first bad row)."""
    target = Path(path)
    if target.is_symlink():
        raise UnsafePath(f"{target} is a symbolic link: tidings does not write through links")
    if target.exists() and not target.is_file():
        raise UnsafePath(f"{target} exists and is not a regular file")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UnsafePath(f"cannot write in {folder.resolve()}")
    return target


@overload
def open_private(
    path: str | os.PathLike[str], mode: Literal["w"] = "w"
) -> contextlib.AbstractContextManager[IO[str]]: ...
@overload
def open_private(
    path: str | os.PathLike[str], mode: Literal["wb"]
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
def open_private(path: str | os.PathLike[str], mode: str = "w") -> Any:
    """`with open_private(path) as out:` writes a new file at `path` (see the module)."""
    return _private(check_writable(path), mode)


@contextlib.contextmanager
def _private(target: Path, mode: str, permissions: int = PRIVATE_MODE) -> Iterator[IO[Any]]:
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, permissions)
    try:
        if "b" in mode:
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            yield handle
        if target.is_symlink():  # appeared while we wrote
            raise UnsafePath(f"{target} became a symbolic link: not replaced")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_private(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """The whole content at once."""
    target = check_writable(path)
    with _private(target, "wb" if isinstance(data, bytes) else "w") as out:
        out.write(data)
    return target


def write_public(path: str | os.PathLike[str], text: str) -> Path:
    """A file that holds nothing private (a campaign folder, the sign-up form's html), written
    the same safe way (never through a link, never half-written) but readable by all."""
    target = check_writable(path)
    with _private(target, "w", permissions=0o644) as out:
        out.write(text)
    return target
