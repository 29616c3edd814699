"""Durable file writes for the archive: atomic whole files and fsynced appends.

Two primitives, used by every module that writes into ``plans/``:

- ``write_atomic(path, data)`` writes a temporary file in the same directory,
  fsyncs it, renames it into place and fsyncs the directory, so a reader sees
  either no file or the whole file, even after a crash or power loss. It
  refuses to replace an existing file unless ``overwrite=True`` (archive files
  are written once and never rewritten).
- ``append_line(path, line)`` appends one line and fsyncs before returning, so
  once it returns the line survives a crash (the apply journal relies on this).

Neither follows a symbolic link, and ``read_bytes`` is how the archive reads its
files: every open uses ``O_NOFOLLOW``, so a link planted in a plan folder (at
``journal.jsonl``, say) is refused with ``IntegrityError`` and what it points at
is never read or written. ``refuse_links(folder)`` checks a whole plan folder.

``folder_identity(plan_dir)`` says which folder a plan folder is (the archive's random
``.archive-id``, its real path, device and inode), so that a copy can be told apart.
"""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconcile.errors import IntegrityError

__all__ = ["append_line", "archive_id", "folder_identity", "fsync_dir", "read_bytes", "refuse_links",
           "write_atomic"]

ARCHIVE_ID = ".archive-id"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _link_error(path: Path) -> IntegrityError:
    return IntegrityError(f"{path}: is a symbolic link; the archive never follows links (remove it and "
                          "restore the real file from a backup, then run `reconcile verify`)")


def _open(path: Path, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno in (errno.EMLINK, errno.ENOTDIR) and path.is_symlink()):
            raise _link_error(path) from None
        raise


def read_bytes(path: Path | str) -> bytes:
    """The file's bytes, refusing a symbolic link (``IntegrityError``); ``FileNotFoundError`` as usual."""
    path = Path(path)
    fd = _open(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def refuse_links(folder: Path) -> None:
    """Raise ``IntegrityError`` naming the first symbolic link in ``folder`` (or ``folder`` itself)."""
    if folder.is_symlink():
        raise _link_error(folder)
    if not folder.is_dir():
        return
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_symlink():
            raise _link_error(folder / entry.name)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path | str, data: bytes | Iterable[bytes], mode: int = 0o600, *,
                 overwrite: bool = False) -> None:
    """Write ``data`` (bytes, or pieces of them written one after another) to ``path``
    atomically with permissions ``mode``.

    Raises ``FileExistsError`` when ``path`` exists and ``overwrite`` is false;
    in that case the existing file is left untouched.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise _link_error(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: already exists and is never rewritten")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in ((data,) if isinstance(data, (bytes, bytearray, memoryview)) else data):
                fh.write(piece)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target exists, so two writers cannot both win.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: already exists and is never rewritten") from None
            except OSError:  # pragma: no cover - filesystems without hard links
                if path.exists():
                    raise FileExistsError(f"{path}: already exists and is never rewritten") from None
                os.replace(tmp, path)
        fsync_dir(directory)
    finally:
        if tmp.exists():
            tmp.unlink()


def append_line(path: Path | str, line: str, mode: int = 0o600) -> None:
    """Append ``line`` (no newline inside) plus ``\\n`` to ``path`` and fsync.

    The file is created with ``mode`` if missing. If the file's last line was
    torn by a crash (no final newline), the new line starts on a line of its
    own, so a torn line never swallows the next record.
    """
    if "\n" in line or "\r" in line:
        raise ValueError("append_line: the line must not contain a line break")
    path = Path(path)
    created = not path.exists() and not path.is_symlink()
    fd = _open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        if size:
            last = os.pread(fd, 1, size - 1)
            if last != b"\n":
                prefix = b"\n"
        payload = prefix + line.encode("utf-8") + b"\n"
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def archive_id(root: Path) -> str:
    """The archive's random id (``<root>/.archive-id``), made the first time it is asked for."""
    path = Path(root) / ARCHIVE_ID
    try:
        return read_bytes(path).decode("ascii").strip()
    except FileNotFoundError:
        pass
    try:
        write_atomic(path, (secrets.token_hex(16) + "\n").encode("ascii"))
    except FileExistsError:
        pass                      # another process made it first: use theirs
    return read_bytes(path).decode("ascii").strip()


def folder_identity(plan_dir: Path) -> dict[str, Any]:
    """Which plan folder this is: the archive's id, the folder's real path, device and inode.
    A copy has the same files but another inode (and, moved into another archive, another id)."""
    st = os.stat(plan_dir, follow_symlinks=False)
    return {"archive_id": archive_id(Path(plan_dir).parent), "path": os.path.realpath(plan_dir),
            "device": st.st_dev, "inode": st.st_ino}
