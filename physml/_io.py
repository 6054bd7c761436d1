"""Atomic file writing and the checks on paths of commands: a file either appears complete under
its final name or not at all; a lock keeps a second writer of the same output away."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created) while the block runs; a second
    holder gets a ``FileExistsError`` naming ``what``, as does a symbolic link at ``path`` (not
    followed: it could create or lock a file elsewhere). The lock dies with its process: a killed
    run leaves only the empty lock file, which holds no lock and which the next run reuses and
    removes (where ``fcntl`` is missing the block runs unlocked)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    lock = Path(path)
    while True:
        try:
            handle = open(lock, "a", opener=_not_following_a_link)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise FileExistsError(
                f"{what}: its lock {str(lock)!r} is a symbolic link, which is not followed (it "
                "would create or lock the file it points to); remove it"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _names(lock, handle):
                break
        except BlockingIOError:
            handle.close()
            raise FileExistsError(
                f"{what} is being written by another process (lock {str(lock)!r}); wait for it "
                "to finish or stop it"
            ) from None
        except BaseException:
            handle.close()
            raise
        # the holder removed the file between our open and our lock: lock the file at ``path``
        handle.close()
    with handle:
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _not_following_a_link(path: str, flags: int) -> int:
    """``os.open`` for ``open(..., opener=)`` refusing a symbolic link at ``path`` (``ELOOP``)."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def _names(path: Path, handle) -> bool:
    """Whether ``path`` still names the file open as ``handle``."""
    try:
        return os.path.samestat(os.lstat(path), os.fstat(handle.fileno()))
    except FileNotFoundError:
        return False


def remove_leftovers(folder: str | os.PathLike, name: str, *, pattern: bool = False) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left for the file ``name`` (with
    ``pattern``, a glob pattern such as ``"chunk-*"``) in ``folder`` when a run was killed
    mid-write; return them. Call it only under the output's lock."""
    literal = name if pattern else glob.escape(name)
    removed = sorted(Path(folder).glob(f".{literal}.*.tmp"))
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed to ``path`` on success (``os.replace``).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    handle, name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        if temporary.exists():  # mkstemp makes it 0600: give it the mode a plain open() would
            temporary.chmod(0o666 & ~current_umask())
            _sync(temporary)  # the contents reach the disk before the name points at them
        os.replace(temporary, final)
        _sync(final.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _sync(path: Path) -> None:
    """``fsync`` a file or folder, so a crash after the rename cannot leave an empty file; a
    no-op where the system cannot (folders on Windows)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def existing_file(argument: str, path: str | os.PathLike, what: str = "dataset file") -> Path:
    """``path`` of a command's ``argument`` (its flag or metavar, e.g. ``--data``) as a
    ``Path``: ``FileNotFoundError`` naming the argument when nothing is there,
    ``IsADirectoryError`` when a folder is."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{argument}: {str(path)!r} is a folder, not a {what}")
    if not path.exists():
        raise FileNotFoundError(f"{argument}: no {what} at {str(path)!r}")
    return path


def writable_folder(argument: str, path: str | os.PathLike) -> None:
    """``path`` of a command's ``argument`` (e.g. ``--out``) must be a folder it can write in: a
    writable one, or one it can make (the nearest that exists a writable folder); else a
    ``ValueError`` naming the argument and the file in the way or the folder it cannot write."""
    path = Path(path)
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"{argument}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{argument}: {str(existing)!r} is not a writable folder")
