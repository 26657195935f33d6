"""The one way prefloop writes a file or a folder that others read: made complete under a
temporary name beside its target, then renamed into place.

A rename within one folder is atomic, so a reader sees the old file or the new one, never half
of one, and a failure (or a killed process) leaves the target as it was. ``tempfile.mkstemp``
makes files 0600 and ``mkdtemp`` folders 0700, private to their owner, and a rename keeps that;
a saved model, a report or a scored file is meant to be read by others, so what is renamed into
place first gets the permissions ``open`` or ``mkdir`` would have given it under the umask.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "as_if_created",
    "atomic_path",
    "move_into_place",
    "publish_folder",
    "staging_folder",
    "write_atomic",
]

_lock = threading.Lock()
_umask: int | None = None


def _process_umask() -> int:
    """The umask, read once: reading it means setting it, which must not race other threads."""
    global _umask
    with _lock:
        if _umask is None:
            _umask = os.umask(0o022)
            os.umask(_umask)
        return _umask


def as_if_created(path: str | Path) -> Path:
    """Give ``path`` (a file or a folder that ``tempfile`` made private) the permissions
    ``open`` / ``mkdir`` would have given it: 0666 / 0777 less the umask."""
    path = Path(path)
    umask = _process_umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~umask)
    else:
        os.chmod(path, 0o666 & ~umask)
    return path


def move_into_place(temporary: str | Path, target: str | Path) -> Path:
    """Rename the complete file ``temporary`` onto ``target`` (in the same folder, replacing a
    file there), with ordinary permissions."""
    os.replace(as_if_created(temporary), target)
    return Path(target)


@contextmanager
def atomic_path(target: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``target`` (its folder made if needed) to write; renamed onto
    ``target`` when the block ends normally, removed when it raises.

    ``suffix`` is the temporary name's ending, for writers that choose a format by it
    (``".png"``, ``".npz"``)::

        with atomic_path(out) as temporary:
            figure.savefig(temporary, format="png")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        move_into_place(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(target: str | Path, content: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``content`` (text in ``encoding``, or bytes) to ``target`` through
    :func:`atomic_path`: the old file, or none, stays until the new one is complete."""
    with atomic_path(target) as temporary:
        if isinstance(content, bytes):
            temporary.write_bytes(content)
        else:
            temporary.write_text(content, encoding=encoding)
    return Path(target)


@contextmanager
def staging_folder(target: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """An empty folder beside ``target`` (a hidden name ending in ``suffix``, ordinary
    permissions) to build a folder in, then give to :func:`publish_folder`; whatever is left
    of it when the block ends (a failure, or files not moved away) is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = as_if_created(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    )
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, target: Path, *, replace: bool = True) -> None:
    """Move the complete folder ``staging`` to ``target`` (beside it).

    A folder at ``target`` is replaced: the old one is renamed aside first and removed after,
    so ``target`` is never half-written. With ``replace=False`` an existing ``target`` stays
    and the move raises ``OSError`` (two processes building one folder: the first wins).
    """
    if not replace:
        os.rename(staging, target)
    elif target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
