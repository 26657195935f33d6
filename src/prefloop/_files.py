"""Files written under a temporary name and renamed into place get ordinary permissions.

``tempfile.mkstemp`` makes files 0600 and ``mkdtemp`` folders 0700, private to their owner, and
a rename keeps that. A saved model, a report or a scored file is meant to be read by others, as
if it had been made with ``open`` or ``mkdir`` under the process umask.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

__all__ = ["as_if_created", "publish_folder"]

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


def publish_folder(staging: Path, target: Path) -> None:
    """Move the complete folder ``staging`` to ``target`` (beside it), replacing a folder
    there: the old one is renamed aside first and removed after, so ``target`` is never
    half-written."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
